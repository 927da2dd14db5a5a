"""``orchestration/stage.py`` (reuse / resume / fresh decisions, output capture) and named cache classifiers."""

from __future__ import annotations

import logging
import os
import sys

import pytest
import yaml

from detoxrl.errors import UserError
from orchestration.stage import RESOLVED, Stage, capture, comparable, config_diff, fingerprint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CFG = {"Train": {"learning_rate": 0.1, "max_steps": 4, "report_to": "none", "save_steps": 2}}


def _finish(folder, config=CFG):
    (folder / RESOLVED).write_text(yaml.safe_dump(config))
    (folder / "detoxrl.json").write_text('{"metrics": {"train_minutes": 1.0}}')


def test_comparable_drops_logging_and_checkpoint_fields():
    a = comparable(CFG)
    b = comparable({"Train": {**CFG["Train"], "report_to": "tensorboard", "save_steps": 50,
                              "resume_from_checkpoint": "latest"}})
    assert a == b == {"Train": {"learning_rate": 0.1, "max_steps": 4}}
    assert config_diff(a, comparable({"Train": {"learning_rate": 0.2, "max_steps": 4}})) == \
        "Train.learning_rate: 0.1 -> 0.2"


def test_plan_reuse_resume_fresh(tmp_path):
    out = tmp_path / "run"
    stage = Stage("t", str(out), comparable(CFG), {"sft": "abc"}, (RESOLVED, "detoxrl.json"))
    assert stage.plan() == ("fresh", "no output yet")
    stage.prepare("fresh")
    assert stage.plan()[0] == "fresh"  # marker but no checkpoint
    (out / "checkpoint-2").mkdir()
    (out / "checkpoint-2" / "trainer_state.json").write_text("{}")
    assert stage.plan() == ("resume", "unfinished; resuming from checkpoint-2")
    other = Stage("t", str(out), comparable({"Train": {"learning_rate": 0.3, "max_steps": 4}}), {"sft": "abc"})
    action, reason = other.plan()
    assert action == "fresh" and "learning_rate: 0.1 -> 0.3" in reason
    _finish(out)
    assert stage.plan() == ("reuse", "finished with the same config")
    assert stage.plan(force=True)[0] == "fresh"
    changed_input = Stage("t", str(out), comparable(CFG), {"sft": "xyz"}, (RESOLVED, "detoxrl.json"))
    action, reason = changed_input.plan()
    assert action == "fresh" and "sft abc -> xyz" in reason
    # a fresh start moves checkpoints and results aside, once
    changed_input.prepare("fresh")
    assert sorted(os.listdir(tmp_path / "run.previous")) == ["checkpoint-2", "detoxrl.json", RESOLVED, "stage.yaml"]
    assert os.listdir(out) == ["stage.yaml"]


def test_prepare_keeps_a_folder_with_only_logs(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "train.log").write_text("attempt 1 failed\n")
    Stage("t", str(out), {}).prepare("fresh")
    assert (out / "train.log").read_text() == "attempt 1 failed\n" and not (tmp_path / "run.previous").exists()


def test_fingerprint_follows_the_card(tmp_path):
    run = tmp_path / "r"
    run.mkdir()
    _finish(run)
    first = fingerprint(str(run))
    assert first == fingerprint(str(run)) and first.startswith("detoxrl.json:")
    (run / "detoxrl.json").write_text('{"metrics": {"train_minutes": 2.0}}')
    second = fingerprint(str(run))
    assert second != first
    os.utime(run / "detoxrl.json", ns=(1, 1))  # rewritten with the same content: still a new run
    assert fingerprint(str(run)) != second
    assert fingerprint("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_parse_mapping_reads_values_as_the_yaml_parser_reads_a_file(tmp_path):
    """The stages set each other's fields through ``DetoxParser.parse_mapping``: the same configs as a YAML file
    holding those values, aliases and nested names included; the mapping wins over its config file."""
    from detoxrl.errors import ConfigError
    from rl.ppo import parse, parser

    base = os.path.join(ROOT, "configs", "rl", "default.yaml")
    values = {"w_fluency": 0, "merge_adapter": False, "lora_target_modules": ["q_proj", "v_proj"],
              "reward": {"weights": {"toxicity": 2}}, "critic": {"shrink": 0.25}, "max_new_tokens_ratio": None,
              "output_dir": str(tmp_path / "out")}
    yaml_file = tmp_path / "same.yaml"
    yaml_file.write_text(f"extends: {base}\n" + yaml.safe_dump(values))
    from detoxrl.config import resolved_config_dict

    assert resolved_config_dict(*parser().parse_mapping(values, base)) == \
        resolved_config_dict(*parse(["--config", str(yaml_file)]))
    data, vocab, model, reward, args = parser().parse_mapping(values, base)
    assert (reward.w_fluency, reward.w_toxicity, args.value_shrink, args.merge_adapter, args.max_new_tokens_ratio,
            model.lora_target_modules) == (0, 2, 0.25, False, None, ["q_proj", "v_proj"])
    with pytest.raises(ConfigError, match="unknown field 'w_fluncy'; did you mean 'w_fluency'"):
        parser().parse_mapping({"w_fluncy": 0}, base)
    with pytest.raises(ConfigError, match="field 'w_toxicity' is a mapping"):
        parser().parse_mapping({"w_toxicity": {"a": 1}}, base)


def test_capture_tees_output_and_logs_into_the_file(tmp_path, capsys):
    path = tmp_path / "logs" / "s.log"
    with pytest.raises(RuntimeError):
        with capture(str(path)):
            print("to stdout")
            sys.stderr.write("progress\r")
            logging.getLogger("detoxrl").warning("a log line")
            raise RuntimeError("boom")
    text = path.read_text()
    assert "to stdout" in text and "progress" in text and "a log line" in text and "RuntimeError: boom" in text
    assert "to stdout" in capsys.readouterr().out  # still on the console
    print("after")
    assert "after" not in path.read_text()


def test_named_cache_classifiers_resolve_to_the_cache(tmp_path, monkeypatch):
    from rewards.toxicity.default import resolve_classifier_ref, train_command

    monkeypatch.setenv("DETOXRL_CACHE", str(tmp_path))
    folder = tmp_path / "models" / "detoxrl-toxicity-minilm-external"
    assert train_command("detoxrl-toxicity-minilm-external") == (
        f"detoxrl train-toxicity --use_paradetox false --seed 1 --output_dir {folder}")
    assert resolve_classifier_ref("detoxrl-toxicity-minilm-external", train_missing=False) == str(folder)
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"")
    assert resolve_classifier_ref("detoxrl-toxicity-minilm-external") == str(folder)
    assert resolve_classifier_ref("s-nlp/roberta_toxicity_classifier") == "s-nlp/roberta_toxicity_classifier"
    with pytest.raises(UserError, match="`detoxrl train-toxicity --output_dir .*detoxrl-toxicity-minilm-x` once"):
        resolve_classifier_ref("detoxrl-toxicity-minilm-x")
