"""Fluency judge: ``lm`` (log-likelihood under a frozen causal LM) or ``hf`` (a CoLA acceptability classifier).

``lm`` definition. The output is tokenized (no special tokens, at most ``fluency_max_length``
tokens; a longer text is cut there and scored without the end token) and scored between two copies
of one context token ``c``: the LM's ``<|endoftext|>`` document separator when the vocabulary has
it, else its BOS, else its EOS. With tokens
``t_1..t_T`` and ``t_{T+1} = c`` (the end of the text, so an unfinished sentence, which does not
predict its end, scores below its finished version):

    m(x)  = (1/(T+1)) sum_{i=1..T+1} log p(t_i | c, t_<i)       (mean token log-prob, nats)
    FL(x) = sigmoid((m(x) - fluency_center) / fluency_scale)      and 0 for an empty output

The constants are calibrated on the ParaDetox neutral side (human rewrites) by
``python -m rewards.calibrate_fluency``: ``fluency_center`` is the 10th percentile of ``m`` over
those sentences and ``fluency_scale = IQR / (2 ln 3)``, the scale at which a logistic's quartiles
are an IQR apart. So a rewrite as fluent as the least fluent 10% of human rewrites scores 0.5 and
the median human rewrite 0.92; shuffling a rewrite's words drops its median to 0.29. The defaults
were measured for SmolLM2-135M-Instruct (``DEFAULT_CALIBRATION``); another ``fluency_model`` needs
its own. Mean log-prob is a proxy: it also rises for short, generic or repetitive text.

``hf`` definition: ``P(acceptable | x)`` from a sequence classifier trained on CoLA, e.g.
``textattack/roberta-base-CoLA`` (its ``LABEL_1``, index 1, is "acceptable"); 0 for an empty output.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from detoxrl.errors import UserError
from detoxrl.models.embedded import SMOLLM2_ID
from detoxrl.packing import kept_index, pack_rows, packed_forward, packing_supported
from rewards.batching import resolve_device, sorted_batches
from rewards.checks import is_empty

COLA_DEFAULT = "textattack/roberta-base-CoLA"
# Measured for SmolLM2-135M-Instruct, with the end-of-text token scored, by:
#   python -m rewards.calibrate_fluency --num_sentences 2000 --num_threads 1 --device cpu   (7 min)
# (2,000 ParaDetox train-split neutral rewrites, sample_seed 0): q10 = -8.1196, q25 = -7.2180,
# median = -6.2713, q75 = -5.5904 nats/token. With these, FL of the neutral rewrites has median 0.92;
# the same sentences with their words shuffled have median 0.29 (lower than the original in 96.8%).
# (Before the end token was scored: center -7.5775, scale 0.7494.)
DEFAULT_CALIBRATION = {"fluency_center": -8.1196, "fluency_scale": 0.7408}


@dataclass
class FluencyConfig:
    """The fluency judge (every field is a YAML key and a CLI flag)."""

    fluency_backend: Literal["lm", "hf"] = field(
        default="lm", metadata={"help": "lm: calibrated mean token log-prob under a causal LM. hf: a CoLA "
                                "acceptability classifier."})
    fluency_model: str = field(
        default=SMOLLM2_ID,
        metadata={"help": f"lm: causal LM hub id or folder (default the embedded SmolLM2-135M-Instruct). hf: a "
                  f"CoLA classifier (default {COLA_DEFAULT} when fluency_model is left at the lm default)."},
    )
    fluency_label: str = field(
        default="1", metadata={"help": "hf only: the 'acceptable' label, by name or index (textattack CoLA: 1)."})
    fluency_center: float = field(
        default=DEFAULT_CALIBRATION["fluency_center"],
        metadata={"help": "lm only: mean log-prob (nats/token) that maps to 0.5; calibrate with "
                  "python -m rewards.calibrate_fluency."})
    fluency_scale: float = field(
        default=DEFAULT_CALIBRATION["fluency_scale"],
        metadata={"help": "lm only: logistic scale in nats/token (> 0)."})
    fluency_dtype: Literal["float32", "bfloat16"] = field(
        default="float32",
        metadata={"help": "lm only: weights dtype. The calibration is float32; on an AVX512-BF16 CPU, bfloat16 "
                  "scored 256 ParaDetox rewrites 1.8x faster with SmolLM2, lowering mean log-probs by 0.14 "
                  "nats/token on average (FL by 0.02). Slow on CPUs without bf16 instructions."})
    fluency_batch_size: int = field(default=32, metadata={"help": "Texts per batch."})
    fluency_max_length: int = field(default=64, metadata={"help": "Score at most this many tokens per text."})

    def __post_init__(self):
        if self.fluency_backend not in ("lm", "hf"):
            raise ValueError(f"fluency_backend: '{self.fluency_backend}' is not one of lm, hf")
        if self.fluency_backend == "hf" and self.fluency_model == SMOLLM2_ID:
            self.fluency_model = COLA_DEFAULT
        if self.fluency_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"fluency_dtype: '{self.fluency_dtype}' is not one of float32, bfloat16")
        if not self.fluency_scale > 0:
            raise ValueError(f"fluency_scale must be > 0 (got {self.fluency_scale})")
        if self.fluency_batch_size <= 0:
            raise ValueError(f"fluency_batch_size must be > 0 (got {self.fluency_batch_size})")
        if self.fluency_max_length <= 0:
            raise ValueError(f"fluency_max_length must be > 0 (got {self.fluency_max_length})")

    def describe(self) -> str:
        if self.fluency_backend == "hf":
            return f"hf:{self.fluency_model} [{self.fluency_label}]"
        return f"lm:{self.fluency_model} (center {self.fluency_center}, scale {self.fluency_scale})"


def logistic_fluency(mean_logprob: torch.Tensor, center: float, scale: float) -> torch.Tensor:
    """``sigmoid((m - center) / scale)``; NaN (empty text) -> 0."""
    return torch.nan_to_num(torch.sigmoid((mean_logprob - center) / scale), nan=0.0)


def context_token_id(tokenizer) -> int:
    """``<|endoftext|>`` if in the vocabulary, else BOS, else EOS (see the module docstring)."""
    vocab = tokenizer.get_vocab()
    if "<|endoftext|>" in vocab:
        return vocab["<|endoftext|>"]
    for tid in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if tid is not None:
            return tid
    raise UserError("fluency_model: the tokenizer has no <|endoftext|>, BOS or EOS token to condition on")


class LMFluency:
    """Calibrated mean token log-prob under a frozen causal LM (see the module docstring)."""

    def __init__(self, cfg: FluencyConfig, device: str | torch.device = "auto"):
        from transformers import AutoModelForCausalLM

        from detoxrl.models.loading import has_safetensors, load_tokenizer
        from detoxrl.models.refs import resolve_model

        src = resolve_model(cfg.fluency_model, what="fluency LM")
        self.device = resolve_device(device)
        try:
            model = AutoModelForCausalLM.from_pretrained(src.path, use_safetensors=has_safetensors(src),
                                                         dtype=getattr(torch, cfg.fluency_dtype))
        except (OSError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"fluency_model: '{cfg.fluency_model}' ({src.source}) failed to load as a causal LM: "
                            f"{first[:300]}") from exc
        self.model = model.to(self.device).eval()
        self.model.requires_grad_(False)
        self.tokenizer = load_tokenizer(src)
        self.context_id = context_token_id(self.tokenizer)
        self.cfg = cfg
        self.pack, self.max_packed_tokens = True, 1024
        self.name = cfg.fluency_model

    @torch.inference_mode()
    def mean_logprob(self, texts: Sequence[str]) -> torch.Tensor:
        """``m(x)`` for each text (NaN for an empty one), float32 on the CPU.

        Each batch of ``fluency_batch_size`` texts is scored packed (``detoxrl/packing.py``: one sequence,
        the context token and any other shared first tokens once, no padding) when the LM's attention takes
        it, else as a padded batch; the two agree within float rounding (tests/test_fluency_packing.py).
        """
        out = torch.full((len(texts),), math.nan)
        keep = [i for i, t in enumerate(texts) if not is_empty(t)]
        if not keep:
            return out
        cap = self.cfg.fluency_max_length
        # the end-of-text token is scored too (a finished text predicts it); a text cut at the cap is not
        # finished, so it gets no end token
        ids = [row[:cap] if len(row) > cap else row + [self.context_id] for row in
               self.tokenizer([texts[i] for i in keep], add_special_tokens=False)["input_ids"]]
        score = self._packed if self.pack and packing_supported(self.model) else self._padded
        for batch in sorted_batches(ids, self.cfg.fluency_batch_size):
            means = score([[self.context_id] + ids[b] for b in batch])
            for b, m in zip(batch, means.cpu()):
                out[keep[b]] = m
        return out

    def _padded(self, seqs: list[list[int]]) -> torch.Tensor:
        """Mean log-prob of tokens 1.. of each sequence, as one right-padded batch."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.context_id
        width = max(len(s) for s in seqs)
        input_ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=self.device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=self.device)
        logits = self.model(input_ids=input_ids, attention_mask=mask).logits[:, :-1].float()
        targets = input_ids[:, 1:]
        token_lp = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - logits.logsumexp(-1)
        valid = mask[:, 1:].float()
        return (token_lp * valid).sum(-1) / valid.sum(-1).clamp(min=1)

    def _packed(self, seqs: list[list[int]]) -> torch.Tensor:
        """Mean log-prob of tokens 1.. of each sequence, packed: logits only once per distinct position."""
        packed = pack_rows(seqs, self.max_packed_tokens, device=self.device)
        rows = torch.cat([torch.full((len(s) - 1,), i, dtype=torch.long) for i, s in enumerate(seqs)]).to(self.device)
        pos = torch.cat([torch.arange(len(s) - 1) for s in seqs]).to(self.device)
        targets = torch.cat([torch.tensor(s[1:], dtype=torch.long) for s in seqs]).to(self.device)
        groups, columns = packed.group[rows], packed.columns(rows, pos)
        kept = torch.zeros_like(packed.input_ids, dtype=torch.bool)
        kept[groups, columns] = True
        logits = packed_forward(self.model, packed, kept).logits.float()  # (distinct predicting positions, V)
        at = kept_index(kept, groups, columns)
        token_lp = logits[at, targets] - logits.logsumexp(-1)[at]
        sums = torch.zeros(len(seqs), device=self.device).index_add_(0, rows, token_lp)
        return sums / torch.tensor([len(s) - 1 for s in seqs], device=self.device)

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        return logistic_fluency(self.mean_logprob(texts), self.cfg.fluency_center, self.cfg.fluency_scale)


class CoLAFluency:
    """``P(acceptable)`` from a CoLA classifier; 0 for empty outputs."""

    def __init__(self, cfg: FluencyConfig, device: str | torch.device = "auto"):
        from rewards.classifier import SequenceClassifier

        self.classifier = SequenceClassifier.load(cfg.fluency_model, cfg.fluency_label, field="fluency_label",
                                                  device=device, batch_size=cfg.fluency_batch_size,
                                                  max_length=max(cfg.fluency_max_length, 64), what="fluency classifier")
        self.name = cfg.fluency_model

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        scores = self.classifier(texts)
        return scores.masked_fill(torch.tensor([is_empty(t) for t in texts], dtype=torch.bool), 0.0)


def build_fluency_scorer(cfg: FluencyConfig, device: str | torch.device = "auto"):
    """Load the configured fluency judge: a callable ``texts -> FL`` tensor in [0, 1]."""
    return CoLAFluency(cfg, device) if cfg.fluency_backend == "hf" else LMFluency(cfg, device)
