"""The feedback reward model: ``P(accept | input, output)``, learned from reviewers' verdicts.

It is the composite reward's optional fourth component (``w_feedback``, ``feedback_model``), so PPO
learns from reviewers too: ``s_fb = P(accept | source, output)`` in [0, 1], mixed like the others.

Model: a sequence classifier over the text pair ``(input, output)`` (``[CLS] input [SEP] output
[SEP]`` with segment ids), labels ``{0: reject, 1: accept}``. ``detox-feedback train`` trains it
from the feedback store by default on the packaged all-MiniLM-L6-v2 encoder, with the toxicity
classifier's own training loop (``rewards.train_toxicity.train_classifier``), and saves an ordinary
HF classifier folder plus ``metrics.json``.

Training examples from the store (``feedback/train.py`` builds them):

* an accepted record: ``(input, output, 1)``;
* a rejected record: ``(input, output, 0)``;
* a correction: also ``(input, correction, 1)`` (the reviewer's own rewrite is acceptable).

Held-out check: when there are at least ``min_heldout`` examples of each label, a seeded
``heldout_fraction`` of the distinct inputs is held out (grouped by input, so no held-out input is
trained on) and ROC-AUC and accuracy on it go to ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch

from detoxrl.errors import UserError
from detoxrl.io import atomic_directory
from detoxrl.models.embedded import MINILM_ID
from rewards.classifier import SequenceClassifier
from rewards.labelled import Labelled
from detoxrl.metrics import accuracy, roc_auc

log = logging.getLogger("detoxrl.rewards")
ID2LABEL = {0: "reject", 1: "accept"}
CARD = "feedback_model.json"


@dataclass
class FeedbackModelConfig:
    """The feedback reward model as a reward component (fields are flat: the reward parser is flat)."""

    feedback_model: str | None = field(
        default=None,
        metadata={"help": "Folder of the feedback reward model that `detox-feedback train` writes "
                  "(<output_dir>/feedback_reward); needed when w_feedback > 0."})
    feedback_label: str = field(default="accept", metadata={"help": "The 'accepted' label, by name or index."})
    feedback_batch_size: int = field(default=64, metadata={"help": "(input, output) pairs per batch."})
    feedback_max_length: int = field(default=128, metadata={"help": "Truncate each pair to this many tokens."})

    def __post_init__(self):
        if self.feedback_batch_size <= 0 or self.feedback_max_length <= 0:
            raise ValueError("feedback_batch_size and feedback_max_length must be > 0")


def joined(tokenizer, source: str, output: str) -> str:
    """The one sequence the pairwise model (``rewards/pairwise_model.py``) reads: ``source [SEP] output``."""
    return f"{source} {tokenizer.sep_token or tokenizer.eos_token or '|'} {output}"


class FeedbackScorer:
    """``P(accept | source, output)`` (pointwise) or ``sigmoid(r(source [SEP] output))`` (``pairwise``,
    ``rewards/pairwise_model.py``) for batches of (source, output) pairs, float32 on the CPU."""

    def __init__(self, classifier: SequenceClassifier, name: str, pairwise: bool = False):
        self.classifier = classifier
        self.name = name
        self.pairwise = pairwise

    def __call__(self, sources: Sequence[str], outputs: Sequence[str]) -> torch.Tensor:
        if len(sources) != len(outputs):
            raise ValueError(f"{len(sources)} sources but {len(outputs)} outputs")
        if self.pairwise:  # one sequence, as the pairwise model trained (no segment ids)
            return self.classifier([joined(self.classifier.tokenizer, s, o) for s, o in zip(sources, outputs)])
        return self.classifier(list(sources), list(outputs))


def load_feedback_scorer(cfg: FeedbackModelConfig, device: str | torch.device = "auto") -> FeedbackScorer:
    """Load ``cfg.feedback_model``; ``UserError`` saying how to make one when it is unset or missing."""
    if not cfg.feedback_model:
        raise UserError("feedback_model is not set; train one with `detox-feedback train --verdicts reward_model` "
                        "and point feedback_model at its <output_dir>/feedback_reward folder")
    if not os.path.isdir(cfg.feedback_model):
        raise UserError(f"feedback_model '{cfg.feedback_model}' is not a folder; `detox-feedback train` writes it to "
                        "<output_dir>/feedback_reward")
    card_path = os.path.join(cfg.feedback_model, CARD)
    pairwise = False
    if os.path.isfile(card_path):
        with open(card_path, encoding="utf-8") as fh:
            pairwise = json.load(fh).get("kind") == "pairwise"
    classifier = SequenceClassifier.load(cfg.feedback_model, 0 if pairwise else cfg.feedback_label,
                                         field="feedback_label", device=device, batch_size=cfg.feedback_batch_size,
                                         max_length=cfg.feedback_max_length, what="feedback reward model")
    return FeedbackScorer(classifier, cfg.feedback_model, pairwise)


@dataclass
class FeedbackModelTraining:
    """How the feedback reward model trains (``rewards.train_toxicity.train_classifier`` reads these names)."""

    base_model: str = MINILM_ID
    max_length: int = 128
    batch_size: int = 16
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    num_train_epochs: float = 4.0
    logging_steps: int = 20
    heldout_fraction: float = 0.2
    min_heldout: int = 5
    seed: int = 0


def heldout_inputs(inputs, fraction: float, seed: int) -> set[str]:
    """A seeded ``fraction`` (at least one) of the distinct ``inputs``: held out whole, so no held-out input is
    trained on. Shared by the pointwise and the pairwise feedback models."""
    distinct = sorted(set(inputs))
    random.Random(seed).shuffle(distinct)
    return set(distinct[: max(1, round(len(distinct) * fraction))])


def save_model_folder(output_dir: str, model, tokenizer, metrics: dict, card: dict) -> None:
    """``output_dir`` (atomically): the model in safetensors, its tokenizer, ``metrics.json`` and ``CARD``."""
    with atomic_directory(output_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        with open(os.path.join(tmp, "metrics.json"), "w", encoding="utf-8") as fh:
            json.dump(metrics, fh, indent=2)
        with open(os.path.join(tmp, CARD), "w", encoding="utf-8") as fh:
            json.dump(card, fh, indent=2)


def heldout_split(items: list[Labelled], fraction: float, min_per_label: int, seed: int
                  ) -> tuple[list[Labelled], list[Labelled]]:
    """(train, held-out), grouped by input; no held-out part when a label has < ``min_per_label`` examples."""
    by_label = [sum(i.label == y for i in items) for y in (0, 1)]
    if min(by_label) < min_per_label or fraction <= 0:
        return items, []
    held = heldout_inputs([i.text for i in items], fraction, seed)
    train = [i for i in items if i.text not in held]
    heldout = [i for i in items if i.text in held]
    if not train or len({i.label for i in heldout}) < 2:
        return items, []
    return train, heldout


def train_feedback_model(examples: Sequence[tuple[str, str, int]], output_dir: str,
                         settings: FeedbackModelTraining | None = None) -> dict:
    """Train the pair classifier on ``(input, output, label)`` examples; save it to ``output_dir``; return metrics."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from detoxrl.models.refs import resolve_model
    from rewards.train_toxicity import train_classifier

    s = settings or FeedbackModelTraining()
    items = [Labelled(i, int(y), "feedback", text_pair=o) for i, o, y in examples]
    labels = {i.label for i in items}
    if labels != {0, 1}:
        raise UserError(f"the feedback reward model needs accepted and rejected examples; the store has only "
                        f"{'accepted' if labels == {1} else 'rejected' if labels == {0} else 'no'} ones")
    train, heldout = heldout_split(items, s.heldout_fraction, s.min_heldout, s.seed)
    random.Random(s.seed).shuffle(train)
    torch.manual_seed(s.seed)
    src = resolve_model(s.base_model, what="feedback reward model base encoder")
    tokenizer = AutoTokenizer.from_pretrained(src.path)
    model = AutoModelForSequenceClassification.from_pretrained(
        src.path, num_labels=2, id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()})
    log.info("feedback reward model: %d training pairs (%d accepted), %d held out, base %s", len(train),
             sum(i.label for i in train), len(heldout), src.describe())
    start = time.time()
    seconds = train_classifier(model, tokenizer, train, s, s.seed)

    def scores(part: list[Labelled]) -> list[float]:
        scorer = SequenceClassifier(model, tokenizer, 1, activation="softmax", device=torch.device("cpu"),
                                    batch_size=64, max_length=s.max_length)
        return scorer([i.text for i in part], [i.text_pair for i in part]).tolist()

    train_scores = scores(train)
    metrics = {"train_examples": len(train), "train_accepted": sum(i.label for i in train),
               "train_accuracy": accuracy([i.label for i in train], train_scores), "heldout_examples": len(heldout),
               "train_seconds": round(seconds, 1), "base_model": f"{src.ref} ({src.source})", "settings": asdict(s)}
    if heldout:
        held_scores = scores(heldout)
        y = [i.label for i in heldout]
        metrics.update(heldout_accuracy=accuracy(y, held_scores), heldout_roc_auc=roc_auc(y, held_scores))
    save_model_folder(output_dir, model, tokenizer, metrics, {
        "what": "P(accept | input, output): the detoxrl feedback reward model", "labels": ID2LABEL,
        "input": "text pair (input, output)", "reward_config": {"feedback_model": output_dir, "w_feedback": 1.0}})
    log.info("feedback reward model saved to %s (%.0fs; train accuracy %.3f%s)", output_dir, time.time() - start,
             metrics["train_accuracy"],
             f", held-out ROC-AUC {metrics['heldout_roc_auc']:.3f}" if heldout else "")
    return metrics
