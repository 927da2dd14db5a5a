"""``resume_from_checkpoint`` for every stage: a ``checkpoint-*`` folder, or ``true``/``latest`` for the newest.

Both stages write ``<output_dir>/checkpoint-<step>/trainer_state.json`` (transformers' Trainer for
SFT, ``rl/checkpoint.py`` for PPO), so one resolver serves both.
"""

from __future__ import annotations

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


def resolve_resume(value, output_dir: str) -> str | None:
    """The checkpoint folder to resume from, ``None`` for a fresh run; a clear error otherwise."""
    if value in (None, "", False, "false", "False"):
        return None
    if value in (True, "true", "True", "latest"):
        last = latest_checkpoint(output_dir)
        if last is None:
            raise UserError(f"resume_from_checkpoint: no checkpoint-* folder in output_dir '{output_dir}'")
        return last
    if not os.path.isfile(os.path.join(value, "trainer_state.json")):
        raise UserError(f"resume_from_checkpoint: '{value}' is not a checkpoint (no trainer_state.json); "
                        f"pass a checkpoint-* folder or 'latest'")
    return value
