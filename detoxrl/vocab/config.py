"""``VocabConfig``: which toxic word lists to load, for which language, and how to filter them.

The default lists per language (``lexicons: [auto]``) were chosen by measuring the lexicon toxicity
rate on ParaDetox (toxic side vs. neutral side); see ``DEFAULT_LEXICONS`` for the numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

LEXICON_NAMES = ("ldnoobw", "ldnoobw_v2", "hurtlex", "condbert")

# HurtLex 1.2 categories (Bassignana et al. 2018).
HURTLEX_CATEGORIES = {
    "an": "animals", "asf": "female genitalia", "asm": "male genitalia", "cds": "derogatory words",
    "ddf": "physical disabilities and diversity", "ddp": "cognitive disabilities and diversity",
    "dmc": "moral and behavioural defects", "is": "words related to social and economic disadvantage",
    "om": "homosexuality", "or": "plants", "pa": "professions and occupations",
    "pr": "words related to prostitution", "ps": "negative stereotypes / ethnic slurs",
    "qas": "potential negative connotations", "rci": "locations and demonyms", "re": "felonies and crime",
    "svp": "words related to the seven deadly sins",
}
HURTLEX_LEVELS = ("conservative", "inclusive")

# Measured on ParaDetox (paradetox.tsv: 11,927 toxic sentences vs. their neutral1 paraphrases) with
# min_entry_chars=3; "toxic% / neutral%" = share of sentences with at least one lexicon hit:
#   ldnoobw 72.2 / 0.5            condbert 79.1 / 0.6 (with 'god': 1.0)
#   ldnoobw + condbert 79.6 / 0.8 (keeping 'god': 79.7 / 1.3)     <- the en default
#   ldnoobw_v2 88.3 / 9.0 (it lists "post", "crazy", "cool", "sad", "hate", "food"; with
#     min_entry_chars=1 also "i", "us": 89.6 / 31.6)
#   hurtlex conservative 88.9 / 22.8, + inclusive 92.2 / 41.2 ("bad", "do", "people", "know")
#   ldnoobw + condbert + hurtlex[ddp] 88.5 / 2.6: catches stupid/idiot/moron but also flags
#     "simple", "slow", "innocent", "green", "mark" (an option, not the default; HurtLex is
#     CC BY-NC-SA, non-commercial).
# Other languages (toxic% / neutral%, ldnoobw + ldnoobw_v2): ru RuParaDetox train 55.8 / 1.0,
# multilingual ParaDetox de 23.7 / 3.0, es 41.2 / 5.0, ru 38.8 / 0.0, uk (v2 only) 10.7 / 1.8,
# zh 10.5 / 7.2. condbert is English only; HurtLex flags many ordinary words in every language
# (de neutral 3.0 -> 15.8 with it).
DEFAULT_LEXICONS = {"en": ("ldnoobw", "condbert")}
DEFAULT_LEXICONS_OTHER = ("ldnoobw", "ldnoobw_v2")
DEFAULT_EXCLUDE = ("god",)


def default_lexicons(lang: str) -> tuple[str, ...]:
    """The lists ``auto`` stands for in language ``lang``."""
    return DEFAULT_LEXICONS.get(lang, DEFAULT_LEXICONS_OTHER)


@dataclass
class VocabConfig:
    """The toxic vocabulary: word lists under ``lexicon_dir`` for one language."""

    lexicon_dir: str = field(
        default="../shared/data/lexicons",
        metadata={"help": "Folder holding ldnoobw/, ldnoobw_v2/, hurtlex_v1.2/ and condbert_detox2021/ "
                  "(relative paths are tried from the current folder, then the project root; "
                  "'../shared/data' also resolves under $DETOXRL_DATA_DIR)."},
    )
    lexicon_lang: str = field(
        default="en",
        metadata={"help": "Language code of the lists to load, as in the file names: en, ru, de, es, uk, zh, ..."},
    )
    lexicons: list[str] = field(
        default_factory=lambda: ["auto"],
        metadata={"help": "Which word lists to use, from ldnoobw, ldnoobw_v2, hurtlex, condbert, auto. 'auto' is "
                  "the per-language default: en -> ldnoobw + condbert; any other language -> ldnoobw + "
                  "ldnoobw_v2 (skipping a list that lacks the language). condbert is English only. A named "
                  "list whose file is missing is an error."},
    )
    hurtlex_levels: list[str] = field(
        default_factory=lambda: ["conservative"],
        metadata={"help": "HurtLex levels to keep when 'hurtlex' is used: conservative (the core, stricter "
                  "list) and/or inclusive (adds broader, more ambiguous words)."},
    )
    hurtlex_categories: list[str] = field(
        default_factory=list,
        metadata={"help": "HurtLex categories to keep when 'hurtlex' is used (empty = all 17): "
                  + ", ".join(f"{k} ({v})" for k, v in HURTLEX_CATEGORIES.items()) + "."},
    )
    min_entry_chars: int = field(
        default=3,
        metadata={"help": "Drop entries shorter than this many characters (one less for scripts written without "
                  "spaces: Chinese, Japanese, Korean, Thai). Short entries are mostly abbreviations and single "
                  "morphemes ('i', 'us', 'es', '性') that flag ordinary text. 1 keeps everything."},
    )
    exclude_words: list[str] = field(
        default_factory=lambda: list(DEFAULT_EXCLUDE),
        metadata={"help": "Entries to drop from the loaded lists (case-insensitive), e.g. words that are "
                  "ordinary in your data. Default: god (condbert lists 'God'; it is in 53 of 11,927 ParaDetox "
                  "neutral paraphrases, 'oh my god'). null (YAML) or [] keeps every entry."},
    )
    extra_words: list[str] = field(
        default_factory=list,
        metadata={"help": "Entries to add to the loaded lists (case-insensitive words or phrases)."},
    )

    def __post_init__(self):
        for name in ("lexicons", "hurtlex_levels", "hurtlex_categories", "exclude_words", "extra_words"):
            value = getattr(self, name)
            if isinstance(value, str):  # a single YAML scalar
                setattr(self, name, [value])
            elif value is None:
                setattr(self, name, [])
        if not isinstance(self.lexicon_dir, str) or not self.lexicon_dir.strip():
            raise ValueError("lexicon_dir must be a folder path, e.g. ../shared/data/lexicons")
        if not re.fullmatch(r"[A-Za-z]{2,3}(-[A-Za-z0-9-]+)?", str(self.lexicon_lang)):
            raise ValueError(f"lexicon_lang '{self.lexicon_lang}' is not a language code; use e.g. en, ru, de")
        if not self.lexicons:
            raise ValueError("lexicons is empty; use 'auto' or some of: " + ", ".join(LEXICON_NAMES))
        for name in self.lexicons:
            if name != "auto" and name not in LEXICON_NAMES:
                raise ValueError(f"lexicons: unknown list '{name}'; choose from auto, " + ", ".join(LEXICON_NAMES))
        if len(set(self.lexicons)) != len(self.lexicons):
            raise ValueError(f"lexicons: {self.lexicons} names a list twice")
        if "condbert" in self.lexicons and self.lexicon_lang != "en":
            raise ValueError(f"lexicons: condbert is English only, but lexicon_lang is '{self.lexicon_lang}'")
        if not isinstance(self.min_entry_chars, int) or self.min_entry_chars < 1:
            raise ValueError(f"min_entry_chars must be an integer >= 1, got {self.min_entry_chars!r}")
        if not self.hurtlex_levels:
            raise ValueError("hurtlex_levels is empty; use conservative and/or inclusive")
        for level in self.hurtlex_levels:
            if level not in HURTLEX_LEVELS:
                raise ValueError(f"hurtlex_levels: unknown level '{level}'; use conservative and/or inclusive")
        for cat in self.hurtlex_categories:
            if cat not in HURTLEX_CATEGORIES:
                raise ValueError(f"hurtlex_categories: unknown category '{cat}'; choose from "
                                 + ", ".join(HURTLEX_CATEGORIES))

    def resolved_lexicons(self) -> tuple[list[str], set[str]]:
        """(lists to load in order, the subset that came from 'auto' and may be skipped if absent)."""
        out: list[str] = []
        auto: set[str] = set()
        for name in self.lexicons:
            expanded = default_lexicons(self.lexicon_lang) if name == "auto" else (name,)
            for n in expanded:
                if n not in out:
                    out.append(n)
                    if name == "auto":
                        auto.add(n)
                if name != "auto":  # named explicitly: must exist, even if 'auto' also brought it
                    auto.discard(n)
        return out, auto
