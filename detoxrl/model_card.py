"""The model card (``README.md`` of a run folder), one writer for every stage (SFT, PPO/GRPO/RLOO, RFT, feedback).

    write_model_card(out, base="HuggingFaceTB/SmolLM2-135M-Instruct", tags=["ppo"], intro="...",
                     settings={"reward": "...", "steps": "50 x 64 rollouts"},
                     sections=[("Dev metrics before and after (64 dev inputs, greedy decoding)", before_after(b, a))])

The front matter (``library_name``, ``base_model``, ``tags``) is what the hub reads; ``intro`` is the stage's
sentence on how the model was trained; ``settings`` becomes a two-column table; each section a heading and its text.
The machine-readable record of a run is ``detoxrl.json`` (``detoxrl/runcard.py``); this page is for people.
"""

from __future__ import annotations

import math
import os

from detoxrl.io import atomic_write_text

PURPOSE = "A detoxification model: it rewrites toxic text into polite text that keeps the meaning."
PROJECT = "[detoxrl](https://github.com/detoxrl/detoxrl)"
OWN_JUDGES = "Scored with the reward's own judges; run `detox-eval` for judges independent of the reward."


def table(header: list[str], rows: list[list], align: str | None = None) -> str:
    """A markdown table; ``align``: one of ``l``/``r`` per column (default: the first left, the rest left)."""
    align = align or "l" * len(header)
    rule = "|" + "|".join("---:" if a == "r" else "---" for a in align) + "|"
    return "\n".join(["| " + " | ".join(header) + " |", rule, *("| " + " | ".join(map(str, r)) + " |" for r in rows)])


def cell(value) -> str:
    """A metric as the cards print it: floats to 4 places, NaN as a dash."""
    if isinstance(value, float):
        return "-" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def before_after(before: dict, after: dict, empty: str = "(not run: eval_samples 0)") -> str:
    """The before/after dev-metric table of the RL stages (``empty`` when neither was measured)."""
    keys = sorted(set(before) | set(after))
    rows = [[k, cell(before.get(k, math.nan)), cell(after.get(k, math.nan))] for k in keys] or [[empty, "-", "-"]]
    return table(["metric", "before", "after"], rows, "lrr")


def render(name: str, base: str, tags: list[str], intro: str, settings: dict, sections: list[tuple[str, str]],
           library: str = "transformers") -> str:
    head = (f"---\nlibrary_name: {library}\nbase_model: {base}\n"
            f"tags: [{', '.join(['detoxification', 'text-style-transfer', 'detoxrl', *tags])}]\n---\n")
    body = [f"# {name}", "", f"{PURPOSE} {intro}", "", table(["setting", "value"], [[k, v] for k, v in settings.items()])]
    for title, text in sections:
        body += ["", f"## {title}", "", text.strip()]
    return head + "\n".join(body) + "\n"


def write_model_card(out: str, base: str, tags: list[str], intro: str, settings: dict,
                     sections: list[tuple[str, str]] = ()) -> None:
    """``out/README.md``, written atomically; the card's title is the folder's name."""
    atomic_write_text(os.path.join(out, "README.md"),
                      render(os.path.basename(os.path.abspath(out)), base, tags, intro, settings, list(sections)))


def append_section(out: str, title: str, text: str) -> None:
    """Add a section to ``out/README.md`` (a card of the folder's name if there is none yet)."""
    path = os.path.join(out, "README.md")
    card = open(path, encoding="utf-8").read() if os.path.isfile(path) else f"# {os.path.basename(out)}\n"
    atomic_write_text(path, card.rstrip("\n") + f"\n\n## {title}\n\n{text.strip()}\n")
