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

import json
import os

from detoxrl.runcard import card_file, digest, find_card, has_card, read_card, short_hash, write_card


def model_version(ref: str) -> str:
    """The version string of the model at ``ref`` (see the module docstring)."""
    path = find_card(ref)
    if path is not None:
        card = read_card(path)
        if isinstance(card.get("version"), str) and card["version"].strip():
            return card["version"].strip()
        return f"{os.path.basename(os.path.dirname(os.path.abspath(path)))}@{digest(path)}"
    config = os.path.join(ref, "config.json")
    if os.path.isfile(config):
        with open(config, "rb") as fh:
            return f"{os.path.basename(os.path.normpath(os.path.abspath(ref)))}@{short_hash(fh.read())}"
    return ref


def new_version(output_dir: str, card: dict) -> str:
    """``<output folder name>@<hash of the card without its version>`` for a model a feedback run made."""
    content = json.dumps({k: v for k, v in card.items() if k != "version"}, sort_keys=True, ensure_ascii=False)
    return f"{os.path.basename(os.path.normpath(os.path.abspath(output_dir)))}@{short_hash(content.encode())}"


def stamp_card(output_dir: str, fields: dict) -> dict:
    """Merge ``fields`` into ``output_dir/detoxrl.json``, set its ``version`` (``new_version``), write it atomically."""
    card = read_card(card_file(output_dir)) if has_card(output_dir) else {}
    card.update(fields)
    card["version"] = new_version(output_dir, card)
    write_card(output_dir, card)
    return card
