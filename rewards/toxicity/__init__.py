"""Toxicity judges: ``build_toxicity_scorer(ToxicityConfig)`` -> a callable ``texts -> P(toxic)`` tensor.

Every backend maps a list of ``N`` texts to a float32 CPU tensor of shape ``[N]`` with values in
[0, 1], the probability (or, for ``lexicon``, the share of words) that makes the text toxic:

* ``hf``: ``P(toxic label | text)`` from a sequence classifier (``rewards/classifier.py``); the
  default model is the classifier ``detox-train-toxicity`` trains (``rewards/toxicity/default.py``);
* ``detoxify``: the sigmoid of a detoxify class (``rewards/toxicity/detoxify_backend.py``);
* ``lexicon``: the toxic-word share (``rewards/toxicity/lexicon.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from detoxrl.vocab import VocabConfig, load_lexicon
from rewards.classifier import SequenceClassifier
from rewards.toxicity.config import DEFAULT_TOXICITY_MODEL, DETOXIFY_MODELS, ToxicityConfig
from rewards.toxicity.default import default_classifier_dir, resolve_classifier_ref
from rewards.toxicity.lexicon import LexiconToxicity, toxic_word_share

ToxicityScorer = Callable[[Sequence[str]], torch.Tensor]


def build_toxicity_scorer(cfg: ToxicityConfig, device: str | torch.device = "auto",
                          vocab: VocabConfig | None = None) -> ToxicityScorer:
    """Load the configured toxicity judge; ``UserError`` with the fix when it cannot load."""
    if cfg.toxicity_backend == "lexicon":
        return LexiconToxicity(load_lexicon(vocab or VocabConfig()))
    if cfg.toxicity_backend == "detoxify":
        from rewards.toxicity.detoxify_backend import load_detoxify

        return load_detoxify(cfg, device)
    ref = resolve_classifier_ref(cfg.toxicity_model)
    scorer = SequenceClassifier.load(ref, cfg.toxicity_label, field="toxicity_label", device=device,
                                     batch_size=cfg.toxicity_batch_size, max_length=cfg.toxicity_max_length,
                                     what="toxicity classifier")
    scorer.name = cfg.toxicity_model
    return scorer


__all__ = [
    "DEFAULT_TOXICITY_MODEL", "DETOXIFY_MODELS", "LexiconToxicity", "SequenceClassifier", "ToxicityConfig",
    "ToxicityScorer", "build_toxicity_scorer", "default_classifier_dir", "resolve_classifier_ref",
    "toxic_word_share",
]
