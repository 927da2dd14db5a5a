"""What ``detox-eval`` can evaluate, and how each kind of system produces its outputs.

A system spec is ``[name=]what``; ``what`` is, in the order tried:

1. ``duplicate`` or ``delete``: a built-in baseline (``evaluation/baselines.py``);
2. an existing file: a predictions file (``evaluation/predictions.py``);
3. an existing folder or a hub id: a model (run folder, merged or adapter folder, plain model
   folder, hub id), loaded by ``detoxrl.models.trained.load_trained``, the loader ``detox`` uses.

Prompts: when ``detoxrl.json`` sits in the model folder or its parent (what ``detox-sft`` writes),
its ``prompt`` settings are used, since the model was trained on that format; otherwise the
eval run's ``PromptConfig``. Decoding is the eval run's ``GenerationSettings`` for every model (the
card's ``generation`` is not used, so systems are compared under the same decoding). The name
defaults to the baseline name or the folder/file name.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from detoxrl.errors import UserError
from detoxrl.paths import resolve_path
from detoxrl.prompts import PromptConfig
from evaluation.baselines import BASELINES


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


def load_system_model(ref: str, default_prompt: PromptConfig, device: str = "auto"):
    """(model, PromptFormatter, description) for a model system (``detoxrl.models.trained``)."""
    from detoxrl.devices import resolve_device
    from detoxrl.models.trained import load_trained

    trained = load_trained(ref, default_prompt)
    return trained.model.to(resolve_device(device)), trained.formatter, trained.what
