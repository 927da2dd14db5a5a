"""``DataConfig``: where the parallel (toxic, neutral) data comes from and how it is cleaned and split."""

from __future__ import annotations

import math

from dataclasses import dataclass, field
from typing import Literal

DatasetFormat = Literal["auto", "paradetox", "paranmt", "instruction", "multilingual", "hub"]


@dataclass
class DataConfig:
    """Data options shared by every stage; parse it with ``DetoxParser([DataConfig, ...])``."""

    dataset: str = field(
        default="../shared/data/paradetox/paradetox.tsv",
        metadata={
            "help": "A local file (.tsv/.csv/.json/.jsonl; relative paths are tried from the current folder, "
            "the project root and $DETOXRL_DATA_DIR) or a Hugging Face Hub dataset id such as s-nlp/paradetox."
        },
    )
    dataset_format: DatasetFormat = field(
        default="auto",
        metadata={
            "help": "auto: .json/.jsonl = instruction, .tsv/.csv by header columns, a non-existing path that "
            "looks like an id = hub. paradetox: toxic, neutral1..3 (or RuParaDetox toxic_comment, "
            "neutral_comment1..3). paranmt: reference, translation, ref_tox, trn_tox. instruction: records "
            "with instructions, inputs, outputs. multilingual: lang, toxic_sentence, neutral_sentence."
        },
    )
    dataset_split: str = field(default="train", metadata={"help": "Split to load from a Hub dataset (hub only)."})
    source_column: str | None = field(
        default=None,
        metadata={
            "help": "Hub only: column holding the toxic text. Unset: detected from the known layouts "
            "(en_toxic_comment, toxic_sentence, toxic_comment, toxic, reference/translation)."
        },
    )
    target_column: str | None = field(
        default=None,
        metadata={"help": "Hub only: column holding the neutral rewrite; set it together with source_column."},
    )
    lang: str | None = field(
        default=None,
        metadata={
            "help": "Multilingual data: keep only this language. Other formats: the language tag given to "
            "the pairs (unset: 'en', or 'ru' for the RuParaDetox layout)."
        },
    )
    toxic_threshold: float = field(
        default=0.9, metadata={"help": "ParaNMT only: keep a pair when its toxic side scores above this (0..1)."}
    )
    neutral_threshold: float = field(
        default=0.2, metadata={"help": "ParaNMT only: keep a pair when its neutral side scores below this (0..1)."}
    )
    collapse_repeats: bool = field(
        default=True,
        metadata={
            "help": "Collapse a run of the same mark (! ? , ; :), spaces between allowed, to one mark, and a "
            "run of 3+ dots to '...'. Whitespace runs always become one space."
        },
    )
    detokenize: bool = field(
        default=True,
        metadata={
            "help": "Undo PTB-style tokenisation on both sides: \"don 't\" -> \"don't\", \"do n't\" -> "
            "\"don't\", \"word .\" -> \"word.\" (also , ! ? ; : % and closing brackets)."
        },
    )
    drop_identical: bool = field(
        default=True,
        metadata={
            "help": "Drop pairs whose output equals the input after normalisation (lowercase, non-word "
            "characters removed, spaces collapsed). Empty pairs are always dropped."
        },
    )
    deduplicate: bool = field(
        default=True, metadata={"help": "Keep one copy of pairs whose cleaned (source, target) are identical."}
    )
    dev_size: float = field(
        default=0.05,
        metadata={
            "help": "Held-out dev split, grouped by normalised source: a fraction of the source groups if "
            "< 1, else a whole number of groups."
        },
    )
    max_train_pairs: int | None = field(
        default=None, metadata={"help": "Subsample the train split to at most this many pairs (unset: all)."}
    )
    split_seed: int = field(default=42, metadata={"help": "Seed of the dev split and of the train subsample."})

    def __post_init__(self) -> None:
        if not str(self.dataset).strip():
            raise ValueError("dataset is empty; give a file path or a Hub dataset id")
        for name in ("toxic_threshold", "neutral_threshold"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not math.isfinite(self.dev_size):
            raise ValueError(f"dev_size must be a finite number (got {self.dev_size})")
        if self.dev_size <= 0:
            raise ValueError(f"dev_size must be > 0 (a fraction < 1 or a number of groups), got {self.dev_size}")
        if self.dev_size >= 1 and self.dev_size != int(self.dev_size):
            raise ValueError(f"dev_size >= 1 is a number of source groups and must be whole, got {self.dev_size}")
        if self.max_train_pairs is not None and self.max_train_pairs < 1:
            raise ValueError(f"max_train_pairs must be >= 1 or unset, got {self.max_train_pairs}")
        if (self.source_column is None) != (self.target_column is None):
            raise ValueError("source_column and target_column must be set together (or both left unset)")
