"""Before/after dev metrics of the RL stage: greedy rewrites of a fixed, seeded dev sample.

The SFT identity guard (copy rate, lexicon toxicity, ChrF against the references) plus the mean of
every reward component on the same outputs. These are the reward's own judges, so they show what
PPO optimised; ``detox-eval`` with independent judges is the honest score (see the README).
"""

from __future__ import annotations

from collections.abc import Callable

from rewards.composite import CompositeReward
from sft.trainer import IdentityGuard


def dev_evaluator(formatter, lexicon, reward: CompositeReward, sources: list[str], references: list[list[str]],
                  max_new_tokens: int) -> Callable[[object], dict[str, float]]:
    """A function ``model -> metrics`` over ``sources`` (decoded greedily)."""
    guard = IdentityGuard(formatter, lexicon, sources, references, max_new_tokens, copy_warn=1.0)

    def evaluate(model) -> dict[str, float]:
        metrics = guard.run(model)
        metrics.update(reward(sources, guard.last_outputs).means(prefix="reward_"))
        return metrics

    return evaluate
