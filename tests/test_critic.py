"""The critic learns: a fresh value head predicts ~0 (explained variance ~0, not ~-3), it has its own
learning rate, and a critic warm-up trains it with the actor frozen."""

from __future__ import annotations

import pytest
import torch

from rl.core import explained_variance
from rl.value_head import ValueHead
from tests.rl_helpers import make_run, make_trainer


def smollm2_like_hidden(n: int, hidden: int = 576, norm_rms: float = 1.8) -> torch.Tensor:
    """Last hidden states as SmolLM2 gives them: RMS-normalised, times a final-norm weight of RMS ~1.8."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, hidden, generator=g) + 0.5 * torch.randn(1, hidden, generator=g)  # shared direction too
    x = x / x.pow(2).mean(-1, keepdim=True).sqrt()
    weight = norm_rms * (1 + 0.3 * torch.randn(hidden, generator=g)) / (1 + 0.3 ** 2) ** 0.5
    return x * weight


def test_fresh_value_head_explains_no_less_than_a_constant():
    torch.manual_seed(0)
    hidden = smollm2_like_hidden(4 * 24).view(4, 24, -1)
    returns = torch.randn(4, 24)  # normalised returns: mean 0, std 1
    mask = torch.ones(4, 24)
    with torch.no_grad():
        values = ValueHead(hidden.shape[-1])(hidden)
    assert abs(float(values.mean())) <= 0.1 and float(values.std()) <= 0.1
    assert explained_variance(values, returns, mask) >= -0.05


@pytest.fixture()
def run(tiny_dir, tmp_path):
    return make_run(tiny_dir("llama"), tmp_path, "causal")


def test_value_learning_rate_is_its_own_group(run, tmp_path):
    trainer = make_trainer(run, tmp_path / "out", value_learning_rate=0.02)
    actor, critic = trainer.optimizer.param_groups
    assert actor["lr"] == pytest.approx(1e-3) and critic["lr"] == pytest.approx(0.02)
    head = {id(p) for p in trainer.unwrapped.value_head.parameters()}
    assert {id(p) for p in critic["params"]} == head and not head & {id(p) for p in actor["params"]}
    assert make_trainer(run, tmp_path / "out2").optimizer.param_groups[1]["lr"] == pytest.approx(1e-3)


def test_critic_warmup_freezes_the_actor(run, tmp_path):
    trainer = make_trainer(run, tmp_path / "out", critic_warmup_steps=1, max_steps=2, value_learning_rate=0.01)
    policy = trainer.unwrapped.policy
    before = {k: v.detach().clone() for k, v in policy.state_dict().items()}
    head_before = trainer.unwrapped.value_head.summary.weight.detach().clone()
    stats = trainer.step()
    assert stats["ppo/critic_warmup"] == 1.0 and stats["ppo/value_lr"] == pytest.approx(0.01)
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())  # actor frozen (no decay either)
    # AdamW never saw the actor: its step count and moments start at the first real step, as they always did
    assert not any(p in trainer.optimizer.optimizer.state for p in trainer.actor_params)
    assert not torch.equal(head_before, trainer.unwrapped.value_head.summary.weight)  # critic trained
    stats = trainer.step()
    assert stats["ppo/critic_warmup"] == 0.0
    assert any(not torch.equal(before[k], v) for k, v in policy.state_dict().items())  # then the actor moves


def test_critic_warmup_config_checks():
    from tests.rl_helpers import ppo_config

    with pytest.raises(ValueError, match="critic_warmup_steps must be >= 0 and < max_steps"):
        ppo_config(output_dir="x", max_steps=3, critic_warmup_steps=3, report_to="none")
    # the default config's warm-up does not stop `--algorithm grpo`: GRPO/RLOO have no critic to warm up
    assert ppo_config(output_dir="x", algorithm="grpo", critic_warmup_steps=1, report_to="none").critic_warmup_steps == 0
    with pytest.raises(ValueError, match="value_learning_rate must be > 0"):
        ppo_config(output_dir="x", value_learning_rate=0.0, report_to="none")
