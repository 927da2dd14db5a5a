"""Every default a reference page quotes is the dataclass default.

The reference pages (``docs/*.md``; dated write-ups live in ``docs/experiments/`` and quote the defaults of their
day) state a default as ``\\`field\\` (default \\`value\\`)``, or with more words after a ``;`` or ``,`` inside
the brackets. Each quote is read as YAML and compared with the default of that field in the dataclasses of the
page's stage (``_classes``): changing a default without the page fails here, and so does a page quoting a field no
dataclass of its stage has."""

from __future__ import annotations

import dataclasses
import math
import os
import re

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUOTE = re.compile(r"`(?P<field>[a-z_][a-z0-9_]*)` \(default `(?P<value>[^`]*)`[);,]")


def _classes():
    from detoxrl.data.config import DataConfig
    from detoxrl.generate import GenerationSettings
    from detoxrl.models.config import DetoxModelConfig
    from detoxrl.prompts import PromptConfig
    from detoxrl.vocab.config import VocabConfig
    from evaluation.evaluate import EvalConfig
    from evaluation.infer import InferConfig
    from evaluation.judges import EvalJudgesConfig
    from feedback.train import FeedbackTrainConfig
    from orchestration.ablate import AblationConfig
    from rewards.composite import RewardConfig
    from rewards.train_toxicity import TrainToxicityConfig
    from rl.config import DetoxPPOConfig, PPOModelConfig
    from rl.rft_config import RFTConfig
    from sft.config import DetoxSFTConfig, SFTDataConfig

    core = [DataConfig, VocabConfig, PromptConfig, DetoxModelConfig, GenerationSettings]
    rl = [DetoxPPOConfig, PPOModelConfig, RewardConfig, *core]
    return {
        "rl.md": rl, "distributed.md": rl + [DetoxSFTConfig], "pipeline.md": rl + [DetoxSFTConfig, EvalConfig],
        "sft.md": [DetoxSFTConfig, SFTDataConfig, *core], "rft.md": [RFTConfig, RewardConfig, *core],
        "rewards.md": [RewardConfig, TrainToxicityConfig, VocabConfig], "evaluation.md": [EvalConfig, EvalJudgesConfig, *core],
        "inference.md": [InferConfig, GenerationSettings], "best-of-n.md": [InferConfig, GenerationSettings, EvalConfig],
        "feedback.md": [FeedbackTrainConfig, RewardConfig], "ablation.md": [AblationConfig, *rl],
        "models.md": [DetoxModelConfig, PPOModelConfig], "data.md": [DataConfig, SFTDataConfig, VocabConfig],
    }


def defaults(classes) -> dict[str, list]:
    out: dict[str, list] = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            if f.default is not dataclasses.MISSING:
                value = f.default
            elif f.default_factory is not dataclasses.MISSING:
                value = f.default_factory()
            else:
                continue
            out.setdefault(f.name, []).append(getattr(value, "value", value))  # enums by value
    return out


def quotes(text: str) -> list[tuple[int, str, str]]:
    return [(text.count("\n", 0, m.start()) + 1, m["field"], m["value"]) for m in QUOTE.finditer(text)]


def same(quoted: str, default) -> bool:
    value = yaml.safe_load(quoted) if quoted else ""
    if isinstance(value, str) and isinstance(default, float):  # YAML reads 5e-5 (no dot) as a string
        try:
            value = float(value)
        except ValueError:
            return False
    if isinstance(default, (list, tuple)) and not isinstance(value, list):
        value = [value]
    if isinstance(default, tuple):
        default = list(default)
    if isinstance(value, (int, float)) and isinstance(default, (int, float)) and not isinstance(default, bool):
        return math.isclose(value, default, rel_tol=1e-9)
    return value == default or str(value) == str(default)


def mismatches(page: str, text: str) -> list[str]:
    known = defaults(_classes()[page])
    out = []
    for line, name, value in quotes(text):
        if name not in known:
            out.append(f"docs/{page}:{line}: `{name}` is no field of this page's configs")
        elif not any(same(value, d) for d in known[name]):
            out.append(f"docs/{page}:{line}: `{name}` (default `{value}`), but the dataclass default is "
                       f"{' or '.join(repr(d) for d in known[name])}")
    return out


@pytest.mark.parametrize("page", sorted(_classes()))
def test_quoted_defaults_are_the_dataclass_defaults(page):
    path = os.path.join(ROOT, "docs", page)
    assert mismatches(page, open(path, encoding="utf-8").read()) == []


def test_the_reference_pages_quote_their_defaults():
    """Enough quotes that the check above has something to check (the pages quote their main knobs)."""
    n = {page: len(quotes(open(os.path.join(ROOT, "docs", page), encoding="utf-8").read())) for page in _classes()}
    assert n["rl.md"] >= 15 and n["sft.md"] >= 5 and sum(n.values()) >= 40, n


def test_a_changed_default_fails():
    text = "`max_packed_tokens` (default `2048`), `value_features` (default `lexicon+sibling`)"
    assert mismatches("rl.md", text) == []
    assert mismatches("rl.md", text.replace("2048", "1024")) == [
        "docs/rl.md:1: `max_packed_tokens` (default `1024`), but the dataclass default is 2048"]
    assert mismatches("rl.md", "`no_such_knob` (default `1`)") == [
        "docs/rl.md:1: `no_such_knob` is no field of this page's configs"]
