"""Labelled toxicity data (text, toxic 1 / neutral 0) from the shared folder, split into train and held-out.

Sources and labels:

* ``paradetox``: ParaDetox through the core loader (``load_detox_data``, default cleaning, which
  undoes the PTB tokenisation of the toxic side). Toxic = each source sentence; neutral = each
  distinct paraphrase. The held-out part is the core's **dev split** (grouped by source), the
  same sentences ``detox-eval`` uses by default, so the classifier never saw the eval inputs or
  their references.
* ``jigsaw``: the balanced Jigsaw binary subset (CSV without header: ``text,label``, 1 = toxic).
* ``davidson``: Davidson et al. tweets; ``class`` 0 (hate) or 1 (offensive) = toxic, 2 (neither) =
  neutral. HTML entities are unescaped, ``RT @user:`` prefixes dropped, @mentions become ``@user``
  and links ``http``.
* ``civil``: Civil Comments sentences (Dale et al. 2021): ``*_toxic*`` files = toxic, ``*_normal*``
  files = neutral; detokenised like ParaDetox.

Every text is whitespace-collapsed; empty texts and texts that occur with both labels are dropped.
For the non-ParaDetox sources the held-out part is a random ``heldout_fraction`` of the distinct
texts (seeded), so no held-out text is ever trained on. ``balanced_sample`` caps a split at
``n`` texts, half per label where the data allow.
"""

from __future__ import annotations

import csv
import html
import os
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass

from detoxrl.data import DataConfig, clean_text, load_detox_data
from detoxrl.errors import UserError
from detoxrl.paths import candidate_paths, resolve_path

SOURCES = ("paradetox", "jigsaw", "davidson", "civil")


@dataclass(frozen=True)
class Labelled:
    text: str
    label: int  # 1 = toxic, 0 = neutral (the feedback reward model: 1 = accepted, 0 = rejected)
    source: str
    text_pair: str | None = None  # a second text, encoded as a pair with ``text`` (the feedback reward model)


def _existing(path: str, field: str, what: str) -> str:
    found = resolve_path(path)
    if found is None:
        raise UserError(f"{field}: {what} '{path}' not found (tried {', '.join(candidate_paths(path))}); fix the "
                        "path, or set it to an empty string to train without this source")
    return found


def _dedupe(items: Iterable[Labelled]) -> list[Labelled]:
    """Drop empty texts, repeats, and texts seen with both labels (in first-seen order)."""
    labels: dict[str, set[int]] = {}
    ordered: list[Labelled] = []
    for item in items:
        if not re.search(r"\w", item.text):
            continue
        if item.text not in labels:
            labels[item.text] = set()
            ordered.append(item)
        labels[item.text].add(item.label)
    return [i for i in ordered if len(labels[i.text]) == 1]


def paradetox_split(cfg: DataConfig) -> tuple[list[Labelled], list[Labelled]]:
    """(train, held-out) from the core's ParaDetox train and dev splits."""
    data = load_detox_data(cfg)

    def side(pairs) -> list[Labelled]:
        toxic = [Labelled(p.source, 1, "paradetox") for p in pairs]
        neutral = [Labelled(p.target, 0, "paradetox") for p in pairs]
        return _dedupe(toxic + neutral)

    train, heldout = side(data.train), side(data.dev)
    held_texts = {i.text for i in heldout}
    return [i for i in train if i.text not in held_texts], heldout


def read_jigsaw(path: str) -> list[Labelled]:
    path = _existing(path, "jigsaw_file", "Jigsaw binary CSV")
    with open(path, encoding="utf-8", newline="") as fh:
        rows = [r for r in csv.reader(fh) if len(r) == 2 and r[1].strip() in ("0", "1")]
    if not rows:
        raise UserError(f"jigsaw_file: '{path}' has no 'text,label' rows with label 0 or 1")
    return _dedupe(Labelled(clean_text(t, detok=False), int(y), "jigsaw") for t, y in rows)


_RT = re.compile(r"^\W*RT\s+@\w+\s*:?\s*")
_MENTION = re.compile(r"@\w+")
_URL = re.compile(r"https?://\S+")


def clean_tweet(text: str) -> str:
    """Unescape HTML, drop a leading ``RT @user:``, mentions -> ``@user``, links -> ``http``."""
    text = html.unescape(html.unescape(text))
    text = _RT.sub("", text)
    return clean_text(_URL.sub("http", _MENTION.sub("@user", text)), detok=False)


def read_davidson(path: str) -> list[Labelled]:
    path = _existing(path, "davidson_file", "Davidson labeled_data.csv")
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        if not reader.fieldnames or "class" not in reader.fieldnames or "tweet" not in reader.fieldnames:
            raise UserError(f"davidson_file: '{path}' has no 'class' and 'tweet' columns")
        rows = [(r["tweet"], r["class"]) for r in reader if r["class"] in ("0", "1", "2")]
    return _dedupe(Labelled(clean_tweet(t), 0 if c == "2" else 1, "davidson") for t, c in rows)


def read_civil(folder: str) -> list[Labelled]:
    folder = _existing(folder, "civil_comments_dir", "Civil Comments sentences folder")
    files = sorted(f for f in os.listdir(folder) if f.endswith(".txt") and ("_toxic" in f or "_normal" in f))
    if not files:
        raise UserError(f"civil_comments_dir: '{folder}' holds no *_toxic*.txt / *_normal*.txt files")
    items: list[Labelled] = []
    for name in files:
        label = 1 if "_toxic" in name else 0
        with open(os.path.join(folder, name), encoding="utf-8") as fh:
            items += [Labelled(clean_text(line), label, "civil") for line in fh if line.strip()]
    return _dedupe(items)


def random_split(items: list[Labelled], fraction: float, seed: int) -> tuple[list[Labelled], list[Labelled]]:
    """(train, held-out): a seeded random ``fraction`` of the items is held out."""
    items = list(items)
    random.Random(seed).shuffle(items)
    n_held = int(round(len(items) * fraction))
    return items[n_held:], items[:n_held]


def balanced_sample(items: list[Labelled], n: int | None, seed: int) -> list[Labelled]:
    """At most ``n`` items, half of each label where possible (the other label fills a shortfall)."""
    if n is None or n >= len(items):
        return list(items)
    rng = random.Random(seed)
    pos = [i for i in items if i.label == 1]
    neg = [i for i in items if i.label == 0]
    rng.shuffle(pos)
    rng.shuffle(neg)
    n_pos = min(len(pos), max(n // 2, n - len(neg)))
    out = pos[:n_pos] + neg[: n - n_pos]
    rng.shuffle(out)
    return out
