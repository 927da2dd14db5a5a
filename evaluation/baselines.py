"""Built-in evaluation baselines: systems that need no model.

* ``duplicate``: output = input. STA shows how toxic the inputs are, SIM and ChrF what copying earns.
* ``delete``: the input with every toxic-vocabulary hit removed (``ToxicLexicon.toxic_spans``:
  word-bounded, longest entry first), then whitespace collapsed and the space left before
  punctuation removed: "you are a fucking idiot." -> "you are a idiot." when only "fucking" is listed.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from detoxrl.vocab import ToxicLexicon

BASELINES = ("duplicate", "delete")
_SPACE = re.compile(r"\s+")
_SPACE_BEFORE_MARK = re.compile(r"\s+([.,!?;:%)\]}])")


def duplicate(texts: Sequence[str]) -> list[str]:
    return list(texts)


def delete_toxic(text: str, lexicon: ToxicLexicon) -> str:
    """``text`` without its lexicon hits, tidied (see the module docstring)."""
    pieces, last = [], 0
    for start, end, _ in lexicon.toxic_spans(text):
        pieces.append(text[last:start])
        last = end
    pieces.append(text[last:])
    return _SPACE_BEFORE_MARK.sub(r"\1", _SPACE.sub(" ", "".join(pieces))).strip()


def delete(texts: Sequence[str], lexicon: ToxicLexicon) -> list[str]:
    return [delete_toxic(t, lexicon) for t in texts]
