"""What rejection-sampling fine-tuning trains on: the order of the sources and each round's kept pairs.

Pure functions (no model), tested by hand:

* ``source_pool``: the training sources, one per source group with its references, those the SFT run
  never trained on first (each part shuffled with the seed), the rest after them;
* ``round_sources``: round ``r``'s ``n`` sources, the next slice of the pool (wrapping around);
* ``select_pairs``: per source, the best sample (ties: the first) if its score >= ``min_reward``; else
  nothing (``skip``) or the first reference (``reference``); plus the round's statistics.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from detoxrl.data import Pair
from detoxrl.metrics import is_copy


@dataclass(frozen=True)
class Source:
    text: str
    references: tuple[str, ...]
    group: str
    seen_by_sft: bool


def source_pool(train: list[Pair], used_groups: set[str] | None, seed: int) -> list[Source]:
    """Distinct training sources (first-seen text of each group, all its references); groups not in
    ``used_groups`` first. ``used_groups`` None: every source counts as unseen."""
    grouped: dict[str, tuple[str, list[str]]] = {}
    for p in train:
        text, refs = grouped.setdefault(p.group, (p.source, []))
        if p.target not in refs:
            refs.append(p.target)
    used = used_groups or set()
    unseen = [Source(t, tuple(r), g, False) for g, (t, r) in grouped.items() if g not in used]
    seen = [Source(t, tuple(r), g, True) for g, (t, r) in grouped.items() if g in used]
    rng = random.Random(seed)
    rng.shuffle(unseen)
    rng.shuffle(seen)
    return unseen + seen


def round_sources(pool: list[Source], round_index: int, n: int) -> list[Source]:
    """Round ``round_index`` (1-based) takes pool items ``(round_index - 1) * n ...`` (wrapping around)."""
    if not pool:
        return []
    start = (round_index - 1) * n
    return [pool[(start + i) % len(pool)] for i in range(min(n, len(pool)))]


@dataclass
class Selection:
    pairs: list[Pair]  # what the round's SFT trains on
    kept: list[int] = field(default_factory=list)  # sources whose own sample was kept
    fallback: list[int] = field(default_factory=list)  # sources trained on their reference instead
    stats: dict = field(default_factory=dict)


def _mean(values) -> float:
    values = [v for v in values if not math.isnan(v)]
    return sum(values) / len(values) if values else math.nan


def select_pairs(sources: list[Source], candidates: list[list[str]], scores: list[list[float]], best: list[int],
                 min_reward: float, fallback: str = "skip", round_index: int = 0,
                 truncated: list[list[bool]] | None = None) -> Selection:
    """The round's pairs and statistics (see the module docstring). ``best[i]`` indexes ``candidates[i]``."""
    if fallback not in ("skip", "reference"):
        raise ValueError(f"fallback must be skip or reference (got {fallback})")
    out = Selection([])
    for i, (src, cands, row, b) in enumerate(zip(sources, candidates, scores, best)):
        score = row[b]
        if not math.isnan(score) and score >= min_reward:
            out.pairs.append(Pair(src.text, cands[b], origin=f"rft round {round_index}: sample {b}, score {score:.4f}",
                                  split="train"))
            out.kept.append(i)
        elif fallback == "reference" and src.references:
            out.pairs.append(Pair(src.text, src.references[0], origin=f"rft round {round_index}: reference",
                                  split="train"))
            out.fallback.append(i)
    n = len(sources)
    all_pairs = [(s.text, c) for s, cands in zip(sources, candidates) for c in cands]
    kept = [(sources[i].text, candidates[i][best[i]]) for i in out.kept]
    out.stats = {
        "sources": n, "samples": len(all_pairs), "kept": len(out.kept), "fallback": len(out.fallback),
        "skipped": n - len(out.kept) - len(out.fallback), "pairs": len(out.pairs),
        "kept_share": len(out.kept) / n if n else math.nan,
        "unseen_share": sum(not s.seen_by_sft for s in sources) / n if n else math.nan,
        "reward_all": _mean(v for row in scores for v in row),
        "reward_best": _mean(row[b] for row, b in zip(scores, best)),
        "reward_kept": _mean(scores[i][best[i]] for i in out.kept),
        "copy_all": sum(is_copy(s, c) for s, c in all_pairs) / len(all_pairs) if all_pairs else math.nan,
        "copy_kept": sum(is_copy(s, c) for s, c in kept) / len(kept) if kept else math.nan,
    }
    if truncated is not None:
        flags = [t for row in truncated for t in row]
        out.stats["truncated_all"] = sum(flags) / len(flags) if flags else math.nan
    return out
