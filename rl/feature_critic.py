"""A critic on a few features of the rewrite so far, refitted in closed form after every step (``value_features``).

The value of response token ``t`` is ``V_t = m + a (w . x_t + b - m)``: ``(w, b)`` the ridge regression of the GAE
returns on ``x`` over the last ``value_replay_steps`` rollouts (``rl/value_fit.py``), ``m`` their mean return and
``a`` = ``value_shrink``. ``units="rollout"`` (a parameter of the fit, not a config field: on one PPO run it made no
difference, docs/experiments/2026-12-02-rollout-units.md; ``bench/critic_shadows.py`` still fits it beside the live
critic) reads and predicts the returns in the rollout's own units, ``(R - c) / s`` with ``c``, ``s`` the mean and
standard deviation of the rollout's (normalised) scores, and gives the values ``c + s V_t``.

``x_t`` reads only what the value of token ``t`` may know: the source and the response tokens before ``t``
(``prefix_features``), plus with ``lexicon+sibling`` the normalised score of the other responses to the same source
in the rollout (``samples_per_prompt >= 2``; RLOO's baseline, valid because they are sampled independently of this
response's tokens).

Why hand-made features and not the policy's hidden states: a linear head on the last hidden state explains a few
per cent of a return at best (``bench/critic_features.py``; docs/experiments/2026-11-30-critic-features-offline.md),
while most of a score's spread is whether the rewrite is still a verbatim copy, whether toxic words were kept,
whether it blew up in length and how hard the source is, which these features carry and a second sample of the same
source measures. Written by hand: no library has a critic for text rewrites. ``rl/critics.py``'s ``FeatureCritic``
is the PPO step's interface to it.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from detoxrl.data.clean import norm_key
from rl.value_fit import ValueReplay, rollout_moments

PREFIX_FEATURES = ("copy", "copy_cover", "toxic_words", "source_toxic_words", "source_clean", "position",
                   "copied_toxic", "length_ratio", "over_length")
KINDS = ("hidden", "lexicon", "lexicon+sibling")
UNITS = ("raw", "rollout")
UNITS_FLOOR = 0.05  # a rollout's score std is read as at least this: near-identical scores would blow its returns up


class CriticInput(NamedTuple):
    """One rollout as the critic reads it: ``x (B, T, dims)`` and the units ``(R - centre) / scale`` it fits in."""

    x: torch.Tensor
    centre: float = 0.0
    scale: float = 1.0


def rollout_units(score: torch.Tensor) -> tuple[float, float]:
    """``(mean, max(std, UNITS_FLOOR))`` of a rollout's scores (population std). Example: ``[1, 3]`` -> ``(2, 1)``."""
    s = score.double()
    return float(s.mean()), max(float(s.std(unbiased=False)), UNITS_FLOOR)


def prefix_features(tokenizer, lexicon, source: str, response_ids: list[int],
                    max_length_ratio: float = 2.0) -> torch.Tensor:
    """``(T, 9)``, row ``t`` from the source and response tokens ``0..t-1`` (``PREFIX_FEATURES``, in order): 1 while
    the rewrite so far is a verbatim prefix of the source (after ``norm_key``); that flag times the share of the
    source it covers; toxic-lexicon words in the rewrite so far (at most 3); in the source (at most 3); 1 if the
    source has none; ``t / 40``; the copy flag times the toxic words so far (toxic words copied); the rewrite's
    length so far over the source's, in characters of the stripped texts (at most 3); 1 once it is longer than
    ``max_length_ratio`` times the source (the reward's length blow-up penalty is then certain)."""
    key = norm_key(source)
    src_toxic = len(lexicon.toxic_words_in(source))
    src_len = max(1, len(source.strip()))
    rows = []
    for t in range(len(response_ids)):
        text = tokenizer.decode(response_ids[:t], skip_special_tokens=True).strip()
        prefix = norm_key(text)
        copy = float(key.startswith(prefix))
        toxic = len(lexicon.toxic_words_in(prefix))
        rows.append([copy, copy * len(prefix) / max(1, len(key)), min(toxic, 3), min(src_toxic, 3),
                     float(src_toxic == 0), t / 40, copy * toxic, min(len(text) / src_len, 3.0),
                     float(len(text) > max_length_ratio * src_len)])
    return torch.tensor(rows, dtype=torch.float64).reshape(len(response_ids), len(PREFIX_FEATURES))


def sibling_scores(score: torch.Tensor, group: int) -> torch.Tensor:
    """``(B,)``: for each row, the mean score of the other rows of its group (rows ``g*group .. g*group+group-1``
    answer the same source). Example: scores ``[1, 3, 5, 7]``, group 2 -> ``[3, 1, 7, 5]``."""
    if group < 2 or score.numel() % group:
        raise ValueError(f"sibling_scores: {score.numel()} rows do not form groups of {group} >= 2")
    g = score.double().reshape(-1, group)
    return ((g.sum(1, keepdim=True) - g) / (group - 1)).reshape(-1)


class FeatureCritic:
    """``values`` for a rollout from the current fit; ``update`` adds the rollout's returns and refits.

    Its ``replay`` (the buffer of per-rollout statistics) is what checkpoints save; the fit is recomputed from it.
    """

    def __init__(self, kind: str, tokenizer, lexicon, steps: int, ridge: float | None, shrink: float, group: int,
                 max_length_ratio: float = 2.0, units: str = "raw"):
        if kind not in KINDS[1:]:
            raise ValueError(f"value_features {kind!r}: the feature critic takes {' | '.join(KINDS[1:])}")
        if units not in UNITS:
            raise ValueError(f"units {units!r}: one of {' | '.join(UNITS)}")
        self.kind, self.tokenizer, self.lexicon, self.shrink, self.group = kind, tokenizer, lexicon, shrink, group
        self.units = units
        self.max_length_ratio = max_length_ratio
        self.replay = ValueReplay(steps, ridge)
        self.fit: tuple[torch.Tensor, torch.Tensor, float] | None = None

    @property
    def dims(self) -> int:
        return len(PREFIX_FEATURES) + (self.kind == "lexicon+sibling")

    def features(self, sources: list[str], response: torch.Tensor, mask: torch.Tensor,
                 score: torch.Tensor) -> CriticInput:
        """``x (B, T, dims)`` float64 on the CPU, 0 on padding, and the rollout's units (the sibling's score is in
        them)."""
        B, T = response.shape
        score = score.detach().cpu()
        centre, scale = rollout_units(score) if self.units == "rollout" else (0.0, 1.0)
        x = torch.zeros(B, T, self.dims, dtype=torch.float64)
        lengths = mask.sum(1).long().tolist()
        sib = (sibling_scores(score, self.group) - centre) / scale if self.kind == "lexicon+sibling" else None
        for i, (src, n) in enumerate(zip(sources, lengths)):
            x[i, :n, : len(PREFIX_FEATURES)] = prefix_features(self.tokenizer, self.lexicon, src, response[i, :n].tolist(),
                                                               self.max_length_ratio)
            if sib is not None:
                x[i, :n, -1] = sib[i]
        return CriticInput(x, centre, scale)

    def values(self, inp: CriticInput, mask: torch.Tensor) -> torch.Tensor:
        """``(B, T)`` float32 values on ``mask``'s device: 0 before the first fit, 0 on padding."""
        if self.fit is None and self.replay.buffer:
            self._refit()
        if self.fit is None:
            return torch.zeros_like(mask, dtype=torch.float32)
        w, b, m = self.fit
        v = inp.centre + inp.scale * (m + self.shrink * (inp.x @ w + b - m))
        return (v.float().to(mask.device)) * mask

    def update(self, inp: CriticInput, returns: torch.Tensor, mask: torch.Tensor, reduce=None) -> dict[str, float]:
        """Add the rollout's statistics, in its units (summed over processes by ``reduce``, if given), and refit."""
        target = (returns.detach().cpu().double() - inp.centre) / inp.scale
        moments = rollout_moments(inp.x, target, mask.cpu())
        if reduce is not None:
            moments = reduce(moments)
        self.replay.add(moments)
        return self._refit()

    def _refit(self) -> dict[str, float]:
        w, b, stats = self.replay.fit()
        n = sum(float(s["n"]) for s in self.replay.buffer)
        mean = sum(float(s["sy"]) for s in self.replay.buffer) / n if n else 0.0
        self.fit = (w, b, mean if math.isfinite(mean) else 0.0)
        return stats
