"""``ToxicityConfig``: which toxicity judge to load (every field is a YAML key and a CLI flag).

Field names carry the ``toxicity_`` prefix because the detoxrl parser is flat: the reward
(``RewardConfig``) inherits these fields, and the evaluation judges spell them ``judge_toxicity_*``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

# Built by ``detox-train-toxicity``; the ``hf`` backend loads it from the detoxrl cache.
DEFAULT_TOXICITY_MODEL = "detoxrl-toxicity-minilm"


def default_classifier_dir(name: str = DEFAULT_TOXICITY_MODEL) -> str:
    """``<detoxrl cache>/models/<name>`` (default name: ``detoxrl-toxicity-minilm``)."""
    from detoxrl.paths import cache_dir

    return os.path.join(cache_dir(), "models", name)
DETOXIFY_MODELS = ("original", "unbiased", "multilingual", "original-small", "unbiased-small")
TOXICITY_BACKENDS = ("hf", "detoxify", "lexicon")


@dataclass
class ToxicityConfig:
    """A toxicity scorer: ``P(toxic | text)`` in [0, 1] for a batch of texts."""

    toxicity_backend: Literal["hf", "detoxify", "lexicon"] = field(
        default="hf",
        metadata={"help": "hf: any AutoModelForSequenceClassification (default: the classifier "
                  "detox-train-toxicity trains). detoxify: the detoxify library's models or a local "
                  "checkpoint. lexicon: the share of words that are toxic-vocabulary hits."},
    )
    toxicity_model: str = field(
        default=DEFAULT_TOXICITY_MODEL,
        metadata={"help": f"hf: a hub id (s-nlp/roberta_toxicity_classifier, textdetox/xlmr-large-toxicity-"
                  f"classifier) or a local folder; '{DEFAULT_TOXICITY_MODEL}' is the embedded classifier in "
                  "the detoxrl cache. detoxify: original | unbiased | multilingual | original-small | "
                  "unbiased-small, or a local .ckpt path (needs toxicity_trust_checkpoint). lexicon: unused."},
    )
    toxicity_label: str = field(
        default="toxic",
        metadata={"help": "The toxic label, by name (case-insensitive, e.g. toxic, LABEL_1) or index (e.g. 1). "
                  "detoxify: a class name (toxic means its 'toxicity' head; also severe_toxicity, insult, ...)."},
    )
    toxicity_trust_checkpoint: bool = field(
        default=False,
        metadata={"help": "detoxify with a local checkpoint only: detoxify loads checkpoints with pickle, which "
                  "can run code. Set true only for a file whose origin you trust."},
    )
    toxicity_config_path: str | None = field(
        default=None,
        metadata={"help": "detoxify only: folder with the HF config and tokenizer of the checkpoint's "
                  "architecture (detoxify's huggingface_config_path), needed offline."},
    )
    toxicity_batch_size: int = field(default=64, metadata={"help": "Texts per classifier batch."})
    toxicity_max_length: int = field(default=128, metadata={"help": "Truncate texts to this many tokens."})

    def __post_init__(self):
        if self.toxicity_backend not in TOXICITY_BACKENDS:
            raise ValueError(f"toxicity_backend: '{self.toxicity_backend}' is not one of "
                             f"{', '.join(TOXICITY_BACKENDS)}")
        if self.toxicity_backend == "detoxify":
            if self.toxicity_model == DEFAULT_TOXICITY_MODEL:
                self.toxicity_model = "original"  # the hf default means nothing to detoxify
            if self.toxicity_model not in DETOXIFY_MODELS and not _looks_like_path(self.toxicity_model):
                raise ValueError(f"toxicity_model: '{self.toxicity_model}' is not a detoxify model; use one of "
                                 f"{', '.join(DETOXIFY_MODELS)} or a local checkpoint path")
        if not str(self.toxicity_label).strip():
            raise ValueError("toxicity_label is empty; give the toxic label's name (e.g. toxic) or index (e.g. 1)")
        if self.toxicity_batch_size <= 0:
            raise ValueError(f"toxicity_batch_size must be > 0 (got {self.toxicity_batch_size})")
        if self.toxicity_max_length <= 0:
            raise ValueError(f"toxicity_max_length must be > 0 (got {self.toxicity_max_length})")

    def describe(self) -> str:
        if self.toxicity_backend == "lexicon":
            return "lexicon (toxic-word share)"
        return f"{self.toxicity_backend}:{self.toxicity_model} [{self.toxicity_label}]"


def _looks_like_path(ref: str) -> bool:
    return os.sep in ref or "/" in ref or ref.endswith((".ckpt", ".pt", ".pth")) or os.path.exists(ref)
