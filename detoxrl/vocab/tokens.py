"""``toxic_token_ids``: the token ids of a tokenizer that stand for whole toxic words.

Used by the SFT ``toxic_penalty`` loss and the token-level reward terms: flagged ids are pushed
down wherever they appear, so a flagged id must *be* a toxic word, never a generic piece.

How a lexicon word maps to ids. Each single-word entry ``w`` (phrases are skipped) is tried in the
spellings a tokenizer may see: ``w``, ``W``apitalised, ``W``PPER, each bare and after a space (the
byte-level BPE ``Ġw`` forms of GPT-2/Llama-3/SmolLM2), plus a vocabulary lookup of ``▁w`` (the
SentencePiece forms of T5/mT5/Llama-2). All spellings are encoded in one batch. A variant
contributes an id only if all of these hold:

1. It encodes to **exactly one** token (special tokens aside). A word that splits into several
   pieces contributes none of them: ``asshole`` -> ``Ġass`` + ``hole`` flags neither ``hole``
   nor, through this word, ``Ġass``; pieces like ``ing`` can never be flagged.
2. The token's text, without its word marker (``Ġ``, ``▁``, ``##``, ``</w>``), equals the word
   (ignoring case and accents): the token is the whole word.
3. The token is not special (BOS/EOS/PAD/UNK, chat markers, any added special token).
4. If the token's text is shorter than 3 characters, it must carry a word-boundary marker
   (``Ġxx``, ``▁xx``, or a WordPiece word-initial token). Two-letter pieces without one occur
   inside countless words.
5. A token *without* a word-start marker in a tokenizer that has them (byte-level BPE ``fuck``
   with no ``Ġ``, SentencePiece ``fuck`` with no ``▁``) is a continuation piece: it also appears
   in the middle of longer words ("cl|ass", "gl|ass"). It is flagged only if no longer vocabulary
   token that is not itself a lexicon word contains it (the vocabulary is used as a dictionary):
   ``ass`` is dropped because of ``class``/``pass``, ``anal`` because of ``analysis``, while
   ``fucking`` is kept (the tokens containing it are all lexicon words). It must also come with a
   word-start token of the same word (``fuck`` only with ``Ġfuck``): the vocabulary then knows the
   word as a word, and the bare piece is that word after a newline or punctuation, where
   byte-level BPE puts no ``Ġ`` (e.g. the first word of a chat turn).

6. A Capitalised or UPPER spelling counts only if the word's lowercase spelling also gave an id
   of the same kind (word-start, or continuation piece).
   A vocabulary that holds ``ĠWang``, ``ĠCox`` or ``ĠDick`` but not ``Ġwang``/``Ġcox``/``Ġdick``
   learnt them as names, not as the slur or the swear word.

Known limit: a word-start token such as ``Ġass`` is also the first piece of a rarer word the
vocabulary does not hold whole (e.g. " assuage" -> ``Ġass`` + ``uage``), and gets flagged
there. Where exact spans matter (the SFT toxic mask), locate words in the text with
``ToxicLexicon.toxic_spans`` and map character offsets to tokens instead.

``coverage`` is the share of single-word entries that map to at least one id; most misses are
words the tokenizer splits, which only span-based masking can catch.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass, field

from detoxrl.vocab.lexicon import ToxicLexicon

_BOUNDARY_PREFIXES = ("Ġ", "▁")
_BATCH = 4096


@dataclass
class ToxicTokenIds:
    """Token ids standing for whole toxic words in one tokenizer."""

    ids: list[int]  # sorted, unique
    word_to_ids: dict[str, list[int]]  # lexicon word -> its ids (only words with >= 1 id)
    coverage: float  # share of single-word entries with >= 1 id
    n_words: int  # single-word entries considered
    tokenizer_name: str = ""
    lexicon_summary: str = ""
    _id_set: frozenset[int] = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        self._id_set = frozenset(self.ids)

    def __contains__(self, token_id: object) -> bool:
        return token_id in self._id_set

    def __len__(self) -> int:
        return len(self.ids)

    def flags(self, input_ids: Iterable[int]) -> list[bool]:
        """For each id in ``input_ids``: is it a flagged toxic token?"""
        return [int(i) in self._id_set for i in input_ids]

    def report(self) -> str:
        """One line for logs, e.g. ``toxic vocab en: 776 entries (ldnoobw 403, condbert 451); 42 of 646
        single words map to 54 SmolLM2 token ids, coverage 6.5%``."""
        head = self.lexicon_summary.split(";")[0] if self.lexicon_summary else "toxic vocab"
        name = f" {self.tokenizer_name}" if self.tokenizer_name else ""
        return (f"{head}; {len(self.word_to_ids):,} of {self.n_words:,} single words map to {len(self.ids):,}{name} "
                f"token ids, coverage {self.coverage:.1%}")

    summary = report

    def __repr__(self) -> str:
        return f"<ToxicTokenIds {self.report()}>"


def _special_ids(tokenizer) -> set[int]:
    out = {int(i) for i in (getattr(tokenizer, "all_special_ids", None) or []) if i is not None}
    for attr in ("unk_token_id", "bos_token_id", "eos_token_id", "pad_token_id"):
        i = getattr(tokenizer, attr, None)
        if isinstance(i, int):
            out.add(i)
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    out.update(int(i) for i, tok in decoder.items() if getattr(tok, "special", False))
    return out


def _fold(s: str) -> str:
    """Case- and accent-insensitive form, for comparing a token's text with a word."""
    s = unicodedata.normalize("NFKD", s.casefold())
    return "".join(c for c in s if not unicodedata.combining(c))


def _strip_markers(text: str) -> str:
    text = text.strip()
    if text.startswith("##"):
        text = text[2:]
    if text.endswith("</w>"):
        text = text[:-4]
    return text.strip().lstrip("".join(_BOUNDARY_PREFIXES))


def _tokenizer_name(tokenizer) -> str:
    name = str(getattr(tokenizer, "name_or_path", "") or "").rstrip("/")
    return name.replace("\\", "/").split("/")[-1] or type(tokenizer).__name__


def _encode(tokenizer, texts: list[str]) -> list[list[int]]:
    out: list[list[int]] = []
    for i in range(0, len(texts), _BATCH):
        enc = tokenizer(texts[i : i + _BATCH], add_special_tokens=False)
        out.extend(enc["input_ids"])
    return out


class _Vocabulary:
    """Lazily computed facts about a tokenizer's vocabulary."""

    def __init__(self, tokenizer, lexicon: ToxicLexicon):
        self.tokenizer = tokenizer
        self.lexicon = lexicon
        self.vocab: dict[str, int] = dict(tokenizer.get_vocab())
        self.id_to_token = {i: t for t, i in self.vocab.items()}
        n = max(len(self.vocab), 1)
        self.has_space_markers = sum(t.startswith(_BOUNDARY_PREFIXES) for t in self.vocab) > 0.05 * n
        self.wordpiece = sum(t.startswith("##") for t in self.vocab) > 0.05 * n
        self._texts: dict[int, str] = {}
        self._innocent_blob: str | None = None

    def text(self, token_id: int) -> str:
        """The token's text without word markers (decoded, so byte-level tokens read as text)."""
        if token_id not in self._texts:
            tok = self.id_to_token.get(token_id, "")
            if tok.startswith("##") or tok.endswith("</w>"):
                self._texts[token_id] = _strip_markers(tok)
            else:
                decoded = self.tokenizer.decode([token_id], skip_special_tokens=False,
                                                clean_up_tokenization_spaces=False)
                self._texts[token_id] = _strip_markers(decoded)
        return self._texts[token_id]

    def is_word_start(self, token_id: int) -> bool:
        tok = self.id_to_token.get(token_id, "")
        if tok.startswith(_BOUNDARY_PREFIXES) or tok.endswith("</w>"):
            return True
        if self.wordpiece:
            return not tok.startswith("##")
        return False

    def innocent_blob(self) -> str:
        """Lowercase texts of all vocabulary tokens that are not lexicon words, one per line."""
        if self._innocent_blob is None:
            ids = sorted(self.id_to_token)
            decoded = self.tokenizer.batch_decode([[i] for i in ids], skip_special_tokens=False,
                                                  clean_up_tokenization_spaces=False)
            texts = set()
            for i, d in zip(ids, decoded):
                tok = self.id_to_token[i]
                t = _strip_markers(tok if tok.startswith("##") or tok.endswith("</w>") else d).lower()
                if len(t) >= 4 and "\n" not in t and not self.lexicon.word_is_toxic(t):
                    texts.add(t)
            self._innocent_blob = "\n".join(sorted(texts))
        return self._innocent_blob

    def piece_is_generic(self, piece: str) -> bool:
        """True if ``piece`` occurs inside a longer, non-toxic vocabulary token."""
        p = re.escape(piece.lower())
        return re.search(rf"[^\n]{p}|{p}[^\n]", self.innocent_blob()) is not None


def toxic_token_ids(lexicon: ToxicLexicon, tokenizer, *, continuation_pieces: bool = True,
                    name: str | None = None) -> ToxicTokenIds:
    """Map ``lexicon``'s single words to ``tokenizer`` ids by the rules in the module docstring.

    ``continuation_pieces=False`` never flags a piece without a word-start marker (rule 5 rejects
    them all): only ``Ġw``/``▁w`` tokens and WordPiece word-initial tokens are flagged. ``name`` is
    the tokenizer's name in ``report()`` (default: the last part of its ``name_or_path``).
    """
    words = sorted(lexicon.words)
    voc = _Vocabulary(tokenizer, lexicon)
    special = _special_ids(tokenizer)

    texts: list[str] = []
    owners: list[tuple[str, str]] = []  # (lexicon word, spelling variant)
    for w in words:
        for form in dict.fromkeys((w, w.capitalize(), w.upper())):
            for text in (form, " " + form):
                texts.append(text)
                owners.append((w, form))
    candidates: dict[str, dict[int, bool]] = {}  # word -> {id: found through the lowercase spelling}

    def add(w: str, form: str, i: int) -> None:
        ids = candidates.setdefault(w, {})
        ids[i] = ids.get(i, False) or form == w

    for (w, form), ids in zip(owners, _encode(tokenizer, texts)):
        ids = [i for i in ids if i not in special]
        if len(ids) == 1:
            add(w, form, ids[0])
    if voc.has_space_markers:  # direct lookups of '▁w' / 'Ġw' (ASCII) spellings
        for w in words:
            for form in dict.fromkeys((w, w.capitalize(), w.upper())):
                for marker in _BOUNDARY_PREFIXES:
                    i = voc.vocab.get(marker + form)
                    if i is not None:
                        add(w, form, i)

    word_to_ids: dict[str, list[int]] = {}
    generic_cache: dict[str, bool] = {}
    for w, id_lower in candidates.items():
        keep = []
        for i in sorted(id_lower):
            if i in special:
                continue
            text = voc.text(i)
            if _fold(text) != _fold(w):
                continue
            word_start = voc.is_word_start(i)
            if len(text) < 3 and not word_start:
                continue
            if not word_start:
                if not continuation_pieces:
                    continue
                key = text.lower()
                if key not in generic_cache:
                    generic_cache[key] = voc.piece_is_generic(key)
                if generic_cache[key]:
                    continue
            keep.append((i, word_start))
        # Rule 6: case variants count only if the lowercase spelling gave a token of the same kind.
        lower_kinds = {start for i, start in keep if id_lower[i]}
        keep = [(i, start) for i, start in keep if start in lower_kinds]
        # Rule 5, second half: a continuation piece needs a word-start token of the same word.
        if not any(start for _, start in keep):
            keep = []
        keep = [i for i, _ in keep]
        if keep:
            word_to_ids[w] = keep
    all_ids = sorted({i for ids in word_to_ids.values() for i in ids})
    return ToxicTokenIds(
        ids=all_ids,
        word_to_ids=word_to_ids,
        coverage=len(word_to_ids) / len(words) if words else 0.0,
        n_words=len(words),
        tokenizer_name=name or _tokenizer_name(tokenizer),
        lexicon_summary=lexicon.summary(),
    )


def spans_to_token_mask(spans: Iterable[tuple[int, int]], offsets: Iterable[tuple[int, int]]) -> list[bool]:
    """For each token's ``(start, end)`` character offsets: does it overlap one of ``spans``?

    ``spans`` are ``(start, end, ...)`` tuples as ``ToxicLexicon.toxic_spans`` gives them, and
    ``offsets`` come from a fast tokenizer's ``return_offsets_mapping=True``. Tokens with an empty
    range (special tokens: ``(0, 0)``) are never marked. This catches toxic words that a tokenizer
    splits into pieces, which ``toxic_token_ids`` by design does not flag.
    """
    ranges = sorted((int(s[0]), int(s[1])) for s in spans)
    out = []
    for start, end in offsets:
        start, end = int(start), int(end)
        out.append(end > start and any(s < end and start < e for s, e in ranges))
    return out


def toxic_token_mask(lexicon: ToxicLexicon, text: str, offsets: Iterable[tuple[int, int]]) -> list[bool]:
    """``spans_to_token_mask(lexicon.toxic_spans(text), offsets)``: which tokens of ``text`` are in a toxic word."""
    return spans_to_token_mask(lexicon.toxic_spans(text), offsets)
