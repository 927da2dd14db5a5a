"""A pairwise feedback reward model: a Bradley-Terry score ``r(input, output)`` learned from reviewers' preference
pairs (``feedback/preference.py``) with TRL's ``RewardTrainer``, so PPO can be paid by what reviewers prefer.

Model: a one-logit sequence classifier over ``input [SEP] output`` as one sequence (the pointwise model,
``rewards/feedback_model.py``, reads a segment pair; this one is tokenized as TRL's collator feeds it: input ids and
attention mask, no segment ids). Trained to make ``r(chosen) - r(rejected)`` large: ``-log sigmoid(r_c - r_r)``.
As the composite reward's feedback component (``w_feedback``, ``feedback_model`` pointing at the folder) it gives
``sigmoid(r)`` in [0, 1], mixed like the other components; ``feedback_model.json`` says ``kind: pairwise`` so the
loader joins the texts the way training did.

Held-out check: a seeded ``heldout_fraction`` of the distinct inputs (at least one, when there are at least
``min_heldout`` pairs) is held out, and the share of its pairs ranked right (``r(chosen) > r(rejected)``) goes to
``metrics.json`` as ``heldout_pair_accuracy``.
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from dataclasses import asdict, dataclass

import torch

from detoxrl.errors import UserError
from detoxrl.models.embedded import MINILM_ID
from rewards.feedback_model import heldout_inputs, joined, save_model_folder

log = logging.getLogger("detoxrl.rewards")
KIND = "pairwise"


@dataclass
class PairwiseTraining:
    base_model: str = MINILM_ID
    max_length: int = 128
    batch_size: int = 8
    learning_rate: float = 5e-5
    num_train_epochs: float = 4.0
    heldout_fraction: float = 0.2
    min_heldout: int = 10
    seed: int = 0


def split_by_input(pairs: list, fraction: float, min_heldout: int, seed: int) -> tuple[list, list]:
    if len(pairs) < min_heldout or fraction <= 0:
        return pairs, []
    if len({p.input for p in pairs}) < 2:
        return pairs, []
    held = heldout_inputs([p.input for p in pairs], fraction, seed)
    return [p for p in pairs if p.input not in held], [p for p in pairs if p.input in held]


@torch.inference_mode()
def scores(model, tokenizer, sources: list[str], outputs: list[str], max_length: int) -> torch.Tensor:
    """``r(source, output)`` (raw logits), batched."""
    model.eval()
    out = []
    for i in range(0, len(sources), 32):
        texts = [joined(tokenizer, s, o) for s, o in zip(sources[i:i + 32], outputs[i:i + 32])]
        enc = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        out.append(model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[:, 0].float())
    return torch.cat(out) if out else torch.zeros(0)


def pair_accuracy(model, tokenizer, pairs: list, max_length: int) -> float:
    chosen = scores(model, tokenizer, [p.input for p in pairs], [p.chosen for p in pairs], max_length)
    rejected = scores(model, tokenizer, [p.input for p in pairs], [p.rejected for p in pairs], max_length)
    return float((chosen > rejected).float().mean())


def train_pairwise_model(pairs: list, output_dir: str, settings: PairwiseTraining | None = None) -> dict:
    """Train on ``pairs`` (``feedback.preference.PreferencePair``); save to ``output_dir``; return the metrics."""
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from trl import RewardConfig, RewardTrainer

    from detoxrl.models.refs import resolve_model

    s = settings or PairwiseTraining()
    if not pairs:
        raise UserError("the pairwise reward model needs preference pairs (a rejected rewrite with a correction, or "
                        "an accepted and a rejected rewrite of the same input); the store has none")
    train, heldout = split_by_input(list(pairs), s.heldout_fraction, s.min_heldout, s.seed)
    torch.manual_seed(s.seed)
    src = resolve_model(s.base_model, what="pairwise reward model base encoder")
    tokenizer = AutoTokenizer.from_pretrained(src.path)
    model = AutoModelForSequenceClassification.from_pretrained(src.path, num_labels=1)
    model.config.pad_token_id = tokenizer.pad_token_id

    def ids(p, text):
        return tokenizer(joined(tokenizer, p.input, text), truncation=True, max_length=s.max_length)["input_ids"]

    rows = [{"chosen_ids": ids(p, p.chosen), "rejected_ids": ids(p, p.rejected)} for p in train]
    random.Random(s.seed).shuffle(rows)
    args = RewardConfig(output_dir=output_dir + ".run", num_train_epochs=s.num_train_epochs,
                        per_device_train_batch_size=s.batch_size, learning_rate=s.learning_rate,
                        max_length=s.max_length, use_cpu=not torch.cuda.is_available(), report_to=[],
                        save_strategy="no", logging_steps=10, seed=s.seed, disable_tqdm=True, bf16=False,
                        dataloader_num_workers=0, activation_checkpointing=False)
    trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    log.info("pairwise reward model: %d training pairs, %d held out, base %s", len(train), len(heldout),
             src.describe())
    start = time.time()
    trainer.train()
    model = trainer.accelerator.unwrap_model(trainer.model).cpu()
    metrics = {"train_pairs": len(train), "heldout_pairs": len(heldout),
               "train_pair_accuracy": pair_accuracy(model, tokenizer, train, s.max_length),
               "train_seconds": round(time.time() - start, 1), "base_model": f"{src.ref} ({src.source})",
               "settings": asdict(s)}
    if heldout:
        metrics["heldout_pair_accuracy"] = pair_accuracy(model, tokenizer, heldout, s.max_length)
    save_model_folder(output_dir, model, tokenizer, metrics, {
        "what": "sigmoid(r(input [SEP] output)): the detoxrl pairwise feedback reward model", "kind": KIND,
        "reward_config": {"feedback_model": output_dir, "w_feedback": 1.0}})
    shutil.rmtree(output_dir + ".run", ignore_errors=True)
    log.info("pairwise reward model saved to %s (train pair accuracy %.3f%s)", output_dir,
             metrics["train_pair_accuracy"], f", held-out {metrics['heldout_pair_accuracy']:.3f}" if heldout else "")
    return metrics
