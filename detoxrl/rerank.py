"""Best-of-n decoding: sample ``n`` rewrites per input and keep the one a reward scores highest.

    result = best_of_n(model, formatter, texts, settings, scorer)   # settings.best_of = n
    result.outputs          # the best rewrite per input (input order)
    result.candidates       # all n per input, result.scores their scores, result.best the chosen index
    result.generate_seconds, result.rerank_seconds
    result.best_of_first(4)  # best-of-4 read from each input's first 4 candidates, no new sampling

Inputs go in length-sorted batches of ``max(1, gen_batch_size // n)`` inputs, so one ``generate`` call
holds about ``gen_batch_size`` sequences (the memory of a greedy batch); each batch's ``n x inputs``
candidates are scored in ONE ``scorer`` call. The scorer is any ``(sources, outputs) -> scores``; the
detox commands use the composite reward of a reward config (``rewards/scorer.py``'s ``load_reward_scorer``). ``truncation_penalty`` is subtracted from candidates that ended without EOS (the RL
stages' rule; 0 for decoding). Ties go to the first candidate; a NaN score never wins over a number.
Sampling is seeded per batch from ``settings.seed`` (``batch_seed``, inside ``detoxrl.generate.seeded``), so a
call is reproducible whatever the scorer does with torch's RNG (a judge loading lazily draws from it), and the
caller's RNG state is left as it was.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tqdm.auto import tqdm

from detoxrl.generate import GenerationSettings, length_batches, sample_candidates, seeded

Scorer = Callable[[list[str], list[str]], Sequence[float]]


@dataclass
class Reranked:
    """One best-of-n call: the chosen rewrites plus everything needed to inspect or train on them."""

    outputs: list[str]  # the best candidate of each input ("" for blank inputs)
    candidates: list[list[str]]  # n per input
    scores: list[list[float]]  # the scorer's value minus the truncation penalty, per candidate
    truncated: list[list[bool]]  # ended without EOS
    best: list[int]  # index of the chosen candidate per input
    generate_seconds: float = 0.0
    rerank_seconds: float = 0.0
    scorer_calls: int = 0

    @property
    def best_scores(self) -> list[float]:
        return [s[b] for s, b in zip(self.scores, self.best)]

    def best_of_first(self, k: int) -> list[str]:
        """What best-of-``k`` keeps from each input's first ``k`` candidates (``1 <= k <= n``). They are ``k``
        independent samples, so this is a draw of best-of-k decoding without sampling again (bench/best_of.py
        --nested reads best-of-4 from a best-of-8 call this way)."""
        n = len(self.candidates[0]) if self.candidates else k
        if not 1 <= k <= n:
            raise ValueError(f"best_of_first: k must be in 1..{n} (got {k})")
        return [c[b] for c, b in zip(self.candidates, pick_best([s[:k] for s in self.scores]))]


def pick_best(scores: Sequence[Sequence[float]]) -> list[int]:
    """Index of the highest score in each row; ties go to the first, NaN loses to any number (all NaN: 0)."""
    best = []
    for row in scores:
        top = 0
        for j, value in enumerate(row):
            if not math.isnan(value) and (math.isnan(row[top]) or value > row[top]):
                top = j
        best.append(top)
    return best


def rerank(sources: list[str], candidates: list[list[str]], scorer: Scorer,
           truncated: list[list[bool]] | None = None, truncation_penalty: float = 0.0) -> list[list[float]]:
    """Score every candidate of every source in ONE ``scorer`` call; returns the scores per source."""
    flat_src = [s for s, cands in zip(sources, candidates) for _ in cands]
    flat_out = [c for cands in candidates for c in cands]
    values = [float(v) for v in scorer(flat_src, flat_out)] if flat_out else []
    if len(values) != len(flat_out):
        raise ValueError(f"the reranker returned {len(values)} scores for {len(flat_out)} candidates")
    out, k = [], 0
    for i, cands in enumerate(candidates):
        row = values[k : k + len(cands)]
        if truncated is not None and truncation_penalty:
            row = [v - truncation_penalty * bool(t) for v, t in zip(row, truncated[i])]
        out.append(row)
        k += len(cands)
    return out


def best_of_n(model, formatter, texts: list[str], settings: GenerationSettings, scorer: Scorer,
              truncation_penalty: float = 0.0, progress: bool = False) -> Reranked:
    """Sample ``settings.best_of`` rewrites of each text and keep the best (see the module docstring)."""
    n = settings.best_of
    if n < 1:
        raise ValueError(f"best_of must be >= 1 (got {n})")
    device = next(model.parameters()).device
    result = Reranked([""] * len(texts), [[""] * n for _ in texts], [[math.nan] * n for _ in texts],
                      [[False] * n for _ in texts], [0] * len(texts))
    batches = list(length_batches(texts, max(1, settings.gen_batch_size // n)))
    for k, idx in enumerate(tqdm(batches, desc=f"best of {n}", disable=not progress, unit="batch")):
        sources = [texts[i] for i in idx]
        t0 = time.perf_counter()
        with seeded(batch_seed(settings.seed, k), device):  # the scorer's own RNG use cannot shift later batches
            cands, trunc = sample_candidates(model, formatter, sources, n, settings)
        t1 = time.perf_counter()
        scores = rerank(sources, cands, scorer, trunc, truncation_penalty)
        result.generate_seconds += t1 - t0
        result.rerank_seconds += time.perf_counter() - t1
        result.scorer_calls += 1
        for i, c, t, s, b in zip(idx, cands, trunc, scores, pick_best(scores)):
            result.candidates[i], result.truncated[i], result.scores[i], result.best[i] = c, t, s, b
            result.outputs[i] = c[b]
    return result


def batch_seed(seed: int, batch: int) -> int:
    """The sampling seed of batch ``batch`` of a call seeded ``seed`` (distinct for nearby seeds and batches)."""
    return (seed * 1_000_003 + batch) % (2**63)
