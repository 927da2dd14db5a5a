"""Parallel detoxification data: load any supported source, clean it, split it.

``load_detox_data(DataConfig(...))`` is the one call the SFT and RL stages, the evaluation and
the preview make; the readers, the cleaning and the split are exported for tests and tools.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from detoxrl.data.clean import CleanReport, clean_pairs, clean_text, norm_key
from detoxrl.data.config import DataConfig
from detoxrl.data.loaders import (
    DEFAULT_INSTRUCTION,
    Pair,
    detect_format,
    load_hub,
    load_raw_pairs,
    read_instruction_json,
    read_multilingual,
    read_paradetox,
    read_paranmt,
    write_instruction_json,
)
from detoxrl.data.split import group_references, split_pairs, subsample

log = logging.getLogger("detoxrl.data")


@dataclass
class DetoxData:
    """The cleaned, split data of one ``DataConfig``."""

    train: list[Pair]
    dev: list[Pair]
    clean_report: CleanReport
    source: str  # the file path or Hub id actually read
    format: str = "auto"  # the format it was read as
    raw_sources: int = 0  # distinct source groups before cleaning
    train_before_subsample: int = 0  # train pairs before max_train_pairs

    @property
    def all(self) -> list[Pair]:
        return self.train + self.dev


def load_detox_data(cfg: DataConfig) -> DetoxData:
    """Read ``cfg.dataset``, clean it as configured, split off dev by source group, subsample train."""
    raw, source, fmt = load_raw_pairs(cfg)
    pairs, report = clean_pairs(
        raw, detok=cfg.detokenize, collapse=cfg.collapse_repeats,
        drop_identical=cfg.drop_identical, deduplicate=cfg.deduplicate,
    )
    log.info("%s (%s): %s", source, fmt, report.format())
    train, dev = split_pairs(pairs, cfg.dev_size, cfg.split_seed)
    kept = {id(p) for p in subsample([p for p in train if not p.split], cfg.max_train_pairs, cfg.split_seed)}
    sampled = [p for p in train if p.split or id(p) in kept]  # pinned train pairs are never subsampled away
    if len(sampled) < len(train):
        log.info("train subsampled from %d to %d pairs (max_train_pairs)", len(train), len(sampled))
    return DetoxData(sampled, dev, report, source, fmt, len({p.group for p in raw}), len(train))


__all__ = [
    "DEFAULT_INSTRUCTION", "CleanReport", "DataConfig", "DetoxData", "Pair", "clean_pairs", "clean_text",
    "detect_format", "group_references", "load_detox_data", "load_hub", "load_raw_pairs", "norm_key", "read_instruction_json",
    "read_multilingual", "read_paradetox", "read_paranmt", "split_pairs", "subsample", "write_instruction_json",
]
