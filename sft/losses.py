"""The supervised losses as pure functions: token CE, the toxic penalty, and toxic-mask weights.

Notation: a batch of target (label) positions ``i`` with label ``y_i`` (``-100`` = ignored) and
next-token distribution ``p_i = softmax(logits_i)``; ``T`` is the set of toxic token ids
(``detoxrl.vocab``); ``w_i`` in {0, 1} is the loss weight of position ``i`` (all ones for
``ce`` and ``toxic_penalty``; chosen by a strategy for ``toxic_mask``).

* ``ce``:            L = sum_i w_i * -log p_i(y_i) / sum_i w_i
* ``toxic_penalty``: L = CE + gamma * P,  P = (1/N) * sum_i sum_{t in T} p_i(t)
  over the N label positions. P is the mean probability mass the model puts on toxic ids where
  it writes the rewrite; it is 0 when no toxic id has mass, grows linearly with that mass and,
  computed from the logits, sends gradient straight to the toxic ids' logits.
* ``toxic_mask``:    the CE above with ``w`` from one strategy (``toxic_mask_weights``):

  - ``toxic_only``: keep the target positions that rewrite a toxic span of the source. Source and
    target tokens are aligned (``difflib`` on normalised token strings); for every non-equal
    block whose source side holds a toxic token, its target tokens are kept, and when the block
    deletes the toxic span outright, the target token right after it is kept. EOS always kept.
  - ``toxic_context``: ``toxic_only`` plus ``context_window`` neighbours on each side.
  - ``inverse_toxic``: every position except those whose label token is itself toxic.

  A pair where ``toxic_only``/``toxic_context`` find no toxic span either keeps its full loss
  (``no_span: keep``) or is skipped (``no_span: skip``: every weight 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from difflib import SequenceMatcher

import torch
import torch.nn.functional as F

IGNORE = -100
STRATEGIES = ("toxic_only", "toxic_context", "inverse_toxic")


def token_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-position cross-entropy, shape ``labels.shape``; 0 where ``labels == -100``.

    ``logits[b, i]`` must already predict ``labels[b, i]`` (shift causal logits before calling).
    """
    flat = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1), ignore_index=IGNORE,
                           reduction="none")
    return flat.view(labels.shape)


def weighted_ce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Mean CE over label positions, each weighted by ``weights`` (default 1). 0 if nothing is weighted."""
    valid = (labels != IGNORE).float()
    w = valid if weights is None else valid * weights.float()
    total = w.sum()
    return (token_ce(logits, labels) * w).sum() / total.clamp_min(1.0)


def toxic_mass(logits: torch.Tensor, toxic_ids: torch.Tensor) -> torch.Tensor:
    """``sum_{t in T} p_i(t)`` at every position, shape ``logits.shape[:-1]``."""
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    return log_probs.index_select(-1, toxic_ids.to(logits.device)).exp().sum(-1)


def toxic_penalty(logits: torch.Tensor, labels: torch.Tensor, toxic_ids: torch.Tensor) -> torch.Tensor:
    """P = mean toxic probability mass over the label positions (see module docstring)."""
    valid = (labels != IGNORE).float()
    if toxic_ids.numel() == 0:
        return logits.sum() * 0.0
    return (toxic_mass(logits, toxic_ids) * valid).sum() / valid.sum().clamp_min(1.0)


def _norm_piece(piece: str) -> str:
    return piece.replace("\u2581", "").replace("\u0120", "").replace("##", "").strip().lower()


def toxic_span_positions(source_tokens: list[str], source_toxic: list[bool], target_tokens: list[str]) -> list[int]:
    """Target positions that rewrite a toxic source span (the ``toxic_only`` rule, without EOS).

    ``source_toxic[k]`` says whether source token ``k`` belongs to a toxic word.
    """
    matcher = SequenceMatcher(None, [_norm_piece(t) for t in source_tokens], [_norm_piece(t) for t in target_tokens],
                              autojunk=False)
    keep: set[int] = set()
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal" or not any(source_toxic[i1:i2]):
            continue
        if j2 > j1:
            keep.update(range(j1, j2))
        elif j1 < len(target_tokens):  # the toxic span was deleted: keep what follows it
            keep.add(j1)
    return sorted(keep)


@dataclass
class MaskResult:
    weights: list[float]
    found_span: bool  # False: no toxic span found (toxic_only / toxic_context)
    skipped: bool  # True: the pair contributes no loss (no_span: skip)


def toxic_mask_weights(strategy: str, source_tokens: list[str], source_toxic: list[bool], target_tokens: list[str],
                       target_toxic: list[bool], eos_positions: list[int], context_window: int = 2,
                       no_span: str = "keep") -> MaskResult:
    """Loss weights over the target tokens for one pair (see module docstring for each strategy)."""
    n = len(target_tokens)
    if strategy == "inverse_toxic":
        return MaskResult([0.0 if tox else 1.0 for tox in target_toxic], True, False)
    if strategy not in ("toxic_only", "toxic_context"):
        raise ValueError(f"mask_strategy must be one of {', '.join(STRATEGIES)} (got {strategy!r})")
    span = toxic_span_positions(source_tokens, source_toxic, target_tokens)
    if not span:
        if no_span == "skip":
            return MaskResult([0.0] * n, False, True)
        return MaskResult([1.0] * n, False, False)
    keep = set(span)
    if strategy == "toxic_context":
        for j in span:
            keep.update(range(max(0, j - context_window), min(n, j + context_window + 1)))
    keep.update(p for p in eos_positions if 0 <= p < n)
    return MaskResult([1.0 if j in keep else 0.0 for j in range(n)], True, False)
