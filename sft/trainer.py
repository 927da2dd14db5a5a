"""The SFT trainers: transformers' ``Seq2SeqTrainer`` (seq2seq) and ``Trainer`` (causal) with the
detox losses of ``sft/losses.py`` and the identity-mapping guard.

TRL's ``SFTTrainer`` takes causal models only and has no per-token loss weights, so the loss
lives in one mixin shared by both families. The mixin only orchestrates; the arithmetic is in
``sft/losses.py``.

Guard: after every evaluation the main process decodes ``guard_samples`` dev inputs (on gathered parameters under
ZeRO-3/FSDP, ``detoxrl/distributed.py``) and logs
``eval_copy_rate`` (output equals input after normalisation), ``eval_lexicon_toxicity`` and
``eval_chrf``; a copy rate above ``copy_warn`` logs a loud warning.
"""

from __future__ import annotations

import logging
from collections import defaultdict

import torch
from transformers import Seq2SeqTrainer, Trainer

from detoxrl.generate import GenerationSettings, generate_rewrites
from detoxrl.metrics import chrf, copy_rate
from sft.losses import toxic_mass, toxic_penalty, weighted_ce

log = logging.getLogger("detoxrl")


class IdentityGuard:
    """Decodes a fixed dev sample and measures copying, lexicon toxicity and ChrF."""

    def __init__(self, formatter, lexicon, sources: list[str], references: list[list[str]], max_new_tokens: int = 64,
                 copy_warn: float = 0.5):
        self.formatter, self.lexicon = formatter, lexicon
        self.sources, self.references = sources, references
        self.settings = GenerationSettings(max_new_tokens=max_new_tokens)
        self.copy_warn = copy_warn
        self.last_outputs: list[str] = []
        # The inputs never change: their lexicon toxicity is measured once.
        self.input_toxicity = lexicon.toxic_rate(sources) if lexicon else float("nan")

    def run(self, model) -> dict[str, float]:
        outputs = generate_rewrites(model, self.formatter, self.sources, self.settings)
        self.last_outputs = outputs
        metrics = {
            "copy_rate": copy_rate(self.sources, outputs),
            "lexicon_toxicity": self.lexicon.toxic_rate(outputs) if self.lexicon else float("nan"),
            "input_lexicon_toxicity": self.input_toxicity,
            "chrf": chrf(outputs, self.references),
        }
        if metrics["copy_rate"] > self.copy_warn:
            log.warning("!" * 70 + "\nIDENTITY MAPPING: the model copies %.0f%% of dev inputs unchanged (> %.0f%%).\n"
                        "Use a task prefix, loss: toxic_penalty or loss: toxic_mask, or more steps.\n" + "!" * 70,
                        100 * metrics["copy_rate"], 100 * self.copy_warn)
        return metrics


class DetoxLossMixin:
    """``compute_loss`` for ce / toxic_penalty / toxic_mask, metrics for logs, and the guard after eval."""

    loss_is_scaled_for_ga = False  # our loss is a per-batch mean: let Trainer divide by the accumulation steps

    def __init__(self, *args, toxic_ids: torch.Tensor | None = None, guard: IdentityGuard | None = None,
                 family: str = "causal", **kwargs):
        super().__init__(*args, **kwargs)
        self.toxic_ids = toxic_ids if toxic_ids is not None else torch.empty(0, dtype=torch.long)
        self.guard, self.family = guard, family
        self._metrics: dict[str, list[float]] = defaultdict(list)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        args = self.args
        labels, weights = inputs.pop("labels"), inputs.pop("loss_weights")
        if self.family == "causal":
            # Targets sit at the end of left-padded rows: only their logits are computed.
            keep = int((labels != -100).sum(-1).max().item())
            outputs = model(**inputs, logits_to_keep=keep + 1, use_cache=False)
            logits, labels, weights = outputs.logits[:, :-1], labels[:, -keep:], weights[:, -keep:]
        else:
            outputs = model(**inputs, use_cache=False)
            logits = outputs.logits
        ce = weighted_ce(logits, labels, weights if args.loss == "toxic_mask" else None)
        loss = ce
        mode = "train" if model.training else "eval"
        if args.loss == "toxic_penalty":
            penalty = toxic_penalty(logits, labels, self.toxic_ids)
            loss = ce + args.gamma * penalty
            self._metrics[f"{mode}_toxic_mass"].append(penalty.item())
        elif self.toxic_ids.numel() and mode == "train" and self.state.global_step % max(1, int(args.logging_steps)) == 0:
            with torch.no_grad():  # the same signal, logged (not trained) for the other losses
                valid = (labels != -100).float()
                mass = (toxic_mass(logits.detach(), self.toxic_ids) * valid).sum() / valid.sum().clamp_min(1)
            self._metrics[f"{mode}_toxic_mass"].append(mass.item())
        self._metrics[f"{mode}_ce"].append(ce.item())
        if args.loss == "toxic_mask" and mode == "train":
            valid = (labels != -100).float()
            self._metrics[f"{mode}_mask_kept_share"].append(((weights * valid).sum() / valid.sum().clamp_min(1)).item())
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "eval" if any(k.startswith("eval_") for k in logs) else "train"
        for key, values in list(self._metrics.items()):
            if key.startswith(mode) and values:
                name = key.split("_", 1)[1]
                logs[f"eval_{name}" if mode == "eval" else name] = sum(values) / len(values)
                self._metrics[key] = []
        super().log(logs, start_time)

    def evaluate(self, *args, **kwargs) -> dict[str, float]:
        metrics = super().evaluate(*args, **kwargs)
        if self.guard is not None:  # every rank enters: under ZeRO-3/FSDP the full parameters are gathered
            from detoxrl.distributed import gathered

            with gathered(self.model_wrapped, self.accelerator) as model:
                if self.is_world_process_zero():
                    guard = {f"eval_{k}": v for k, v in self.guard.run(model).items()}
                    metrics.update(guard)
                    self.log(dict(guard))
        return metrics


class DetoxSeq2SeqTrainer(DetoxLossMixin, Seq2SeqTrainer):
    """Seq2seq (T5, mT5, Flan-T5, BART) SFT with the detox losses."""


class DetoxCausalTrainer(DetoxLossMixin, Trainer):
    """Causal (Llama-style, GPT-2, Qwen) SFT with the detox losses, completion-only."""
