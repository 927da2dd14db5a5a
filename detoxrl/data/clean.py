"""Text cleaning of (toxic, neutral) pairs, with a report of what was dropped and why.

Rules, applied to both sides of every pair in this order:

* whitespace: every run of whitespace (including the newlines inside quoted cells) becomes one
  space, and the text is stripped. Always on.
* ``detokenize``: undo PTB-style tokenisation (ParaDetox's toxic side): ``don 't`` / ``do n't``
  -> ``don't`` (also 's 'm 're 've 'll 'd), and the space before , . ! ? ; : % ) ] } is removed
  when the mark is not followed by a word character. Quotes and dashes are left alone.
* ``collapse_repeats``: a run of the same mark among ! ? , ; : (spaces between allowed) becomes
  one mark (``!!!!`` and ``! ! !`` -> ``!``); a run of three or more dots becomes ``...``.
  Mixed runs such as ``?!`` and two dots are kept.

Then pairs are dropped: empty (no word character left on a side; always on), identical (the
output equals the input after ``norm_key``; ``drop_identical``), and duplicate (the same cleaned
source and target as an earlier pair; ``deduplicate``).
"""

from __future__ import annotations

import dataclasses
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # a top-level import would be circular: loaders imports norm_key
    from detoxrl.data.loaders import Pair


_WS = re.compile(r"\s+")
_NON_WORD = re.compile(r"\W+")
_CONTRACTION = re.compile(r"(\w) '(t|s|m|re|ve|ll|d)\b", re.IGNORECASE)
_NT = re.compile(r"(\w) (n't)\b", re.IGNORECASE)
_SPACE_BEFORE_MARK = re.compile(r"\s+([.,!?;:%)\]}])(?!\w)")
_REPEATED_MARK = re.compile(r"([!?,;:])(?:\s*\1)+")
_DOTS = re.compile(r"\.(?:\s*\.){2,}")


def norm_key(text: str) -> str:
    """Lowercase, every non-word character to a space, spaces collapsed: the comparison and group key."""
    return _NON_WORD.sub(" ", text.lower()).strip()


def detokenize(text: str) -> str:
    """Undo PTB tokenisation: ``"i don 't care ."`` -> ``"i don't care."`` (see module docstring)."""
    if " '" in text:
        text = _CONTRACTION.sub(r"\1'\2", text)
    if " n't" in text or " N'T" in text:
        text = _NT.sub(r"\1\2", text)
    return _SPACE_BEFORE_MARK.sub(r"\1", text)


def collapse_repeats(text: str) -> str:
    """``"no!!!! way ! ! ."`` -> ``"no! way ! ."``; ``"well....."`` -> ``"well..."``."""
    text = _DOTS.sub("...", text)
    return _REPEATED_MARK.sub(r"\1", text)


def clean_text(text: str, *, detok: bool = True, collapse: bool = True) -> str:
    """Apply the whitespace rule, then the optional detokenisation and repeat collapsing."""
    text = _WS.sub(" ", text).strip()
    if detok:
        text = detokenize(text)
    if collapse:
        text = collapse_repeats(text)
    return text


@dataclasses.dataclass
class CleanReport:
    """Counts of one cleaning pass: ``loaded == dropped_empty + dropped_identical + dropped_duplicates + kept``."""

    loaded: int = 0
    dropped_empty: int = 0
    dropped_identical: int = 0
    dropped_duplicates: int = 0
    kept: int = 0

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    def format(self) -> str:
        return (
            f"loaded {self.loaded} pairs; dropped {self.dropped_empty} empty, {self.dropped_identical} "
            f"identical (output == input), {self.dropped_duplicates} duplicates; kept {self.kept}"
        )


def clean_pairs(
    pairs: list[Pair],
    *,
    detok: bool = True,
    collapse: bool = True,
    drop_identical: bool = True,
    deduplicate: bool = True,
) -> tuple[list[Pair], CleanReport]:
    """Clean the text of every pair and drop empty, identical and duplicate pairs (see module docstring)."""
    report = CleanReport(loaded=len(pairs))
    seen: set[tuple[str, str]] = set()
    kept: list[Pair] = []
    cache: dict[str, tuple[str, str]] = {}  # raw text -> (cleaned, norm_key); sources repeat per paraphrase

    def prepare(text: str) -> tuple[str, str]:
        if text not in cache:
            cleaned = clean_text(text, detok=detok, collapse=collapse)
            cache[text] = cleaned, norm_key(cleaned)
        return cache[text]

    for pair in pairs:
        (source, source_key), (target, target_key) = prepare(pair.source), prepare(pair.target)
        if not source_key or not target_key:
            report.dropped_empty += 1
            continue
        if drop_identical and source_key == target_key:
            report.dropped_identical += 1
            continue
        if deduplicate:
            if (source, target) in seen:
                report.dropped_duplicates += 1
                continue
            seen.add((source, target))
        kept.append(dataclasses.replace(pair, source=source, target=target))
    report.kept = len(kept)
    return kept, report
