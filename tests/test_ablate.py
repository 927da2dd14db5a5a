"""``detox-ablate`` on a tiny model: the grid's files, resume/reuse, failures recorded, shipped configs."""

from __future__ import annotations

import csv
import glob
import importlib.util
import os
import shutil

import pytest

from detoxrl.errors import ConfigError
from orchestration.ablate import eval_values, load_config, main, ppo_values, run
from tests.grid_helpers import build_tiny_sentence_encoder, mtimes, tiny_eval_overrides, write_yaml
from tests.rl_helpers import make_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return build_tiny_sentence_encoder(str(tmp_path_factory.mktemp("encoder") / "st"))


def _grid(tmp_path, sft, toy_data, encoder, lm, variants, references=("start", "duplicate")):
    tsv, lex = toy_data
    shared = {"model_name_or_path": sft, "dataset": str(tsv), "lexicon_dir": str(lex), "lexicons": ["ldnoobw"],
              "dev_size": 4, "use_cpu": True, "report_to": "tensorboard", "toxicity_backend": "lexicon",
              "w_similarity": 0, "w_fluency": 0, "finetuning": "lora", "lora_r": 4, "lora_alpha": 8,
              "lora_target_modules": ["all-linear"], "rollout_batch_size": 4, "max_new_tokens": 4, "max_steps": 2,
              "critic_warmup_steps": 0, "save_steps": 1, "eval_samples": 2, "sample_every": 0, "disable_tqdm": True, "seed": 7}
    return write_yaml(tmp_path / "grid.yaml", {
        "description": "tiny grid", "base_config": os.path.join(ROOT, "configs", "rl", "default.yaml"),
        "output_dir": str(tmp_path / "ablation"), "overrides": shared, "final_window": 2,
        "eval": {"config": os.path.join(ROOT, "configs", "eval", "default.yaml"), "max_eval_sentences": 3,
                 "overrides": {"dataset": str(tsv), "dev_size": 4, **tiny_eval_overrides(lex, encoder, lm)},
                 "references": list(references)},
        "variants": variants})


def _rows(path):
    with open(path, encoding="utf-8") as fh:
        return {r["variant"]: r for r in csv.DictReader(fh)}


def test_grid_results_resume_and_failures(tiny_dir, toy_data, tmp_path, encoder):
    lm = tiny_dir("llama")
    sft = make_run(lm, tmp_path, "causal")
    variants = [{"name": "product", "overrides": {}},
                {"name": "weighted_sum", "overrides": {"form": "weighted_sum"}},
                {"name": "norm_none", "overrides": {"reward_norm": "none"}},
                {"name": "typo", "overrides": {"w_toxicty": 2}},  # fails at parse time
                {"name": "broken_judge", "overrides": {"toxicity_backend": "hf",  # fails inside the run
                                                       "toxicity_model": str(tmp_path / "no_classifier")}}]
    cfg = _grid(tmp_path, sft, toy_data, encoder, lm, variants)
    out = tmp_path / "ablation"

    # 1. the whole grid: the good variants finish, the two bad ones are recorded and do not stop the others
    assert main(["--config", cfg]) == 1  # 1: some variant failed
    rows = _rows(out / "results.csv")
    assert list(rows) == ["product", "weighted_sum", "norm_none", "typo", "broken_judge", "start", "duplicate"]
    for name in ("product", "weighted_sum", "norm_none"):
        r = rows[name]
        assert (r["status"], r["action"]) == ("ok", "trained"), r
        assert 0 <= float(r["J"]) <= 1 and r["STA"] and r["SIM"] and r["FL"] and r["ChrF"] and r["copy"]
        assert r["steps"] == "2" and r["after_reward_total"] and r["train_reward_total"]
        assert os.path.isfile(out / "runs" / name / "eval" / "eval.json")
        assert "rl/ppo.py" in (out / "runs" / name / "train.log").read_text()
        assert "detox-eval" in (out / "runs" / name / "eval.log").read_text()
    assert rows["weighted_sum"]["overrides"] == "form=weighted_sum"
    assert rows["typo"]["status"] == "failed" and "'w_toxicty'; did you mean 'w_toxicity'" in rows["typo"]["error"]
    assert rows["broken_judge"]["status"] == "failed" and "reward component 'toxicity'" in rows["broken_judge"]["error"]
    assert "Traceback" in (out / "runs" / "broken_judge" / "train.log").read_text()
    assert rows["start"]["status"] == rows["duplicate"]["status"] == "reference"
    assert float(rows["duplicate"]["copy"]) == 1.0
    md = (out / "results.md").read_text()
    assert md.count("| failed |") == 2 and "| product | ok |" in md and "`typo`:" in md
    assert "Judges:" in md and "- FL: sentence ChrF against the human references" in md  # the table says who scored
    if importlib.util.find_spec("matplotlib"):
        assert (out / "pareto.png").stat().st_size > 1000 and "pareto.png: STA against SIM" in md
    else:  # the table still comes, with a note that says what to install
        assert "matplotlib is not installed" in md

    # 2. the same command again: nothing is retrained or re-evaluated
    before = {n: mtimes(out / "runs" / n) for n in ("product", "weighted_sum", "norm_none")}
    before["references"] = mtimes(out / "references")
    assert main(["--config", cfg]) == 1
    rows = _rows(out / "results.csv")
    assert [rows[n]["action"] for n in ("product", "weighted_sum", "norm_none")] == ["reused"] * 3
    for name, stamp in before.items():
        folder = out / ("references" if name == "references" else f"runs/{name}")
        assert mtimes(folder) == stamp, name

    # 3. an interrupted variant resumes from its checkpoint; --rerun trains one again from scratch
    ws = out / "runs" / "weighted_sum"
    for name in ("adapter", "merged", "eval"):
        shutil.rmtree(ws / name)
    for name in ("detoxrl.json", "resolved_config.yaml", "value_head.safetensors", "README.md"):
        os.remove(ws / name)
    assert (ws / "checkpoint-1").is_dir()
    result = run(["--config", cfg, "--only", "weighted_sum", "norm_none", "--rerun", "norm_none",
                  "--no_references"])
    rows = {r["variant"]: r for r in result["rows"]}
    assert (rows["weighted_sum"]["status"], rows["weighted_sum"]["action"]) == ("ok", "resumed")
    assert "at step 1" in (ws / "train.log").read_text()
    assert (rows["norm_none"]["status"], rows["norm_none"]["action"]) == ("ok", "trained")
    assert os.path.isdir(out / "runs" / "norm_none.previous")
    assert rows["product"]["status"] == "ok" and rows["product"]["action"] == "-"  # not run, still listed
    assert mtimes(out / "runs" / "product") == before["product"]


def test_changed_override_retrains_only_that_variant(tiny_dir, toy_data, tmp_path, encoder):
    lm = tiny_dir("llama")
    sft = make_run(lm, tmp_path, "causal")
    variants = [{"name": "a", "overrides": {}}, {"name": "b", "overrides": {"kl_coef": 0.1}}]
    cfg = _grid(tmp_path, sft, toy_data, encoder, lm, variants, references=())
    assert main(["--config", cfg]) == 0
    out = tmp_path / "ablation"
    stamp_a = mtimes(out / "runs" / "a")
    variants[1]["overrides"]["kl_coef"] = 0.2
    cfg = _grid(tmp_path, sft, toy_data, encoder, lm, variants, references=())
    rows = {r["variant"]: r for r in run(["--config", cfg])["rows"]}
    assert rows["a"]["action"] == "reused" and rows["b"]["action"] == "trained"
    assert mtimes(out / "runs" / "a") == stamp_a
    assert "kl_coef: 0.1 -> 0.2" in (out / "runs" / "b" / "train.log").read_text()


def test_grid_config_errors_are_one_line(tmp_path):
    base = {"base_config": os.path.join(ROOT, "configs", "rl", "default.yaml"), "output_dir": str(tmp_path / "o"),
            "variants": [{"name": "a", "overrides": {}}]}
    cases = [({"variant": []}, "unknown key 'variant'"),
             ({"variants": [{"name": "a"}, {"name": "a"}]}, "two variants are named 'a'"),
             ({"variants": [{"name": "a/b"}]}, "name 'a/b' must be"),
             ({"overrides": {"output_dir": "x"}}, "'output_dir' is set by detox-ablate"),
             ({"base_config": "nope.yaml"}, "base_config: config 'nope.yaml' not found"),
             ({"eval": {"max_eval_sentences": 0}}, "max_eval_sentences must be"),
             ({"variants": []}, "non-empty list")]
    for change, message in cases:
        path = write_yaml(tmp_path / "g.yaml", {**base, **change})
        with pytest.raises(ConfigError, match=message):
            load_config(path)
    path = write_yaml(tmp_path / "g.yaml", {**base, "overrides": {"max_stepz": 3}})
    assert main(["--config", path]) == 2  # a typo in the shared overrides stops the grid before any run


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "ablation", "*.yaml"))),
                         ids=os.path.basename)
def test_shipped_grids_parse(path):
    from evaluation.evaluate import parser as eval_parser
    from rl.ppo import parser as ppo_parser

    cfg = load_config(path)
    assert len(cfg.variants) >= 4 and cfg.output_dir.startswith("outputs/ablation/")
    forms, norms = set(), set()
    for v in cfg.variants:
        _, _, _, reward, ppo = ppo_parser().parse_mapping(ppo_values(cfg, v.overrides, "/tmp/unused"), cfg.base_config)
        forms.add(reward.form)
        norms.add(ppo.reward_norm)
    assert forms == {"product", "weighted_sum"} and norms == {"running", "none"}
    if path.endswith("reward.yaml"):  # the grid's documented runs: the value head, 30 steps of 16 x 1
        assert (ppo.value_features, ppo.rollout_batch_size, ppo.samples_per_prompt, ppo.max_steps) == ("hidden", 16, 1, 30)
    eval_parser().parse_mapping(eval_values(cfg, ["duplicate"], "/tmp/unused"), cfg.eval_config)
