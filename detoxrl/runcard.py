"""The run card, ``detoxrl.json``: the one module that builds, finds, reads, writes and hashes it.

Every stage that saves a model (SFT, PPO/GRPO/RLOO, feedback training) writes one into its run folder,
last, atomically; inference, evaluation, feedback versions and stage reuse read it back from here.
It holds what inference needs to use the model as it was trained::

    {"family": "causal", "base_model": "...", "prompt": {..., "prompt_format": "chat"},
     "generation": {...}, "stage": "sft" | "ppo" | ..., "metrics": {...}, "version": "..." (feedback)}
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict

from detoxrl.errors import UserError
from detoxrl.io import atomic_write_text

CARD = "detoxrl.json"


def card_file(folder: str) -> str:
    """Where ``folder``'s run card is (whether or not it exists)."""
    return os.path.join(folder, CARD)


def has_card(folder: str) -> bool:
    return os.path.isfile(card_file(folder))


def find_card(ref: str) -> str | None:
    """The run card in ``ref`` or its parent (``run/merged`` -> ``run/detoxrl.json``), or None."""
    if not os.path.isdir(ref):
        return None
    for folder in (ref, os.path.dirname(os.path.abspath(ref))):
        if has_card(folder):
            return card_file(folder)
    return None


def read_card(path: str) -> dict:
    """The card at ``path`` (a card file or a run folder); a broken card is a one-line ``UserError``."""
    if os.path.isdir(path):
        path = card_file(path)
    try:
        with open(path, encoding="utf-8") as fh:
            card = json.load(fh)
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: invalid JSON in the run card ({exc.msg}); re-save the run or "
                        "delete the file") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: the run card is not UTF-8 text; re-save the run or delete the file") from None
    if not isinstance(card, dict):
        raise UserError(f"{path}: the run card is not a JSON object; re-save the run or delete the file")
    return card


def write_card(folder: str, card: dict) -> None:
    """Write ``card`` as ``folder``'s run card, atomically."""
    atomic_write_text(card_file(folder), json.dumps(card, indent=2, ensure_ascii=False))


def build_card(family: str, base: str, prompt_cfg, prompt_format: str, generation, extra: dict) -> dict:
    """A new run card: family, base model, the prompt (``PromptConfig`` + the resolved format), the
    ``GenerationSettings`` and the stage's own ``extra`` fields (stage, metrics, parent run ...)."""
    return {"family": family, "base_model": base, "prompt": {**asdict(prompt_cfg), "prompt_format": prompt_format},
            "generation": asdict(generation), **extra}


def short_hash(data: bytes, length: int = 10) -> str:
    """The first ``length`` hex digits of the SHA-256 of ``data`` (model version strings)."""
    return hashlib.sha256(data).hexdigest()[:length]


def digest(path: str, length: int = 10) -> str:
    """``short_hash`` of the card file's bytes."""
    with open(path, "rb") as fh:
        return short_hash(fh.read(), length)


def card_fingerprint(folder: str) -> str | None:
    """What identifies the training run that wrote ``folder``'s card: the card's bytes and modification
    time (a rewrite counts even when training reproduced the same card); None without a card."""
    path = card_file(folder)
    if not os.path.isfile(path):
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        h.update(fh.read())
    h.update(str(os.stat(path).st_mtime_ns).encode())
    return f"{CARD}:" + h.hexdigest()[:16]
