"""Evaluation judges, configured apart from the reward: STA, SIM, FL and FL_LM per sentence.

``EvalJudgesConfig`` has the same settings as the reward's judges, spelled ``judge_*`` (the parser is
flat), so one run can train against one set of judges and be scored by another. Definitions:

* STA_i   = 1 - toxicity(output_i)           (``rewards/toxicity``; default ``detoxrl-toxicity-minilm-external``,
                                              a classifier the reward never saw: no ParaDetox, another seed)
* SIM_i   = similarity(source_i, output_i)   (``rewards/similarity.py``; default all-mpnet-base-v2, an encoder
                                              the reward does not use)
* FL_i    = ChrF_i = sacrebleu sentence ChrF of output_i against sentence i's human references / 100
                                             (``detoxrl.metrics.sentence_chrf``; TextDetox 2024's FL; no model)
* FL_LM_i = fluency(output_i)                (``rewards/fluency.py``; calibrated SmolLM2 log-prob: the REWARD's
                                              own fluency judge, kept as a column of its own)

``detox-eval`` reports J = mean(STA x SIM x FL) (the headline) and J_LM = mean(STA x SIM x FL_LM).
``reward_overlap`` lists the judges that are the very model a run was rewarded with (read from the
run's ``resolved_config.yaml``), which ``detox-eval`` warns about.

The published ParaDetox/TextDetox judges (``s-nlp/roberta_toxicity_classifier``,
``textdetox/xlmr-large-toxicity-classifier``, LaBSE, ``textattack/roberta-base-CoLA``) are set in
``configs/eval/published_judges.yaml``; they need the hub. All judges always load: a judge that
cannot load is a ``UserError`` naming its ``judge_*`` field.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Literal

from detoxrl.errors import UserError
from detoxrl.metrics import sentence_chrf
from detoxrl.models.embedded import ALIASES, MPNET_ID, SMOLLM2_ID
from detoxrl.models.refs import looks_like_hub_id
from detoxrl.models.runs import resolved_section
from detoxrl.vocab import VocabConfig
from rewards.batching import check_device, resolve_device
from rewards.fluency import DEFAULT_CALIBRATION, FluencyConfig, build_fluency_scorer
from rewards.similarity import SimilarityConfig, SimilarityScorer
from rewards.toxicity import DEFAULT_TOXICITY_MODEL, ToxicityConfig, build_toxicity_scorer
from rewards.toxicity.default import EXTERNAL_TOXICITY_MODEL, default_classifier_dir, is_cache_name

PREFIX = "judge_"


@dataclass
class EvalJudgesConfig:
    """The evaluation judges; each field means what the reward field without ``judge_`` means."""

    judge_toxicity_backend: Literal["hf", "detoxify", "lexicon"] = field(
        default="hf", metadata={"help": "hf | detoxify | lexicon (as toxicity_backend)."})
    judge_toxicity_model: str = field(
        default=EXTERNAL_TOXICITY_MODEL,
        metadata={"help": f"As toxicity_model (default: a classifier the reward never saw; the reward's is "
                  f"{DEFAULT_TOXICITY_MODEL}), e.g. s-nlp/roberta_toxicity_classifier (ParaDetox's STA judge)."})
    judge_toxicity_label: str = field(default="toxic", metadata={"help": "As toxicity_label."})
    judge_toxicity_trust_checkpoint: bool = field(default=False, metadata={"help": "As toxicity_trust_checkpoint."})
    judge_toxicity_config_path: str | None = field(default=None, metadata={"help": "As toxicity_config_path."})
    judge_similarity_model: str = field(
        default=MPNET_ID, metadata={"help": "As similarity_model (default all-mpnet-base-v2, which the reward does not "
                                    "use), e.g. sentence-transformers/LaBSE."})
    judge_fluency_backend: Literal["lm", "hf"] = field(default="lm", metadata={"help": "lm | hf (as fluency_backend)."})
    judge_fluency_model: str = field(
        default=SMOLLM2_ID, metadata={"help": "As fluency_model; scores the FL_LM column (J's FL is ChrF against the "
                                      "references), e.g. textattack/roberta-base-CoLA with hf."})
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
        """Which judge scored each column (every table states it)."""
        return {"STA": "1 - " + self.part(ToxicityConfig).describe(), "SIM": f"cosine {self.judge_similarity_model}",
                "FL": "sentence ChrF against the human references (sacrebleu, /100; no model)",
                "FL_LM": self.part(FluencyConfig).describe() + " (the reward's fluency judge by default)",
                "J": "mean(STA x SIM x FL)", "J_LM": "mean(STA x SIM x FL_LM)"}

    def reward_overlap(self, reward: dict) -> list[str]:
        """The judges that are the same model as the reward's (``reward``: the run's RewardConfig fields)."""
        same = []
        if self.judge_toxicity_backend == reward.get("toxicity_backend", "hf") and (
                self.judge_toxicity_backend == "lexicon"
                or _canon(self.judge_toxicity_model) == _canon(reward.get("toxicity_model"))):
            same.append("STA (lexicon)" if self.judge_toxicity_backend == "lexicon" else
                        f"STA ({self.judge_toxicity_backend}:{self.judge_toxicity_model})")
        if _canon(self.judge_similarity_model) == _canon(reward.get("similarity_model")):
            same.append(f"SIM ({self.judge_similarity_model})")
        if self.judge_fluency_backend == reward.get("fluency_backend", "lm") and \
                _canon(self.judge_fluency_model) == _canon(reward.get("fluency_model")):
            same.append(f"FL_LM and J_LM ({self.judge_fluency_model})")
        return same


def _canon(ref) -> str:
    """One spelling per model: aliases -> hub ids, ``detoxrl-toxicity-*`` names -> their cache folder, paths absolute."""
    if ref is None:
        return ""
    ref = ALIASES.get(str(ref), str(ref))
    if is_cache_name(ref):
        return default_classifier_dir(ref)
    if looks_like_hub_id(ref) and not os.path.exists(ref):
        return ref
    return os.path.abspath(os.path.expanduser(ref))


def run_reward_config(ref: str) -> dict | None:
    """The reward settings a model system was trained with: the ``RewardConfig`` section of the
    ``resolved_config.yaml`` in ``ref`` or its parent folder (``<run>/merged``, ``<run>/adapter``); None if absent."""
    return resolved_section(ref, "RewardConfig")


class Judges:
    """The loaded evaluation judges; ``score(sources, outputs, references)`` gives STA, SIM, FL and FL_LM lists."""

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

    def score(self, sources: Sequence[str], outputs: Sequence[str],
              references: Sequence[Sequence[str]]) -> dict[str, list[float]]:
        """Per-sentence ``{"STA": [...], "SIM": [...], "FL": [...] (ChrF), "FL_LM": [...]}``."""
        return {"STA": (1.0 - self.toxicity(list(outputs))).tolist(),
                "SIM": self.similarity(list(sources), list(outputs)).tolist(),
                "FL": sentence_chrf(outputs, references),
                "FL_LM": self.fluency(list(outputs)).tolist()}
