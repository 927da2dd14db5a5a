"""The feature critic (rl/feature_critic.py): the prefix features by hand, the sibling scores, the fit predicting
fresh rollouts, grouped rollouts, and the trainer step that uses it (values from the fit, head untouched)."""

from __future__ import annotations

import math

import pytest
import torch

from detoxrl.vocab.lexicon import ToxicLexicon
from rl.core import explained_variance
from rl.feature_critic import (
    PREFIX_FEATURES,
    UNITS_FLOOR,
    CriticInput,
    FeatureCritic,
    prefix_features,
    rollout_units,
    sibling_scores,
)
from tests.rl_helpers import make_run, make_trainer, straight_and_resumed

EOS = 99


class WordTokenizer:
    """One token per word; ``decode`` joins the words (EOS dropped with ``skip_special_tokens``)."""

    def __init__(self, words):
        self.words = words

    def decode(self, ids, skip_special_tokens=False):
        return " ".join(self.words[i] for i in ids if not (skip_special_tokens and i == EOS))


WORDS = ["you", "are", "an", "idiot", "a", "fool", "nice"]
LEX = ToxicLexicon(["idiot"])


def test_prefix_features_by_hand():
    tok = WordTokenizer(WORDS)
    copy = prefix_features(tok, LEX, "You are an idiot!", [0, 1, 2, 3, EOS])
    assert copy.shape == (5, len(PREFIX_FEATURES))
    # key "you are an idiot" (16 chars), the stripped source 17; row t sees tokens 0..t-1
    expected = [[1, 0, 0, 1, 0, 0 / 40, 0, 0, 0],
                [1, 3 / 16, 0, 1, 0, 1 / 40, 0, 3 / 17, 0],
                [1, 7 / 16, 0, 1, 0, 2 / 40, 0, 7 / 17, 0],
                [1, 10 / 16, 0, 1, 0, 3 / 40, 0, 10 / 17, 0],
                [1, 1.0, 1, 1, 0, 4 / 40, 1, 16 / 17, 0]]  # the toxic word was copied
    torch.testing.assert_close(copy, torch.tensor(expected, dtype=torch.float64))
    edit = prefix_features(tok, LEX, "You are an idiot!", [0, 1, 4, 5, EOS])
    # "you are a" is still a character prefix of the source; "you are a fool" is not
    assert edit[:, 0].tolist() == [1, 1, 1, 1, 0] and edit[4, 1] == 0 and edit[:, 2].sum() == 0
    clean = prefix_features(tok, LEX, "you are nice", [0, EOS])
    assert clean[:, 3].tolist() == [0, 0] and clean[:, 4].tolist() == [1, 1]
    # "you are an" (10 chars) is over twice "you" (3): the length blow-up is certain from there; the ratio caps at 3
    long = prefix_features(tok, LEX, " you ", [0, 1, 2, 3], max_length_ratio=2.0)
    assert long[:, 7].tolist() == [0, 1, 7 / 3, 3] and long[:, 8].tolist() == [0, 0, 1, 1]


def test_sibling_scores_are_the_other_rows_of_the_group():
    torch.testing.assert_close(sibling_scores(torch.tensor([1.0, 3.0, 5.0, 7.0]), 2),
                               torch.tensor([3.0, 1.0, 7.0, 5.0], dtype=torch.float64))
    torch.testing.assert_close(sibling_scores(torch.tensor([0.0, 3.0, 6.0]), 3),
                               torch.tensor([4.5, 3.0, 1.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="groups of 2"):
        sibling_scores(torch.tensor([1.0, 2.0, 3.0]), 2)


def _toy_rollout(g, B=16, T=6, centre=0.0, scale=1.0, units=False):
    """Features whose first column decides the return (a copy scores -2, a rewrite +0.5), with noise, the whole
    return then moved to ``centre + scale * return``. ``units``: the input carries the rollout's units, measured on
    the last token's return (the score) as the trainer measures them on the scores."""
    x = torch.zeros(B, T, 2, dtype=torch.float64)
    copy = (torch.rand(B, generator=g) < 0.3).double()
    x[:, :, 0] = copy[:, None]
    x[:, :, 1] = torch.rand(B, 1, generator=g)
    returns = (-2.0 * copy + 0.5 * (1 - copy))[:, None] + 0.3 * torch.randn(B, T, generator=g, dtype=torch.float64)
    returns = centre + scale * returns
    inp = CriticInput(x, *rollout_units(returns[:, -1])) if units else CriticInput(x)
    return inp, returns.float(), torch.ones(B, T)


def test_fit_predicts_fresh_rollouts_and_shrinks_towards_the_mean():
    g = torch.Generator().manual_seed(0)
    critic = FeatureCritic("lexicon", None, LEX, steps=4, ridge=0.01, shrink=1.0, group=1)
    x, R, m = _toy_rollout(g)
    assert torch.equal(critic.values(x, m), torch.zeros_like(m))  # nothing fitted yet: 0, the normalised mean
    for _ in range(4):
        critic.update(*_toy_rollout(g))
    assert len(critic.replay.buffer) == 4
    x, R, m = _toy_rollout(g)
    full = critic.values(x, m)
    assert explained_variance(full, R, m) > 0.8
    mean = critic.fit[2]
    critic.shrink = 0.5
    half = critic.values(x, m)
    torch.testing.assert_close(half, (mean + 0.5 * (full.double() - mean)).float())
    assert 0 < explained_variance(half, R, m) < explained_variance(full, R, m)


def test_rollout_units_by_hand():
    assert rollout_units(torch.tensor([1.0, 3.0])) == (2.0, 1.0)
    assert rollout_units(torch.tensor([0.5, 0.5, 0.5])) == (0.5, UNITS_FLOOR)  # identical scores: the floor


def test_rollout_units_follow_a_rollout_whose_scores_spread_less():
    """Fitted while returns spread by 3 around 2, then a rollout spread by 0.2 around 1: in raw units the values
    overshoot it (explained variance far below 0); in the rollout's units they spread as its returns do."""
    evs = {}
    for units in ("raw", "rollout"):
        g = torch.Generator().manual_seed(2)
        critic = FeatureCritic("lexicon", None, LEX, steps=4, ridge=0.01, shrink=0.5, group=1, units=units)
        for _ in range(4):
            critic.update(*_toy_rollout(g, centre=2.0, scale=3.0, units=units == "rollout"))
        inp, R, m = _toy_rollout(g, centre=1.0, scale=0.2, units=units == "rollout")
        values = critic.values(inp, m)
        evs[units] = explained_variance(values, R, m)
        if units == "rollout":  # c + s * (the fit in z units): the fit, by hand
            w, b, mean = critic.fit
            z = mean + 0.5 * (inp.x @ w + b - mean)
            torch.testing.assert_close(values, (inp.centre + inp.scale * z).float())
    assert evs["raw"] < -0.5 and evs["rollout"] > 0.5, evs


def test_the_siblings_score_is_read_in_the_rollouts_units():
    tok = WordTokenizer(WORDS)
    score = torch.tensor([1.0, 3.0, 5.0, 7.0])  # mean 4, population std sqrt(5)
    response, mask = torch.tensor([[0, EOS]] * 4), torch.ones(4, 2)
    raw = FeatureCritic("lexicon+sibling", tok, LEX, steps=2, ridge=0.1, shrink=1.0, group=2)
    inp = raw.features(["you are nice"] * 4, response, mask, score)
    assert (inp.centre, inp.scale) == (0.0, 1.0) and inp.x[:, 0, -1].tolist() == [3, 1, 7, 5]
    z = FeatureCritic("lexicon+sibling", tok, LEX, steps=2, ridge=0.1, shrink=1.0, group=2, units="rollout")
    inp = z.features(["you are nice"] * 4, response, mask, score)
    assert inp.centre == 4.0 and math.isclose(inp.scale, 5 ** 0.5)
    torch.testing.assert_close(inp.x[:, 1, -1], (torch.tensor([3.0, 1.0, 7.0, 5.0], dtype=torch.float64) - 4) / 5 ** 0.5)


def test_a_rebuilt_critic_refits_from_its_buffer():
    g = torch.Generator().manual_seed(1)
    a = FeatureCritic("lexicon", None, LEX, steps=3, ridge=0.01, shrink=0.5, group=1)
    for _ in range(3):
        a.update(*_toy_rollout(g))
    b = FeatureCritic("lexicon", None, LEX, steps=3, ridge=0.01, shrink=0.5, group=1)
    b.replay.load_state_dict(a.replay.state_dict())  # what a checkpoint restores
    x, _, m = _toy_rollout(g)
    torch.testing.assert_close(b.values(x, m), a.values(x, m))


# ---- the trainer ------------------------------------------------------------------------------------------------

@pytest.fixture()
def run(tiny_dir, tmp_path):
    return make_run(tiny_dir("llama"), tmp_path, "causal")


def test_samples_per_prompt_repeats_each_source():
    from rl.trainer import DetoxPPOTrainer

    class Fake:
        args = type("A", (), {"samples_per_prompt": 2, "rollout_batch_size": 6})()
        prompts = ["a", "b", "c", "d", "e"]
        prompt_gen = torch.Generator().manual_seed(0)

    sources = DetoxPPOTrainer.sample_sources(Fake())
    assert len(sources) == 6 and sources[0::2] == sources[1::2]


def test_trainer_step_takes_its_values_from_the_feature_critic(run, tmp_path):
    """In the rollout's units (a parameter of the fit, which bench/critic_shadows.py sets): the trainer's critic is
    given as the ``critic`` a Python user passes, the configured one otherwise."""
    from transformers import AutoTokenizer

    from rl.critics import CriticConfig, FeatureCritic as Strategy

    kw = dict(value_features="lexicon+sibling", samples_per_prompt=2, value_replay_steps=2, value_ridge=0.1,
              value_shrink=0.5)
    cfg = CriticConfig("shared", "lexicon+sibling", 2, 0.1, 0.5, None, 0)
    critic = Strategy(cfg, AutoTokenizer.from_pretrained(f"{run}/merged"), LEX, 2, 2.0, units="rollout")
    tr = make_trainer(run, tmp_path / "out", lexicon=LEX, strategy=critic, max_steps=3, learning_rate=1e-2,
                      reward_norm="running", **kw)
    assert tr.critic is critic and tr.critic.fit.units == "rollout"
    head = tr.unwrapped.value_head
    assert not any(p.requires_grad for p in head.parameters())
    seen = []
    original = tr.advantages

    def spy(old, ref_logprobs, score, mask, step, scale):
        x = tr.critic.fit.features(tr._last_samples[0].sources, tr._last_samples[0].response.cpu(), mask.cpu(), score)
        seen.append((old.values.clone(), tr.critic.fit.values(x, mask), x))
        return original(old, ref_logprobs, score, mask, step, scale)

    tr.advantages = spy
    for step in (1, 2, 3):
        stats = tr.step()
        values, expected, x = seen[-1]
        torch.testing.assert_close(values, expected)  # GAE ran on the feature critic's values
        assert x.scale != 1.0  # in the rollout's units
        assert math.isfinite(stats["ppo/explained_variance"]) and stats["ppo/value_loss"] == 0
        assert len(tr.critic.replay.buffer) == min(step, 2)
        assert x.x.shape[-1] == len(PREFIX_FEATURES) + 1
        ro = tr._last_samples[0]
        assert ro.sources[0::2] == ro.sources[1::2]
    assert step == 3 and torch.count_nonzero(seen[-1][0]) > 0  # fitted by then
    assert float(head.summary.weight.abs().sum()) == 0 and all(p not in tr.optimizer.state for p in head.parameters())


def test_resume_restores_the_feature_critic(run, tmp_path):
    kw = dict(lexicon=LEX, value_features="lexicon", value_replay_steps=3, value_ridge=0.1, max_steps=4, save_steps=2,
              learning_rate=1e-2, reward_norm="running")
    straight, resumed = straight_and_resumed(run, tmp_path, **kw)
    keys = ("ppo/explained_variance", "reward/score")
    assert [[e[k] for k in keys] for e in resumed.state.log_history] == \
        [[e[k] for k in keys] for e in straight.state.log_history]


def test_feature_critic_config_checks():
    from tests.rl_helpers import ppo_config

    def cfg(**kw):
        return ppo_config(output_dir="x", report_to="none", rollout_batch_size=16, **kw)

    with pytest.raises(ValueError, match="samples_per_prompt 3 must be >= 1 and divide rollout_batch_size 16"):
        cfg(samples_per_prompt=3)
    with pytest.raises(ValueError, match="set value_replay_steps >= 1"):
        cfg(value_features="lexicon")
    with pytest.raises(ValueError, match="set samples_per_prompt >= 2"):
        cfg(value_features="lexicon+sibling", value_replay_steps=4)
    with pytest.raises(ValueError, match="value_shrink must be in"):
        cfg(value_shrink=0.0)
    with pytest.raises(ValueError, match="reads no model: set critic shared"):
        cfg(value_features="lexicon", value_replay_steps=4, critic="separate")


def test_grpo_ignores_the_ppo_critic_of_the_default_config(caplog):
    """`--algorithm grpo` with configs/rl/default.yaml: its PPO critic settings are reset, with one warning."""
    from rl.config import PPO_CRITIC_OFF, DetoxPPOConfig

    with caplog.at_level("WARNING", logger="detoxrl"):
        args = DetoxPPOConfig(output_dir="x", report_to="none", algorithm="grpo", rollout_batch_size=32,
                              samples_per_prompt=2, value_features="lexicon+sibling", value_replay_steps=4,
                              value_ridge=0.03, value_shrink=0.5, critic_warmup_steps=5)
    assert {k: getattr(args, k) for k in PPO_CRITIC_OFF} == PPO_CRITIC_OFF
    assert "samples_per_prompt 2" in caplog.text and "value_features lexicon+sibling" in caplog.text
    assert args.rollout_batch_size == 32
