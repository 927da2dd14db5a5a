"""What ``detox-eval`` can evaluate, and how each kind of system produces its outputs.

A system spec is ``[name=]what``; ``what`` is, in the order tried:

1. ``duplicate`` or ``delete``: a built-in baseline (``rewards/baselines.py``);
2. an existing file: a predictions file (``rewards/predictions.py``);
3. an existing folder or a hub id: a model, loaded through ``detoxrl.models``:
   * an SFT output folder (it holds ``detoxrl.json``): its ``merged/`` model, else its ``adapter/``;
   * an adapter folder (it holds ``adapter_config.json``): the base named by the adapter's
     ``base_model_name_or_path`` is loaded in full precision through ``load_model``, the adapter is
     applied with ``peft.PeftModel.from_pretrained`` and merged (``merge_and_unload``) for speed; the
     tokenizer is the adapter folder's own when it has one, else the base's;
   * any other folder or hub id: a merged/full model through ``load_model``.

Prompts: when ``detoxrl.json`` sits in the model folder or its parent (what ``detox-sft`` writes),
its ``prompt`` settings are used, since the model was trained on that format; otherwise the
eval run's ``PromptConfig``. The name defaults to the baseline name or the folder/file name.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, fields

from detoxrl.errors import UserError
from detoxrl.paths import resolve_path
from detoxrl.prompts import PromptConfig, PromptFormatter
from rewards.baselines import BASELINES

log = logging.getLogger("detoxrl.rewards")


@dataclass(frozen=True)
class System:
    name: str
    kind: str  # "baseline" | "predictions" | "model"
    ref: str  # baseline name, file path, or model folder / hub id


def parse_system(spec: str) -> System:
    """``[name=]what`` -> ``System`` (see the module docstring for the order)."""
    name, _, what = spec.partition("=") if "=" in spec and not os.path.exists(spec) else ("", "", spec)
    what = what.strip()
    if not what:
        raise UserError(f"systems: '{spec}' names nothing; give duplicate, delete, a predictions file or a model")
    if what in BASELINES:
        return System(name or what, "baseline", what)
    path = resolve_path(what)
    if path and os.path.isfile(path):
        return System(name or os.path.splitext(os.path.basename(path))[0], "predictions", path)
    if path and os.path.isdir(path):
        return System(name or os.path.basename(os.path.normpath(path)), "model", path)
    from detoxrl.models.refs import looks_like_hub_id

    if looks_like_hub_id(what):
        return System(name or what, "model", what)
    raise UserError(f"systems: '{what}' is not a baseline ({', '.join(BASELINES)}), an existing predictions file "
                    "or model folder, or a hub id")


def _detoxrl_json(folder: str) -> dict | None:
    for candidate in (folder, os.path.dirname(os.path.normpath(folder))):
        path = os.path.join(candidate, "detoxrl.json")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as fh:
                return json.load(fh)
    return None


def _model_folder(folder: str) -> str:
    """An SFT output folder -> its merged/ (else adapter/) subfolder; other folders unchanged."""
    if os.path.isfile(os.path.join(folder, "detoxrl.json")):
        for sub in ("merged", "adapter"):
            if os.path.isdir(os.path.join(folder, sub)):
                return os.path.join(folder, sub)
    return folder


def prompt_config_for(folder: str | None, default: PromptConfig) -> PromptConfig:
    """The ``prompt`` of a nearby ``detoxrl.json``, else ``default``."""
    info = _detoxrl_json(folder) if folder and os.path.isdir(folder) else None
    prompt = (info or {}).get("prompt")
    if not isinstance(prompt, dict):
        return default
    names = {f.name for f in fields(PromptConfig)}
    return PromptConfig(**{k: v for k, v in prompt.items() if k in names})


def load_system_model(ref: str, default_prompt: PromptConfig, device: str = "auto"):
    """(model, PromptFormatter, description) for a model system (see the module docstring)."""
    from detoxrl.models import loading
    from detoxrl.models.config import DetoxModelConfig
    from rewards.batching import resolve_device

    folder = _model_folder(ref) if os.path.isdir(ref) else None
    adapter = folder if folder and os.path.isfile(os.path.join(folder, "adapter_config.json")) else None
    if adapter:
        with open(os.path.join(adapter, "adapter_config.json"), encoding="utf-8") as fh:
            base = json.load(fh).get("base_model_name_or_path")
        if not base:
            raise UserError(f"adapter '{adapter}': adapter_config.json names no base_model_name_or_path")
        loaded = loading.load_model(DetoxModelConfig(model_name_or_path=base, finetuning="full"), apply_adapter=False)
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(loaded.model, adapter).merge_and_unload()
        except (OSError, ValueError, RuntimeError) as exc:
            raise UserError(f"adapter '{adapter}' does not fit its base '{base}': {str(exc)[:200]}") from exc
        has_tokenizer = os.path.isfile(os.path.join(adapter, "tokenizer_config.json"))
        tokenizer = loading.load_tokenizer(adapter) if has_tokenizer else loaded.tokenizer
        family, what = loaded.family, f"adapter {adapter} on {base}"
    else:
        loaded = loading.load_model(DetoxModelConfig(model_name_or_path=folder or ref, finetuning="full"),
                                    apply_adapter=False)
        model, tokenizer, family, what = loaded.model, loaded.tokenizer, loaded.family, loaded.source.describe()
    model = model.to(resolve_device(device)).eval()
    prompt_cfg = prompt_config_for(folder, default_prompt)
    formatter = PromptFormatter(prompt_cfg, tokenizer, family)
    log.info("system model: %s (%s, prompt format %s)", what, family, formatter.format)
    return model, formatter, what
