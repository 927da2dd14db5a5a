"""The one model-card writer (detoxrl/model_card.py): the front matter the hub reads, the settings table, the
before/after table the RL stages share, and a section appended (feedback training)."""

from __future__ import annotations

import math

from detoxrl.model_card import append_section, before_after, render, table, write_model_card


def test_tables_by_hand():
    assert table(["a", "b"], [[1, "x"]], "lr") == "| a | b |\n|---|---:|\n| 1 | x |"
    assert before_after({"chrf": 0.25, "copy": 0.5}, {"chrf": 0.375}) == (
        "| metric | before | after |\n|---|---:|---:|\n| chrf | 0.2500 | 0.3750 |\n| copy | 0.5000 | - |")
    assert before_after({}, {}) == "| metric | before | after |\n|---|---:|---:|\n| (not run: eval_samples 0) | - | - |"
    assert "| x | - | - |" in before_after({"x": math.nan}, {})


def test_card_layout():
    text = render("run", "HuggingFaceTB/SmolLM2-135M-Instruct", ["ppo"], "Trained somehow.", {"steps": "5 x 64"},
                  [("Dev", "body")])
    assert text.startswith("---\nlibrary_name: transformers\nbase_model: HuggingFaceTB/SmolLM2-135M-Instruct\n"
                           "tags: [detoxification, text-style-transfer, detoxrl, ppo]\n---\n# run\n\n")
    assert "keeps the meaning. Trained somehow.\n\n| setting | value |\n|---|---|\n| steps | 5 x 64 |\n\n## Dev\n\nbody\n" \
        in text


def test_write_then_append(tmp_path):
    out = tmp_path / "my-run"
    out.mkdir()
    write_model_card(str(out), "base", [], "Intro.", {"a": 1})
    append_section(str(out), "Feedback training", "Version `v2`.")
    text = (out / "README.md").read_text()
    assert text.startswith("---") and "# my-run\n" in text and text.endswith("| a | 1 |\n\n## Feedback training\n\n"
                                                                            "Version `v2`.\n")
    fresh = tmp_path / "other"
    append_section(str(fresh), "S", "t")  # no card yet: one titled by the folder
    assert (fresh / "README.md").read_text() == "# other\n\n## S\n\nt\n"
