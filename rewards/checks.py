"""Per-sentence checks on (source, output) pairs, shared by the reward penalties and ``detox-eval``.

* copy: ``detoxrl.metrics.is_copy``: ``norm_key(output) == norm_key(source)``, where the core's
  ``norm_key`` lowercases, turns every non-word character into a space and collapses spaces.
  "You idiot!" copies "you idiot"; "you, idiot." too; "you idiots" does not.
* empty: the output has no word character (``norm_key(output) == ""``): "", "  ", "...".
* length blow-up: ``len(output) > ratio * len(source)``, lengths in characters of the stripped texts.
"""

from __future__ import annotations

from collections.abc import Sequence

from detoxrl.metrics import is_copy, is_empty


def is_length_blowup(source: str, output: str, ratio: float) -> bool:
    return len(output.strip()) > ratio * len(source.strip())


def copy_flags(sources: Sequence[str], outputs: Sequence[str]) -> list[bool]:
    return [is_copy(s, o) for s, o in zip(sources, outputs, strict=True)]


def empty_flags(outputs: Sequence[str]) -> list[bool]:
    return [is_empty(o) for o in outputs]


def length_blowup_flags(sources: Sequence[str], outputs: Sequence[str], ratio: float) -> list[bool]:
    return [is_length_blowup(s, o, ratio) for s, o in zip(sources, outputs, strict=True)]
