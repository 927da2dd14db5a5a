"""Pairs -> training features (input ids, labels, per-label loss weights) and the batch collator.

* causal: ``input_ids = prompt + target + EOS``, labels ``-100`` on the prompt (loss on the
  completion only); batches are LEFT-padded with explicit ``position_ids`` so every target sits at
  the end of its row, and the trainer asks the model for logits of the last positions only
  (``logits_to_keep``): the prompt's logits over a 49k vocabulary are never computed.
* seq2seq: ``input_ids = prompt``, ``labels = target`` (the tokenizer appends EOS),
  ``decoder_input_ids`` = labels shifted right behind the decoder start token.

``loss_weights`` hold one weight per label (``sft/losses.py``): all ones unless ``loss:
toxic_mask``, where the toxic spans of source and target come from the lexicon through the fast
tokenizer's character offsets, so words split into several pieces are caught.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from detoxrl.data import Pair
from detoxrl.errors import UserError
from detoxrl.prompts import PromptFormatter
from detoxrl.vocab import ToxicLexicon, toxic_token_mask
from sft.losses import IGNORE, toxic_mask_weights


@dataclass
class MaskStats:
    """What the masking did over a dataset: the share of label positions kept and span misses."""

    strategy: str
    pairs: int = 0
    label_positions: int = 0
    kept_positions: int = 0
    no_span_pairs: int = 0
    skipped_pairs: int = 0

    @property
    def kept_share(self) -> float:
        return self.kept_positions / self.label_positions if self.label_positions else 0.0

    def as_dict(self) -> dict:
        return {**asdict(self), "kept_share": round(self.kept_share, 4)}

    def format(self) -> str:
        return (f"mask {self.strategy}: {self.kept_share:.1%} of {self.label_positions:,} label positions kept; "
                f"{self.no_span_pairs:,} of {self.pairs:,} pairs had no toxic span ({self.skipped_pairs:,} skipped)")


def _tokens(tokenizer, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return enc["input_ids"], [tuple(o) for o in enc["offset_mapping"]]


class FeatureBuilder:
    """Turns ``Pair``s into features for one tokenizer, prompt format, loss and lexicon."""

    def __init__(self, formatter: PromptFormatter, lexicon: ToxicLexicon | None, loss: str = "ce",
                 mask_strategy: str = "toxic_context", context_window: int = 2, no_span: str = "keep",
                 max_source_length: int = 128, max_target_length: int = 128):
        self.fmt, self.tok, self.lexicon = formatter, formatter.tokenizer, lexicon
        self.loss, self.strategy, self.window, self.no_span = loss, mask_strategy, context_window, no_span
        self.max_src, self.max_tgt = max_source_length, max_target_length
        if loss == "toxic_mask":
            if lexicon is None:
                raise UserError("loss: toxic_mask needs the toxic vocabulary (lexicon_dir / lexicon_lang)")
            if not getattr(self.tok, "is_fast", False):
                raise UserError("loss: toxic_mask needs a fast tokenizer (character offsets); this one is slow")
        self.stats = MaskStats(mask_strategy if loss == "toxic_mask" else loss)

    def target_ids(self, text: str) -> tuple[list[int], list[tuple[int, int]]]:
        """Target ids ending in EOS, cut to ``max_target_length``, with character offsets (EOS: (0, 0))."""
        ids, offsets = _tokens(self.tok, text)
        keep = self.max_tgt - 1
        return ids[:keep] + [self.tok.eos_token_id], offsets[:keep] + [(0, 0)]

    def weights(self, pair: Pair, target: list[int], offsets: list[tuple[int, int]]) -> list[float]:
        if self.loss != "toxic_mask":
            return [1.0] * len(target)
        src_ids, src_offsets = _tokens(self.tok, pair.source)
        result = toxic_mask_weights(
            self.strategy,
            source_tokens=self.tok.convert_ids_to_tokens(src_ids),
            source_toxic=toxic_token_mask(self.lexicon, pair.source, src_offsets),
            target_tokens=self.tok.convert_ids_to_tokens(target),
            target_toxic=toxic_token_mask(self.lexicon, pair.target, offsets),
            eos_positions=[i for i, t in enumerate(target) if t == self.tok.eos_token_id],
            context_window=self.window,
            no_span=self.no_span,
        )
        self.stats.no_span_pairs += not result.found_span
        self.stats.skipped_pairs += result.skipped
        return result.weights

    def encode(self, pair: Pair) -> dict:
        prompt = self.fmt.prompt_ids(pair.source, truncation=True, max_length=self.max_src)
        target, offsets = self.target_ids(pair.target)
        weights = self.weights(pair, target, offsets)
        self.stats.pairs += 1
        self.stats.label_positions += len(target)
        self.stats.kept_positions += int(sum(weights))
        if self.fmt.family == "seq2seq":
            return {"input_ids": prompt, "labels": target, "loss_weights": weights}
        return {"input_ids": prompt + target, "labels": [IGNORE] * len(prompt) + target,
                "loss_weights": [0.0] * len(prompt) + weights}

    def encode_all(self, pairs: list[Pair]) -> list[dict]:
        return [self.encode(p) for p in pairs]


@dataclass
class PairCollator:
    """Pads features into a batch (see module docstring for the two layouts)."""

    pad_token_id: int
    family: str
    decoder_start_token_id: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        if self.family == "seq2seq":
            return self._seq2seq(features)
        return self._causal(features)

    def _causal(self, features: list[dict]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        batch = {"input_ids": [], "attention_mask": [], "labels": [], "loss_weights": []}
        for f in features:
            pad = width - len(f["input_ids"])
            batch["input_ids"].append([self.pad_token_id] * pad + f["input_ids"])
            batch["attention_mask"].append([0] * pad + [1] * len(f["input_ids"]))
            batch["labels"].append([IGNORE] * pad + f["labels"])
            batch["loss_weights"].append([0.0] * pad + f["loss_weights"])
        out = {k: torch.tensor(v) for k, v in batch.items()}
        out["position_ids"] = (out["attention_mask"].cumsum(-1) - 1).clamp_min(0)
        return out

    def _seq2seq(self, features: list[dict]) -> dict[str, torch.Tensor]:
        src_w = max(len(f["input_ids"]) for f in features)
        tgt_w = max(len(f["labels"]) for f in features)
        ids, mask, labels, weights, dec = [], [], [], [], []
        for f in features:
            n, m = len(f["input_ids"]), len(f["labels"])
            ids.append(f["input_ids"] + [self.pad_token_id] * (src_w - n))
            mask.append([1] * n + [0] * (src_w - n))
            labels.append(f["labels"] + [IGNORE] * (tgt_w - m))
            weights.append(f["loss_weights"] + [0.0] * (tgt_w - m))
            dec.append([self.decoder_start_token_id] + f["labels"][:-1] + [self.pad_token_id] * (tgt_w - m))
        return {"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask), "labels": torch.tensor(labels),
                "loss_weights": torch.tensor(weights), "decoder_input_ids": torch.tensor(dec)}
