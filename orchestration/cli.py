"""The ``detoxrl`` command: one dispatcher for every entry point, in the style of TRL's ``trl`` CLI.

    detoxrl sft --config configs/sft/default.yaml
    detoxrl sft --accelerate_config configs/accelerate/cpu.yaml --num_processes 2 --config configs/sft/default.yaml
    detoxrl ppo --config configs/rl/default.yaml          # also --algorithm grpo | rloo
    detoxrl rft --config configs/rl/rft.yaml              # rejection-sampling fine-tuning (= ppo --algorithm rft)
    detoxrl rewrite --model outputs/rl/default "shut up, idiot"
    detoxrl eval --systems delete sft=outputs/sft/default

Each sub-command runs the entry point's own ``main`` in this process, under the name ``detoxrl <sub>``
(``usage:`` and error lines say so). ``--accelerate_config FILE`` and/or ``--num_processes N`` (training
sub-commands only) re-launch the entry point's script through ``accelerate launch``, as ``trl sft`` does
(``torchrun`` for several CPU processes, see ``launch_argv``); ``accelerate launch sft/train.py`` and
``accelerate launch rl/ppo.py`` keep working as they are.

The old console scripts (``detox-sft``, ``detox``, ``detox-eval``, ...) are aliases that run the same
entry points under their own names.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from dataclasses import dataclass

from detoxrl.config import rename_prog
from detoxrl.errors import UserError


@dataclass(frozen=True)
class Command:
    module: str  # module with a ``main(args) -> int``
    own_name: str  # the ``prog`` the entry point gives its parser (what ``rename_prog`` replaces)
    summary: str
    alias: str | None = None  # the old console-script name
    launchable: bool = False  # runs under ``accelerate launch`` (distributed training)


COMMANDS: dict[str, Command] = {
    "sft": Command("sft.train", "sft/train.py", "supervised stage: LoRA / QLoRA / full fine-tuning", "detox-sft", True),
    "ppo": Command("rl.ppo", "rl/ppo.py", "RL stage: PPO (also --algorithm grpo | rloo, TRL's trainers)", "detox-ppo",
                   True),
    "rft": Command("rl.rft", "rl/rft.py", "RL stage: rejection-sampling fine-tuning (best of k samples -> SFT, in "
                   "rounds)", "detox-rft"),
    "eval": Command("evaluation.evaluate", "detox-eval", "score systems side by side with independent judges",
                    "detox-eval"),
    "rewrite": Command("evaluation.infer", "detox", "rewrite text with a trained model (text, file or stdin)", "detox"),
    "feedback": Command("feedback.cli", "detox-feedback", "review page, feedback store and feedback training "
                        "(serve | add | list | export | train)", "detox-feedback"),
    "ablate": Command("orchestration.ablate", "detox-ablate", "the reward ablation grid (PPO runs + eval)",
                      "detox-ablate"),
    "pipeline": Command("orchestration.pipeline", "detox-pipeline", "SFT -> PPO -> eval in one command "
                        "(--preset quick | full)", "detox-pipeline"),
    "data": Command("detoxrl.data.cli", "detox-data", "export or preview the training data (export | preview)",
                    "detox-data"),
    "preview": Command("detoxrl.preview", "detox-preview", "data preview plus a model smoke check on the defaults",
                       "detox-preview"),
    "train-toxicity": Command("rewards.train_toxicity", "detox-train-toxicity",
                              "train the embedded toxicity classifier (reward or judge)", "detox-train-toxicity"),
}
ALIASES = {c.alias: name for name, c in COMMANDS.items() if c.alias}
LAUNCH_FLAGS = ("--accelerate_config", "--num_processes")


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: detoxrl <command> [--config FILE.yaml] [flags]   (detoxrl <command> --help for its flags)", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {c.summary}" for name, c in COMMANDS.items()]
    lines += ["", "sft and ppo also take --accelerate_config FILE and --num_processes N (runs `accelerate launch`).",
              "Old names still work: " + ", ".join(sorted(ALIASES)) + "."]
    return "\n".join(lines)


def split_launch_flags(args: list[str]) -> tuple[dict[str, str], list[str]]:
    """``--accelerate_config F`` / ``--num_processes N`` (also ``--flag=value``) out of ``args``."""
    found: dict[str, str] = {}
    rest: list[str] = []
    i = 0
    while i < len(args):
        flag, eq, value = args[i].partition("=")
        if flag in LAUNCH_FLAGS:
            if not eq:
                if i + 1 >= len(args) or args[i + 1].startswith("--"):
                    raise UserError(f"detoxrl: {flag} needs a value")
                value = args[i + 1]
                i += 1
            found[flag[2:]] = value
        else:
            rest.append(args[i])
        i += 1
    return found, rest


def _cpu_only(config_path: str | None) -> bool:
    """No CUDA here, or the accelerate config asks for the CPU."""
    import torch

    if not torch.cuda.is_available():
        return True
    if config_path:
        import yaml

        with open(config_path, encoding="utf-8") as fh:
            return bool((yaml.safe_load(fh) or {}).get("use_cpu"))
    return False


def launch_argv(command: Command, launch: dict[str, str], args: list[str]) -> tuple[list[str], dict[str, str]]:
    """The command line (and extra environment) that runs a training entry point's script file in several
    processes, as the design card runs it: ``accelerate launch``; on the CPU with more than one process,
    ``torchrun`` with ``ACCELERATE_USE_CPU=true`` (``accelerate launch --cpu --num_processes 2`` silently
    runs a single process, and its MULTI_CPU mode needs MPI)."""
    config = launch.get("accelerate_config")
    if config is not None and not os.path.isfile(config):
        raise UserError(f"detoxrl: --accelerate_config '{config}' not found (see configs/accelerate/)")
    n = launch.get("num_processes")
    if n is not None and (not n.isdigit() or int(n) < 1):
        raise UserError(f"detoxrl: --num_processes must be a whole number >= 1, got '{n}'")
    script = importlib.import_module(command.module).__file__
    if n is not None and int(n) > 1 and _cpu_only(config):
        return ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", n, script, *args],
                {"ACCELERATE_USE_CPU": "true"})
    argv = [sys.executable, "-m", "accelerate.commands.launch"]
    argv += ["--config_file", config] if config else []
    argv += ["--num_processes", n] if n else []
    return argv + [script, *args], {}


def run(name: str, args: list[str], prog: str | None = None) -> int:
    """Run sub-command ``name`` with ``args``; ``prog`` is what it calls itself (default ``detoxrl <name>``)."""
    command = COMMANDS[name]
    launch, args = split_launch_flags(args)
    if launch:
        if not command.launchable:
            raise UserError(f"detoxrl {name}: --accelerate_config / --num_processes apply to "
                            f"{' and '.join(n for n, c in COMMANDS.items() if c.launchable)} only")
        argv, env = launch_argv(command, launch, args)
        return subprocess.call(argv, env={**os.environ, **env})
    with rename_prog(command.own_name, prog or f"detoxrl {name}"):
        return importlib.import_module(command.module).main(args)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``detoxrl``."""
    args = list(sys.argv[1:] if args is None else args)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        import difflib

        hint = difflib.get_close_matches(name, list(COMMANDS) + list(ALIASES), n=1)
        fix = f"did you mean '{ALIASES.get(hint[0], hint[0])}'?" if hint else "see detoxrl --help"
        print(f"error: detoxrl: unknown command '{name}'; {fix}", file=sys.stderr)
        return 2
    try:
        return run(name, rest)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def alias_main(args: list[str] | None = None) -> int:
    """Entry point of the old console scripts (``detox-sft``, ``detox``, ...): the same sub-command under
    its old name, picked from the name the script was started as."""
    name = os.path.basename(sys.argv[0])
    if name not in ALIASES:
        print(f"error: '{name}' is not a detoxrl command; use detoxrl --help", file=sys.stderr)
        return 2
    try:
        return run(ALIASES[name], list(sys.argv[1:] if args is None else args), prog=name)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
