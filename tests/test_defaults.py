"""One source of defaults: every shipped default YAML resolves to exactly what its entry point gives with no
flags, the default YAMLs set nothing of their own, and PPO refuses the TrainingArguments fields it never reads."""

from __future__ import annotations

import os

import pytest
import yaml

from detoxrl.config import DetoxParser, resolved_config_dict
from detoxrl.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _sft(args):
    from sft.train import parse

    return parse(args)


def _ppo(args):
    from rl.ppo import parse

    return parse(args)


def _rft(args):
    from rl.rft import parse

    return parse(args)


def _reward(args):
    from detoxrl.vocab import VocabConfig
    from rewards.composite import RewardConfig

    return DetoxParser([RewardConfig, VocabConfig], prog="rerank_config").parse(args)


def _eval(args):
    from evaluation.evaluate import parse

    return parse(args)


def _toxicity(args):
    from detoxrl.data import DataConfig
    from rewards.train_toxicity import TrainToxicityConfig

    return DetoxParser([TrainToxicityConfig, DataConfig], prog="detox-train-toxicity").parse(args)


def _feedback(args):
    from feedback.train import FeedbackTrainConfig

    return DetoxParser([FeedbackTrainConfig], prog="detox-feedback train").parse(args)


DEFAULT_YAMLS = {"sft/default.yaml": _sft, "rl/default.yaml": _ppo, "rl/rft.yaml": _rft,
                 "rewards/default.yaml": _reward, "eval/default.yaml": _eval,
                 "rewards/train_toxicity.yaml": _toxicity, "feedback/default.yaml": _feedback}


@pytest.mark.parametrize("name", sorted(DEFAULT_YAMLS))
def test_shipped_default_yaml_resolves_to_the_dataclass_defaults(name):
    """`accelerate launch sft/train.py` and `... --config configs/sft/default.yaml` save the same
    resolved_config.yaml (and so for every stage's default YAML)."""
    parse = DEFAULT_YAMLS[name]
    bare = resolved_config_dict(*parse([]))
    with_yaml = resolved_config_dict(*parse(["--config", os.path.join(ROOT, "configs", name)]))
    differ = {f"{section}.{k}": (v, with_yaml[section][k]) for section, values in bare.items()
              for k, v in values.items() if with_yaml[section][k] != v}
    assert not differ, f"configs/{name} and the dataclass defaults disagree (default, yaml): {differ}"


@pytest.mark.parametrize("name,allowed", [("sft/default.yaml", set()), ("rl/default.yaml", {"extends"}),
                                          ("rewards/default.yaml", set()), ("rl/rft.yaml", {"extends", "algorithm"})])
def test_default_yamls_restate_no_default(name, allowed):
    """The measured defaults have one home, the dataclasses: the default YAMLs are (empty) diffs."""
    with open(os.path.join(ROOT, "configs", name), encoding="utf-8") as fh:
        keys = set((yaml.safe_load(fh) or {}).keys())
    assert keys <= allowed, f"configs/{name} sets {sorted(keys - allowed)}"


def test_rl_and_rft_read_the_one_reward_config(tmp_path):
    """A change to configs/rewards/default.yaml reaches PPO and RFT (both extend it)."""
    rewards = tmp_path / "rewards"
    rl = tmp_path / "rl"
    rewards.mkdir()
    rl.mkdir()
    (rewards / "default.yaml").write_text("w_fluency: 0.0\nform: weighted_sum\n")
    for name in ("default.yaml", "rft.yaml"):
        (rl / name).write_text(open(os.path.join(ROOT, "configs", "rl", name), encoding="utf-8").read())
    reward = _ppo(["--config", str(rl / "default.yaml")])[3]
    rft_reward = _rft(["--config", str(rl / "rft.yaml")])[2]
    assert (reward.w_fluency, reward.form) == (rft_reward.w_fluency, rft_reward.form) == (0.0, "weighted_sum")


def test_the_bare_commands_run_the_measured_defaults():
    """What `accelerate launch sft/train.py` / `rl/ppo.py` run with no flags (docs/sft.md, docs/rl.md)."""
    data, _, model, _, sft = _sft([])
    assert (data.max_train_pairs, model.finetuning in ("lora", "qlora"), model.lora_r, model.lora_alpha,
            model.lora_target_modules) == (4000, True, 16, 32, ["all-linear"])
    assert (sft.loss, sft.max_steps, sft.output_dir, sft.max_target_length) == ("toxic_mask", 250,
                                                                                  "outputs/sft/default", 96)
    data, _, model, reward, ppo = _ppo([])
    assert data.max_train_pairs is None and (model.model_name_or_path, model.finetuning, model.lora_dropout) == (
        "outputs/sft/default", "lora", 0.0)
    assert (ppo.max_steps, ppo.rollout_batch_size, ppo.samples_per_prompt, ppo.mini_batch_size,
            ppo.value_features, ppo.reward_norm, ppo.output_dir) == (50, 64, 2, 16, "lexicon+sibling", "running",
                                                                     "outputs/rl/default")
    assert (reward.form, reward.toxicity_model) == ("product", "detoxrl-toxicity-minilm")
    assert sft.disable_tqdm is False and ppo.disable_tqdm is False  # progress bars whatever the log level


def test_resolved_config_keeps_the_section_names_readers_look_up():
    from detoxrl.config import resolved_config_dict

    assert list(resolved_config_dict(*_sft([]))) == ["DataConfig", "VocabConfig", "DetoxModelConfig", "PromptConfig",
                                                     "DetoxSFTConfig"]
    assert list(resolved_config_dict(*_ppo([])))[2] == "DetoxModelConfig"


@pytest.mark.parametrize("argv,field", [(["--optim", "adamw_torch"], "optim"), (["--fp16", "true"], "fp16"),
                                        (["--num_train_epochs=3"], "num_train_epochs")])
def test_ppo_refuses_a_training_argument_it_never_reads(argv, field):
    with pytest.raises(ConfigError, match=f"command line: '{field}' is a TrainingArguments field that DetoxPPOConfig "
                                          "never reads"):
        _ppo(argv)


def test_ppo_refuses_an_unread_field_in_the_yaml(tmp_path):
    cfg = tmp_path / "ppo.yaml"
    cfg.write_text("max_steps: 3\noptim: adafactor\n")
    with pytest.raises(ConfigError, match=f"{cfg}: 'optim' is a TrainingArguments field"):
        _ppo(["--config", str(cfg)])


def test_ppo_help_lists_only_what_it_reads(capsys):
    with pytest.raises(SystemExit):
        _ppo(["--help"])
    out = capsys.readouterr().out
    assert "--rollout_batch_size" in out and "--learning_rate" in out and "--save_steps" in out
    for hidden in ("--optim", "--fp16", "--num_train_epochs", "--eval_strategy", "--per_device_train_batch_size"):
        assert hidden + " " not in out


def test_ppo_refuses_bf16_which_only_grpo_reads():
    with pytest.raises(ConfigError, match="bf16 is read by algorithm grpo/rloo only"):
        _ppo(["--bf16", "true"])
    assert _ppo(["--bf16", "true", "--algorithm", "grpo", "--use_cpu", "true"])[4].bf16


def test_ppo_without_its_sft_run_names_the_command_to_run_first(tmp_path, monkeypatch, capsys):
    from rl import ppo

    monkeypatch.chdir(tmp_path)
    assert ppo.main(["--model_name_or_path", "outputs/sft/not-trained-yet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'outputs/sft/not-trained-yet' does not exist" in err
    assert "accelerate launch sft/train.py" in err
