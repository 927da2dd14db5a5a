"""``resume_from_checkpoint`` for every stage: a ``checkpoint-*`` folder, or ``true``/``latest`` for the newest.

Both stages write ``<output_dir>/checkpoint-<step>/trainer_state.json`` (transformers' Trainer for
SFT, ``rl/checkpoint.py`` for PPO), so one resolver serves both.
"""

from __future__ import annotations

import json
import os
import re

from detoxrl.errors import UserError

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def checkpoints(output_dir: str) -> list[str]:
    """The complete ``checkpoint-<step>`` folders (with a ``trainer_state.json``) in ``output_dir``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = [(int(m.group(1)), d) for d in os.listdir(output_dir) if (m := _CHECKPOINT.match(d))
             and os.path.isfile(os.path.join(output_dir, d, "trainer_state.json"))]
    return [os.path.join(output_dir, d) for _, d in sorted(found)]


def latest_checkpoint(output_dir: str) -> str | None:
    """The newest complete checkpoint in ``output_dir``, or None."""
    found = checkpoints(output_dir)
    return found[-1] if found else None


# What a checkpoint of each kind of run holds besides trainer_state.json (any one of a tuple will do).
KINDS = {
    "sft": (("adapter_model.safetensors", "model.safetensors", "model.safetensors.index.json", "adapter_model.bin",
             "pytorch_model.bin"),),
    # the trainable tensors (one process or DDP), DeepSpeed's or FSDP's own model folder (rl/checkpoint.py)
    "ppo": (("trainable.safetensors", "pytorch_model", "pytorch_model_fsdp_0"),),
}
KINDS["trl"] = KINDS["sft"]  # grpo/rloo: TRL's trainers save like transformers' Trainer


def check_checkpoint(path: str, kind: str) -> None:
    """``path`` is a complete checkpoint folder of a ``kind`` run (``sft``, ``ppo``, ``trl``); a clear error if not."""
    fix = "pass a checkpoint-* folder of the same kind of run, or 'latest'"
    if not os.path.isdir(path):
        raise UserError(f"resume_from_checkpoint: '{path}' is not a folder; {fix}")
    state = os.path.join(path, "trainer_state.json")
    if not os.path.isfile(state):
        raise UserError(f"resume_from_checkpoint: '{path}' is not a checkpoint (no trainer_state.json); {fix}")
    try:
        with open(state, encoding="utf-8") as fh:
            content = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"resume_from_checkpoint: '{state}' is unreadable ({exc}); {fix}") from None
    if not isinstance(content, dict):
        raise UserError(f"resume_from_checkpoint: '{state}' holds a JSON {type(content).__name__}, not the trainer "
                        f"state object; {fix}")
    for options in KINDS[kind]:
        found = [name for name in options if os.path.exists(os.path.join(path, name))]
        if not found:
            raise UserError(f"resume_from_checkpoint: '{path}' is not a checkpoint of a {kind} run (no "
                            f"{' or '.join(options)}); {fix}")
        if found[0].endswith(".safetensors"):
            try:
                from safetensors import safe_open

                with safe_open(os.path.join(path, found[0]), framework="pt") as fh:
                    fh.keys()
            except Exception as exc:  # noqa: BLE001 - SafetensorError and OSError both mean a broken file
                raise UserError(f"resume_from_checkpoint: '{os.path.join(path, found[0])}' is not a readable "
                                f"safetensors file ({exc}); {fix}") from None


def resolve_resume(value, output_dir: str, kind: str | None = None) -> str | None:
    """The checkpoint folder to resume from, ``None`` for a fresh run; a clear error otherwise.

    ``kind`` (``sft``, ``ppo``, ``trl``) also checks the folder holds what that kind of run saves, so a
    wrong folder fails here, before any model is loaded, not inside the trainer.
    """
    if value in (None, "", False, "false", "False"):
        return None
    if value in (True, "true", "True", "latest"):
        last = latest_checkpoint(output_dir)
        if last is None:
            raise UserError(f"resume_from_checkpoint: no checkpoint-* folder in output_dir '{output_dir}'")
        value = last
    elif not os.path.isfile(os.path.join(value, "trainer_state.json")):
        raise UserError(f"resume_from_checkpoint: '{value}' is not a checkpoint (no trainer_state.json); "
                        f"pass a checkpoint-* folder or 'latest'")
    if kind is not None:
        check_checkpoint(value, kind)
    return value
