"""``detox-pipeline`` on a tiny model: SFT -> PPO -> detox-eval, then reuse, then a changed SFT setting."""

from __future__ import annotations

import glob
import json
import os

import pytest
import yaml

from detoxrl.errors import ConfigError
from orchestration.pipeline import Pipeline, main, preset_path, run
from tests.grid_helpers import build_tiny_sentence_encoder, mtimes, tiny_eval_overrides, write_yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return build_tiny_sentence_encoder(str(tmp_path_factory.mktemp("encoder") / "st"))


def _preset(tmp_path, toy_data, encoder, lm, sft_lr=3e-4):
    tsv, lex = toy_data
    return write_yaml(tmp_path / "tiny.yaml", {
        "description": "tiny preset",
        "output_root": str(tmp_path / "pipe"),
        "common": {"dataset": str(tsv), "lexicon_dir": str(lex), "lexicons": ["ldnoobw"], "dev_size": 4,
                   "use_cpu": True, "report_to": "none", "disable_tqdm": True, "lora_r": 4, "lora_alpha": 8},
        "judges": [],
        "sft": {"config": os.path.join(ROOT, "configs", "sft", "default.yaml"),
                "overrides": {"model_name_or_path": lm, "max_steps": 2, "per_device_train_batch_size": 4,
                              "learning_rate": sft_lr, "eval_steps": 2, "save_steps": 1, "guard_samples": 2,
                              "guard_max_new_tokens": 4, "logging_steps": 1}},
        "ppo": {"config": os.path.join(ROOT, "configs", "rl", "default.yaml"),
                "overrides": {"toxicity_backend": "lexicon", "w_similarity": 0, "w_fluency": 0,
                              "rollout_batch_size": 4, "max_new_tokens": 4, "max_steps": 2, "save_steps": 1,
                              "critic_warmup_steps": 0, "eval_samples": 2, "sample_every": 0}},
        "eval": {"config": os.path.join(ROOT, "configs", "eval", "default.yaml"), "max_eval_sentences": 3,
                 "baselines": ["duplicate", "delete"], "overrides": tiny_eval_overrides(lex, encoder, lm)}})


def test_pipeline_runs_reuses_and_reruns_a_changed_stage(tiny_dir, toy_data, tmp_path, encoder, capsys):
    lm = tiny_dir("llama")
    preset = _preset(tmp_path, toy_data, encoder, lm)
    root = tmp_path / "pipe"

    # 1. first run: every stage runs; one table with the baselines, SFT and PPO
    summary = run(["--config", preset])
    assert {k: v["action"] for k, v in summary["stages"].items()} == {
        "judges": "reused", "sft": "ran", "ppo": "ran", "eval": "ran"}
    report = json.loads((root / "eval" / "eval.json").read_text())
    assert list(report["systems"]) == ["duplicate", "delete", "sft", "ppo"]
    assert report["test_set"]["sentences"] == 3
    out = capsys.readouterr().out
    assert "| sft |" in out and "| ppo |" in out and "| duplicate |" in out
    ppo_card = json.loads((root / "ppo" / "detoxrl.json").read_text())
    assert ppo_card["stage"] == "ppo" and ppo_card["parent"] == str(root / "sft")
    for name in ("sft", "ppo", "eval"):
        assert (root / "logs" / f"{name}.log").stat().st_size > 0
    assert json.loads((root / "pipeline.json").read_text())["stages"]["eval"]["action"] == "ran"

    # 2. the same command again: nothing runs, nothing is rewritten
    stamps = {name: mtimes(root / name) for name in ("sft", "ppo", "eval")}
    summary = run(["--config", preset])
    assert {k: v["action"] for k, v in summary["stages"].items()} == {
        "judges": "reused", "sft": "reused", "ppo": "reused", "eval": "reused"}
    assert {name: mtimes(root / name) for name in ("sft", "ppo", "eval")} == stamps
    assert "| ppo |" in capsys.readouterr().out  # the table is printed from the saved eval.json

    # 3. an interrupted PPO stage resumes from its checkpoint (final files gone, checkpoint-1 kept)
    for name in ("detoxrl.json", "resolved_config.yaml"):
        os.remove(root / "ppo" / name)
    summary = run(["--config", preset])
    actions = {k: v["action"] for k, v in summary["stages"].items()}
    assert (actions["sft"], actions["ppo"], actions["eval"]) == ("reused", "resumed", "ran")
    assert "resumed from" in (root / "logs" / "ppo.log").read_text()

    # 4. a changed SFT setting: SFT runs again from scratch, and so do PPO and eval (their input changed)
    sft_card = (root / "sft" / "detoxrl.json").read_text()
    preset = _preset(tmp_path, toy_data, encoder, lm, sft_lr=1e-4)
    summary = run(["--config", preset])
    assert {k: v["action"] for k, v in summary["stages"].items()} == {
        "judges": "reused", "sft": "ran", "ppo": "ran", "eval": "ran"}
    assert "learning_rate: 0.0003 -> 0.0001" in summary["stages"]["sft"]["reason"]
    assert "its input changed" in summary["stages"]["ppo"]["reason"]
    assert (root / "sft" / "detoxrl.json").read_text() != sft_card
    assert (root / "sft.previous" / "detoxrl.json").read_text() == sft_card  # the old run, moved aside


def test_two_fresh_runs_of_a_seeded_preset_print_the_same_table(tiny_dir, toy_data, tmp_path, encoder):
    """``common: {seed: S}`` seeds SFT (its adapter too), PPO and the best-of-n eval row: whatever the process did
    before (here: torch's RNG left in two different states), a fresh run prints the same table."""
    import torch

    _, lex = toy_data
    rerank = write_yaml(tmp_path / "rerank.yaml", {"toxicity_backend": "lexicon", "lexicon_dir": str(lex),
                                                   "lexicons": ["ldnoobw"], "similarity_model": encoder,
                                                   "w_fluency": 0, "reward_device": "cpu"})
    raw = yaml.safe_load(open(_preset(tmp_path, toy_data, encoder, tiny_dir("llama"))))
    raw["common"]["seed"] = 7
    raw["eval"]["best_of"] = 2
    raw["eval"]["overrides"]["rerank_config"] = rerank
    tables = []
    for i in (1, 2):
        raw["output_root"] = str(tmp_path / f"fresh{i}")
        torch.manual_seed(1000 * i)
        tables.append(run(["--config", write_yaml(tmp_path / f"fresh{i}.yaml", raw)])["table"])
    assert "| ppo-best-of-2 |" in tables[0] and "sent/s" not in tables[0]
    assert tables[0] == tables[1]


def test_preset_output_dir_shares_a_stand_alone_run(tiny_dir, toy_data, tmp_path, encoder):
    """sft.output_dir / ppo.output_dir: the stages write where the stand-alone commands do, and a finished
    stand-alone run of the same config is reused; --output_root puts every stage back under it."""
    from sft import train as sft_train

    raw = yaml.safe_load(open(_preset(tmp_path, toy_data, encoder, tiny_dir("llama"))))
    raw["sft"]["output_dir"] = str(tmp_path / "alone" / "sft")
    raw["ppo"]["output_dir"] = str(tmp_path / "alone" / "ppo")
    preset = write_yaml(tmp_path / "shared.yaml", raw)
    p = Pipeline(preset)
    assert p.dirs == {"sft": str(tmp_path / "alone" / "sft"), "ppo": str(tmp_path / "alone" / "ppo"),
                      "eval": str(tmp_path / "pipe" / "eval")}
    assert p.parse("ppo")[2].model_name_or_path == p.dirs["sft"]
    assert p.stage("sft").plan()[0] == "fresh"
    from detoxrl.config import field_argv

    cli = ["--config", p.sections["sft"]["config"]]  # what `sft/train.py --config ... --output_dir alone/sft` does
    for key, value in p.values("sft").items():
        cli += field_argv(key, value)
    sft_train.run(cli)
    assert p.stage("sft").plan() == ("reuse", "finished with the same config")

    other = Pipeline(preset, output_root=str(tmp_path / "elsewhere"))
    assert other.dirs["sft"] == str(tmp_path / "elsewhere" / "sft")
    raw["sft"]["output_dir"] = 3
    with pytest.raises(ConfigError, match="sft: output_dir must be a folder path"):
        Pipeline(write_yaml(tmp_path / "bad.yaml", raw))


def test_preset_errors_are_one_line(tmp_path, capsys):
    sft = os.path.join(ROOT, "configs", "sft", "default.yaml")
    cases = [({"ppo": {"overrides": {"model_name_or_path": "x"}}}, "'model_name_or_path' is set by detox-pipeline"),
             ({"common": {"no_such_field": 1}}, "common: no stage has a field 'no_such_field'"),
             ({"sft": {"config": sft, "overrides": {"learnin_rate": 1}}}, "learnin_rate"),
             ({"stages": []}, "unknown key 'stages'"),
             ({"eval": {"config": "nope.yaml"}}, "config 'nope.yaml' not found"),
             ({"eval": {"best_of": 1}}, "eval: best_of must be an integer >= 2"),
             ({"eval": {"best_of": "8"}}, "eval: best_of must be an integer >= 2")]
    for change, message in cases:
        path = write_yaml(tmp_path / "p.yaml", {"output_root": str(tmp_path / "o"), **change})
        with pytest.raises(ConfigError, match=message):
            Pipeline(path)
    assert main(["--preset", "no_such_preset"]) == 2
    assert "presets: full, quick" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(glob.glob(os.path.join(ROOT, "configs", "pipeline", "*.yaml"))),
                         ids=os.path.basename)
def test_shipped_presets_parse(path):
    name = os.path.basename(path)[:-5]
    p = Pipeline(preset_path(name, None))
    assert p.root == f"outputs/pipeline/{name}"
    assert p.parse("ppo")[2].model_name_or_path == p.dirs["sft"]
    systems = p.parse("eval")[0].systems
    assert systems[-3:] == [f"sft={p.dirs['sft']}", f"ppo={p.dirs['ppo']}",
                            f"ppo-best-of-{p.best_of}={p.dirs['ppo']}@best_of={p.best_of}"] and "duplicate" in systems
    assert {p.parse(stage)[i].seed for stage, i in (("sft", 4), ("ppo", 4), ("eval", 5))} == {42}  # common: seed
    if name == "full":  # it shares the stand-alone default runs, so either one reuses the other
        assert (p.dirs["sft"], p.dirs["ppo"]) == ("outputs/sft/default", "outputs/rl/default")
        assert p.parse("sft")[4].output_dir == "outputs/sft/default"
    assert p.best_of == 8
    if name == "quick":
        sft_args, sft_model = p.parse("sft")[4], p.parse("sft")[2]
        assert (sft_args.max_steps, sft_args.per_device_train_batch_size, sft_args.loss) == (80, 16, "ce")
        assert (sft_model.finetuning, sft_args.learning_rate) == ("full", 5e-5)
        ppo = p.parse("ppo")[4]  # configs/rl/value_head.yaml: 16 rollouts a step, the value head
        assert p.parse("sft")[0].max_train_pairs == 1280 and (ppo.max_steps, ppo.rollout_batch_size) == (10, 16)
        assert ppo.value_features == "hidden"
