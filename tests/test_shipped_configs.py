"""Every shipped YAML config parses with its entry point's dataclasses (no rotten keys or values)."""

from __future__ import annotations

import glob
import os

import pytest
import yaml

from detoxrl.config import DetoxParser
from detoxrl.data import DataConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _configs(pattern):
    return sorted(glob.glob(os.path.join(ROOT, "configs", pattern)))


@pytest.mark.parametrize("path", _configs("sft/*.yaml"), ids=os.path.basename)
def test_sft_configs_parse(path):
    from sft.train import CONFIGS

    data, vocab, model, prompt, args = DetoxParser(CONFIGS, prog="sft/train.py").parse(["--config", path])
    assert data.dataset and model.model_name_or_path and args.output_dir.startswith("outputs/sft/")


def test_preview_config_parses():
    from detoxrl.preview import PreviewConfig

    from detoxrl.models.config import DetoxModelConfig
    from detoxrl.prompts import PromptConfig
    from detoxrl.vocab import VocabConfig

    parsed = DetoxParser([PreviewConfig, DataConfig, VocabConfig, DetoxModelConfig, PromptConfig], prog="p").parse(
        ["--config", os.path.join(ROOT, "configs", "preview.yaml")])
    assert parsed[3].model_name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.mark.parametrize("path", _configs("data/*.yaml"), ids=os.path.basename)
def test_data_configs_parse(path):
    (cfg,) = DetoxParser([DataConfig], prog="detox-data").parse(["--config", path])
    assert cfg.dataset


@pytest.mark.parametrize("path", _configs("accelerate/*.yaml"), ids=os.path.basename)
def test_accelerate_configs_load_in_accelerate(path):
    """Each accelerate config is one accelerate itself reads (``accelerate launch --config_file``), on one machine;
    the ZeRO-3 and FSDP ones are the engines PPO gathers parameters under (detoxrl/distributed.py)."""
    from accelerate.commands.config.config_args import ClusterConfig

    cfg = ClusterConfig.from_yaml_file(path)
    assert cfg.num_machines == 1
    if os.path.basename(path) == "fsdp.yaml":
        assert cfg.distributed_type == "FSDP" and cfg.fsdp_config["fsdp_version"] == 2  # FSDP1 is refused by PPO
    if os.path.basename(path) == "deepspeed_zero3.yaml":
        assert cfg.distributed_type == "DEEPSPEED" and cfg.deepspeed_config["zero_stage"] == 3


def test_old_independent_eval_config_stays_a_copy_of_the_default():
    """``configs/eval/independent.yaml`` (named by configs written before the default became independent)
    holds exactly the default eval config's values."""
    load = lambda name: yaml.safe_load(open(os.path.join(ROOT, "configs", "eval", name), encoding="utf-8"))  # noqa: E731
    assert load("independent.yaml") == load("default.yaml")


def test_default_ppo_config_holds_the_measured_defaults():
    """The PPO default of docs/rl.md#the-default-critic: 50 steps of 32 sources x 2 responses in minibatches of 16,
    the feature critic (lexicon+sibling, the last 4 rollouts, ridge 0.03, shrink 0.5), 2 critic-only steps; the actor
    stays a LoRA adapter from the default SFT run. configs/rl/value_head.yaml is the earlier default exactly:
    200 steps of 16 x 1, the value head on hidden states (critic lr 1e-3, 5 critic-only steps)."""
    from rl.ppo import parse

    data, vocab, model, reward, args = parse(["--config", os.path.join(ROOT, "configs", "rl", "default.yaml")])
    assert (args.max_steps, args.rollout_batch_size, args.samples_per_prompt, args.mini_batch_size) == (50, 64, 2, 16)
    assert (args.value_features, args.value_replay_steps, args.value_ridge, args.value_shrink,
            args.critic_warmup_steps) == ("lexicon+sibling", 4, 0.03, 0.5, 2)
    assert (model.model_name_or_path, model.finetuning, args.seed) == ("outputs/sft/default", "lora", 42)
    *_, old = parse(["--config", os.path.join(ROOT, "configs", "rl", "value_head.yaml")])
    assert (old.max_steps, old.rollout_batch_size, old.samples_per_prompt, old.mini_batch_size) == (200, 16, 1, 16)
    assert (old.value_features, old.value_replay_steps, old.value_ridge, old.value_shrink, old.value_learning_rate,
            old.critic_warmup_steps, old.max_packed_tokens) == ("hidden", 0, None, 1.0, 1e-3, 5, 1024)
    assert old.output_dir == "outputs/rl/value_head" and args.output_dir == "outputs/rl/default"
