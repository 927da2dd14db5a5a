"""Every text and score metric of the project, as pure functions (one home: SFT guard, rewards, RL logs, evaluation).

* ``copy_rate`` / ``is_copy``: share of outputs equal to their input after ``norm_key`` normalisation
  (lowercase, non-word characters dropped, whitespace collapsed), the identity-mapping signal;
* ``empty_rate`` / ``is_empty``: share of outputs with no word character;
* ``chrf``: sacrebleu's corpus ChrF (character 6-grams, beta 2) on a 0-1 scale, against one or
  more references per output (missing references are ``None``);
* ``sentence_chrf``: per sentence, sacrebleu's sentence ChrF against that sentence's references / 100
  (the best-matching reference's score; TextDetox 2024's FL); NaN for a sentence without references;
* ``chrf_pp``: sacrebleu corpus chrF++ (character 6-grams plus word 1-2-grams, beta 2) / 100;
* ``bleu``: sacrebleu's corpus BLEU on a 0-1 scale, same reference layout;
* ``roc_auc``: the probability that a random toxic text scores above a random neutral one (ties
  count 1/2), from average ranks: (rank sum of positives - n_pos (n_pos + 1) / 2) / (n_pos n_neg);
  NaN if a class is absent;
* ``accuracy``: share of texts whose ``score >= threshold`` equals ``label == 1``;
* ``joint``: J = mean over sentences of STA_i * SIM_i * FL_i (ParaDetox's joint score; the only place
  J is computed; ``detox-eval`` calls it with FL_i = ``sentence_chrf`` for J and with the LM fluency
  for J_LM);
* ``length_ratio``: total output characters / total source characters (stripped texts).
"""


from __future__ import annotations

import math
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


def sentence_chrf(outputs: Sequence[str], references: Sequence[Sequence[str]]) -> list[float]:
    """ChrF_i = sacrebleu ``sentence_chrf(output_i, references_i).score / 100`` (NaN where there is no reference)."""
    import sacrebleu

    return [sacrebleu.sentence_chrf(o, list(refs)).score / 100.0 if refs else math.nan
            for o, refs in zip(outputs, references, strict=True)]


def bleu(outputs: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    import sacrebleu

    return sacrebleu.corpus_bleu(list(outputs), reference_streams(references)).score / 100.0


def _average_ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1  # 1-based average rank of the tie group
        i = j + 1
    return ranks


def roc_auc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve of ``scores`` for the binary ``labels`` (1 = positive)."""
    n_pos = sum(1 for y in labels if y == 1)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(list(scores))
    rank_sum = sum(r for r, y in zip(ranks, labels) if y == 1)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def accuracy(labels: Sequence[int], scores: Sequence[float], threshold: float = 0.5) -> float:
    if not labels:
        return math.nan
    return sum((s >= threshold) == (y == 1) for y, s in zip(labels, scores, strict=True)) / len(labels)


def mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def joint(sta: Sequence[float], sim: Sequence[float], fl: Sequence[float]) -> float:
    """J = mean_i STA_i * SIM_i * FL_i."""
    return mean([a * b * c for a, b, c in zip(sta, sim, fl, strict=True)])


def chrf_pp(outputs: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus chrF++ / 100, multi-reference (missing references padded with None)."""
    from sacrebleu.metrics import CHRF

    return CHRF(word_order=2).corpus_score(list(outputs), reference_streams(references)).score / 100


def length_ratio(sources: Sequence[str], outputs: Sequence[str]) -> float:
    src = sum(len(s.strip()) for s in sources)
    return sum(len(o.strip()) for o in outputs) / src if src else math.nan
