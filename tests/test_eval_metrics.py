"""detox-eval numbers on hand-made predictions: J, ChrF, BLEU, copy/empty rate, the report files."""

from __future__ import annotations

import csv
import json
import os

import pytest

from evaluation.baselines import delete, delete_toxic, duplicate
from evaluation.predictions import read_predictions
from evaluation.report import markdown_table, sentence_rows, system_scores, write_reports
from detoxrl.errors import UserError
from detoxrl.vocab import ToxicLexicon


def test_system_scores_by_hand():
    sources = ["you are an idiot", "shut up", "this is crap"]
    outputs = ["You are an IDIOT!", "", "abc"]
    references = [["you are wrong"], ["please stop"], ["abcd", "xyz"]]
    judged = {"STA": [0.2, 1.0, 0.9], "SIM": [1.0, 0.0, 0.5], "FL": [0.9, 0.0, 0.8], "FL_LM": [0.5, 1.0, 0.1]}
    s = system_scores(sources, outputs, references, judged, seconds=1.5)
    assert s["STA"] == pytest.approx(2.1 / 3)
    assert s["J"] == pytest.approx((0.2 * 1.0 * 0.9 + 0 + 0.9 * 0.5 * 0.8) / 3)  # (0.18 + 0.36) / 3 = 0.18
    assert s["J_LM"] == pytest.approx((0.2 * 1.0 * 0.5 + 0 + 0.9 * 0.5 * 0.1) / 3)  # (0.1 + 0.045) / 3
    assert s["FL_LM"] == pytest.approx(1.6 / 3)
    assert s["copy"] == pytest.approx(1 / 3)  # only the first output copies its source
    assert s["empty"] == pytest.approx(1 / 3)
    assert s["len_ratio"] == pytest.approx((17 + 0 + 3) / (16 + 7 + 12))
    assert s["sent/s"] == pytest.approx(2.0)


def test_chrf_by_hand():
    # hyp "ab" vs ref "abc" (chrF, beta 2, orders where both sides have n-grams: 1 and 2):
    # P1 = 2/2, R1 = 2/3; P2 = 1/1, R2 = 1/2 -> avg P = 1, avg R = 7/12
    # F = 5 * 1 * 7/12 / (4 * 1 + 7/12) = 35/55 = 7/11; the second reference "xyz" shares nothing
    judged = {"STA": [1.0], "SIM": [1.0], "FL": [1.0], "FL_LM": [1.0]}
    s = system_scores(["src"], ["ab"], [["abc", "xyz"]], judged, seconds=None)
    assert s["ChrF"] == pytest.approx(7 / 11)
    assert s["sent/s"] is None
    exact = system_scores(["src"], ["the cat sat on the mat"], [["no", "the cat sat on the mat"]], judged, None)
    assert exact["ChrF"] == pytest.approx(1.0) and exact["BLEU"] == pytest.approx(1.0)
    assert exact["ChrF++"] == pytest.approx(1.0)


def test_baselines():
    lex = ToxicLexicon(["fucking", "idiot", "piece of shit"])
    assert duplicate(["a", "b"]) == ["a", "b"]
    assert delete_toxic("you are a fucking idiot .", lex) == "you are a."
    assert delete_toxic("what a piece of shit!", lex) == "what a!"
    assert delete(["nothing to remove here"], lex) == ["nothing to remove here"]


def test_predictions_files(tmp_path):
    sources = ["you idiot", "shut up"]
    txt = tmp_path / "p.txt"
    txt.write_text("you person\n\n", encoding="utf-8")
    assert read_predictions(str(txt), sources) == ["you person", ""]
    tsv = tmp_path / "p.tsv"
    tsv.write_text("source\toutput\nShut up!\tplease stop\nyou idiot\tyou person\nextra\trow\n", encoding="utf-8")
    assert read_predictions(str(tsv), sources) == ["you person", "please stop"]
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"inputs": "you idiot", "prediction": "hi"}\n', encoding="utf-8")
    with pytest.raises(UserError, match="no output for 1 of 2"):
        read_predictions(str(jsonl), sources)
    txt.write_text("only one line\n", encoding="utf-8")
    with pytest.raises(UserError, match="has 1 lines but the test set has 2"):
        read_predictions(str(txt), sources)


def test_report_files(tmp_path):
    sources, outputs, refs = ["you idiot"], ["you person"], [["you are wrong", "hey you"]]
    judged = {"STA": [0.9], "SIM": [0.5], "FL": [0.8], "FL_LM": [0.4]}
    scores = system_scores(sources, outputs, refs, judged, seconds=0.5)
    report = {"test_set": {"source": "x.tsv", "split": "dev", "sentences": 1, "references": 2},
              "judges": {"STA": "1 - lexicon"}, "generation": {}, "systems": {"mine": {"scores": scores}}}
    paths = write_reports(str(tmp_path / "out"), report, sentence_rows("mine", sources, outputs, refs, judged))
    data = json.loads(open(paths["json"], encoding="utf-8").read())
    assert data["systems"]["mine"]["scores"]["J"] == pytest.approx(0.36)
    table = open(paths["markdown"], encoding="utf-8").read()
    assert "| mine | 0.900 | 0.500 | 0.800 | 0.360 | 0.400 | 0.180 |" in table
    assert "FL_LM and J_LM use the LM fluency judge" in table
    with open(paths["tsv"], encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert rows[0]["output"] == "you person" and rows[0]["J"] == "0.3600" and rows[0]["J_LM"] == "0.1800"
    assert rows[0]["references"] == "you are wrong ||| hey you"
    assert sorted(os.listdir(tmp_path / "out")) == ["eval.json", "eval.md", "eval_sentences.tsv"]
    assert markdown_table({}).count("\n") == 1


def test_judge_config_is_separate_from_the_reward():
    from rewards.fluency import FluencyConfig
    from evaluation.judges import EvalJudgesConfig
    from rewards.toxicity import ToxicityConfig

    with pytest.raises(ValueError, match="judge_fluency_scale must be > 0"):
        EvalJudgesConfig(judge_fluency_scale=0)
    cfg = EvalJudgesConfig(judge_toxicity_backend="lexicon", judge_fluency_backend="hf", judge_batch_size=8)
    assert cfg.part(ToxicityConfig).toxicity_batch_size == 8
    assert cfg.part(FluencyConfig).fluency_model == "textattack/roberta-base-CoLA"
    assert cfg.describe()["STA"].startswith("1 - lexicon")


def test_shipped_eval_configs_parse():
    import glob

    from detoxrl.config import DetoxParser
    from detoxrl.data import DataConfig
    from detoxrl.generate import GenerationSettings
    from detoxrl.paths import PROJECT_ROOT
    from detoxrl.prompts import PromptConfig
    from detoxrl.vocab import VocabConfig
    from evaluation.evaluate import EvalConfig
    from evaluation.judges import EvalJudgesConfig

    files = glob.glob(os.path.join(PROJECT_ROOT, "configs", "eval", "*.yaml"))
    assert len(files) >= 2
    for path in files:
        parser = DetoxParser([EvalConfig, EvalJudgesConfig, DataConfig, VocabConfig, PromptConfig, GenerationSettings],
                             prog="detox-eval")
        cfg, judges, *_ = parser.parse(["--config", path])
        assert cfg.systems and judges.judge_batch_size > 0
