"""``use_vllm`` / ``vllm_mode``: passed to TRL's GRPOConfig/RLOOConfig, refused by our PPO and without vllm.

vllm is never installed here: the tests fake it with ``importlib.util.find_spec`` (the check never imports it).
"""

from __future__ import annotations

import importlib.util

import pytest

from detoxrl.errors import ConfigError, UserError


@pytest.fixture
def vllm_present(monkeypatch):
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return object() if name == "vllm" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


@pytest.fixture
def vllm_missing(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a, **kw: None if name == "vllm" else real(name, *a, **kw))


def _parse(argv):
    from rl.ppo import parse

    return parse(argv)


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
@pytest.mark.parametrize("mode", ["colocate", "server"])
def test_trl_config_carries_use_vllm_and_vllm_mode(algorithm, mode, vllm_present, tmp_path):
    from trl import GRPOConfig, RLOOConfig

    from rl.trl_algos import trl_config

    args = _parse(["--algorithm", algorithm, "--use_vllm", "true", "--vllm_mode", mode, "--use_cpu", "true",
                   "--rollout_batch_size", "8", "--num_generations", "4", "--report_to", "none",
                   "--output_dir", str(tmp_path)])[4]
    cfg = trl_config(args, algorithm)
    assert isinstance(cfg, GRPOConfig if algorithm == "grpo" else RLOOConfig)
    assert cfg.use_vllm is True and cfg.vllm_mode == mode
    off = trl_config(_parse(["--algorithm", algorithm, "--use_cpu", "true", "--rollout_batch_size", "8",
                             "--num_generations", "4", "--report_to", "none", "--output_dir", str(tmp_path)])[4],
                     algorithm)
    assert off.use_vllm is False and off.vllm_mode == "colocate"


def test_use_vllm_without_vllm_is_one_line(vllm_missing, capsys):
    with pytest.raises(UserError, match=r"use_vllm: vllm is not installed; pip install vllm") as err:
        _parse(["--algorithm", "grpo", "--use_vllm", "true", "--use_cpu", "true"])
    assert "\n" not in str(err.value)
    from rl import ppo

    assert ppo.main(["--algorithm", "rloo", "--use_vllm", "true", "--use_cpu", "true"]) == 2
    out = capsys.readouterr().err
    assert out.count("\n") == 1 and "vllm is not installed" in out


@pytest.mark.parametrize("vllm", ["vllm_present", "vllm_missing"])
def test_ppo_refuses_use_vllm(vllm, request):
    request.getfixturevalue(vllm)  # the ppo refusal comes first, installed or not
    with pytest.raises(ConfigError, match="use_vllm is read by algorithm grpo/rloo only: algorithm ppo .* generates "
                                          "with transformers; set algorithm grpo or rloo") as err:
        _parse(["--use_vllm", "true"])
    assert "\n" not in str(err.value)


def test_vllm_mode_takes_trl_choices_only():
    from rl.config import DetoxPPOConfig

    with pytest.raises(ConfigError, match="argument --vllm_mode.*: invalid choice: 'remote' "
                                          "\\(choose from 'colocate', 'server'\\)"):
        _parse(["--algorithm", "grpo", "--vllm_mode", "remote"])
    with pytest.raises(ValueError, match=r"vllm_mode must be colocate or server \(got remote\)"):
        DetoxPPOConfig(algorithm="grpo", vllm_mode="remote", use_cpu=True, report_to="none")
