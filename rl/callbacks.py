"""Step hooks of ``DetoxPPOTrainer``, in the style of transformers' ``TrainerCallback``: subclass ``PPOCallback``,
override the hooks you need, pass instances as ``DetoxPPOTrainer(..., callbacks=[...])`` or
``rl.ppo.run(argv, callbacks=[...])``. Shadow critics, extra logging and early stopping plug in here without
patching a class (``bench/critic_shadows.py`` is one).

Every hook gets the trainer first and returns nothing. Hooks run on every process, in the order given; what they
read is the process's own rollout (not gathered).

* ``on_rollout(trainer, rollout, breakdown, raw, score)``: after scoring. ``rollout`` is ``rl.rollout.Rollout``,
  ``breakdown`` the reward's ``RewardBreakdown``, ``raw`` the scores after the truncation penalty and ``score``
  the normalised scores PPO uses (both ``(B,)``).
* ``on_critic_update(trainer, critic_input, values, returns, mask)``: after the epochs, just before the critic
  updates itself (``rl/critics.py``): what its ``prepare`` read from the rollout (the feature critic's
  ``CriticInput``; ``None`` for the value head), the values GAE ran on, the returns, the response mask.
* ``on_step_end(trainer, stats)``: after a step, before its stats are logged (a hook may add keys). Setting
  ``trainer.should_stop = True`` ends the run after this step, as if ``max_steps`` were reached (the dev evaluation
  and saving still run).
"""

from __future__ import annotations


class PPOCallback:
    def on_rollout(self, trainer, rollout, breakdown, raw, score) -> None:
        pass

    def on_critic_update(self, trainer, critic_input, values, returns, mask) -> None:
        pass

    def on_step_end(self, trainer, stats: dict) -> None:
        pass


def call(callbacks, hook: str, *args) -> None:
    """Run ``hook`` of every callback, in order."""
    for callback in callbacks:
        getattr(callback, hook)(*args)
