"""The reranker of best-of-n decoding: the composite RL reward of a reward config, as a scorer.

    scorer = load_reward_scorer("configs/rewards/default.yaml")
    scorer = load_reward_scorer(None, model="outputs/rl/default")   # the reward that run was trained with
    scorer(sources, outputs)        # -> list of totals (one CompositeReward call)

Which reward (``reward_source``): the config file when one is given; else the ``RewardConfig`` a trained run
recorded in its ``resolved_config.yaml`` (PPO, GRPO, RLOO and RFT runs do), so best-of-n reranks with what the
model was trained on; else ``configs/rewards/default.yaml``. The config is a reward YAML (``RewardConfig`` keys;
``VocabConfig`` keys are accepted too, for ``toxicity_backend: lexicon``). ``detoxrl/rerank.py`` batches the
candidates and picks the best; this module only turns a config into the function it calls (the detox commands'
reranker: the RL reward itself, whose home is here).
"""

from __future__ import annotations

import os
from dataclasses import fields

from detoxrl.config import DetoxParser
from detoxrl.errors import UserError
from detoxrl.paths import resolve_path
from detoxrl.vocab import VocabConfig
from rewards.composite import CompositeReward, RewardBreakdown, RewardConfig

DEFAULT_RERANK_CONFIG = "configs/rewards/default.yaml"


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


def reward_source(path: str | None, model: str | None = None) -> tuple[RewardConfig, VocabConfig, str]:
    """``(reward, vocabulary, where they came from)``: ``path`` if given, else the reward recorded by the run at
    ``model``, else ``DEFAULT_RERANK_CONFIG`` (module docstring)."""
    from detoxrl.models.runs import resolved_section

    run = resolve_path(model) or model if model and not path else None
    recorded = resolved_section(run, "RewardConfig") if run else None
    if recorded is None:
        reward_cfg, vocab = parse_reward_config(path or DEFAULT_RERANK_CONFIG)
        return reward_cfg, vocab, path or DEFAULT_RERANK_CONFIG
    vocab_section = resolved_section(run, "VocabConfig") or {}
    try:
        reward_cfg = RewardConfig(**_known(RewardConfig, recorded))
        vocab = VocabConfig(**_known(VocabConfig, vocab_section))
    except (TypeError, ValueError) as exc:
        raise UserError(f"the reward recorded in {model}/resolved_config.yaml does not parse ({exc}); pass "
                        "rerank_config FILE") from None
    return reward_cfg, vocab, f"the reward {model} was trained with"


def _known(cls, values: dict) -> dict:
    """The entries of ``values`` that are fields of ``cls`` (a run saved by an older version may hold others)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in values.items() if k in names}


def load_reward_scorer(path: str | None, model: str | None = None) -> RewardScorer:
    """The reward of ``reward_source(path, model)`` with its judges loaded (only those with a weight > 0)."""
    reward_cfg, vocab, where = reward_source(path, model)
    return RewardScorer(CompositeReward(reward_cfg, vocab), where)
