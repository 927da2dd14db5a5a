"""Reward arithmetic as pure functions on tensors: mixing the judges' scores and the penalties.

Scores. Every component score ``s_k`` is in [0, 1] and higher is better:
``s_tox = 1 - toxicity``, ``s_sim = similarity``, ``s_fl = fluency``. Only components with a weight
``w_k > 0`` take part (weights are >= 0 and not all 0).

* ``weighted_sum``:  R = sum_k w_k s_k / sum_k w_k          (a weighted mean, in [0, 1])
* ``product``:       R = prod_k s_k ** w_k                  (in [0, 1]; 0 if any used score is 0)

The product cannot be bought by one component: copying a toxic input gets ``s_sim = 1`` but
``s_tox`` near 0, so R is near 0, while under ``weighted_sum`` it still earns ``w_sim / sum w``.

Penalties, each a 0/1 flag times its own coefficient, are subtracted after mixing:

    total = R - copy_penalty * is_copy - empty_penalty * is_empty - length_penalty * is_length_blowup

(flags as defined in ``rewards/checks.py``), so ``total`` lies in [-(sum of coefficients), 1].
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

FORMS = ("weighted_sum", "product")


def active_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """The weights > 0; ``ValueError`` if one is negative or none is positive."""
    for name, w in weights.items():
        if w < 0:
            raise ValueError(f"weight of {name} must be >= 0 (got {w})")
    active = {k: float(w) for k, w in weights.items() if w > 0}
    if not active:
        raise ValueError("all reward weights are 0; give at least one component a weight > 0")
    return active


def mix_weighted_sum(scores: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """``sum_k w_k s_k / sum_k w_k`` over the components with ``w_k > 0``."""
    active = active_weights(weights)
    total = sum(active.values())
    return sum(w * scores[k].float() for k, w in active.items()) / total


def mix_product(scores: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """``prod_k s_k ** w_k`` over the components with ``w_k > 0`` (scores clamped to [0, 1] first)."""
    active = active_weights(weights)
    out = None
    for k, w in active.items():
        term = scores[k].float().clamp(0.0, 1.0) ** w
        out = term if out is None else out * term
    return out


def mix(form: str, scores: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    if form == "weighted_sum":
        return mix_weighted_sum(scores, weights)
    if form == "product":
        return mix_product(scores, weights)
    raise ValueError(f"form must be one of {', '.join(FORMS)} (got {form!r})")


def penalty(flags: Mapping[str, torch.Tensor], coefficients: Mapping[str, float]) -> torch.Tensor:
    """``sum_p coefficient_p * flag_p`` (flags are bool or 0/1 tensors of one shape)."""
    out = None
    for name, flag in flags.items():
        term = coefficients.get(name, 0.0) * flag.float()
        out = term if out is None else out + term
    if out is None:
        raise ValueError("no penalty flags given")
    return out
