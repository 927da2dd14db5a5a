"""Read a trained detoxrl run folder (SFT or RL output) back: where its weights are and how it prompts.

A run folder, as ``sft/save.py`` and ``rl/save.py`` write it::

    <run>/detoxrl.json   family, base model, prompt format, generation settings, stage, metrics
    <run>/merged/        the full model with the adapter folded in (LoRA runs), with its tokenizer
    <run>/adapter/       the adapter (LoRA runs) or the full model (full fine-tuning)

A run pushed to the hub (``detoxrl/hub_push.py``) keeps the card beside the model at its root; a
downloaded copy of it reads the same way.

``read_run(ref)`` accepts the run folder, its ``merged/`` or ``adapter/`` subfolder, a plain
transformers model folder, a hub id or an alias (``smollm2``); only the first three carry a
``detoxrl.json``. A path that does not exist, or a folder that holds no model, is a one-line
``UserError``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields

from detoxrl.errors import UserError
from detoxrl.generate import GenerationSettings
from detoxrl.prompts import PromptConfig
from detoxrl.runcard import CARD, card_file, has_card, read_card


@dataclass
class RunInfo:
    """What a run folder (or plain model reference) provides."""

    ref: str  # what the user passed
    weights: str  # a loadable full model: <run>/merged, <run>/adapter (full FT), a folder or hub id
    adapter: str | None = None  # <run>/adapter when it is a PEFT adapter
    card: dict = field(default_factory=dict)  # detoxrl.json ({} without one)
    adapter_merged: bool = False  # True when ``weights`` already hold ``adapter`` (the run's merged/)

    @property
    def adapter_to_apply(self) -> str | None:
        """The adapter to put on ``weights`` for inference (None when there is none or it is merged in)."""
        return None if self.adapter_merged else self.adapter

    @property
    def family(self) -> str:
        return self.card.get("family", "auto")

    @property
    def base_model(self) -> str | None:
        return self.card.get("base_model")

    def prompt_config(self) -> PromptConfig:
        """The prompt the run was trained with (defaults when there is no card)."""
        known = {f.name for f in fields(PromptConfig)}
        return PromptConfig(**{k: v for k, v in self.card.get("prompt", {}).items() if k in known})

    def generation(self) -> GenerationSettings:
        known = {f.name for f in fields(GenerationSettings)}
        return GenerationSettings(**{k: v for k, v in self.card.get("generation", {}).items() if k in known})


def _is_model_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "config.json"))


def _is_adapter_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "adapter_config.json"))


def read_run(ref: str) -> RunInfo:
    """Locate weights, adapter and card for ``ref`` (see the module docstring)."""
    path = os.path.expanduser(ref)
    if not os.path.exists(path):
        if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
            raise UserError(f"model '{ref}' does not exist; train one with sft/train.py, or pass a model folder "
                            "or hub id")
        return RunInfo(ref=ref, weights=ref)  # a hub id or alias: resolve_model takes it from here
    if not os.path.isdir(path):
        raise UserError(f"model '{ref}' is a file; pass a run folder, a model folder or a hub id")
    if has_card(path):
        card = read_card(path)
        merged, adapter = os.path.join(path, "merged"), os.path.join(path, "adapter")
        has_adapter = os.path.isdir(adapter) and _is_adapter_folder(adapter)
        if os.path.isdir(merged) and _is_model_folder(merged):
            return RunInfo(ref, merged, adapter if has_adapter else None, card, adapter_merged=True)
        if os.path.isdir(adapter) and _is_model_folder(adapter):  # full fine-tuning saves the model there
            return RunInfo(ref, adapter, None, card)
        if has_adapter:
            base = card.get("base_model")
            if not base:
                raise UserError(f"{card_file(path)}: no base_model for the adapter in {adapter}")
            return RunInfo(ref, base, adapter, card)
        if _is_model_folder(path):  # a run as detoxrl/hub_push.py uploads it: the model at the root
            return RunInfo(ref, path, None, card)
        if _is_adapter_folder(path):
            return RunInfo(ref, card.get("base_model") or _adapter_base(path), path, card)
        raise UserError(f"run folder '{ref}' has {CARD} but no merged/ or adapter/ model; was training interrupted? "
                        "Resume it, or pass another model")
    parent = os.path.dirname(os.path.abspath(path))
    if _is_model_folder(path):
        card = read_card(parent) if has_card(parent) else {}
        return RunInfo(ref, path, None, card)
    if _is_adapter_folder(path):
        card = read_card(parent) if has_card(parent) else {}
        base = card.get("base_model") or _adapter_base(path)
        return RunInfo(ref, base, path, card)
    raise UserError(f"'{ref}' is not a model: no config.json, adapter_config.json or {CARD} in it")


def _adapter_base(adapter: str) -> str:
    with open(os.path.join(adapter, "adapter_config.json"), encoding="utf-8") as fh:
        base = json.load(fh).get("base_model_name_or_path")
    if not base:
        raise UserError(f"{adapter}/adapter_config.json names no base_model_name_or_path")
    return base


def resolved_section(ref: str, section: str) -> dict | None:
    """One section (``RewardConfig``, ``DataConfig``, ...) of the ``resolved_config.yaml`` a run saved, read from
    ``ref`` or its parent (``<run>/merged``, ``<run>/adapter``); None when there is none."""
    import yaml

    for folder in (ref, os.path.dirname(os.path.normpath(ref))):
        path = os.path.join(folder, "resolved_config.yaml")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                data = yaml.safe_load(fh) or {}
            value = data.get(section) if isinstance(data, dict) else None
            return value if isinstance(value, dict) else None
    return None
