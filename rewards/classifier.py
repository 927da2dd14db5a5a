"""A Hugging Face sequence classifier as a batched scorer: the probability of one label, in [0, 1].

Definition. For a text ``x`` truncated to ``max_length`` tokens, with logits ``z`` (one per label)
and the configured label index ``k``:

* ``softmax(z)[k]`` for single-label models (``config.problem_type`` unset or
  ``single_label_classification``);
* ``sigmoid(z[k])`` for multi-label models (``multi_label_classification``, e.g. detoxify's six
  heads) and for one-logit models (``num_labels == 1``, where ``k`` must be 0).

The label is given by name (matched case-insensitively against ``config.id2label``) or by index
(an int or a string of digits); a name the model does not have is a ``UserError`` listing the
model's labels. Weights load from safetensors: a local folder with only pickle weights (``.bin``)
is refused by the core loader's rule, and a hub repo must have ``model.safetensors``.

Batching: texts are sorted by length, tokenized once per batch, moved to the device once per
batch, scored under ``torch.inference_mode``; scores come back on the CPU in input order.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from detoxrl.errors import UserError
from rewards.batching import resolve_device, sorted_batches


def label_names(id2label: dict) -> str:
    """``"0=neutral, 1=toxic"``: a model's labels as a message lists them."""
    return ", ".join(f"{int(i)}={name}" for i, name in sorted(id2label.items(), key=lambda kv: int(kv[0])))


def resolve_label(id2label: dict, label: str | int, field: str, model: str) -> int:
    """The index of ``label`` (a name or an index) among ``id2label``; ``UserError`` naming ``field`` if absent."""
    id2label = {int(i): str(n) for i, n in id2label.items()}
    text = str(label).strip()
    if text.lstrip("-").isdigit():
        index = int(text)
        if index in id2label:
            return index
        raise UserError(f"{field}: index {index} is out of range for '{model}', whose labels are "
                        f"{label_names(id2label)}; set {field} to one of these names or indices")
    matches = [i for i, name in id2label.items() if name.lower() == text.lower()]
    if len(matches) == 1:
        return matches[0]
    raise UserError(f"{field}: '{label}' is not a label of '{model}'; its labels are {label_names(id2label)}. "
                    f"Set {field} to one of these names or indices")


class SequenceClassifier:
    """Batched ``P(label | text)`` from a sequence-classification model (see the module docstring)."""

    def __init__(self, model, tokenizer, label_index: int, *, activation: str, device: torch.device,
                 batch_size: int = 64, max_length: int = 128, name: str = ""):
        if activation not in ("softmax", "sigmoid"):
            raise ValueError(f"activation must be softmax or sigmoid, got {activation!r}")
        self.model = model.to(device).eval()
        self.model.requires_grad_(False)
        self.tokenizer = tokenizer
        self.label_index = label_index
        self.activation = activation
        self.device = device
        self.batch_size = batch_size
        self.max_length = max_length
        self.name = name

    @classmethod
    def load(cls, ref: str, label: str | int, *, field: str, device: str | torch.device = "auto",
             batch_size: int = 64, max_length: int = 128, what: str = "classifier") -> "SequenceClassifier":
        """Resolve ``ref`` with the core model references and load it as a sequence classifier."""
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from detoxrl.models.loading import has_safetensors
        from detoxrl.models.refs import resolve_model

        src = resolve_model(ref, what=what)
        use_safetensors = has_safetensors(src)  # raises for a local folder with pickle weights only
        if use_safetensors is None and not os.path.isdir(src.path):
            use_safetensors = True  # hub repos: safetensors only
        try:
            model = AutoModelForSequenceClassification.from_pretrained(src.path, use_safetensors=use_safetensors)
            tokenizer = AutoTokenizer.from_pretrained(src.path)
        except (OSError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"{what} '{ref}' ({src.source}) failed to load as a sequence classifier with "
                            f"safetensors weights: {first[:300]}") from exc
        index = resolve_label(model.config.id2label, label, field, ref)
        multi = model.config.problem_type == "multi_label_classification" or model.config.num_labels == 1
        return cls(model, tokenizer, index, activation="sigmoid" if multi else "softmax",
                   device=resolve_device(device), batch_size=batch_size, max_length=max_length, name=ref)

    @torch.inference_mode()
    def __call__(self, texts: Sequence[str], pairs: Sequence[str] | None = None) -> torch.Tensor:
        """``P(label | text)`` for each text, float32 on the CPU, in input order.

        With ``pairs``, each ``(texts[i], pairs[i])`` is encoded as a text pair (the tokenizer's pair
        template, e.g. ``[CLS] a [SEP] b [SEP]`` with segment ids), for models trained on pairs.
        """
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} pairs")
        sizes = texts if pairs is None else [a + b for a, b in zip(texts, pairs)]
        out = torch.zeros(len(texts), dtype=torch.float32)
        for idx in sorted_batches(sizes, self.batch_size):
            second = None if pairs is None else [pairs[i] for i in idx]
            enc = self.tokenizer([texts[i] for i in idx], second, padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt").to(self.device)
            logits = self.model(**enc).logits.float()
            if self.activation == "softmax":
                probs = logits.softmax(-1)[:, self.label_index]
            else:
                probs = logits[:, self.label_index].sigmoid()
            out[idx] = probs.cpu()
        return out

    def __repr__(self) -> str:
        return f"<SequenceClassifier {self.name} label={self.label_index} ({self.activation}) on {self.device}>"
