"""Grouped, seeded train/dev split and the deterministic train subsample.

A pair's group is its normalised source (``Pair.group``), so every paraphrase of a dev input is
in dev and none is in train. Groups are ranked by ``sha256(f"{seed}:{group}")`` and the first ones
form the dev split: the split depends only on the seed and the set of groups, not on file order,
and adding pairs to a dataset leaves earlier dev groups in dev.

Pinned pairs (``Pair.split`` set, from instruction JSON's ``split`` field) skip the ranking and go
to their split; so that dev never holds a trained source, a dev pair (pinned or not) whose group
also has a train pair is dropped from dev. ``subsample`` in ``load_detox_data`` never drops a
pinned train pair.
"""

from __future__ import annotations

import hashlib
import random

from detoxrl.data.loaders import Pair
from detoxrl.errors import UserError


def _rank(group: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{group}".encode()).hexdigest()


def dev_group_count(n_groups: int, dev_size: float) -> int:
    """``dev_size`` < 1 is a fraction of the groups (rounded, at least 1); otherwise a count of groups."""
    return max(1, round(n_groups * dev_size)) if dev_size < 1 else int(dev_size)


def split_pairs(pairs: list[Pair], dev_size: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, dev), grouped by ``Pair.group``; each keeps the input order. Pinned pairs go to their split."""
    free = [p for p in pairs if not p.split]
    dev_groups: set[str] = set()
    if free:
        groups = {p.group for p in free}
        n_dev = dev_group_count(len(groups), dev_size)
        if n_dev >= len(groups) and not any(p.split == "train" for p in pairs):
            raise UserError(
                f"dev_size {dev_size} asks for {n_dev} dev groups but the data has only {len(groups)} source "
                "sentences, leaving no training data; lower dev_size"
            )
        dev_groups = set(sorted(groups, key=lambda g: _rank(g, seed))[:n_dev])

    def in_dev(p: Pair) -> bool:
        return p.split == "dev" if p.split else p.group in dev_groups

    train = [p for p in pairs if not in_dev(p)]
    train_groups = {p.group for p in train}
    dev = [p for p in pairs if in_dev(p) and p.group not in train_groups]
    return train, dev


def subsample(pairs: list[Pair], max_pairs: int | None, seed: int) -> list[Pair]:
    """At most ``max_pairs`` pairs chosen with ``random.Random(seed)``, kept in input order."""
    if max_pairs is None or len(pairs) <= max_pairs:
        return pairs
    keep = sorted(random.Random(seed).sample(range(len(pairs)), max_pairs))
    return [pairs[i] for i in keep]


def group_references(pairs: list[Pair], limit: int | None = None, seed: int = 0) -> tuple[list[str], list[list[str]]]:
    """One test sentence per source group, with all its distinct references (first-seen order).

    ``limit`` draws a seeded random sample of the groups: ParaDetox is not shuffled (its first rows
    are far less lexically toxic than the rest), so a sample must be drawn, not cut from the front.
    """
    grouped: dict[str, tuple[str, list[str]]] = {}
    for p in pairs:
        source, refs = grouped.setdefault(p.group, (p.source, []))
        if p.target not in refs:
            refs.append(p.target)
    items = list(grouped.values())
    if limit is not None and limit < len(items):
        items = random.Random(seed).sample(items, limit)
    return [s for s, _ in items], [r for _, r in items]
