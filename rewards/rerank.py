"""The reranker of best-of-n decoding: the composite RL reward of a reward config, as a scorer.

    scorer = load_reward_scorer("configs/rewards/default.yaml")
    scorer(sources, outputs)        # -> list of totals (one CompositeReward call)

The config is a reward YAML (``RewardConfig`` keys, e.g. ``configs/rewards/default.yaml``; ``VocabConfig``
keys are accepted too, for ``toxicity_backend: lexicon``). ``detoxrl/rerank.py`` batches the candidates
and picks the best; this module only turns a config into the function it calls.
"""

from __future__ import annotations

import os

from detoxrl.config import DetoxParser
from detoxrl.errors import UserError
from detoxrl.paths import resolve_path
from detoxrl.vocab import VocabConfig
from rewards.composite import CompositeReward, RewardBreakdown, RewardConfig


class RewardScorer:
    """``(sources, outputs) -> totals`` over one ``CompositeReward`` call; the last breakdown is kept."""

    def __init__(self, reward: CompositeReward, config_path: str | None = None):
        self.reward, self.config_path = reward, config_path
        self.cfg: RewardConfig = reward.cfg
        self.last: RewardBreakdown | None = None

    def __call__(self, sources: list[str], outputs: list[str]) -> list[float]:
        self.last = self.reward(sources, outputs)
        return self.last.total.tolist()

    def describe(self) -> str:
        where = f" ({self.config_path})" if self.config_path else ""
        return f"composite reward{where}: {self.reward.describe()}"


def parse_reward_config(path: str) -> tuple[RewardConfig, VocabConfig]:
    """The ``RewardConfig`` (and ``VocabConfig``) of a reward YAML; a one-line error naming the file otherwise."""
    found = resolve_path(path)
    if not found or not os.path.isfile(found):
        raise UserError(f"rerank_config '{path}' not found; give a reward config such as "
                        "configs/rewards/default.yaml")
    return DetoxParser([RewardConfig, VocabConfig], prog="rerank_config").parse(["--config", found])


def load_reward_scorer(path: str) -> RewardScorer:
    """Parse ``path`` and load its judges (only those with a weight > 0)."""
    reward_cfg, vocab = parse_reward_config(path)
    return RewardScorer(CompositeReward(reward_cfg, vocab), path)
