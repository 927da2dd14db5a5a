"""Rejection-sampling fine-tuning (``rl/rft.py``): the selection by hand, the source order, a toy reward rising
over rounds on a tiny model, a run resumed mid-round equal to an uninterrupted one, the entry point's run
folder, and ``rl/ppo.py --algorithm rft`` handing over."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
import yaml
from safetensors.torch import load_file

from detoxrl.data import DataConfig, Pair, load_detox_data
from detoxrl.vocab import VocabConfig
from rl.rft import RFTTrainer
from rl.rft_config import RFTConfig
from rl.rft_select import Source, round_sources, select_pairs, source_pool
from tests.rl_helpers import CharShareReward, make_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---- selection, by hand ----------------------------------------------------------------------------------------

def test_select_keeps_the_best_sample_at_or_above_min_reward_and_falls_back_to_the_reference():
    srcs = [Source("you idiot", ("you are wrong",), "a", False), Source("shut up", ("please stop",), "b", True),
            Source("damn it", ("oh no", "oops"), "c", False), Source("crap", (), "d", False)]
    cands = [["you idiot", "you are mistaken", "you are odd"], ["be quiet", "hush"], ["oh dear", "x"], ["y", "z"]]
    scores = [[0.2, 0.7, 0.7], [0.5, 0.1], [0.49, math.nan], [math.nan, math.nan]]
    best = [1, 0, 0, 0]  # pick_best: the first of the two 0.7s; NaN never wins
    skip = select_pairs(srcs, cands, scores, best, min_reward=0.5, fallback="skip", round_index=3)
    assert [(p.source, p.target, p.split) for p in skip.pairs] == [("you idiot", "you are mistaken", "train"),
                                                                  ("shut up", "be quiet", "train")]
    assert skip.kept == [0, 1] and skip.fallback == [] and "round 3" in skip.pairs[0].origin
    s = skip.stats
    assert (s["sources"], s["samples"], s["kept"], s["fallback"], s["skipped"], s["pairs"]) == (4, 9, 2, 0, 2, 2)
    assert s["kept_share"] == 0.5 and s["unseen_share"] == 0.75
    assert s["reward_all"] == pytest.approx((0.2 + 0.7 + 0.7 + 0.5 + 0.1 + 0.49) / 6)  # NaN scores left out
    assert s["reward_best"] == pytest.approx((0.7 + 0.5 + 0.49) / 3)
    assert s["reward_kept"] == pytest.approx((0.7 + 0.5) / 2)
    assert s["copy_all"] == pytest.approx(1 / 9) and s["copy_kept"] == 0.0  # "you idiot" -> "you idiot" is a copy

    ref = select_pairs(srcs, cands, scores, best, min_reward=0.5, fallback="reference")
    assert [(p.source, p.target) for p in ref.pairs] == [("you idiot", "you are mistaken"), ("shut up", "be quiet"),
                                                         ("damn it", "oh no")]  # d has no reference: skipped
    assert ref.kept == [0, 1] and ref.fallback == [2] and ref.stats["skipped"] == 1
    assert select_pairs(srcs, cands, scores, best, min_reward=0.71).pairs == []


def test_sources_the_sft_run_never_saw_come_first_and_rounds_take_the_next_slice():
    train = [Pair(f"s{i}", f"t{i}") for i in range(10)] + [Pair("s3", "t3 again")]
    used = {Pair(f"s{i}", "").group for i in (0, 1, 2, 3)}
    pool = source_pool(train, used, seed=1)
    assert [s.seen_by_sft for s in pool] == [False] * 6 + [True] * 4
    assert {s.text for s in pool[:6]} == {f"s{i}" for i in range(4, 10)}
    assert next(s for s in pool if s.text == "s3").references == ("t3", "t3 again")
    assert source_pool(train, used, seed=1) == pool and source_pool(train, used, seed=2) != pool  # seeded order
    assert [s.text for s in round_sources(pool, 1, 4)] == [s.text for s in pool[:4]]
    assert [s.text for s in round_sources(pool, 3, 4)] == [s.text for s in pool[8:] + pool[:2]]  # wraps around
    assert all(not s.seen_by_sft for s in source_pool(train, None, 0))


# ---- rounds on a tiny model ------------------------------------------------------------------------------------

def _trainer(run_dir, data, vocab, out, reward=None, **kw) -> RFTTrainer:
    base = dict(model_name_or_path=run_dir, output_dir=str(out), rounds=2, sources_per_round=12,
                samples_per_source=4, min_reward=0.1, max_new_tokens=6, gen_batch_size=48, temperature=1.0,
                truncation_penalty=0.0, sft_learning_rate=3e-3, sft_batch_size=8, sft_epochs=2.0, sft_save_steps=1,
                eval_samples=0, report_to="none", fallback="skip", sft_loss="ce",
                sft_overrides=["finetuning=full", "max_target_length=16", "warmup_steps=0",
                               "lr_scheduler_type=constant", "disable_tqdm=true", "logging_steps=1"])
    base.update(kw)
    pool = source_pool(data.train, None, 0)
    return RFTTrainer(RFTConfig(**base), reward or CharShareReward("o"), pool, dev_pairs=data.dev[:2], vocab=vocab)


@pytest.fixture()
def setup(tiny_dir, toy_data, tmp_path):
    tsv, lex = toy_data
    data = load_detox_data(DataConfig(dataset=str(tsv), dev_size=4))
    vocab = VocabConfig(lexicon_dir=str(lex), lexicons=["ldnoobw"])
    return make_run(tiny_dir("llama"), tmp_path, "causal"), data, vocab


def test_toy_reward_rises_over_rounds_and_only_kept_samples_are_trained_on(setup, tmp_path):
    """Reward: the share of 'o' characters. Round r's mean over all samples is the model's own average: it
    rises because each round fine-tunes on the samples that scored >= min_reward."""
    run_dir, data, vocab = setup
    tr = _trainer(run_dir, data, vocab, tmp_path / "out", rounds=3, sources_per_round=16, samples_per_source=8,
                  min_reward=0.15, max_new_tokens=8, gen_batch_size=64)
    summary = tr.train()
    means = [s["reward_all"] for s in summary["log"]]
    assert means[0] < means[1] < means[2] and means[2] > 2 * means[0], means
    for r in (1, 2, 3):
        rows = [json.loads(line) for line in open(tmp_path / "out" / "rounds" / f"round-{r}.jsonl")]
        kept = [(row["source"], row["samples"][row["best"]]) for row in rows if row["kept"]]
        assert all(max(row["scores"]) >= 0.15 for row in rows if row["kept"])
        assert all(max(row["scores"]) < 0.15 for row in rows if not row["kept"])
        assert kept and len(kept) == summary["log"][r - 1]["kept"]
    trained = [json.loads(line) for line in open(tmp_path / "out" / "checkpoint-3" / "data.jsonl")]
    assert [(t["inputs"], t["outputs"]) for t in trained if t.get("split") == "train"] == kept
    assert sorted(os.listdir(tmp_path / "out")) == ["checkpoint-3", "rounds"]  # save_total_limit 1
    state = json.loads((tmp_path / "out" / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["round"] == 3 and state["model"] == "checkpoint-3" and len(state["log_history"]) == 3
    assert not [d for d in os.listdir(tmp_path / "out" / "checkpoint-3") if d.startswith("checkpoint-")]


def _weights(folder) -> dict:
    return load_file(os.path.join(folder, "model.safetensors"))


def test_resume_mid_round_gives_the_uninterrupted_result(setup, tmp_path, monkeypatch):
    """Stopped after round 1's sampling (before its SFT), then inside round 2's SFT after its first checkpoint:
    each resume picks the round up where it stopped, and the final model is bit for bit the uninterrupted one."""
    from sft.trainer import DetoxCausalTrainer

    run_dir, data, vocab = setup
    real_step = DetoxCausalTrainer.training_step
    steps: dict[str, int] = {}

    def counting(self, *args, **kwargs):
        name = os.path.basename(self.args.output_dir)
        steps[name] = steps.get(name, 0) + 1
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(DetoxCausalTrainer, "training_step", counting)
    straight = _trainer(run_dir, data, vocab, tmp_path / "a")
    straight.train()
    round2_steps = steps["checkpoint-2"]
    assert round2_steps > 2

    class Stop(Exception):
        pass

    b = _trainer(run_dir, data, vocab, tmp_path / "b")
    monkeypatch.setattr(b, "run_sft", lambda argv: (_ for _ in ()).throw(Stop("after sampling")))
    with pytest.raises(Stop):
        b.train()
    assert os.path.isfile(tmp_path / "b" / "checkpoint-1" / "selection.json")
    assert not os.path.exists(tmp_path / "b" / "checkpoint-1" / "trainer_state.json")  # round 1 is not complete

    def step(self, *args, **kwargs):
        if os.path.basename(self.args.output_dir) == "checkpoint-2" and self.state.global_step == 2:
            raise Stop("inside round 2's SFT")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(DetoxCausalTrainer, "training_step", step)
    sampled = []
    b = _trainer(run_dir, data, vocab, tmp_path / "b")
    real_sample = b.sample_round
    monkeypatch.setattr(b, "sample_round", lambda r, d: sampled.append(r) or real_sample(r, d))
    with pytest.raises(Stop):
        b.train(resume="latest")
    assert sampled == [2]  # round 1's samples were reused, round 2 sampled once
    assert os.path.isdir(tmp_path / "b" / "checkpoint-2" / "checkpoint-2")  # round 2's SFT checkpoint

    steps.clear()
    monkeypatch.setattr(DetoxCausalTrainer, "training_step", counting)
    b = _trainer(run_dir, data, vocab, tmp_path / "b")
    monkeypatch.setattr(b, "sample_round", lambda r, d: pytest.fail("no round needs sampling again"))
    resumed = b.train(resume="latest")
    assert steps == {"checkpoint-2": round2_steps - 2}  # round 2's SFT went on from its checkpoint after step 2
    assert resumed["rounds"] == 2
    assert [s["kept"] for s in resumed["log"]] == [s["kept"] for s in straight.state.log_history]
    want = _weights(tmp_path / "a" / "checkpoint-2" / "adapter")
    got = _weights(tmp_path / "b" / "checkpoint-2" / "adapter")
    start = _weights(os.path.join(run_dir, "merged"))
    assert want.keys() == got.keys() == start.keys()
    assert any(not torch.equal(want[k], start[k]) for k in want)  # two rounds of training moved the weights
    for k in want:
        assert torch.equal(want[k], got[k]), k


def test_entry_point_writes_a_loadable_run_folder_with_unseen_sources_first(setup, toy_data, tmp_path):
    from evaluation.infer import Detoxifier
    from rl.rft import main

    run_dir, data, _ = setup
    tsv, lex = toy_data
    used = load_detox_data(DataConfig(dataset=str(tsv), dev_size=4, max_train_pairs=8))
    (tmp_path / "sft_run" / "resolved_config.yaml").write_text(yaml.safe_dump(
        {"DataConfig": {"dataset": str(tsv), "dev_size": 4, "max_train_pairs": 8}}))
    out = tmp_path / "rft"
    argv = ["--model_name_or_path", run_dir, "--dataset", str(tsv), "--dev_size", "4", "--lexicon_dir", str(lex),
            "--lexicons", "ldnoobw", "--toxicity_backend", "lexicon", "--w_similarity", "0", "--w_fluency", "0",
            "--output_dir", str(out), "--rounds", "1", "--sources_per_round", "12", "--samples_per_source", "2",
            "--max_new_tokens", "4", "--eval_samples", "2", "--report_to", "none", "--sft_batch_size", "8",
            "--sft_overrides", "lora_r=4", "lora_alpha=8", "disable_tqdm=true"]
    assert main(argv) == 0
    rows = [json.loads(line) for line in open(out / "rounds" / "round-1.jsonl")]
    seen = {p.group for p in used.train}
    assert len(rows) == 12 and all(row["unseen_by_sft"] for row in rows)
    assert not {Pair(row["source"], "").group for row in rows} & seen
    card = json.loads((out / "detoxrl.json").read_text())
    assert card["stage"] == "rft" and card["parent"] == run_dir and card["prompt"]["task_prefix"] == "detoxify: "
    assert set(card["metrics"]["before"]) == set(card["metrics"]["after"]) and card["metrics"]["rounds"] == 1
    assert {"merged", "detoxrl.json", "README.md", "resolved_config.yaml", "checkpoint-1"} <= set(os.listdir(out))
    assert "| 1 |" in (out / "README.md").read_text()
    torch.testing.assert_close(_weights(out / "merged"), _weights(out / "checkpoint-1" / "merged"), rtol=0, atol=0)
    assert isinstance(Detoxifier.from_pretrained(str(out), device="cpu")("you are a stupid idiot"), str)


def test_ppo_entry_point_hands_algorithm_rft_over(monkeypatch, tmp_path):
    import rl.rft
    from rl.ppo import run, wants_rft

    seen = []
    monkeypatch.setattr(rl.rft, "run", lambda args: seen.append(args) or {"rounds": 0})
    cfg = os.path.join(ROOT, "configs", "rl", "rft.yaml")
    assert run(["--config", cfg, "--rounds", "2"]) == {"rounds": 0} and seen == [["--config", cfg, "--rounds", "2"]]
    assert wants_rft(["--algorithm", "rft"]) and wants_rft(["--algorithm=rft"])
    assert not wants_rft(["--config", cfg, "--algorithm", "ppo"])
    assert not wants_rft(["--config", os.path.join(ROOT, "configs", "rl", "default.yaml")])
    assert not wants_rft(["--config", str(tmp_path / "missing.yaml")])


def test_shipped_rft_config_parses_with_its_entry_point():
    from rl.rft import parse

    data, vocab, reward, cfg = parse(["--config", os.path.join(ROOT, "configs", "rl", "rft.yaml")])
    assert (cfg.algorithm, cfg.model_name_or_path, cfg.sft_loss) == ("rft", "outputs/sft/default", "toxic_mask")
    # each round fully fine-tunes at full fine-tuning's rate (docs/rft.md: the default config)
    assert (cfg.sft_learning_rate, cfg.sft_overrides, cfg.rounds) == (5e-5, ["finetuning=full"], 2)
    assert data.max_train_pairs is None and data.split_seed == 42  # every training source; the SFT run's dev split
    assert reward.form == "product" and cfg.rounds * cfg.sources_per_round * cfg.samples_per_source == 8192
    with pytest.raises(ValueError, match="sft_overrides: 'seed' is set by RFT itself"):
        RFTConfig(sft_overrides=["seed=3"])
    with pytest.raises(ValueError, match="samples_per_source must be >= 1"):
        RFTConfig(samples_per_source=0)
