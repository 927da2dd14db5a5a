"""Replay value fit: the value head ``v = w . h + b`` refitted after every PPO step, in closed form, by ridge
regression of the GAE returns on the head's input features over the last ``value_replay_steps`` rollouts.

Why (issue #14): ``ppo/explained_variance`` is measured on the NEXT rollout's fresh prompts with the values
predicted before seeing them, so the head must generalise, not just fit. A head trained by Adam on the current
rollout only sees 16 sequences twice, and Adam moves every weight by about ``lr`` per step, so ``v`` moves by
about ``lr * sum_i |h_i|`` (~1 at lr 1e-3 for H = 576, RMS(h) ~1.8): it jumps around instead of regressing
(explained variance swung between -0.23 and 0.23), while 1e-4 is stable but slow. Least squares on several
rollouts uses more data and has no step size: it is deterministic, and for H = 576 the few ``eigh`` of a
576 x 576 covariance per step (one per buffered rollout, plus one) are small next to a forward pass.

The fit (per-token, over the valid response tokens of the buffered rollouts, so long responses weigh as much
as they do in the logged metric): with feature mean ``m_x``, return mean ``m_y``, covariance
``C = E[(h - m_x)(h - m_x)^T]`` and cross-covariance ``c = E[(h - m_x)(R - m_y)]``,

    w = (C + alpha I)^-1 c,   b = m_y - w . m_x,   alpha = ridge * tr(C) / H

(the bias is not penalised; ``ridge`` is relative to the mean feature variance, so it does not depend on
the scale of the hidden states). ``ridge`` is ``value_ridge`` when set; unset, it is chosen at every fit from
``RIDGE_GRID`` by leave-one-rollout-out: each buffered rollout is predicted by the fit on the others, and the
strongest strength whose mean explained variance is within one standard error of the best wins (the
one-standard-error rule; the mean is the same quantity as the logged metric: a batch of
prompts predicted by a head that never saw it; whole rollouts are held out, not tokens, because the tokens
of one response are strongly correlated, so K rollouts hold about ``16 K`` independent examples for 576
weights); then the head is refitted on all of them with it. With one rollout buffered there is nothing to
hold out and ``FIRST_RIDGE``, the strongest, is used (a weaker one overfitted 16 sequences: explained
variance -0.21 on the next rollout of the default run).

The buffer keeps sufficient statistics per rollout (token count, sums of ``h``, ``R``, ``R^2``, ``h h^T``,
``h R``, in float64), not the features: they give the fit and the held-out explained variance exactly, are
summed over processes (every process then fits the same head), and cost ``H^2`` numbers per rollout whatever
its length. Hand-written because it is 30 lines of linear algebra; ``sklearn.linear_model.RidgeCV`` would
need the features themselves and scores by leave-one-token-out over strongly correlated tokens.
"""

from __future__ import annotations

import math

import torch

RIDGE_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)  # candidate `ridge` values (times the mean feature variance)
FIRST_RIDGE = 100.0  # used while a single rollout is buffered (nothing held out to choose with): the strongest
KEYS = ("n", "sx", "sy", "sxx", "sxy", "syy")


def rollout_moments(features: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """Sufficient statistics of one rollout over its valid tokens: ``features (B, T, H)``, ``returns``/``mask (B, T)``."""
    keep = mask.to(torch.bool)
    x = features.detach()[keep].double().cpu()
    y = returns.detach()[keep].double().cpu()
    return {"n": torch.tensor(float(x.shape[0]), dtype=torch.float64), "sx": x.sum(0), "sy": y.sum(),
            "sxx": x.T @ x, "sxy": x.T @ y, "syy": y @ y}


def _total(stats: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {k: sum(s[k] for s in stats) for k in KEYS}


def _centred(s: dict[str, torch.Tensor]):
    n = s["n"]
    mx, my = s["sx"] / n, s["sy"] / n
    return s["sxx"] / n - torch.outer(mx, mx), s["sxy"] / n - mx * my, mx, my


class _Solver:
    """``eigh`` of the covariance once; then ``solve(ridge)`` for any strength in O(H^2)."""

    def __init__(self, s: dict[str, torch.Tensor]):
        cov, self.cross, self.mx, self.my = _centred(s)
        self.evals, self.evecs = torch.linalg.eigh(cov)
        self.evals = self.evals.clamp(min=0.0)
        self.scale = max(float(torch.diagonal(cov).mean()), 1e-12)
        self.proj = self.evecs.T @ self.cross

    def solve(self, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.evecs @ (self.proj / (self.evals + ridge * self.scale))
        return w, self.my - w @ self.mx


def heldout_ev(w: torch.Tensor, b: torch.Tensor, s: dict[str, torch.Tensor]) -> float:
    """``1 - Var(R - w.h - b) / Var(R)`` on the tokens summarised by ``s`` (population variances; NaN if Var(R)=0)."""
    n = s["n"]
    var_y = s["syy"] / n - (s["sy"] / n) ** 2
    if float(var_y) <= 0:
        return math.nan
    sum_r = s["sy"] - w @ s["sx"] - n * b
    sum_r2 = s["syy"] - 2 * (w @ s["sxy"] + b * s["sy"]) + w @ s["sxx"] @ w + 2 * b * (w @ s["sx"]) + n * b * b
    return float(1 - (sum_r2 / n - (sum_r / n) ** 2) / var_y)


class ValueReplay:
    """The last ``steps`` rollouts' statistics and the ridge fit on them (see the module docstring)."""

    def __init__(self, steps: int, ridge: float | None = None):
        self.steps, self.ridge = steps, ridge
        self.buffer: list[dict[str, torch.Tensor]] = []

    def add(self, moments: dict[str, torch.Tensor]) -> None:
        self.buffer = (self.buffer + [moments])[-self.steps:]

    def fit(self) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """``(w (H,), b (), stats)``: stats ``value_ridge`` (the strength used) and ``value_fit_heldout_ev``
        (the chosen strength's explained variance on the newest rollout, fitted without it; NaN if not chosen)."""
        if not self.buffer:
            raise ValueError("ValueReplay.fit: the buffer is empty (add a rollout first)")
        ridge, best = self.ridge, math.nan
        if ridge is None and len(self.buffer) == 1:
            ridge = FIRST_RIDGE
        elif ridge is None:
            ridge, best = self.choose_ridge()
        w, b = _Solver(_total(self.buffer)).solve(ridge)
        return w, b, {"value_ridge": float(ridge), "value_fit_heldout_ev": float(best)}

    def choose_ridge(self) -> tuple[float, float]:
        """``(ridge, its mean held-out explained variance)``: each buffered rollout is predicted by the fit on the
        others; among the grid strengths, the STRONGEST whose mean is within one standard error of the best mean
        (the one-standard-error rule, Hastie et al., ESL 7.10: with a few noisy folds, prefer the simpler fit).
        ``FIRST_RIDGE`` when no rollout has any return spread."""
        total = _total(self.buffer)
        folds = [s for s in self.buffer if float(s["syy"] / s["n"] - (s["sy"] / s["n"]) ** 2) > 0]
        if not folds:
            return FIRST_RIDGE, math.nan
        evs = torch.zeros(len(folds), len(RIDGE_GRID), dtype=torch.float64)
        for f, held in enumerate(folds):
            solver = _Solver({k: total[k] - held[k] for k in KEYS})
            for i, r in enumerate(RIDGE_GRID):
                evs[f, i] = heldout_ev(*solver.solve(r), held)
        mean = evs.mean(0)
        best = int(mean.argmax())
        se = float(evs[:, best].std() / len(folds) ** 0.5) if len(folds) > 1 else 0.0
        i = max(i for i in range(len(RIDGE_GRID)) if mean[i] >= mean[best] - se)
        return RIDGE_GRID[i], float(mean[i])

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Flat tensors for safetensors: ``"<i>.<key>"`` for the i-th buffered rollout (oldest first)."""
        return {f"{i}.{k}": s[k].contiguous() for i, s in enumerate(self.buffer) for k in KEYS}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        count = len({name.split(".")[0] for name in state})
        self.buffer = [{k: state[f"{i}.{k}"].double() for k in KEYS} for i in range(count)][-self.steps:]
