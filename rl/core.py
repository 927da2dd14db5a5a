"""PPO arithmetic as small pure functions (CleanRL style), shared by the seq2seq and causal PPO trainer.

Conventions. Every per-token tensor has shape ``(batch, response_len)`` and comes with a ``mask`` of the
same shape (bool or 0/1 float) that is 1 on valid response tokens and 0 on padding. Responses are
right-padded (the valid tokens of a row come first). Nothing here touches a model; the only state lives in
the KL controllers (plain floats, checkpointable through ``state_dict``).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

KLEstimator = Literal["k1", "k3"]


def _as_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """The mask as a float tensor with the dtype and device of ``like``."""
    return mask.to(dtype=like.dtype, device=like.device)


# ----------------------------------------------------------------------------------------------------------
# masked statistics
# ----------------------------------------------------------------------------------------------------------


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the valid positions: ``sum(x * m) / sum(m)`` (over ``dim``, or over everything).

    A slice with no valid position gives 0 rather than NaN (the denominator is clamped to >= 1), so an
    empty slice never leaks NaN into the logs or the loss.
    """
    m = _as_mask(mask, x)
    if dim is None:
        return (x * m).sum() / m.sum().clamp(min=1.0)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over the valid positions (all of them pooled, a scalar).

    ``var = sum(m * (x - mu)^2) / n`` with ``mu = masked_mean(x, m)`` and ``n = sum(m)``; when ``unbiased``
    it is multiplied by Bessel's correction ``n / (n - 1)``.

    Raises ``ValueError`` when there is no valid position, or only one and ``unbiased`` is asked for.
    """
    m = _as_mask(mask, x)
    n = m.sum()
    if n.item() == 0:
        raise ValueError("masked_var: the mask has no valid position")
    mean = (x * m).sum() / n
    var = (((x - mean) ** 2) * m).sum() / n
    if unbiased:
        if n.item() < 2:
            raise ValueError("masked_var: unbiased variance needs at least 2 valid positions (mask sum is 1)")
        var = var * n / (n - 1)
    return var


def masked_whiten(
    x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8
) -> torch.Tensor:
    """Whiten ``x`` with statistics of the valid positions only.

    ``y = (x - mu) / sqrt(var + eps)`` with ``mu = masked_mean(x, m)`` and ``var = masked_var(x, m, unbiased=True)``;
    with ``shift_mean=False`` the mean is added back (``y + mu``: rescaled but not centred). Padded positions
    are set to 0 in the output, so they cannot leak into later sums.
    """
    m = _as_mask(mask, x)
    mean = masked_mean(x, m)
    var = masked_var(x, m, unbiased=True)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * m


# ----------------------------------------------------------------------------------------------------------
# KL and rewards
# ----------------------------------------------------------------------------------------------------------


def kl_penalty(logprobs: torch.Tensor, ref_logprobs: torch.Tensor, estimator: KLEstimator = "k1") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from log-probs of tokens sampled from the policy.

    - ``k1 = logp - logp_ref`` (unbiased, can be negative per token);
    - ``k3 = (r - 1) - log r`` with ``r = exp(logp_ref - logp)`` (Schulman's estimator: unbiased, always >= 0,
      exactly 0 where the two log-probs are equal).
    """
    if estimator == "k1":
        return logprobs - ref_logprobs
    if estimator == "k3":
        log_ratio = ref_logprobs - logprobs
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; expected 'k1' or 'k3'")


def last_valid_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last valid position in each row: ``max{t : m[b, t] = 1}``; ``ValueError`` on an empty row."""
    m = mask.to(torch.bool)
    if not m.any(dim=1).all():
        raise ValueError("a response row has no valid token (empty mask row)")
    T = m.shape[1]
    return (T - 1) - m.flip(dims=[1]).to(torch.long).argmax(dim=1)


def per_token_rewards(
    score: torch.Tensor, kl: torch.Tensor, kl_coef: float, mask: torch.Tensor
) -> torch.Tensor:
    """Per-token PPO reward: ``r_t = -kl_coef * kl_t`` on valid tokens, plus the sequence ``score`` at the last one.

    ``r[b, t] = m[b, t] * (-kl_coef * kl[b, t]) + score[b] * [t == last_valid(b)]``; padded positions are 0.
    ``score`` is ``(B,)``, ``kl`` and ``mask`` are ``(B, T)``. The trainer passes ``kl_coef = beta / sigma``
    with ``sigma = normalisation_scale(...)`` and ``score = (s - mu) / sigma``, so a sequence's return is
    ``(s - mu - beta * sum_t kl_t) / sigma``: ``beta`` trades raw score against nats whatever the normalisation.
    """
    m = _as_mask(mask, kl)
    rewards = -kl_coef * kl * m
    last = last_valid_index(mask)
    rows = torch.arange(kl.shape[0], device=kl.device)
    rewards[rows, last] += score.to(rewards.dtype)
    return rewards


# ----------------------------------------------------------------------------------------------------------
# advantages
# ----------------------------------------------------------------------------------------------------------


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over right-padded response tokens.

    With ``r`` and ``V`` zeroed on padding, going backwards from the last position:
    ``delta_t = r_t + gamma * V_{t+1} - V_t`` (``V_T = 0``, and ``V_{t+1} = 0`` past the last valid token,
    so the last valid token does not bootstrap), ``A_t = m_t * (delta_t + gamma * lam * A_{t+1})``.
    Returns ``(A, R)`` with ``R = (A + V) * m``. Both are 0 at padded positions.
    """
    m = _as_mask(mask, values)
    r = rewards * m
    v = values * m
    T = r.shape[1]
    advantages = torch.zeros_like(v)
    last_gae = torch.zeros_like(v[:, 0])
    for t in reversed(range(T)):
        next_value = v[:, t + 1] if t + 1 < T else torch.zeros_like(v[:, 0])
        delta = r[:, t] + gamma * next_value - v[:, t]
        last_gae = (delta + gamma * lam * last_gae) * m[:, t]
        advantages[:, t] = last_gae
    returns = (advantages + v) * m
    return advantages, returns


# ----------------------------------------------------------------------------------------------------------
# losses
# ----------------------------------------------------------------------------------------------------------


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip_range: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PPO clipped surrogate loss. Returns ``(loss, clipfrac, approx_kl)``; only ``loss`` carries gradient.

    ``ratio = exp(logp - logp_old)``, ``pg1 = -A * ratio``, ``pg2 = -A * clip(ratio, 1 - eps, 1 + eps)``;
    ``loss = masked_mean(max(pg1, pg2))``; ``clipfrac = masked_mean([pg2 > pg1])`` (strictly: ties are not
    clipped); ``approx_kl = masked_mean(0.5 * (logp - logp_old)^2)``.
    """
    log_ratio = logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    pg1 = -advantages * ratio
    pg2 = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(pg1, pg2), mask)
    with torch.no_grad():
        clipfrac = masked_mean((pg2 > pg1).to(pg1.dtype), mask)
        approx_kl = masked_mean(0.5 * log_ratio**2, mask)
    return loss, clipfrac, approx_kl


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    mask: torch.Tensor,
    clip_range_value: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Clipped value loss. Returns ``(loss, clipfrac)``; only ``loss`` carries gradient.

    ``V_clip = clip(V, V_old - c, V_old + c)``, ``vf1 = (V - R)^2``, ``vf2 = (V_clip - R)^2``;
    ``loss = 0.5 * masked_mean(max(vf1, vf2))``; ``clipfrac = masked_mean([vf2 > vf1])``.
    """
    v_clipped = old_values + torch.clamp(values - old_values, -clip_range_value, clip_range_value)
    vf1 = (values - returns) ** 2
    vf2 = (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(vf1, vf2), mask)
    with torch.no_grad():
        clipfrac = masked_mean((vf2 > vf1).to(vf1.dtype), mask)
    return loss, clipfrac


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """How much of the returns' variance the value head explains, over valid positions.

    ``ev = 1 - Var(R - V) / Var(R)`` (population variances over valid tokens). 1 is perfect, 0 is no better
    than a constant, negative is worse. NaN when ``Var(R) == 0``.
    """
    with torch.no_grad():
        var_returns = masked_var(returns.float(), mask, unbiased=False).item()
        if var_returns == 0.0:
            return math.nan
        var_residual = masked_var((returns - values).float(), mask, unbiased=False).item()
    return 1.0 - var_residual / var_returns


# ----------------------------------------------------------------------------------------------------------
# KL coefficient controllers
# ----------------------------------------------------------------------------------------------------------


class AdaptiveKLController:
    """Adaptive KL coefficient (Ziegler et al. 2019, "Fine-Tuning LMs from Human Preferences").

    ``update(current_kl, n_steps)``: ``e = clip(current_kl / target - 1, -0.2, 0.2)``,
    ``value *= 1 + e * n_steps / horizon``.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: float) -> None:
        if target <= 0 or horizon <= 0:
            raise ValueError(f"AdaptiveKLController needs target > 0 and horizon > 0 (got {target}, {horizon})")
        self.value = float(init_kl_coef)
        self.target = float(target)
        self.horizon = float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        """Move ``value`` towards the coefficient that keeps the KL at ``target``; returns the new value."""
        proportional_error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        mult = 1.0 + proportional_error * n_steps / self.horizon
        self.value *= mult
        return self.value

    def state_dict(self) -> dict[str, float | str]:
        """Everything needed to resume: kind, current value, target and horizon."""
        return {"kind": "adaptive", "value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float | str]) -> None:
        """Restore from ``state_dict()``."""
        if state.get("kind", "adaptive") != "adaptive":
            raise ValueError(f"cannot load a {state.get('kind')!r} KL controller state into an adaptive one")
        self.value = float(state["value"])
        self.target = float(state["target"])
        self.horizon = float(state["horizon"])


class FixedKLController:
    """Constant KL coefficient: ``update`` is a no-op that returns ``value``."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> float:
        """No-op; returns the (unchanged) coefficient."""
        return self.value

    def state_dict(self) -> dict[str, float | str]:
        """Kind and value."""
        return {"kind": "fixed", "value": self.value}

    def load_state_dict(self, state: dict[str, float | str]) -> None:
        """Restore from ``state_dict()``."""
        if state.get("kind", "fixed") != "fixed":
            raise ValueError(f"cannot load a {state.get('kind')!r} KL controller state into a fixed one")
        self.value = float(state["value"])


# ----------------------------------------------------------------------------------------------------------
# numerical guard
# ----------------------------------------------------------------------------------------------------------


def check_finite(name: str, tensor: torch.Tensor, step: int) -> None:
    """Raise ``FloatingPointError`` naming ``name`` and ``step`` when ``tensor`` holds any NaN or inf."""
    t = torch.as_tensor(tensor)
    if t.is_floating_point() or t.is_complex():
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            n_nan = int(torch.isnan(t).sum())
            n_inf = int(torch.isinf(t).sum())
            raise FloatingPointError(
                f"non-finite values in {name} at step {step}: {n_nan} NaN, {n_inf} inf "
                f"(of {t.numel()} values)"
            )


# ----------------------------------------------------------------------------------------------------------
# score normalisation
# ----------------------------------------------------------------------------------------------------------


class RunningMoments:
    """Running mean and standard deviation of every score seen so far (Chan et al.'s parallel update).

    ``update(x)`` folds a batch in: with ``n, mu, M2`` so far and ``n_b, mu_b, M2_b`` of the batch,
    ``delta = mu_b - mu``, ``n' = n + n_b``, ``mu' = mu + delta * n_b / n'``,
    ``M2' = M2 + M2_b + delta^2 * n * n_b / n'``; ``std = sqrt(M2' / (n' - 1))`` (1 until n' >= 2).
    """

    def __init__(self) -> None:
        self.count, self.mean, self.m2 = 0, 0.0, 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.m2 / (self.count - 1)) if self.count > 1 else 1.0

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().double().flatten()
        n_b = x.numel()
        if n_b == 0:
            return
        mu_b = float(x.mean())
        m2_b = float(((x - mu_b) ** 2).sum())
        n = self.count + n_b
        delta = mu_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta**2 * self.count * n_b / n
        self.count = n

    def state_dict(self) -> dict[str, float]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])


def penalise_truncation(scores: torch.Tensor, truncated: torch.Tensor, penalty: float) -> torch.Tensor:
    """``s - penalty * [no EOS]``: a response cut at ``max_new_tokens`` loses ``penalty`` from its score."""
    return scores - penalty * truncated.to(scores.dtype)


SCALE_FLOOR = 1e-3  # scores that (almost) never vary would otherwise multiply the KL penalty by up to 1/eps


def normalisation_scale(scores: torch.Tensor, mode: str, moments: RunningMoments | None = None,
                        eps: float = 1e-8) -> float:
    """The divisor ``sigma`` that ``normalise_scores`` applied (call it after): 1 for ``none``, ``std(s) + eps`` for
    ``whiten`` (1 for a single score), ``moments.std + eps`` for ``running``; never below ``SCALE_FLOOR``.

    Dividing the KL penalty by it keeps ``kl_coef`` in units of the raw score (see ``per_token_rewards``). The
    floor only acts when the scores have (almost) no spread: a rollout of identical scores whitens to zeros,
    and an unfloored ``sigma`` of ``eps`` would turn the KL term into ``1e8`` times itself.
    """
    if mode == "whiten" and scores.numel() > 1:
        return max(float(scores.std()) + eps, SCALE_FLOOR)
    if mode == "running":
        if moments is None:
            raise ValueError("normalisation_scale: mode 'running' needs a RunningMoments")
        return max(moments.std + eps, SCALE_FLOOR)
    if mode not in ("none", "whiten"):
        raise ValueError(f"unknown reward_norm {mode!r}; expected none, whiten or running")
    return 1.0


def normalise_scores(scores: torch.Tensor, mode: str, moments: RunningMoments | None = None,
                     clip: float | None = None, eps: float = 1e-8) -> torch.Tensor:
    """Normalise a rollout's sequence scores.

    - ``none``: unchanged;
    - ``whiten``: ``(s - mean(s)) / (std(s) + eps)`` over this rollout (unbiased std; unchanged if one score);
    - ``running``: fold ``s`` into ``moments`` first, then ``(s - mu) / (sigma + eps)`` with the running values.

    Then, if ``clip`` is set, ``clamp(s, -clip, clip)``.
    """
    if mode == "whiten" and scores.numel() > 1:
        scores = (scores - scores.mean()) / (scores.std() + eps)
    elif mode == "running":
        if moments is None:
            raise ValueError("normalise_scores: mode 'running' needs a RunningMoments")
        moments.update(scores)
        scores = (scores - moments.mean) / (moments.std + eps)
    elif mode not in ("none", "whiten"):
        raise ValueError(f"unknown reward_norm {mode!r}; expected none, whiten or running")
    if clip is not None:
        scores = scores.clamp(-clip, clip)
    return scores
