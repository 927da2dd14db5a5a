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

Decoding options: a model spec may end in ``@key=value[,key=value]`` with keys ``best_of``,
``temperature``, ``top_p`` and ``seed``, which replace the eval run's settings for that system only:
``ppo=outputs/rl/default@best_of=8`` decodes best-of-8 (``detoxrl/rerank.py``, reranked by the composite
reward of ``rerank_config``) beside a greedy ``ppo`` row. Without a name the system is called
``<folder>@best_of=8``. Options on a baseline or a predictions file, unknown keys and bad values are
one-line errors.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from detoxrl.errors import UserError
from detoxrl.paths import resolve_path
from detoxrl.prompts import PromptConfig
from evaluation.baselines import BASELINES


# Decoding options a model spec may carry after '@', with their types and checks.
OPTIONS = {"best_of": (int, lambda v: v >= 1, "a whole number >= 1"),
           "temperature": (float, lambda v: v > 0 and v != float("inf"), "a number > 0"),
           "top_p": (float, lambda v: 0 < v <= 1, "a number in (0, 1]"),
           "seed": (int, lambda v: True, "a whole number")}
_SUFFIX = re.compile(r"^(?P<what>.+?)@(?P<options>[A-Za-z_]\w*=[^@=,]*(?:,[A-Za-z_]\w*=[^@=,]*)*)$")


@dataclass(frozen=True)
class System:
    name: str
    kind: str  # "baseline" | "predictions" | "model"
    ref: str  # baseline name, file path, or model folder / hub id
    decoding: dict = field(default_factory=dict, compare=False, hash=False)  # '@' options: {"best_of": 8}


def parse_options(text: str, spec: str) -> dict:
    """``best_of=8,temperature=0.7`` -> ``{"best_of": 8, "temperature": 0.7}`` (one-line errors naming ``spec``)."""
    out: dict = {}
    for item in text.split(","):
        key, _, raw = item.partition("=")
        key, raw = key.strip(), raw.strip()
        if key not in OPTIONS:
            raise UserError(f"systems: '{spec}': unknown decoding option '{key}'; use {', '.join(OPTIONS)} "
                            "(e.g. ppo=outputs/rl/default@best_of=8)")
        kind, ok, want = OPTIONS[key]
        try:
            value = kind(raw)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise UserError(f"systems: '{spec}': {key} must be {want} (got '{raw}')")
        if key in out:
            raise UserError(f"systems: '{spec}': {key} is given twice")
        out[key] = value
    return out


def split_options(spec: str) -> tuple[str, dict]:
    """``ppo=run@best_of=8`` -> ``("ppo=run", {"best_of": 8})``; a spec naming an existing path keeps any '@'."""
    found = _SUFFIX.match(spec)
    if found is None or os.path.exists(spec) or resolve_path(spec):
        if "@" in spec and re.search(r"@\w+=", spec) and not os.path.exists(spec):
            raise UserError(f"systems: '{spec}': decoding options are '@key=value[,key=value]' at the end of a model "
                            "spec, e.g. ppo=outputs/rl/default@best_of=8")
        return spec, {}
    return found.group("what"), parse_options(found.group("options"), spec)


def parse_system(spec: str) -> System:
    """``[name=]what[@options]`` -> ``System`` (see the module docstring for the order)."""
    base, options = split_options(spec.strip())
    name, _, what = base.partition("=") if "=" in base and not os.path.exists(base) else ("", "", base)
    what = what.strip()
    if not what:
        raise UserError(f"systems: '{spec}' names nothing; give duplicate, delete, a predictions file or a model")
    suffix = "@" + ",".join(f"{k}={v}" for k, v in options.items()) if options else ""
    if options and (what in BASELINES or (resolve_path(what) and os.path.isfile(resolve_path(what)))):
        raise UserError(f"systems: '{spec}': decoding options apply to model systems only, not to "
                        f"{'the baseline' if what in BASELINES else 'the predictions file'} '{what}'")
    if what in BASELINES:
        return System(name or what, "baseline", what)
    path = resolve_path(what)
    if path and os.path.isfile(path):
        return System(name or os.path.splitext(os.path.basename(path))[0], "predictions", path)
    if path and os.path.isdir(path):
        return System(name or os.path.basename(os.path.normpath(path)) + suffix, "model", path, options)
    from detoxrl.models.refs import looks_like_hub_id

    if looks_like_hub_id(what):
        return System(name or what + suffix, "model", what, options)
    raise UserError(f"systems: '{what}' is not a baseline ({', '.join(BASELINES)}), an existing predictions file "
                    "or model folder, or a hub id")


def load_system_model(ref: str, default_prompt: PromptConfig, device: str = "auto"):
    """(model, PromptFormatter, description) for a model system (``detoxrl.models.trained``)."""
    from detoxrl.devices import resolve_device
    from detoxrl.models.trained import load_trained

    trained = load_trained(ref, default_prompt)
    return trained.model.to(resolve_device(device)), trained.formatter, trained.what
