"""The YAML+CLI parser: YAML values are validated like flags, CLI wins, errors name file and field."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from detoxrl.config import DetoxParser, config_value, resolved_config_dict, save_resolved_config
from detoxrl.errors import ConfigError
from detoxrl.models.config import DetoxModelConfig


@dataclass
class Toy:
    learning_rate: float = field(default=1e-3, metadata={"help": "lr"})
    loss: Literal["ce", "toxic_penalty"] = field(default="ce", metadata={"help": "loss"})
    steps: int = field(default=10, metadata={"help": "steps"})
    use_x: bool = field(default=False, metadata={"help": "x"})
    names: list[str] = field(default_factory=lambda: ["a"], metadata={"help": "names"})
    note: str | None = field(default="hi", metadata={"help": "note"})
    ridge: float | None = field(default=None, metadata={"help": "ridge"})

    def __post_init__(self):
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0 (got {self.steps})")


def _yaml(tmp_path, data, name="c.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return str(path)


def test_yaml_then_cli_override(tmp_path):
    path = _yaml(tmp_path, {"learning_rate": 0.5, "loss": "toxic_penalty", "use_x": True, "names": ["q", "v"], "note": None})
    (toy,) = DetoxParser([Toy], prog="t").parse(["--config", path, "--learning_rate", "1e-4"])
    assert toy.learning_rate == 1e-4 and toy.loss == "toxic_penalty" and toy.use_x is True
    assert toy.names == ["q", "v"] and toy.note is None and toy.steps == 10


def test_null_unsets_a_field_over_the_yaml(tmp_path):
    """``--field null`` unsets a field typed ``X | None`` whatever the YAML gave; the last value wins."""
    path = _yaml(tmp_path, {"ridge": 0.03, "steps": 3})
    parse = lambda *argv: DetoxParser([Toy], prog="t").parse(["--config", path, *argv])[0]  # noqa: E731
    assert parse().ridge == 0.03
    assert parse("--ridge", "null").ridge is None and parse("--ridge=None", "--steps", "4").steps == 4
    assert parse("--ridge", "null", "--ridge", "0.1").ridge == 0.1
    assert parse("--note", "null", "--ridge", "0.2").note is None and parse("--ridge", "0.2").note == "hi"
    with pytest.raises(ConfigError, match=r"--steps.*null"):  # not nullable: argparse's error, one line
        parse("--steps", "null")


def test_extends_reads_the_base_first_and_the_file_wins(tmp_path):
    """``extends`` (relative to the file's folder) gives the base's fields; the file's own keys, null included,
    and then the command line win. Errors name the file the bad key is in."""
    (tmp_path / "sub").mkdir()
    _yaml(tmp_path, {"learning_rate": 0.5, "loss": "toxic_penalty", "ridge": 0.03, "steps": 2}, "base.yaml")
    child = _yaml(tmp_path, {"extends": "../base.yaml", "ridge": None, "steps": 4}, "sub/child.yaml")
    (toy,) = DetoxParser([Toy], prog="t").parse(["--config", child, "--loss", "ce"])
    assert (toy.learning_rate, toy.loss, toy.ridge, toy.steps) == (0.5, "ce", None, 4)
    assert config_value(child, "loss") == "toxic_penalty" and config_value(child, "steps") == 4
    assert config_value(child, "missing", "no") == "no"
    base = _yaml(tmp_path, {"learnin_rate": 1}, "base.yaml")
    with pytest.raises(ConfigError, match=rf"{base}: unknown field 'learnin_rate'"):
        DetoxParser([Toy], prog="t").parse(["--config", child])
    _yaml(tmp_path, {"extends": "sub/child.yaml"}, "base.yaml")
    with pytest.raises(ConfigError, match="leads back to itself"):
        DetoxParser([Toy], prog="t").parse(["--config", child])
    gone = _yaml(tmp_path, {"extends": "nowhere.yaml"}, "gone.yaml")
    with pytest.raises(ConfigError, match=r"gone\.yaml: extends 'nowhere.yaml': no file .*nowhere\.yaml"):
        DetoxParser([Toy], prog="t").parse(["--config", gone])


def test_yaml_bad_choice_names_file_and_field(tmp_path):
    path = _yaml(tmp_path, {"loss": "focal"})
    with pytest.raises(ConfigError) as err:
        DetoxParser([Toy], prog="t").parse(["--config", path])
    assert path in str(err.value) and "--loss" in str(err.value) and "focal" in str(err.value)


def test_yaml_bad_type_names_file_and_field(tmp_path):
    path = _yaml(tmp_path, {"steps": "many"})
    with pytest.raises(ConfigError, match=r"c\.yaml.*--steps.*many"):
        DetoxParser([Toy], prog="t").parse(["--config", path])


def test_unknown_yaml_key_suggests_the_field(tmp_path):
    path = _yaml(tmp_path, {"learnin_rate": 0.1})
    with pytest.raises(ConfigError, match=r"unknown field 'learnin_rate'; did you mean 'learning_rate'"):
        DetoxParser([Toy], prog="t").parse(["--config", path])


def test_cli_bad_value_and_post_init_errors(tmp_path):
    with pytest.raises(ConfigError, match=r"command line.*--loss"):
        DetoxParser([Toy], prog="t").parse(["--loss", "nope"])
    path = _yaml(tmp_path, {"steps": -3})
    with pytest.raises(ConfigError, match=r"c\.yaml: steps must be >= 0 \(got -3\)"):
        DetoxParser([Toy], prog="t").parse(["--config", path])


def test_missing_and_malformed_config_files(tmp_path):
    with pytest.raises(ConfigError, match="config file 'nope.yaml' not found"):
        DetoxParser([Toy], prog="t").parse(["--config", "nope.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("loss: ce\n  steps: [1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: invalid YAML"):
        DetoxParser([Toy], prog="t").parse(["--config", str(bad)])


def test_model_config_through_parser(tmp_path):
    path = _yaml(tmp_path, {"model_name_or_path": "google/mt5-base", "finetuning": "qlora", "lora_target_modules": ["qkvo"]})
    (cfg,) = DetoxParser([DetoxModelConfig], prog="t").parse(["--config", path, "--lora_r", "16"])
    assert cfg.finetuning == "qlora" and cfg.load_in_4bit and cfg.lora_r == 16 and cfg.lora_target_modules == ["qkvo"]
    with pytest.raises(ConfigError, match="--finetuning"):
        DetoxParser([DetoxModelConfig], prog="t").parse(["--finetuning", "prefix"])


def test_resolved_config_round_trips(tmp_path):
    (toy,) = DetoxParser([Toy], prog="t").parse(["--steps", "3"])
    out = tmp_path / "resolved.yaml"
    save_resolved_config(str(out), toy)
    assert yaml.safe_load(out.read_text()) == resolved_config_dict(toy)
    assert resolved_config_dict(toy)["Toy"]["steps"] == 3


@dataclass
class Needs:
    output: str = field(metadata={"help": "required"})
    steps: int = field(default=1, metadata={"help": "steps"})


def test_required_field_may_come_from_cli_or_yaml(tmp_path):
    path = _yaml(tmp_path, {"steps": 2})
    (needs,) = DetoxParser([Needs], prog="t").parse(["--config", path, "--output", "o.jsonl"])
    assert (needs.output, needs.steps) == ("o.jsonl", 2)
    (needs,) = DetoxParser([Needs], prog="t").parse(["--config", _yaml(tmp_path, {"output": "y"}, "d.yaml")])
    assert needs.output == "y"
    with pytest.raises(ConfigError, match="required: --output"):
        DetoxParser([Needs], prog="t").parse(["--config", path])


def test_empty_list_in_yaml(tmp_path):
    (toy,) = DetoxParser([Toy], prog="t").parse(["--config", _yaml(tmp_path, {"names": []})])
    assert toy.names == []


def test_resolved_config_leaves_tokens_out():
    from dataclasses import dataclass

    from detoxrl.config import resolved_config_dict

    @dataclass
    class Args:
        hub_token: str | None = "hf_secret"
        learning_rate: float = 1e-4
        max_new_tokens: int = 8

    assert resolved_config_dict(Args()) == {"Args": {"learning_rate": 1e-4, "max_new_tokens": 8}}
