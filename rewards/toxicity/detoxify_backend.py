"""The ``detoxify`` toxicity backend: the detoxify library's classifiers, or a local detoxify checkpoint.

Definition: ``sigmoid(z[k])`` where ``z`` are the model's logits and ``k`` the configured class
(detoxify scores each class with its own sigmoid; ``toxic`` means its ``toxicity`` head).

Named models (``original``, ``unbiased``, ``multilingual``, ``original-small``, ``unbiased-small``)
come from the library's release URLs through ``torch.hub`` (cached in ``~/.cache/torch/hub``) plus
the HF config of their base architecture; both need internet on first use.

A local checkpoint is a pickle (detoxify calls ``torch.load(weights_only=False)``), and unpickling
a file can run arbitrary code. So a local checkpoint is refused with one ``UserError`` unless
``toxicity_trust_checkpoint: true``; the check happens before the file is opened.
"""

from __future__ import annotations

import os

import torch

from detoxrl.errors import UserError
from detoxrl.paths import candidate_paths, resolve_path
from rewards.batching import resolve_device
from rewards.classifier import SequenceClassifier, resolve_label
from rewards.toxicity.config import DETOXIFY_MODELS, ToxicityConfig

# detoxify renames some Jigsaw classes; accept both spellings
_CLASS_ALIASES = {"toxic": "toxicity", "identity_hate": "identity_attack", "severe_toxic": "severe_toxicity"}


def _checkpoint_path(cfg: ToxicityConfig) -> str | None:
    """None for a named model; the checkpoint path after the existence and trust checks otherwise."""
    if cfg.toxicity_model in DETOXIFY_MODELS:
        return None
    path = resolve_path(cfg.toxicity_model)
    if path is None or not os.path.isfile(path):
        raise UserError(f"toxicity_model: detoxify checkpoint '{cfg.toxicity_model}' not found (tried "
                        f"{', '.join(candidate_paths(cfg.toxicity_model))}); give the path of a .ckpt file or "
                        f"one of {', '.join(DETOXIFY_MODELS)}")
    if not cfg.toxicity_trust_checkpoint:
        raise UserError(f"toxicity_model: refusing to load the detoxify checkpoint '{path}': detoxify reads "
                        "checkpoints with pickle, which can run arbitrary code. Set toxicity_trust_checkpoint: "
                        "true only if you trust where the file came from")
    return path


def load_detoxify(cfg: ToxicityConfig, device: str | torch.device = "auto") -> SequenceClassifier:
    """The configured detoxify model as a batched ``SequenceClassifier`` (sigmoid of the chosen class)."""
    checkpoint = _checkpoint_path(cfg)
    config_path = None
    if cfg.toxicity_config_path:
        config_path = resolve_path(cfg.toxicity_config_path)
        if config_path is None:
            raise UserError(f"toxicity_config_path: folder '{cfg.toxicity_config_path}' not found")
    try:
        from detoxify import Detoxify
    except ImportError:
        raise UserError("toxicity_backend: detoxify needs the detoxify package: "
                        "pip install 'detoxrl[detoxify]'") from None
    model_type = cfg.toxicity_model if checkpoint is None else "original"
    try:
        judge = Detoxify(model_type=model_type, checkpoint=checkpoint, device="cpu",
                         huggingface_config_path=config_path)
    except Exception as exc:  # noqa: BLE001 - network, missing HF config, bad checkpoint layout
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"toxicity_model: detoxify '{cfg.toxicity_model}' failed to load ({type(exc).__name__}: "
                        f"{first[:200]}). Offline, download the checkpoint once and set toxicity_model to its path, "
                        "toxicity_config_path to its HF config folder and toxicity_trust_checkpoint: true") from exc
    wanted = _CLASS_ALIASES.get(cfg.toxicity_label, cfg.toxicity_label)
    id2label = dict(enumerate(judge.class_names))
    index = resolve_label(id2label, wanted, "toxicity_label", f"detoxify:{cfg.toxicity_model}")
    return SequenceClassifier(judge.model, judge.tokenizer, index, activation="sigmoid", device=resolve_device(device),
                              batch_size=cfg.toxicity_batch_size, max_length=cfg.toxicity_max_length,
                              name=f"detoxify:{cfg.toxicity_model}")
