"""``ToxicLexicon``: the toxic words and phrases of one language, and matching them in text.

Loading (``load_lexicon(VocabConfig)``) reads the lists under ``lexicon_dir``:

* ``ldnoobw/<lang>.txt``, ``ldnoobw_v2/<lang>.txt``: one expression per line (CRLF, a BOM, blank
  lines and surrounding spaces are tolerated);
* ``hurtlex_v1.2/hurtlex_<LANG>.tsv``: columns ``id, pos, category, stereotype, lemma, level``,
  filtered by ``hurtlex_levels`` and ``hurtlex_categories``;
* ``condbert_detox2021/toxic_words.txt``: one English word per line.

Entries are lowercased, whitespace inside them is collapsed to one space, and a literal ``*`` is
kept literal (LDNOOBW-V2 uses it for spellings like ``f**k``).

Matching is case-insensitive and word-bounded: an entry matches only where it is not preceded or
followed by a letter, digit or ``_`` (``ass`` matches "ass" and "Ass!" but not "class" or
"assume"). A space inside a phrase matches any run of whitespace. Scripts written without spaces
(Chinese, Japanese, Korean, Thai, Lao, Khmer, Myanmar) match as substrings, since they have no
word boundaries to test. All entries are compiled into one trie-shaped regex, so a text is scanned
once whatever the lexicon size; at each position the longest entry wins ("piece of shit" is one
hit, not two) and hits do not overlap.
"""

from __future__ import annotations

import csv
import os
import re
import unicodedata
from collections.abc import Iterable

from detoxrl.errors import UserError
from detoxrl.paths import candidate_paths, resolve_path
from detoxrl.vocab.config import VocabConfig

# Scripts written without spaces between words (matched without word boundaries).
_NO_SPACE_SCRIPT = re.compile(
    "[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3100-\u312f\u3400-\u4dbf"
    "\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f]"
)
_WORD_CHAR = re.compile(r"\w")
_SPACE = re.compile(r"\s+")
_EDGE_PUNCT = re.compile(r"^[^\w]+|[^\w]+$")


def normalize_entry(entry: str) -> str:
    """How an entry (or a matched piece of text) is stored: NFC, lowercase, single spaces, stripped."""
    return _SPACE.sub(" ", unicodedata.normalize("NFC", entry).strip().lower())


def _needs_boundary(ch: str) -> bool:
    return bool(_WORD_CHAR.match(ch)) and not _NO_SPACE_SCRIPT.match(ch)


def _char_regex(ch: str) -> str:
    return r"\s+" if ch == " " else re.escape(ch)


_END = ""  # trie key marking "an entry ends here" (no real character is empty)


def _trie_regex(entries: Iterable[str]) -> str:
    """One regex matching any entry, longest first at each position, with word boundaries."""
    trie: dict = {}
    for e in entries:
        node = trie
        for ch in e:
            node = node.setdefault(ch, {})
        node[_END] = True

    def body(node: dict, last: str) -> str:
        alts = [_char_regex(ch) + body(node[ch], ch) for ch in sorted(k for k in node if k != _END)]
        if _END in node:
            alts.append(r"(?!\w)" if _needs_boundary(last) else "")
        if len(alts) == 1:
            return alts[0]
        if alts[-1] == "":
            return "(?:" + "|".join(alts[:-1]) + ")?"
        return "(?:" + "|".join(alts) + ")"

    alts = []
    for ch in sorted(trie):
        lead = r"(?<!\w)" if _needs_boundary(ch) else ""
        alts.append(lead + _char_regex(ch) + body(trie[ch], ch))
    return "|".join(alts) if alts else r"(?!x)x"


class ToxicLexicon:
    """The set of lowercase toxic words and phrases of a language, with word-bounded matching.

    Build it with ``load_lexicon(VocabConfig)`` or directly from entries:
    ``ToxicLexicon(["ass", "piece of shit"], lang="en")``.
    """

    def __init__(self, entries: Iterable[str], lang: str = "en", sources: Iterable[tuple[str, int]] = ()):
        normalized = {normalize_entry(e) for e in entries}
        normalized.discard("")
        self.lang = lang
        self.entries: frozenset[str] = frozenset(normalized)
        # Single words (no whitespace) are what token ids are looked up for; phrases only match text.
        self.words: frozenset[str] = frozenset(e for e in normalized if " " not in e)
        self.phrases: frozenset[str] = self.entries - self.words
        self.sources: list[tuple[str, int]] = list(sources)  # (list name, entries read from it)
        self._pattern = re.compile(_trie_regex(self.entries), re.IGNORECASE)

    # ---- matching -------------------------------------------------------------------------
    def toxic_spans(self, text: str) -> list[tuple[int, int, str]]:
        """Non-overlapping hits in ``text`` as ``(start, end, entry)``, character offsets into ``text``."""
        return [(m.start(), m.end(), normalize_entry(m.group())) for m in self._pattern.finditer(text)]

    def toxic_words_in(self, text: str) -> list[str]:
        """The lexicon entries found in ``text``, lowercase, in order of appearance (repeats kept)."""
        return [normalize_entry(m.group()) for m in self._pattern.finditer(text)]

    def is_toxic(self, text: str) -> bool:
        """True if ``text`` contains at least one lexicon entry (word-bounded, case-insensitive)."""
        return self._pattern.search(text) is not None

    def toxic_rate(self, texts: Iterable[str]) -> float:
        """Share of ``texts`` with at least one lexicon hit (the "lexicon toxicity rate"); 0.0 for no texts."""
        n = hits = 0
        search = self._pattern.search
        for t in texts:
            n += 1
            hits += search(t) is not None
        return hits / n if n else 0.0

    def word_is_toxic(self, word: str) -> bool:
        """True if ``word`` (surrounding punctuation and spaces ignored) is itself a lexicon entry.

        ``"Asshole!"`` and ``"FUCK"`` are toxic words; ``"class"`` is not, nor is ``"fucks"``
        unless the lexicon lists it. A word in a script written without spaces is toxic if it
        contains an entry.
        """
        w = word.strip()
        if not w:
            return False
        if self._pattern.fullmatch(w) or self._pattern.fullmatch(_EDGE_PUNCT.sub("", w)):
            return True
        return bool(_NO_SPACE_SCRIPT.search(w)) and self.is_toxic(w)

    # ---- description ----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    def __contains__(self, entry: object) -> bool:
        return isinstance(entry, str) and normalize_entry(entry) in self.entries

    def summary(self) -> str:
        """One line for logs, e.g. ``toxic vocab en: 776 entries (ldnoobw 403, condbert 451); ...``.

        The per-list counts are entries as read, before ``min_entry_chars``, ``exclude_words`` and
        de-duplication across lists.
        """
        src = ", ".join(f"{name} {n:,}" for name, n in self.sources) or "given entries"
        return (f"toxic vocab {self.lang}: {len(self.entries):,} entries ({src}); "
                f"{len(self.words):,} single words, {len(self.phrases):,} phrases")

    def __repr__(self) -> str:
        return f"<ToxicLexicon {self.summary()}>"


# ---- loading ---------------------------------------------------------------------------------
_LIST_FILES = {
    "ldnoobw": lambda lang: os.path.join("ldnoobw", f"{lang}.txt"),
    "ldnoobw_v2": lambda lang: os.path.join("ldnoobw_v2", f"{lang}.txt"),
    "hurtlex": lambda lang: os.path.join("hurtlex_v1.2", f"hurtlex_{lang.upper()}.tsv"),
    "condbert": lambda lang: os.path.join("condbert_detox2021", "toxic_words.txt"),
}
_HURTLEX_COLUMNS = ("category", "lemma", "level")


def lexicon_root(cfg: VocabConfig) -> str:
    """The existing folder ``cfg.lexicon_dir`` refers to, or a ``UserError`` naming the field."""
    root = resolve_path(cfg.lexicon_dir)
    if root is None or not os.path.isdir(root):
        tried = ", ".join(candidate_paths(cfg.lexicon_dir))
        raise UserError(f"lexicon folder '{cfg.lexicon_dir}' not found (tried {tried}); set lexicon_dir to the "
                        "folder holding ldnoobw/, ldnoobw_v2/, hurtlex_v1.2/, condbert_detox2021/, "
                        "or set DETOXRL_DATA_DIR to the shared data folder")
    return root


def _read_lines(path: str) -> list[str]:
    with open(path, encoding="utf-8-sig", newline=None) as fh:  # universal newlines drop CRLF's \r
        return [line.strip().rstrip("\r") for line in fh if line.strip()]


def _read_hurtlex(path: str, levels: list[str], categories: list[str]) -> list[str]:
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing = [c for c in _HURTLEX_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise UserError(f"{path}: not a HurtLex TSV (no column {', '.join(missing)}); expected columns "
                            "id, pos, category, stereotype, lemma, level")
        cats = set(categories)
        return [row["lemma"] for row in reader
                if row["lemma"] and row["level"] in levels and (not cats or row["category"] in cats)]


def _long_enough(entry: str, min_chars: int) -> bool:
    if all(unicodedata.category(c) == "So" for c in entry):  # emoji such as the middle finger
        return True
    if _NO_SPACE_SCRIPT.search(entry):
        min_chars -= 1
    return len(entry) >= min_chars


def load_lexicon(cfg: VocabConfig | None = None) -> ToxicLexicon:
    """Read the lists ``cfg`` names for ``cfg.lexicon_lang`` into one ``ToxicLexicon``.

    A list named explicitly must exist for the language (``UserError`` naming the file otherwise);
    a list that only came from ``auto`` is skipped when it lacks the language (e.g. LDNOOBW has no
    ``uk``). ``extra_words`` are added and ``exclude_words`` removed last.
    """
    cfg = cfg or VocabConfig()
    root = lexicon_root(cfg)
    names, auto = cfg.resolved_lexicons()
    entries: set[str] = set()
    sources: list[tuple[str, int]] = []
    for name in names:
        rel = _LIST_FILES[name](cfg.lexicon_lang)
        path = os.path.join(root, rel)
        if not os.path.isfile(path):
            if name in auto:
                continue
            raise UserError(f"lexicon file '{path}' not found: list '{name}' has no '{cfg.lexicon_lang}' file under "
                            f"lexicon_dir '{cfg.lexicon_dir}'; remove '{name}' from lexicons or fix lexicon_dir")
        if name == "hurtlex":
            items = _read_hurtlex(path, cfg.hurtlex_levels, cfg.hurtlex_categories)
        else:
            items = _read_lines(path)
        items = [normalize_entry(i) for i in items]
        sources.append((name, len(set(items) - {""})))
        entries.update(items)
    if not sources:
        raise UserError(f"no lexicon for language '{cfg.lexicon_lang}' under lexicon_dir '{root}' "
                        f"(looked for {', '.join(_LIST_FILES[n](cfg.lexicon_lang) for n in names)}); "
                        "set lexicon_lang or lexicons")
    entries = {e for e in entries if _long_enough(e, cfg.min_entry_chars)}
    entries.update(normalize_entry(w) for w in cfg.extra_words)
    if cfg.extra_words:
        sources.append(("extra_words", len(cfg.extra_words)))
    entries.difference_update(normalize_entry(w) for w in cfg.exclude_words)
    return ToxicLexicon(entries, lang=cfg.lexicon_lang, sources=sources)
