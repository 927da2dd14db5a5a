"""Step hooks of the PPO trainer (rl/callbacks.py): what each hook sees, in what order; a hook adds a logged stat,
stops a run early, and watches the feature critic's refit without touching training."""

from __future__ import annotations

import pytest
import torch

from detoxrl.vocab import ToxicLexicon
from rl.callbacks import PPOCallback
from tests.rl_helpers import make_run, make_trainer

FEATURE_CRITIC = dict(lexicon=ToxicLexicon(["idiot"]), value_features="lexicon+sibling", samples_per_prompt=2,
                      value_replay_steps=2, value_ridge=0.1, value_shrink=0.5, reward_norm="running")


class Recorder(PPOCallback):
    def __init__(self):
        self.calls = []

    def on_rollout(self, trainer, rollout, breakdown, raw, score):
        self.calls.append(("rollout", trainer.state.step, len(rollout.texts), tuple(raw.shape), tuple(score.shape)))

    def on_critic_update(self, trainer, critic_input, values, returns, mask):
        assert values.shape == returns.shape == mask.shape
        self.calls.append(("critic", trainer.state.step, torch.equal(values, trainer.critic.fit.values(
            critic_input, mask))))

    def on_step_end(self, trainer, stats):
        stats["custom/rollouts_seen"] = float(len(self.calls))
        self.calls.append(("end", trainer.state.step))


@pytest.fixture()
def run(tiny_dir, tmp_path):
    return make_run(tiny_dir("llama"), tmp_path, "causal")


def test_hooks_run_in_step_order_and_a_hook_can_add_a_logged_stat(run, tmp_path):
    recorder = Recorder()
    trainer = make_trainer(run, tmp_path / "out", max_steps=2, **FEATURE_CRITIC)
    trainer.callbacks.append(recorder)
    trainer.train()
    # step numbers: the rollout and the refit happen during step k (state.step still k-1), the end after it
    assert recorder.calls == [("rollout", 0, 8, (8,), (8,)), ("critic", 0, True), ("end", 1),
                              ("rollout", 1, 8, (8,), (8,)), ("critic", 1, True), ("end", 2)]
    assert [e["custom/rollouts_seen"] for e in trainer.state.log_history] == [2.0, 5.0]


def test_a_hook_stops_the_run_early(run, tmp_path):
    class StopAtTwo(PPOCallback):
        def on_step_end(self, trainer, stats):
            trainer.should_stop = trainer.state.step >= 2

    trainer = make_trainer(run, tmp_path / "out", max_steps=4, callbacks=[StopAtTwo()])
    assert trainer.train()["steps"] == 2 and len(trainer.state.log_history) == 2


def test_watching_hooks_leave_training_as_it_was(run, tmp_path):
    plain = make_trainer(run, tmp_path / "a", max_steps=2, **FEATURE_CRITIC)
    plain.train()
    watched = make_trainer(run, tmp_path / "b", max_steps=2, callbacks=[Recorder()], **FEATURE_CRITIC)
    watched.train()
    keys = ("reward/score", "ppo/policy_loss", "ppo/kl", "ppo/explained_variance")
    assert [[e[k] for k in keys] for e in plain.state.log_history] == [[e[k] for k in keys]
                                                                        for e in watched.state.log_history]
    for (n, p), (_, q) in zip(plain.unwrapped.named_parameters(), watched.unwrapped.named_parameters()):
        assert torch.equal(p, q), n


@pytest.mark.parametrize("algorithm", ["grpo", "rft"])
def test_callbacks_are_refused_where_they_would_never_run(algorithm, tmp_path):
    from detoxrl.errors import UserError
    from rl import ppo

    with pytest.raises(UserError, match=f"callbacks are hooks of algorithm ppo's trainer; algorithm {algorithm}"):
        ppo.run(["--model_name_or_path", str(tmp_path), "--output_dir", str(tmp_path / "out"), "--algorithm",
                 algorithm], callbacks=[PPOCallback()])
