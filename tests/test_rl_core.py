"""rl/core.py: every PPO formula against numbers computed by hand in the comments."""

from __future__ import annotations

import math

import pytest
import torch

from rl.core import (
    AdaptiveKLController,
    FixedKLController,
    check_finite,
    explained_variance,
    gae,
    kl_penalty,
    last_valid_index,
    masked_mean,
    masked_var,
    masked_whiten,
    per_token_rewards,
    policy_loss,
    value_loss,
)

T = torch.tensor


def close(a, b, tol=1e-6):
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                               atol=tol, rtol=0)


# ---- masked statistics --------------------------------------------------------------------------------------

# valid values 1, 2, 3, 4 (the 100s are padding): mean 2.5, squared deviations 2.25+0.25+0.25+2.25 = 5
X = T([[1.0, 2.0, 3.0], [4.0, 100.0, 100.0]])
M = T([[1, 1, 1], [1, 0, 0]])


def test_masked_mean_all_and_per_row():
    close(masked_mean(X, M), 2.5)  # 10 / 4
    close(masked_mean(X, M, dim=1), [2.0, 4.0])  # (1+2+3)/3, 4/1
    close(masked_mean(X, M.bool()), 2.5)  # bool mask works too


def test_masked_mean_empty_row_is_zero_not_nan():
    close(masked_mean(X, T([[1, 1, 1], [0, 0, 0]]), dim=1), [2.0, 0.0])


def test_masked_var_biased_and_unbiased():
    close(masked_var(X, M, unbiased=False), 5 / 4)
    close(masked_var(X, M, unbiased=True), 5 / 3)
    with pytest.raises(ValueError):
        masked_var(X, torch.zeros_like(M))
    with pytest.raises(ValueError):
        masked_var(X, T([[1, 0, 0], [0, 0, 0]]), unbiased=True)


def test_masked_whiten_valid_positions_only():
    w = masked_whiten(X, M)
    # (x - 2.5) / sqrt(5/3): -1.5/1.290994 = -1.161895, -0.5/1.290994 = -0.387298, ...
    s = math.sqrt(5 / 3)
    close(w, [[-1.5 / s, -0.5 / s, 0.5 / s], [1.5 / s, 0.0, 0.0]], tol=1e-5)
    close(masked_mean(w, M), 0.0)
    close(masked_var(w, M), 1.0, tol=1e-5)
    # the padding 100s did not enter the statistics, and are zeroed in the output
    assert w[1, 1] == 0 and w[1, 2] == 0


def test_masked_whiten_without_mean_shift_keeps_mean():
    w = masked_whiten(X, M, shift_mean=False)
    s = math.sqrt(5 / 3)
    close(w[0], [-1.5 / s + 2.5, -0.5 / s + 2.5, 0.5 / s + 2.5], tol=1e-5)
    close(masked_mean(w, M), 2.5, tol=1e-5)
    close(masked_var(w, M), 1.0, tol=1e-5)


# ---- KL -------------------------------------------------------------------------------------------------------


def test_kl_k1_and_k3_by_hand():
    logp = torch.log(T([0.5, 0.2, 0.3]))
    ref = torch.log(T([0.25, 0.4, 0.3]))
    # k1 = log(p/p_ref): log 2 = 0.693147, log .5 = -0.693147, 0
    close(kl_penalty(logp, ref, "k1"), [math.log(2), -math.log(2), 0.0])
    # k3, r = p_ref/p: r=.5 -> (.5-1) - log .5 = 0.193147; r=2 -> (2-1) - log 2 = 0.306853; r=1 -> 0
    k3 = kl_penalty(logp, ref, "k3")
    close(k3, [-0.5 + math.log(2), 1 - math.log(2), 0.0])
    assert (k3 >= 0).all()
    with pytest.raises(ValueError):
        kl_penalty(logp, ref, "k2")  # type: ignore[arg-type]


def test_k3_nonnegative_and_zero_when_equal():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(200, generator=g), torch.randn(200, generator=g)
    assert (kl_penalty(a, b, "k3") >= 0).all()
    assert torch.equal(kl_penalty(a, a, "k3"), torch.zeros(200))
    assert torch.equal(kl_penalty(a, a, "k1"), torch.zeros(200))


# ---- rewards ------------------------------------------------------------------------------------------------


def test_last_valid_index():
    assert last_valid_index(T([[1, 1, 1], [1, 1, 0], [1, 0, 0]])).tolist() == [2, 1, 0]
    with pytest.raises(ValueError):
        last_valid_index(T([[1, 0], [0, 0]]))


def test_per_token_rewards_with_right_padding():
    score = T([2.0, -1.0])
    kl = T([[0.1, 0.2, 0.3], [0.4, 0.5, 9.0]])
    mask = T([[1, 1, 1], [1, 1, 0]])
    # row 0: -0.5*(.1, .2, .3) = (-.05, -.1, -.15), +2 at t=2 -> 1.85
    # row 1: -0.5*(.4, .5) = (-.2, -.25), -1 at t=1 -> -1.25; padding -> 0 (the 9.0 is ignored)
    r = per_token_rewards(score, kl, 0.5, mask)
    close(r, [[-0.05, -0.1, 1.85], [-0.2, -1.25, 0.0]])


# ---- GAE ----------------------------------------------------------------------------------------------------


def test_gae_three_tokens_by_hand():
    # gamma = 0.9, lam = 0.95, gamma*lam = 0.855; rewards (0, 0, 1), values (0.5, 0.4, 0.3)
    # t=2 (last, no bootstrap): delta = 1 - 0.3 = 0.7                     A2 = 0.7
    # t=1: delta = 0 + 0.9*0.3 - 0.4 = -0.13;  A1 = -0.13 + 0.855*0.7    = 0.4685
    # t=0: delta = 0 + 0.9*0.4 - 0.5 = -0.14;  A0 = -0.14 + 0.855*0.4685 = 0.2605675
    # returns = A + V = (0.7605675, 0.8685, 1.0)
    adv, ret = gae(T([[0.0, 0.0, 1.0]]), T([[0.5, 0.4, 0.3]]), T([[1, 1, 1]]), 0.9, 0.95)
    close(adv, [[0.2605675, 0.4685, 0.7]])
    close(ret, [[0.7605675, 0.8685, 1.0]])


def test_gae_padding_does_not_bootstrap_and_gets_zero():
    # row 0: the same 3 tokens followed by 2 padded positions holding garbage (5.0 reward, 9.0 value)
    # row 1: 2 tokens, rewards (0.2, -0.5), values (0.1, 0.6), then padding (7.0 / 7.0)
    #   t=1: delta = -0.5 - 0.6 = -1.1 (no bootstrap from the padded 7.0)  A1 = -1.1
    #   t=0: delta = 0.2 + 0.9*0.6 - 0.1 = 0.64;  A0 = 0.64 + 0.855*(-1.1) = -0.3005
    #   returns = (-0.2005, -0.5)
    rewards = T([[0.0, 0.0, 1.0, 5.0, 5.0], [0.2, -0.5, 7.0, 7.0, 7.0]])
    values = T([[0.5, 0.4, 0.3, 9.0, 9.0], [0.1, 0.6, 7.0, 7.0, 7.0]])
    mask = T([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    adv, ret = gae(rewards, values, mask, 0.9, 0.95)
    close(adv, [[0.2605675, 0.4685, 0.7, 0, 0], [-0.3005, -1.1, 0, 0, 0]])
    close(ret, [[0.7605675, 0.8685, 1.0, 0, 0], [-0.2005, -0.5, 0, 0, 0]])


def test_gae_lambda_one_gamma_one_is_reward_to_go_minus_value():
    # gamma = lam = 1: A_t = sum_{k>=t} r_k - V_t ; rewards (1, 2, 3) -> to-go (6, 5, 3)
    adv, ret = gae(T([[1.0, 2.0, 3.0]]), T([[0.5, 1.0, 1.5]]), T([[1, 1, 1]]), 1.0, 1.0)
    close(adv, [[5.5, 4.0, 1.5]])
    close(ret, [[6.0, 5.0, 3.0]])


# ---- policy loss --------------------------------------------------------------------------------------------


def _policy_case():
    # eps = 0.2, tokens:                 pg1 = -A r   pg2 = -A clip(r)   max    clipped?
    #   1: A=+1, r=1.5                   -1.5         -1.2               -1.2   yes (upper side, A>0)
    #   2: A=+1, r=0.5                   -0.5         -0.8               -0.5   no
    #   3: A=-1, r=1.5                    1.5          1.2                1.5   no
    #   4: A=-1, r=0.5                    0.5          0.8                0.8   yes (lower side, A<0)
    #   5: A=+2, r=1.0                   -2.0         -2.0               -2.0   no (tie is not clipped)
    #   6: padding (A=100, r=3)          ignored
    # loss = (-1.2 - 0.5 + 1.5 + 0.8 - 2.0) / 5 = -0.28 ; clipfrac = 2/5 = 0.4
    # approx_kl = mean(0.5 * d^2), d = (ln 1.5, ln .5, ln 1.5, ln .5, 0) = 0.5*(2*0.164402 + 2*0.480453)/5 = 0.128971
    ratios = T([[1.5, 0.5, 1.5, 0.5, 1.0, 3.0]])
    old = T([[-1.0, -2.0, -0.3, -0.7, -1.1, -0.2]])
    logp = (old + torch.log(ratios)).requires_grad_(True)
    adv = T([[1.0, 1.0, -1.0, -1.0, 2.0, 100.0]])
    mask = T([[1, 1, 1, 1, 1, 0]])
    return logp, old, adv, mask


def test_policy_loss_by_hand():
    logp, old, adv, mask = _policy_case()
    loss, clipfrac, approx_kl = policy_loss(logp, old, adv, mask, 0.2)
    close(loss, -0.28, tol=1e-6)
    close(clipfrac, 0.4)
    close(approx_kl, 0.12897099356227337, tol=1e-6)
    assert not clipfrac.requires_grad and not approx_kl.requires_grad


def test_policy_loss_gradient_zero_on_clipped_tokens():
    logp, old, adv, mask = _policy_case()
    loss, _, _ = policy_loss(logp, old, adv, mask, 0.2)
    loss.backward()
    g = logp.grad[0]
    # d/dlogp of -A*r/5 = -A*r/5: token 2 -> -0.5/5 = -0.1, token 3 -> 1.5/5 = 0.3; clipped and padded -> 0
    close(g[[0, 1, 2, 3, 5]], [0.0, -0.1, 0.3, 0.0, 0.0], tol=1e-6)


def test_policy_loss_no_clipping_when_ratio_one():
    old = T([[-1.0, -2.0]])
    loss, clipfrac, approx_kl = policy_loss(old.clone(), old, T([[1.0, -3.0]]), T([[1, 1]]), 0.2)
    close(loss, (-1.0 + 3.0) / 2)  # -A averaged
    close(clipfrac, 0.0)
    close(approx_kl, 0.0)


# ---- value loss ---------------------------------------------------------------------------------------------


def test_value_loss_by_hand():
    # c = 0.2                         vf1=(V-R)^2   V_clip   vf2=(V_clip-R)^2   max    clipped?
    #   1: V=1.0, old=.5, R=1.0      0             0.7      0.09               0.09   yes (upper)
    #   2: V=1.0, old=.5, R=0.0      1.0           0.7      0.49               1.0    no
    #   3: V=0.0, old=.5, R=0.0      0             0.3      0.09               0.09   yes (lower)
    #   4: V=0.6, old=.5, R=2.0      1.96          0.6      1.96               1.96   no (inside range)
    #   5: padding                   ignored
    # loss = 0.5 * (0.09 + 1.0 + 0.09 + 1.96) / 4 = 0.3925 ; clipfrac = 2/4 = 0.5
    values = T([[1.0, 1.0, 0.0, 0.6, 10.0]], requires_grad=True)
    old = T([[0.5, 0.5, 0.5, 0.5, 0.0]])
    returns = T([[1.0, 0.0, 0.0, 2.0, -10.0]])
    mask = T([[1, 1, 1, 1, 0]])
    loss, clipfrac = value_loss(values, old, returns, mask, 0.2)
    close(loss, 0.3925, tol=1e-6)
    close(clipfrac, 0.5)
    loss.backward()
    # clipped tokens and padding get no gradient; token 2: 0.5*2*(V-R)/4 = 0.25, token 4: 0.5*2*(0.6-2)/4 = -0.35
    close(values.grad[0], [0.0, 0.25, 0.0, -0.35, 0.0], tol=1e-6)


# ---- explained variance -------------------------------------------------------------------------------------


def test_explained_variance_by_hand():
    # returns (1,2,3,4): Var = 1.25. residual R - V = (0,0,0,-1): mean -0.25, Var = (3*0.0625 + 0.5625)/4 = 0.1875
    # ev = 1 - 0.1875 / 1.25 = 0.85 ; the padded column (garbage) is ignored
    returns = T([[1.0, 2.0, 99.0], [3.0, 4.0, -99.0]])
    values = T([[1.0, 2.0, 0.0], [3.0, 5.0, 0.0]])
    mask = T([[1, 1, 0], [1, 1, 0]])
    assert explained_variance(values, returns, mask) == pytest.approx(0.85, abs=1e-6)
    assert explained_variance(returns, returns, mask) == pytest.approx(1.0)
    assert math.isnan(explained_variance(values, torch.ones(2, 3), mask))


# ---- KL controllers -----------------------------------------------------------------------------------------


def test_adaptive_kl_controller_clips_upwards():
    # kl 9 vs target 6: 9/6 - 1 = 0.5 -> clip 0.2; mult = 1 + 0.2*256/10000 = 1.00512; 0.2*1.00512 = 0.201024
    c = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    assert c.update(9.0, 256) == pytest.approx(0.201024, abs=1e-12)
    assert c.value == pytest.approx(0.201024, abs=1e-12)


def test_adaptive_kl_controller_clips_downwards():
    # kl 0.6 vs target 6: 0.1 - 1 = -0.9 -> clip -0.2; mult = 1 - 0.00512 = 0.99488; 0.2*0.99488 = 0.198976
    c = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    c.update(0.6, 256)
    assert c.value == pytest.approx(0.198976, abs=1e-12)


def test_adaptive_kl_controller_unclipped_and_compounding():
    # kl 6.6: error 0.1 (inside the clip); mult = 1 + 0.1*256/10000 = 1.00256 -> 0.200512
    # again with kl 5.4: error -0.1; mult = 0.99744 -> 0.200512*0.99744 = 0.19999868928
    c = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    c.update(6.6, 256)
    assert c.value == pytest.approx(0.200512, abs=1e-12)
    c.update(5.4, 256)
    assert c.value == pytest.approx(0.19999868928, abs=1e-12)


def test_kl_controllers_state_dict_round_trip():
    a = AdaptiveKLController(0.2, target=6.0, horizon=10000)
    a.update(9.0, 256)
    b = AdaptiveKLController(1.0, target=1.0, horizon=1.0)
    b.load_state_dict(a.state_dict())
    assert (b.value, b.target, b.horizon) == (a.value, a.target, a.horizon)
    assert b.update(0.6, 128) == a.update(0.6, 128)  # same trajectory after resume

    f = FixedKLController(0.05)
    assert f.update(100.0, 1000) == 0.05 and f.value == 0.05
    g = FixedKLController(1.0)
    g.load_state_dict(f.state_dict())
    assert g.value == 0.05
    with pytest.raises(ValueError):
        g.load_state_dict(a.state_dict())
    with pytest.raises(ValueError):
        b.load_state_dict(f.state_dict())


# ---- check_finite -------------------------------------------------------------------------------------------


def test_check_finite_passes_and_raises_with_name_and_step():
    check_finite("advantages", T([1.0, -2.0]), step=3)  # no error
    check_finite("ids", T([1, 2]), step=3)  # integer tensors are always finite
    with pytest.raises(FloatingPointError, match=r"rewards.*step 17.*1 NaN, 0 inf"):
        check_finite("rewards", T([1.0, float("nan")]), step=17)
    with pytest.raises(FloatingPointError, match=r"loss.*step 42.*0 NaN, 1 inf"):
        check_finite("loss", T(float("-inf")), step=42)


# ---- score normalisation --------------------------------------------------------------------------------------

def test_running_moments_match_the_pooled_statistics():
    from rl.core import RunningMoments

    m = RunningMoments()
    assert m.std == 1.0  # nothing seen yet
    m.update(T([1.0, 2.0, 3.0]))
    m.update(T([4.0, 5.0]))
    # 1..5: mean 3, squared deviations 4+1+0+1+4 = 10, unbiased variance 10/4 = 2.5
    assert m.count == 5
    close(m.mean, 3.0)
    close(m.std, math.sqrt(2.5))
    restored = RunningMoments()
    restored.load_state_dict(m.state_dict())
    assert restored.state_dict() == m.state_dict()


def test_truncated_responses_lose_the_penalty():
    from rl.core import penalise_truncation

    close(penalise_truncation(T([0.8, 0.5, -0.2]), torch.tensor([False, True, True]), 0.5), [0.8, 0.0, -0.7])


def test_normalise_scores_modes():
    from rl.core import RunningMoments, normalise_scores

    s = T([1.0, 2.0, 3.0])
    close(normalise_scores(s, "none"), s)
    close(normalise_scores(s, "whiten"), [-1.0, 0.0, 1.0], tol=1e-6)  # mean 2, unbiased std 1
    close(normalise_scores(s, "whiten", clip=0.5), [-0.5, 0.0, 0.5], tol=1e-6)
    m = RunningMoments()
    close(normalise_scores(T([1.0, 3.0]), "running", m), [-1 / math.sqrt(2), 1 / math.sqrt(2)], tol=1e-6)
    # a later batch is scaled by everything seen so far: 1, 3, 5 -> mean 3, std 2
    close(normalise_scores(T([5.0]), "running", m), [1.0], tol=1e-6)
    with pytest.raises(ValueError, match="reward_norm"):
        normalise_scores(s, "bogus")


# ---- edges and exact messages (kill the mutants listed in docs/mutation.md) -----------------------------------

def test_masked_statistics_edges():
    close(masked_mean(T([3.0, 5.0]), T([1, 0])), 3.0)  # one valid position: divided by 1, not clamped higher
    close(masked_var(T([3.0, 5.0]), T([1, 0]), unbiased=False), 0.0)  # one valid position is a variance of 0
    close(masked_var(T([1.0, 3.0]), T([1, 1])), 2.0)  # two positions are enough for the unbiased variance
    with pytest.raises(ValueError, match=r"^masked_var: the mask has no valid position$"):
        masked_var(T([1.0]), T([0]))
    with pytest.raises(ValueError, match=r"^masked_var: unbiased variance needs at least 2 valid positions "
                                         r"\(mask sum is 1\)$"):
        masked_var(T([1.0, 2.0]), T([1, 0]))
    flat = masked_whiten(T([2.0, 2.0, 7.0]), T([1, 1, 0]))  # zero variance: 0 / sqrt(0 + eps), never NaN
    assert torch.equal(flat, torch.zeros(3))


def test_kl_default_estimator_and_messages():
    a, b = T([0.5, -1.0]), T([0.25, 0.0])
    assert torch.equal(kl_penalty(a, b), a - b)
    with pytest.raises(ValueError, match=r"^unknown KL estimator 'k2'; expected 'k1' or 'k3'$"):
        kl_penalty(a, b, "k2")
    with pytest.raises(ValueError, match=r"^a response row has no valid token \(empty mask row\)$"):
        last_valid_index(T([[1, 0], [0, 0]]))


def test_kl_controllers_refuse_bad_settings_and_load_states_without_kind():
    for target, horizon in ((0.0, 1.0), (1.0, 0.0), (-1.0, 5.0)):
        with pytest.raises(ValueError, match=rf"^AdaptiveKLController needs target > 0 and horizon > 0 "
                                             rf"\(got {target}, {horizon}\)$"):
            AdaptiveKLController(0.1, target, horizon)
    a = AdaptiveKLController(0.1, 6.0, 100.0)
    a.load_state_dict({"value": 0.3, "target": 2.0, "horizon": 10.0})
    assert a.state_dict() == {"kind": "adaptive", "value": 0.3, "target": 2.0, "horizon": 10.0}
    f = FixedKLController(0.1)
    f.load_state_dict({"value": 0.7})
    assert f.state_dict() == {"kind": "fixed", "value": 0.7}
    with pytest.raises(ValueError, match=r"^cannot load a 'fixed' KL controller state into an adaptive one$"):
        a.load_state_dict(f.state_dict())
    with pytest.raises(ValueError, match=r"^cannot load a 'adaptive' KL controller state into a fixed one$"):
        f.load_state_dict(a.state_dict())


def test_score_normalisation_edges():
    from rl.core import RunningMoments, normalise_scores

    assert RunningMoments().state_dict() == {"count": 0, "mean": 0.0, "m2": 0.0}
    close(normalise_scores(T([0.4]), "whiten"), [0.4])  # one score: unchanged
    close(normalise_scores(T([1.0, 3.0]), "whiten"), [-1 / math.sqrt(2), 1 / math.sqrt(2)], tol=1e-6)
    close(normalise_scores(T([1.0, 3.0, 5.0]), "whiten"), [-1.0, 0.0, 1.0], tol=1e-6)  # divided by std 2
    with pytest.raises(ValueError, match=r"^normalise_scores: mode 'running' needs a RunningMoments$"):
        normalise_scores(T([1.0]), "running")
    with pytest.raises(ValueError, match=r"^unknown reward_norm 'bogus'; expected none, whiten or running$"):
        normalise_scores(T([1.0]), "bogus")
