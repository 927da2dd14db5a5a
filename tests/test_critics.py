"""The critic interface (rl/critics.py): one class per strategy, chosen once; the settings as one section (YAML
``critic:`` and ``--critic.*``) checked by the critic itself; a critic written outside the package drives the
step through the interface alone; the step never asks which critic it has."""

from __future__ import annotations

import inspect
import os

import pytest
import torch

from detoxrl.errors import UserError
from detoxrl.vocab import ToxicLexicon
from rl.critics import CRITIC_FIELDS, Critic, CriticConfig, FeatureCritic, HeadCritic, ReplayHeadCritic, make_critic
from rl.trainer import DetoxPPOTrainer
from tests.rl_helpers import make_run, make_trainer, ppo_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def section(**kw) -> CriticConfig:
    base = dict(model="shared", features="hidden", replay_steps=0, ridge=None, shrink=1.0, learning_rate=None,
                warmup_steps=0)
    return CriticConfig(**{**base, **kw})


def test_make_critic_picks_one_class_per_strategy():
    assert type(make_critic(section())) is HeadCritic
    replay = make_critic(section(replay_steps=3, ridge=0.1))
    assert type(replay) is ReplayHeadCritic and replay.replay.steps == 3 and replay.needs_features
    feat = make_critic(section(features="lexicon", replay_steps=2), tokenizer=None, lexicon=ToxicLexicon(["idiot"]))
    assert type(feat) is FeatureCritic and not feat.head_values and feat.replay is feat.fit.replay
    assert (HeadCritic.trains_head, ReplayHeadCritic.trains_head, FeatureCritic.trains_head) == (True, False, False)
    with pytest.raises(UserError, match="value_features lexicon needs the toxic lexicon"):
        make_critic(section(features="lexicon", replay_steps=2))


def test_the_config_section_is_the_flat_fields():
    args = ppo_config(output_dir="x", report_to="none", value_features="lexicon", value_replay_steps=5,
                      value_ridge=0.2, value_shrink=0.25, critic_warmup_steps=1, value_learning_rate=0.01)
    assert args.critic_config == CriticConfig("shared", "lexicon", 5, 0.2, 0.25, 0.01, 1)
    assert set(CRITIC_FIELDS.values()) <= {f for f in vars(args)}


def test_the_critic_checks_its_own_rules():
    with pytest.raises(ValueError, match="value_ridge is only used by the replay fit"):
        section(ridge=0.1).check(samples_per_prompt=1, max_steps=4)
    with pytest.raises(ValueError, match="critic_warmup_steps must be >= 0 and < max_steps 4"):
        section(warmup_steps=4).check(1, 4)
    with pytest.raises(ValueError, match="value_learning_rate must be > 0 or unset"):
        section(learning_rate=0.0).check(1, 4)
    section(features="lexicon+sibling", replay_steps=2).check(2, 4)  # a valid section passes


def test_yaml_section_and_dotted_flags_set_the_critic(tmp_path):
    from detoxrl.errors import ConfigError
    from rl.ppo import parse

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"extends: {os.path.join(ROOT, 'configs', 'rl', 'default.yaml')}\n"
                   "critic:\n  features: lexicon\n  replay_steps: 8\n  warmup_steps: 0\n")
    *_, args = parse(["--config", str(cfg), "--critic.shrink", "0.25"])
    c = args.critic_config
    assert (c.features, c.replay_steps, c.warmup_steps, c.shrink, c.model) == ("lexicon", 8, 0, 0.25, "shared")
    cfg.write_text("critic: separate\nvalue_features: hidden\nvalue_replay_steps: 0\nvalue_ridge: null\n")
    *_, args = parse(["--config", str(cfg)])
    assert args.critic_config.model == "separate"  # the scalar `critic:` is still the critic model
    cfg.write_text("critic:\n  feature: lexicon\n")
    with pytest.raises(ConfigError, match="unknown field 'critic.feature'"):
        parse(["--config", str(cfg)])


class ConstantCritic(Critic):
    """A critic from outside the package: values 0.25 everywhere, no value loss, counts what the step asks."""

    head_values = False
    trains_head = False

    def __init__(self):
        self.calls = []

    def prepare(self, rollout, score, mask):
        self.calls.append("prepare")
        return "my-input", {"critic/custom": 1.0}

    def values(self, out, inputs, mask):
        assert inputs == "my-input"
        self.calls.append("values")
        from dataclasses import replace

        return replace(out, values=torch.full_like(out.logprobs, 0.25) * mask)

    def loss(self, out, old, returns, micro, mask, clip_range_value):
        self.calls.append("loss")
        zero = out.logprobs.new_zeros(())
        return zero, zero

    def update(self, trainer, inputs, old, returns, mask):
        self.calls.append("update")
        assert torch.equal(old.values, torch.full_like(old.values, 0.25) * mask)
        return {"critic/updated": 1.0}


def test_a_critic_from_outside_drives_the_step(tiny_dir, tmp_path):
    run = make_run(tiny_dir("llama"), tmp_path, "causal")
    critic = ConstantCritic()
    tr = make_trainer(run, tmp_path / "out", strategy=critic, num_mini_batches=2, max_steps=2)
    assert tr.critic is critic and not any(p.requires_grad for p in tr.unwrapped.value_head.parameters())
    stats = tr.step()
    # one values call (the non-fused first pass), one loss per micro-batch (2 minibatches x 1 epoch... x ppo_epochs)
    n_loss = tr.args.ppo_epochs * tr.args.num_mini_batches * tr.args.gradient_accumulation_steps
    assert critic.calls == ["prepare", "values", *["loss"] * n_loss, "update"]
    assert stats["critic/custom"] == 1.0 and stats["critic/updated"] == 1.0 and stats["ppo/value_loss"] == 0


def test_the_step_never_asks_which_critic_it_has():
    code = inspect.getsource(DetoxPPOTrainer.step) + inspect.getsource(DetoxPPOTrainer.__init__)
    for word in ("value_features", "replay_steps", "isinstance", "FeatureCritic", "feature_critic", "head_replay"):
        assert word not in code, word
