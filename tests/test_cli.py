"""The ``detoxrl`` command: every sub-command dispatches and names itself, old names stay aliases,
``--num_processes`` wraps ``accelerate launch``, and ``finetuning: auto`` resolves before it is recorded."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from detoxrl.config import prog_name
from detoxrl.errors import UserError
from detoxrl.models.config import DetoxModelConfig
from orchestration import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYPROJECT = open(os.path.join(ROOT, "pyproject.toml"), encoding="utf-8").read()


def test_top_level_help_lists_every_sub_command(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    listed = re.findall(r"^  (\S+)  ", out, flags=re.M)
    assert listed == list(cli.COMMANDS)
    assert {"sft", "ppo", "eval", "rewrite", "feedback", "ablate", "pipeline", "data", "train-toxicity"} <= set(listed)


@pytest.mark.parametrize("name", list(cli.COMMANDS))
def test_each_sub_command_help_names_itself(name, capsys):
    try:
        rc = cli.main([name, "--help"])
    except SystemExit as exc:  # argparse's --help
        rc = exc.code
    assert rc == 0
    assert f"usage: detoxrl {name}" in capsys.readouterr().out
    assert prog_name(cli.COMMANDS[name].own_name) == cli.COMMANDS[name].own_name  # the rename does not leak


def test_nested_sub_commands_keep_their_suffix(capsys):
    with pytest.raises(SystemExit):
        cli.main(["feedback", "add", "--help"])
    assert "usage: detoxrl feedback add" in capsys.readouterr().out


def test_unknown_command_is_one_line_with_a_hint(capsys):
    assert cli.main(["evl"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: detoxrl: unknown command 'evl'; did you mean 'eval'?"]


def test_every_old_name_is_an_installed_alias_of_a_sub_command():
    for name, command in cli.COMMANDS.items():
        assert f'{command.alias} = "orchestration.cli:alias_main"' in PYPROJECT
        assert cli.ALIASES[command.alias] == name
    assert 'detoxrl = "orchestration.cli:main"' in PYPROJECT


def test_alias_runs_under_its_old_name(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["/usr/bin/detox-eval", "--help"])
    with pytest.raises(SystemExit):
        cli.alias_main()
    assert "usage: detox-eval" in capsys.readouterr().out


def test_launch_flags_wrap_accelerate_launch_for_training_commands(monkeypatch):
    calls = []
    monkeypatch.setattr(cli.subprocess, "call", lambda argv, env: calls.append((argv, env)) or 0)
    monkeypatch.setattr(cli, "_cpu_only", lambda config: False)  # a GPU machine
    acc = os.path.join(ROOT, "configs", "accelerate", "multi_gpu.yaml")
    assert cli.main(["sft", "--accelerate_config", acc, "--num_processes=2", "--config", "c.yaml", "--seed", "1"]) == 0
    ((argv, env),) = calls
    assert argv[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert argv[3:7] == ["--config_file", acc, "--num_processes", "2"]
    assert argv[7] == os.path.join(ROOT, "sft", "train.py")
    assert argv[8:] == ["--config", "c.yaml", "--seed", "1"]


def test_several_cpu_processes_use_torchrun(monkeypatch):
    calls = []
    monkeypatch.setattr(cli.subprocess, "call", lambda argv, env: calls.append((argv, env)) or 0)
    monkeypatch.setattr(cli, "_cpu_only", lambda config: True)
    assert cli.main(["ppo", "--num_processes", "2", "--config", "c.yaml"]) == 0
    ((argv, env),) = calls
    assert argv[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    assert argv[6] == os.path.join(ROOT, "rl", "ppo.py") and argv[7:] == ["--config", "c.yaml"]
    assert env["ACCELERATE_USE_CPU"] == "true"


def test_two_cpu_processes_really_run(tiny_dir, toy_data, tmp_path):
    """``detoxrl sft --num_processes 2`` on the CPU starts two ranks that train one model together."""
    from tests.test_sft_train import _args

    out = tmp_path / "ddp"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "orchestration.cli", "sft", "--num_processes", "2",
            *_args(tiny_dir("llama"), toy_data, out, "--finetuning", "lora", "--lora_r", "4", "--lora_alpha", "8",
                   "--guard_samples", "0", "--merge_adapter", "false", "--logging_steps", "1")]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    state = json.load(open(out / "checkpoint-2" / "trainer_state.json"))
    assert state["global_step"] == 2
    assert sorted(f for f in os.listdir(out / "checkpoint-2") if f.startswith("rng_state")) == [
        "rng_state_0.pth", "rng_state_1.pth"]  # one RNG file per rank: two processes trained


@pytest.mark.parametrize("args,message", [
    (["eval", "--num_processes", "2"], "apply to sft and ppo only"),
    (["ppo", "--num_processes", "0"], "--num_processes must be a whole number >= 1"),
    (["ppo", "--accelerate_config", "missing.yaml"], "--accelerate_config 'missing.yaml' not found"),
    (["sft", "--num_processes"], "--num_processes needs a value"),
])
def test_bad_launch_flags_are_one_line(args, message, capsys):
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_console_script_help_in_a_fresh_process():
    """The installed command itself (what a user types), not only ``main``."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "orchestration.cli", "ppo", "--help"], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0 and out.stdout.startswith("usage: detoxrl ppo")


def test_finetuning_auto_resolves_to_lora_without_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = DetoxModelConfig(finetuning="auto")
    assert cfg.finetuning == "lora" and cfg.use_peft and not cfg.load_in_4bit


def test_finetuning_auto_resolves_to_qlora_on_cuda(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = DetoxModelConfig(finetuning="auto")
    assert cfg.finetuning == "qlora" and cfg.load_in_4bit and cfg.bnb_4bit_quant_type == "nf4"


def test_default_config_records_the_resolved_fine_tuning_type(monkeypatch):
    """The default SFT config says auto; the resolved config (what stage reuse compares) says lora on CPU,
    as runs made before ``auto`` existed did, so they are still reused."""
    import torch

    from detoxrl.config import resolved_config_dict
    from sft.train import parse

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    parsed = parse(["--config", os.path.join(ROOT, "configs", "sft", "default.yaml")])
    assert resolved_config_dict(*parsed)["DetoxModelConfig"]["finetuning"] == "lora"


def test_user_error_from_launch_is_raised_by_run():
    with pytest.raises(UserError):
        cli.run("eval", ["--num_processes", "2"])
