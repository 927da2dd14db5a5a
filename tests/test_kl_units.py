"""kl_coef is in units of the raw score per nat whatever reward_norm is: the KL is divided by the score's scale."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rl.core import RunningMoments, normalisation_scale, normalise_scores
from rl.trainer import DetoxPPOTrainer


def test_normalisation_scale_by_hand():
    s = torch.tensor([1.0, 2.0, 3.0])  # unbiased std 1
    assert normalisation_scale(s, "none") == 1.0
    assert normalisation_scale(s, "whiten") == pytest.approx(1.0)
    assert normalisation_scale(torch.tensor([4.0]), "whiten") == 1.0
    m = RunningMoments()
    normalise_scores(torch.tensor([0.0, 2.0]), "running", m)  # std sqrt(2)
    assert normalisation_scale(torch.tensor([0.0, 2.0]), "running", m) == pytest.approx(2 ** 0.5)
    with pytest.raises(ValueError, match="unknown reward_norm"):
        normalisation_scale(s, "z")
    assert normalisation_scale(torch.tensor([0.0, 2.0]), "whiten") == pytest.approx(2 ** 0.5)  # two scores whiten
    with pytest.raises(ValueError) as err:
        normalisation_scale(s, "running")
    assert str(err.value) == "normalisation_scale: mode 'running' needs a RunningMoments"


def test_scale_has_a_floor_when_scores_do_not_vary():
    """Identical scores whiten to zeros; the KL must not be divided by eps (1e8 times stronger)."""
    from rl.core import SCALE_FLOOR

    assert SCALE_FLOOR == 1e-3
    assert normalisation_scale(torch.tensor([0.5, 0.5, 0.5]), "whiten") == SCALE_FLOOR
    m = RunningMoments()
    normalise_scores(torch.tensor([0.5, 0.5]), "running", m)
    assert normalisation_scale(torch.tensor([0.5, 0.5]), "running", m) == SCALE_FLOOR


@pytest.mark.parametrize("mode", ["none", "whiten", "running"])
def test_return_is_raw_score_minus_kl_in_score_units(mode):
    # sequence return with gamma = lam = 1 and V = 0: sum_t r_t = (s - mu - beta * sum_t KL_t) / sigma
    beta = 0.3
    raw = torch.tensor([0.2, 0.9, 0.5, 0.4])
    logp = torch.tensor([[-1.0, -2.0, -0.5], [-0.1, -0.2, 0.0], [-3.0, -1.0, -1.0], [-0.5, -0.5, -0.5]])
    ref = torch.tensor([[-1.5, -2.0, -1.5], [-0.3, -0.7, 0.0], [-2.0, -1.0, -1.0], [-0.5, -0.9, -0.5]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0], [1, 0, 0], [1, 1, 1]], dtype=torch.float32)
    moments = RunningMoments()
    moments.update(torch.tensor([0.0, 1.0, 0.3]))  # an earlier rollout
    score = normalise_scores(raw, mode, moments)
    sigma = normalisation_scale(raw, mode, moments)
    mu = {"none": 0.0, "whiten": float(raw.mean()), "running": moments.mean}[mode]
    fake = SimpleNamespace(args=SimpleNamespace(kl_estimator="k1", gamma=1.0, lam=1.0, whiten_advantages=False),
                           kl_ctl=SimpleNamespace(value=beta))
    old = SimpleNamespace(logprobs=logp, values=torch.zeros_like(logp))
    _, returns, kl = DetoxPPOTrainer.advantages(fake, old, ref, score, mask, step=1, scale=sigma)
    seq_kl = ((logp - ref) * mask).sum(1)
    assert returns[:, 0] == pytest.approx(((raw - mu - beta * seq_kl) / sigma).tolist(), abs=1e-5)
    assert sigma != pytest.approx(1.0) or mode == "none"  # the modes really differ


@pytest.mark.parametrize("norm", ["none", "running"])
def test_trl_beta_mapping(norm, tmp_path):
    from tests.rl_helpers import ppo_config
    from rl.trl_algos import trl_config

    def cfg(algorithm):
        args = ppo_config(output_dir=str(tmp_path), algorithm=algorithm, reward_norm=norm, kl_coef=0.02,
                              rollout_batch_size=8, num_generations=4, report_to="none", use_cpu=True)
        return trl_config(args, algorithm)

    rloo, grpo = cfg("rloo"), cfg("grpo")
    assert rloo.beta == grpo.beta == 0.02
    assert rloo.normalize_advantages is (norm != "none")  # RLOO's KL sits in the reward: normalised with it
    assert grpo.scale_rewards == ("none" if norm == "none" else "group")
