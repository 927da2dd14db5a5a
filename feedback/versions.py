"""Model version strings: what the store records as the model each rewrite came from.

A model's version is, in this order:

1. the ``version`` field of its model card (``detoxrl.json`` in the folder or its parent), which
   ``detox-feedback train`` writes into every model it makes;
2. for a folder with a card but no ``version`` (e.g. an SFT run): ``<run folder name>@<hash>``,
   where ``<hash>`` is the first 10 hex digits of the SHA-256 of the card's bytes (the card holds
   the base model, prompt, stage and metrics of that run, so two runs differ);
3. for a model folder without a card: ``<folder name>@<hash of its config.json>``;
4. otherwise (a hub id or alias): the reference itself.

``new_version(output_dir, card)`` is the version a feedback run gives its output:
``<output folder name>@<hash of the card's content without the version field>``.
"""

from __future__ import annotations

import hashlib
import json
import os

from detoxrl.errors import UserError
from detoxrl.io import atomic_write_text

CARD = "detoxrl.json"


def card_path(ref: str) -> str | None:
    """The ``detoxrl.json`` in ``ref`` or its parent (``run/merged`` -> ``run/detoxrl.json``), or None."""
    if not os.path.isdir(ref):
        return None
    for folder in (ref, os.path.dirname(os.path.abspath(ref))):
        path = os.path.join(folder, CARD)
        if os.path.isfile(path):
            return path
    return None


def read_card(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            card = json.load(fh)
    except json.JSONDecodeError as exc:
        raise UserError(f"model card '{path}' is not valid JSON ({exc.msg} at line {exc.lineno}); re-save the run") \
            from None
    if not isinstance(card, dict):
        raise UserError(f"model card '{path}' is not a JSON object")
    return card


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:10]


def model_version(ref: str) -> str:
    """The version string of the model at ``ref`` (see the module docstring)."""
    path = card_path(ref)
    if path is not None:
        card = read_card(path)
        if isinstance(card.get("version"), str) and card["version"].strip():
            return card["version"].strip()
        with open(path, "rb") as fh:
            return f"{os.path.basename(os.path.dirname(os.path.abspath(path)))}@{_digest(fh.read())}"
    config = os.path.join(ref, "config.json")
    if os.path.isfile(config):
        with open(config, "rb") as fh:
            return f"{os.path.basename(os.path.normpath(os.path.abspath(ref)))}@{_digest(fh.read())}"
    return ref


def new_version(output_dir: str, card: dict) -> str:
    """``<output folder name>@<hash of the card without its version>`` for a model a feedback run made."""
    content = json.dumps({k: v for k, v in card.items() if k != "version"}, sort_keys=True, ensure_ascii=False)
    return f"{os.path.basename(os.path.normpath(os.path.abspath(output_dir)))}@{_digest(content.encode())}"


def stamp_card(output_dir: str, fields: dict) -> dict:
    """Merge ``fields`` into ``output_dir/detoxrl.json``, set its ``version`` (``new_version``), write it atomically."""
    path = os.path.join(output_dir, CARD)
    card = read_card(path) if os.path.isfile(path) else {}
    card.update(fields)
    card["version"] = new_version(output_dir, card)
    atomic_write_text(path, json.dumps(card, indent=2, ensure_ascii=False))
    return card
