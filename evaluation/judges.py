"""Evaluation judges, configured apart from the reward: STA, SIM and FL per sentence.

``EvalJudgesConfig`` has the same settings as the reward's judges, spelled ``judge_*`` (the parser is
flat), so one run can train against one set of judges and be scored by another. Definitions:

* STA_i = 1 - toxicity(output_i)          (``rewards/toxicity``; default: the embedded classifier)
* SIM_i = similarity(source_i, output_i)  (``rewards/similarity.py``; default: all-MiniLM-L6-v2)
* FL_i  = fluency(output_i)               (``rewards/fluency.py``; default: calibrated SmolLM2 log-prob)

The published ParaDetox/TextDetox judges (``s-nlp/roberta_toxicity_classifier``,
``textdetox/xlmr-large-toxicity-classifier``, LaBSE, ``textattack/roberta-base-CoLA``) are set in
``configs/eval/published_judges.yaml``; they need the hub. All three judges always load: a judge that
cannot load is a ``UserError`` naming its ``judge_*`` field.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Literal

from detoxrl.errors import UserError
from detoxrl.models.embedded import MINILM_ID, SMOLLM2_ID
from detoxrl.vocab import VocabConfig
from rewards.batching import check_device, resolve_device
from rewards.fluency import DEFAULT_CALIBRATION, FluencyConfig, build_fluency_scorer
from rewards.similarity import SimilarityConfig, SimilarityScorer
from rewards.toxicity import DEFAULT_TOXICITY_MODEL, ToxicityConfig, build_toxicity_scorer

PREFIX = "judge_"


@dataclass
class EvalJudgesConfig:
    """The three evaluation judges; each field means what the reward field without ``judge_`` means."""

    judge_toxicity_backend: Literal["hf", "detoxify", "lexicon"] = field(
        default="hf", metadata={"help": "hf | detoxify | lexicon (as toxicity_backend)."})
    judge_toxicity_model: str = field(
        default=DEFAULT_TOXICITY_MODEL,
        metadata={"help": "As toxicity_model, e.g. s-nlp/roberta_toxicity_classifier (ParaDetox's STA judge)."})
    judge_toxicity_label: str = field(default="toxic", metadata={"help": "As toxicity_label."})
    judge_toxicity_trust_checkpoint: bool = field(default=False, metadata={"help": "As toxicity_trust_checkpoint."})
    judge_toxicity_config_path: str | None = field(default=None, metadata={"help": "As toxicity_config_path."})
    judge_similarity_model: str = field(
        default=MINILM_ID, metadata={"help": "As similarity_model, e.g. sentence-transformers/LaBSE."})
    judge_fluency_backend: Literal["lm", "hf"] = field(default="lm", metadata={"help": "lm | hf (as fluency_backend)."})
    judge_fluency_model: str = field(
        default=SMOLLM2_ID, metadata={"help": "As fluency_model, e.g. textattack/roberta-base-CoLA with hf."})
    judge_fluency_label: str = field(default="1", metadata={"help": "As fluency_label."})
    judge_fluency_center: float = field(default=DEFAULT_CALIBRATION["fluency_center"],
                                        metadata={"help": "As fluency_center."})
    judge_fluency_scale: float = field(default=DEFAULT_CALIBRATION["fluency_scale"],
                                       metadata={"help": "As fluency_scale."})
    judge_batch_size: int = field(default=64, metadata={"help": "Texts per judge batch (all three judges)."})
    judge_device: str = field(default="auto", metadata={"help": "auto | cpu | cuda[:N]."})

    def __post_init__(self):
        if self.judge_batch_size <= 0:
            raise ValueError(f"judge_batch_size must be > 0 (got {self.judge_batch_size})")
        check_device("judge_device", self.judge_device)
        for cls in (ToxicityConfig, SimilarityConfig, FluencyConfig):
            try:
                self.part(cls)
            except ValueError as exc:  # name our field, not the reward's
                raise ValueError(re.sub(r"\b(toxicity_|similarity_|fluency_)", PREFIX + r"\1", str(exc))) from None

    def part(self, cls):
        """The judge's settings as the scorer config ``cls`` (batch sizes from ``judge_batch_size``)."""
        kwargs = {f.name: getattr(self, PREFIX + f.name) for f in fields(cls) if hasattr(self, PREFIX + f.name)}
        for f in fields(cls):
            if f.name.endswith("_batch_size"):
                kwargs[f.name] = self.judge_batch_size
        return cls(**kwargs)

    def describe(self) -> dict[str, str]:
        return {"STA": "1 - " + self.part(ToxicityConfig).describe(), "SIM": f"cosine {self.judge_similarity_model}",
                "FL": self.part(FluencyConfig).describe()}


class Judges:
    """The loaded evaluation judges; ``score(sources, outputs)`` gives STA, SIM and FL lists."""

    def __init__(self, cfg: EvalJudgesConfig, vocab: VocabConfig | None = None):
        device = resolve_device(cfg.judge_device)
        self.cfg = cfg
        self.toxicity = self._load("toxicity", lambda: build_toxicity_scorer(cfg.part(ToxicityConfig), device, vocab))
        self.similarity = self._load("similarity", lambda: SimilarityScorer(cfg.part(SimilarityConfig), device))
        self.fluency = self._load("fluency", lambda: build_fluency_scorer(cfg.part(FluencyConfig), device))

    @staticmethod
    def _load(name: str, build):
        try:
            return build()
        except UserError as exc:
            message = re.sub(r"\b(toxicity_|similarity_|fluency_)", PREFIX + r"\1", str(exc))
            raise UserError(f"evaluation judge '{name}' cannot load: {message}") from exc

    def score(self, sources: Sequence[str], outputs: Sequence[str]) -> dict[str, list[float]]:
        """Per-sentence ``{"STA": [...], "SIM": [...], "FL": [...]}``."""
        return {"STA": (1.0 - self.toxicity(list(outputs))).tolist(),
                "SIM": self.similarity(list(sources), list(outputs)).tolist(),
                "FL": self.fluency(list(outputs)).tolist()}
