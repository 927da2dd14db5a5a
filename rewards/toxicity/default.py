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


def default_classifier_dir(name: str = DEFAULT_TOXICITY_MODEL) -> str:
    """``<detoxrl cache>/models/<name>`` (default name: ``detoxrl-toxicity-minilm``)."""
    return os.path.join(cache_dir(), "models", name)


def is_trained(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "config.json")) and os.path.isfile(
        os.path.join(folder, "model.safetensors"))


def is_cache_name(ref: str) -> bool:
    """``detoxrl-toxicity-minilm`` or another ``detoxrl-toxicity-*`` name: a classifier in the detoxrl cache
    (``detox-train-toxicity --output_dir <cache>/models/<name>``), unless a local path of that name exists."""
    from detoxrl.paths import resolve_path

    return ref.startswith(DEFAULT_TOXICITY_MODEL) and "/" not in ref and "\\" not in ref and resolve_path(ref) is None


# The independent eval judge: trained like DEFAULT_TOXICITY_MODEL but without ParaDetox and from another seed
# (configs/pipeline/*.yaml train it; see configs/eval/default.yaml).
EXTERNAL_TOXICITY_MODEL = "detoxrl-toxicity-minilm-external"


def resolve_classifier_ref(ref: str, field: str = "toxicity_model") -> str:
    """``ref`` unchanged, or the cache folder for ``detoxrl-toxicity-minilm`` (and other ``detoxrl-toxicity-*``
    names); such a folder must be trained."""
    if ref != DEFAULT_TOXICITY_MODEL and not is_cache_name(ref):
        return ref
    folder = default_classifier_dir(ref)
    if not is_trained(folder):
        command = TRAIN_COMMAND if ref == DEFAULT_TOXICITY_MODEL else f"{TRAIN_COMMAND} --output_dir {folder}"
        if ref == EXTERNAL_TOXICITY_MODEL:  # the eval judge must not see ParaDetox, or it is not independent
            command = f"{TRAIN_COMMAND} --use_paradetox false --seed 1 --output_dir {folder}"
        raise UserError(f"{field}: the toxicity classifier '{ref}' is not trained yet (no model at {folder}). "
                        f"Run `{command}` once (about 10 minutes on a 2-core CPU, offline), or set {field} "
                        "to a classifier folder or hub id, or use toxicity_backend: lexicon")
    return folder
