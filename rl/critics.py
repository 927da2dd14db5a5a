"""PPO's critic: its settings (``CriticConfig``, checked here), one interface (``Critic``) and one class per
strategy, chosen once by ``make_critic``. ``DetoxPPOTrainer.step`` asks the critic, never which critic it is.

The strategies (docs/rl.md, Critic):

* ``HeadCritic`` (``features: hidden``, ``replay_steps: 0``): a value head on the last hidden state (of the policy,
  or of a separate critic model), trained by the clipped value loss with its own AdamW group.
* ``ReplayHeadCritic`` (``features: hidden``, ``replay_steps: K``): the same head, out of AdamW, set after each step
  to the ridge fit of the returns on its input features over the last K rollouts (``rl/value_fit.py``). The value
  loss still trains a shared trunk's states (the head itself is frozen).
* ``FeatureCritic`` (``features: lexicon | lexicon+sibling``): values from a closed-form fit on copy and lexicon
  features of the rewrite so far (``rl/feature_critic.py``); the head is frozen and there is no value loss.

In a YAML the settings are one section, ``critic: {model, features, replay_steps, ridge, shrink, learning_rate,
warmup_steps}`` (``--critic.features`` on the command line); the flat flags (``--critic``, ``--value_features``,
``--value_replay_steps``, ``--value_ridge``, ``--value_shrink``, ``--value_learning_rate``,
``--critic_warmup_steps``) are the same fields (``CRITIC_FIELDS``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from detoxrl import distributed as dist
from rl.core import value_loss
from rl.feature_critic import KINDS, FeatureCritic as FeatureFit
from rl.value_fit import ValueReplay, rollout_moments

# the critic section's names -> DetoxPPOConfig's flat fields (what the parser and the YAML's `critic:` map)
CRITIC_FIELDS = {"model": "critic", "features": "value_features", "replay_steps": "value_replay_steps",
                 "ridge": "value_ridge", "shrink": "value_shrink", "learning_rate": "value_learning_rate",
                 "warmup_steps": "critic_warmup_steps"}
# what the critic fields become for GRPO/RLOO, which have no critic (DetoxPPOConfig.__post_init__)
NO_CRITIC = {"warmup_steps": 0, "features": "hidden", "replay_steps": 0, "ridge": None, "shrink": 1.0}


@dataclass(frozen=True)
class CriticConfig:
    """The critic's settings, read from ``DetoxPPOConfig`` by ``CriticConfig.of(args)`` (``args.critic_config``),
    whose fields hold the defaults."""

    model: str
    features: str
    replay_steps: int
    ridge: float | None
    shrink: float
    learning_rate: float | None
    warmup_steps: int

    @classmethod
    def of(cls, args) -> "CriticConfig":
        return cls(**{name: getattr(args, flat) for name, flat in CRITIC_FIELDS.items()})

    def check(self, samples_per_prompt: int, max_steps: int) -> None:
        """Every rule the critic's settings obey, one ``ValueError`` line each (named by their flat field names)."""
        if self.model not in ("shared", "separate"):
            raise ValueError(f"critic must be shared or separate (got {self.model})")
        if self.features not in KINDS:
            raise ValueError(f"value_features must be one of {' | '.join(KINDS)} (got {self.features})")
        if self.learning_rate is not None and not self.learning_rate > 0:
            raise ValueError(f"value_learning_rate must be > 0 or unset (got {self.learning_rate})")
        if not 0 <= self.warmup_steps < max_steps:
            raise ValueError(f"critic_warmup_steps must be >= 0 and < max_steps {max_steps} "
                             f"(got {self.warmup_steps}); for a short run pass --critic_warmup_steps 0")
        if self.replay_steps < 0:
            raise ValueError(f"value_replay_steps must be >= 0 (0: off; got {self.replay_steps})")
        if self.ridge is not None and not self.ridge > 0:
            raise ValueError(f"value_ridge must be > 0 or unset (got {self.ridge})")
        if self.features != "hidden":
            if not self.replay_steps:
                raise ValueError(f"value_features {self.features}: a feature critic is fitted by the replay fit; "
                                 "set value_replay_steps >= 1 (or value_features hidden)")
            if self.model != "shared":
                raise ValueError(f"value_features {self.features} reads no model: set critic shared")
        if self.features == "lexicon+sibling" and samples_per_prompt < 2:
            raise ValueError("value_features lexicon+sibling reads the other responses to a source: set "
                             "samples_per_prompt >= 2 (or value_features lexicon)")
        if not 0 < self.shrink <= 1:
            raise ValueError(f"value_shrink must be in (0, 1] (got {self.shrink})")
        if self.ridge is not None and not self.replay_steps:
            raise ValueError("value_ridge is only used by the replay fit; set value_replay_steps >= 1 or unset it")


class Critic:
    """What a PPO step asks of its critic, in the order it asks:

    1. ``prepare(rollout, score, mask)`` -> ``(inputs, stats)``: before any forward pass (the feature critic reads
       the rollout here); ``inputs`` comes back to ``values`` and ``update`` and goes to ``on_critic_update``.
    2. the forward passes compute the head's values when ``head_values``, and its input features on the first pass
       when ``needs_features``;
    3. ``values(out, inputs, mask)`` -> the ``ForwardOut`` GAE runs on (the critic's values in place of the head's);
    4. ``loss(out, old, returns, micro, mask, clip)`` -> ``(value loss, clip fraction)`` of one micro-batch;
    5. ``update(trainer, inputs, old, returns, mask)`` -> stats, after the epochs.

    ``replay`` (a ``ValueReplay`` or ``None``) is the state a checkpoint saves; ``trains_head``: whether AdamW moves
    the value head (``attach`` freezes it otherwise).
    """

    head_values = True
    needs_features = False
    trains_head = True
    replay: ValueReplay | None = None

    def attach(self, module) -> None:
        if not self.trains_head:
            module.value_head.requires_grad_(False)

    def prepare(self, rollout, score, mask):
        return None, {}

    def values(self, out, inputs, mask):
        return out

    def loss(self, out, old, returns, micro, mask, clip_range_value):
        return value_loss(out.values, old.values[micro], returns[micro], mask, clip_range_value)

    def update(self, trainer, inputs, old, returns, mask) -> dict[str, float]:
        return {}


class HeadCritic(Critic):
    """The value head, trained by the clipped value loss."""


class ReplayHeadCritic(Critic):
    """The value head out of AdamW, set after every step to the ridge fit over the last ``replay_steps`` rollouts."""

    needs_features = True
    trains_head = False

    def __init__(self, cfg: CriticConfig):
        self.replay = ValueReplay(cfg.replay_steps, cfg.ridge)

    def update(self, trainer, inputs, old, returns, mask) -> dict[str, float]:
        """Add this rollout's (features, returns) statistics, summed over processes, to the buffer and set the head
        to the ridge fit on it: every process fits the same head from the same numbers."""
        self.replay.add(trainer.sum_over_processes(rollout_moments(old.features, returns, mask)))
        w, b, fit = self.replay.fit()
        with dist.writable(list(trainer.unwrapped.value_head.parameters()), trainer.accelerator):
            trainer.unwrapped.value_head.set(w, b)
        return {f"ppo/{k}": v for k, v in fit.items()}


class FeatureCritic(Critic):
    """Values from ``rl/feature_critic.py``'s fit on features of the rewrite so far; no value loss."""

    head_values = False
    trains_head = False

    def __init__(self, cfg: CriticConfig, tokenizer, lexicon, samples_per_prompt: int, max_length_ratio: float,
                 units: str = "raw"):
        self.fit = FeatureFit(cfg.features, tokenizer, lexicon, cfg.replay_steps, cfg.ridge, cfg.shrink,
                              samples_per_prompt, max_length_ratio, units)
        self.replay = self.fit.replay

    def prepare(self, rollout, score, mask):
        t = time.perf_counter()
        x = self.fit.features(rollout.sources, rollout.response.cpu(), mask.cpu(), score)
        return x, {"time/critic_features_s": time.perf_counter() - t}

    def values(self, out, inputs, mask):
        return replace(out, values=self.fit.values(inputs, mask))

    def loss(self, out, old, returns, micro, mask, clip_range_value):
        zero = out.logprobs.new_zeros(())
        return zero, zero

    def update(self, trainer, inputs, old, returns, mask) -> dict[str, float]:
        fit = self.fit.update(inputs, returns, mask, trainer.sum_over_processes)
        return {f"ppo/{k}": v for k, v in fit.items()}


def make_critic(cfg: CriticConfig, tokenizer=None, lexicon=None, samples_per_prompt: int = 1,
                max_length_ratio: float = 2.0) -> Critic:
    """The one critic ``cfg`` names (``lexicon`` is needed by the feature critic only)."""
    from detoxrl.errors import UserError

    if cfg.features != "hidden":
        if lexicon is None:
            raise UserError(f"value_features {cfg.features} needs the toxic lexicon (lexicon_dir)")
        return FeatureCritic(cfg, tokenizer, lexicon, samples_per_prompt, max_length_ratio)
    return ReplayHeadCritic(cfg) if cfg.replay_steps else HeadCritic()
