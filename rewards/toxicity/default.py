"""The embedded default toxicity classifier: where ``detox-train-toxicity`` saves it, and finding it.

``toxicity_model: detoxrl-toxicity-minilm`` (the default) means the folder
``<detoxrl cache>/models/detoxrl-toxicity-minilm`` (``$DETOXRL_CACHE``, else ``~/.cache/detoxrl``).
It is never trained implicitly: training takes minutes of CPU and writes to the cache, which a
scoring call should not do behind the user's back. When the folder is missing, loading fails with
a ``UserError`` that gives the one command to run.
"""

from __future__ import annotations

import os

from detoxrl.errors import UserError
from detoxrl.paths import cache_dir
from rewards.toxicity.config import DEFAULT_TOXICITY_MODEL

TRAIN_COMMAND = "detox-train-toxicity"


def default_classifier_dir() -> str:
    """``<detoxrl cache>/models/detoxrl-toxicity-minilm``."""
    return os.path.join(cache_dir(), "models", DEFAULT_TOXICITY_MODEL)


def is_trained(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "config.json")) and os.path.isfile(
        os.path.join(folder, "model.safetensors"))


def resolve_classifier_ref(ref: str, field: str = "toxicity_model") -> str:
    """``ref`` unchanged, or the embedded classifier's folder for ``detoxrl-toxicity-minilm`` (must be trained)."""
    if ref != DEFAULT_TOXICITY_MODEL:
        return ref
    folder = default_classifier_dir()
    if not is_trained(folder):
        raise UserError(f"{field}: the embedded toxicity classifier is not trained yet (no model at {folder}). "
                        f"Run `{TRAIN_COMMAND}` once (about 10 minutes on a 2-core CPU, offline), or set {field} "
                        "to a classifier folder or hub id, or use toxicity_backend: lexicon")
    return folder
