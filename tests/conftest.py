"""Shared pytest fixtures: tiny random-init model folders (built once per session), offline hub."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

from tests.tiny import build_tiny  # noqa: E402

SHARED_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """``tiny_dir(kind)`` -> folder of a tiny model of that kind (built on first use)."""
    root = tmp_path_factory.mktemp("tiny")
    built: dict[str, str] = {}

    def get(kind: str) -> str:
        if kind not in built:
            built[kind] = build_tiny(kind, str(root / kind))
        return built[kind]

    return get


@pytest.fixture(scope="session")
def shared_data():
    """Path of ../shared/data; skips the test when the folder is absent."""
    path = os.path.normpath(os.environ.get("DETOXRL_DATA_DIR", SHARED_DATA))
    if not os.path.isdir(path):
        pytest.skip(f"shared data folder not found at {path} (set DETOXRL_DATA_DIR)")
    return path


TOY_PAIRS = [
    ("you are a stupid idiot", "you are not kind"),
    ("this is some bullshit , shut the fuck up", "this is not true , please stop talking"),
    ("what a stupid day", "what a day"),
    ("nobody likes you , idiot", "people may not like you"),
] * 6


@pytest.fixture()
def toy_data(tmp_path):
    """A 24-pair ParaDetox-style TSV and a 4-word lexicon folder: ``(tsv_path, lexicon_dir)``."""
    tsv = tmp_path / "pairs.tsv"
    rows = ["toxic\tneutral1\tneutral2\tneutral3"] + [f"{s} {i}\t{t} {i}\t\t" for i, (s, t) in enumerate(TOY_PAIRS)]
    tsv.write_text("\n".join(rows) + "\n")
    lex = tmp_path / "lexicons" / "ldnoobw"
    lex.mkdir(parents=True)
    (lex / "en.txt").write_text("idiot\nstupid\nfuck\nbullshit\n")
    return tsv, tmp_path / "lexicons"
