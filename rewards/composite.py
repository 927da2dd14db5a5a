"""The composite reward: toxicity, similarity and fluency judges (and, optionally, the reviewers'
feedback reward model) mixed into one number per rollout.

``CompositeReward(RewardConfig)(sources, outputs)`` returns a ``RewardBreakdown``: the total and
every component as tensors of shape ``[N]`` (for logging). The exact arithmetic is in
``rewards/mixing.py``:

    s_tox = 1 - toxicity(output)        s_sim = similarity(source, output)    s_fl = fluency(output)
    s_fb = P(accept | source, output)   (optional fourth component, w_feedback > 0; rewards/feedback_model.py)
    weighted_sum:  R = sum_k w_k s_k / sum_k w_k        product:  R = prod_k s_k ** w_k
    total = R - copy_penalty * is_copy - empty_penalty * is_empty - length_penalty * is_length_blowup

Only judges with a weight > 0 are loaded and run (a component with weight 0 is ``None`` in the
breakdown). A judge with weight > 0 that cannot load is a ``UserError`` naming it and the way out;
all-zero weights are refused by ``RewardConfig``. Source embeddings are cached by the similarity
judge (keyed by text), so PPO epochs over the same prompts encode each source once.

Config fields are flat (``w_toxicity``, ``w_similarity``, ``w_fluency``, ``w_feedback``, ...) because the
detoxrl parser is flat: ``RewardConfig`` inherits every field of ``ToxicityConfig``, ``SimilarityConfig``,
``FluencyConfig`` and ``FeedbackModelConfig``, and the RL entry point parses it next to the model, data
and trainer configs. ``w_feedback`` defaults to 0, so the feedback component is off unless asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Literal

import torch

from detoxrl.errors import UserError
from detoxrl.vocab import VocabConfig
from rewards.batching import check_device, resolve_device
from rewards.checks import copy_flags, empty_flags, length_blowup_flags
from rewards.feedback_model import FeedbackModelConfig, load_feedback_scorer
from rewards.fluency import FluencyConfig, build_fluency_scorer
from rewards.mixing import FORMS, mix, penalty
from rewards.similarity import SimilarityConfig, SimilarityScorer
from rewards.toxicity import ToxicityConfig, build_toxicity_scorer

COMPONENTS = ("toxicity", "similarity", "fluency", "feedback")


@dataclass
class RewardConfig(ToxicityConfig, SimilarityConfig, FluencyConfig, FeedbackModelConfig):
    """The RL reward: judge settings (inherited ``toxicity_*``, ``similarity_*``, ``fluency_*``), weights,
    form and penalties. Every field is a YAML key and a CLI flag (see configs/rewards/default.yaml)."""

    w_toxicity: float = field(default=1.0, metadata={"help": "Weight of s_tox = 1 - toxicity (>= 0; 0 skips it)."})
    w_similarity: float = field(default=1.0, metadata={"help": "Weight of the source similarity (>= 0)."})
    w_fluency: float = field(default=1.0, metadata={"help": "Weight of the fluency score (>= 0)."})
    w_feedback: float = field(
        default=0.0, metadata={"help": "Weight of s_fb = P(accept | source, output) from the feedback reward model "
                               "(feedback_model; >= 0; 0 skips it)."})
    form: Literal["weighted_sum", "product"] = field(
        default="product",
        metadata={"help": "weighted_sum: sum_k w_k s_k / sum_k w_k. product: prod_k s_k ** w_k (does not pay "
                  "for copying a toxic input)."},
    )
    copy_penalty: float = field(
        default=0.5, metadata={"help": "Subtracted when the output equals the input after normalisation."})
    empty_penalty: float = field(default=1.0, metadata={"help": "Subtracted when the output has no word."})
    length_penalty: float = field(
        default=0.5, metadata={"help": "Subtracted when len(output) > max_length_ratio * len(source) (characters)."})
    max_length_ratio: float = field(default=2.0, metadata={"help": "Length blow-up threshold (> 0)."})
    reward_device: str = field(default="auto", metadata={"help": "Device of the judges: auto | cpu | cuda[:N]."})

    def __post_init__(self):
        ToxicityConfig.__post_init__(self)
        SimilarityConfig.__post_init__(self)
        FluencyConfig.__post_init__(self)
        FeedbackModelConfig.__post_init__(self)
        for name in ("w_toxicity", "w_similarity", "w_fluency", "w_feedback", "copy_penalty", "empty_penalty",
                     "length_penalty"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (got {getattr(self, name)})")
        if not any(self.weights().values()):
            raise ValueError("w_toxicity, w_similarity and w_fluency are all 0 (and so is w_feedback); give at least "
                             "one a weight > 0")
        if self.w_feedback > 0 and not self.feedback_model:
            raise ValueError("w_feedback > 0 needs feedback_model: the folder `detox-feedback train` writes "
                             "(<output_dir>/feedback_reward)")
        if self.form not in FORMS:
            raise ValueError(f"form: '{self.form}' is not one of {', '.join(FORMS)}")
        if not self.max_length_ratio > 0:
            raise ValueError(f"max_length_ratio must be > 0 (got {self.max_length_ratio})")
        check_device("reward_device", self.reward_device)

    def weights(self) -> dict[str, float]:
        return {"toxicity": self.w_toxicity, "similarity": self.w_similarity, "fluency": self.w_fluency,
                "feedback": self.w_feedback}

    def penalties(self) -> dict[str, float]:
        return {"copy": self.copy_penalty, "empty": self.empty_penalty, "length_blowup": self.length_penalty}

    def part(self, cls):
        """The ``ToxicityConfig`` / ``SimilarityConfig`` / ``FluencyConfig`` / ``FeedbackModelConfig`` view."""
        return cls(**{f.name: getattr(self, f.name) for f in fields(cls)})


@dataclass
class RewardBreakdown:
    """One reward call: ``total`` plus every component (``[N]`` tensors on the CPU; ``None`` if weight 0)."""

    total: torch.Tensor
    mixed: torch.Tensor  # R before penalties
    penalty: torch.Tensor  # what was subtracted
    toxicity: torch.Tensor | None  # P(toxic), not 1 - P(toxic)
    similarity: torch.Tensor | None
    fluency: torch.Tensor | None
    copy: torch.Tensor  # bool flags
    empty: torch.Tensor
    length_blowup: torch.Tensor
    feedback: torch.Tensor | None = None  # P(accept | source, output); None unless w_feedback > 0

    def means(self, prefix: str = "reward/") -> dict[str, float]:
        """Batch means of every component, for a logger."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None and value.numel():
                out[prefix + f.name] = float(value.float().mean())
        return out


class CompositeReward:
    """Loads the judges with weight > 0 once; call it on (sources, outputs) batches."""

    def __init__(self, cfg: RewardConfig, vocab: VocabConfig | None = None, device=None):
        """``device``: where ``reward_device: auto`` puts the judges (the training process's device, given by the RL
        stage); None means ``resolve_device('auto')``."""
        self.cfg = cfg
        self.device = resolve_device(device if cfg.reward_device == "auto" and device is not None else cfg.reward_device)
        self.weights = {k: w for k, w in cfg.weights().items() if w > 0}
        self.toxicity = self._load("toxicity",
                                   lambda: build_toxicity_scorer(cfg.part(ToxicityConfig), self.device, vocab))
        self.similarity = self._load("similarity", lambda: SimilarityScorer(cfg.part(SimilarityConfig), self.device))
        self.fluency = self._load("fluency", lambda: build_fluency_scorer(cfg.part(FluencyConfig), self.device))
        self.feedback = self._load("feedback",
                                   lambda: load_feedback_scorer(cfg.part(FeedbackModelConfig), self.device))

    def _load(self, name: str, build):
        if name not in self.weights:
            return None
        try:
            return build()
        except UserError as exc:
            raise UserError(f"reward component '{name}' (w_{name}={self.weights[name]:g}) cannot load: {exc}. "
                            f"Fix that, or set w_{name}: 0 to train without it") from exc

    def describe(self) -> str:
        parts = [f"{k} x{w:g} ({getattr(getattr(self, k), 'name', k)})" for k, w in self.weights.items()]
        return (f"{self.cfg.form} of " + ", ".join(parts) + f"; penalties copy {self.cfg.copy_penalty:g}, "
                f"empty {self.cfg.empty_penalty:g}, length>{self.cfg.max_length_ratio:g}x {self.cfg.length_penalty:g}")

    def clear_cache(self) -> None:
        if self.similarity is not None:
            self.similarity.clear_cache()

    def __call__(self, sources: Sequence[str], outputs: Sequence[str]) -> RewardBreakdown:
        if len(sources) != len(outputs):
            raise ValueError(f"{len(sources)} sources but {len(outputs)} outputs")
        sources, outputs = list(sources), list(outputs)
        tox = self.toxicity(outputs) if self.toxicity is not None else None
        sim = self.similarity(sources, outputs) if self.similarity is not None else None
        flu = self.fluency(outputs) if self.fluency is not None else None
        fb = self.feedback(sources, outputs) if self.feedback is not None else None
        scores = {"toxicity": None if tox is None else 1.0 - tox, "similarity": sim, "fluency": flu, "feedback": fb}
        mixed = mix(self.cfg.form, {k: v for k, v in scores.items() if v is not None}, self.weights)
        flags = {"copy": torch.tensor(copy_flags(sources, outputs), dtype=torch.bool),
                 "empty": torch.tensor(empty_flags(outputs), dtype=torch.bool),
                 "length_blowup": torch.tensor(length_blowup_flags(sources, outputs, self.cfg.max_length_ratio),
                                               dtype=torch.bool)}
        pen = penalty(flags, self.cfg.penalties()) if outputs else torch.zeros(0)
        return RewardBreakdown(total=mixed - pen, mixed=mixed, penalty=pen, toxicity=tox, similarity=sim,
                               fluency=flu, **flags, feedback=fb)
