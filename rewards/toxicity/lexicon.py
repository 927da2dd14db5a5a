"""The ``lexicon`` toxicity backend: the share of a text's words that are toxic-vocabulary hits.

Definition. Words are the ``\\w+`` runs of the text. Each non-overlapping lexicon hit (from
``ToxicLexicon.toxic_spans``: word-bounded, case-insensitive, longest entry first) counts the
words inside it, at least 1 (a phrase like "piece of shit" counts 3; an emoji entry counts 1):

    toxicity(x) = min(1, toxic_words(x) / max(1, words(x)))

so "you stupid idiot" scores 2/3, a text without hits 0, and an empty text 0. It needs no model
and no device; it is the fastest and the crudest judge (it misses insults without swear words).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

from detoxrl.vocab import ToxicLexicon

_WORD = re.compile(r"\w+")


def toxic_word_share(lexicon: ToxicLexicon, text: str) -> float:
    """``min(1, toxic_words / max(1, words))`` for one text (see the module docstring)."""
    spans = lexicon.toxic_spans(text)
    if not spans:
        return 0.0
    toxic = sum(max(1, len(_WORD.findall(text[start:end]))) for start, end, _ in spans)
    return min(1.0, toxic / max(1, len(_WORD.findall(text))))


class LexiconToxicity:
    """Batched ``toxic_word_share`` as a float32 tensor."""

    def __init__(self, lexicon: ToxicLexicon):
        self.lexicon = lexicon
        self.name = f"lexicon ({lexicon.summary().split(';')[0]})"

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.tensor([toxic_word_share(self.lexicon, t) for t in texts], dtype=torch.float32)
