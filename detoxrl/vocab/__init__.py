"""The toxic vocabulary, written once for every stage.

``VocabConfig`` (which word lists, which language) -> ``load_lexicon`` -> ``ToxicLexicon`` (matching
toxic words and phrases in text: ``toxic_words_in``, ``is_toxic``, ``toxic_rate``, ``word_is_toxic``,
``toxic_spans``) -> ``toxic_token_ids(lexicon, tokenizer)`` -> ``ToxicTokenIds`` (the ids of tokens
that are whole toxic words, for token-level losses and rewards).
"""

from detoxrl.vocab.config import DEFAULT_LEXICONS, HURTLEX_CATEGORIES, LEXICON_NAMES, VocabConfig, default_lexicons
from detoxrl.vocab.lexicon import ToxicLexicon, load_lexicon, normalize_entry
from detoxrl.vocab.tokens import ToxicTokenIds, spans_to_token_mask, toxic_token_ids, toxic_token_mask

__all__ = [
    "DEFAULT_LEXICONS",
    "HURTLEX_CATEGORIES",
    "LEXICON_NAMES",
    "ToxicLexicon",
    "ToxicTokenIds",
    "VocabConfig",
    "default_lexicons",
    "load_lexicon",
    "normalize_entry",
    "spans_to_token_mask",
    "toxic_token_ids",
    "toxic_token_mask",
]
