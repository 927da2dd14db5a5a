"""Reference-free and reference-based text metrics shared by the SFT guard, evaluation and RL logs.

* ``copy_rate``: share of outputs equal to their input after ``norm_key`` normalisation
  (lowercase, non-word characters dropped, whitespace collapsed), the identity-mapping signal;
* ``empty_rate``: share of outputs with no word character;
* ``chrf``: sacrebleu's corpus ChrF (character 6-grams, beta 2) on a 0-1 scale, against one or
  more references per output (missing references are ``None``);
* ``bleu``: sacrebleu's corpus BLEU on a 0-1 scale, same reference layout.
"""

from __future__ import annotations

from collections.abc import Sequence

from detoxrl.data.clean import norm_key


def is_copy(source: str, output: str) -> bool:
    return norm_key(source) == norm_key(output)


def is_empty(output: str) -> bool:
    """The output has no word character: "", "  ", "..."."""
    return not norm_key(output)


def copy_rate(sources: Sequence[str], outputs: Sequence[str]) -> float:
    if not outputs:
        return 0.0
    return sum(is_copy(s, o) for s, o in zip(sources, outputs, strict=True)) / len(outputs)


def empty_rate(outputs: Sequence[str]) -> float:
    return sum(is_empty(o) for o in outputs) / len(outputs) if outputs else 0.0


def reference_streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
    """Per-output reference lists -> sacrebleu's reference streams, padded with ``None``."""
    width = max((len(r) for r in references), default=0)
    return [[refs[k] if k < len(refs) else None for refs in references] for k in range(width)]


def chrf(outputs: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    import sacrebleu

    return sacrebleu.corpus_chrf(list(outputs), reference_streams(references)).score / 100.0


def bleu(outputs: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    import sacrebleu

    return sacrebleu.corpus_bleu(list(outputs), reference_streams(references)).score / 100.0
