"""The README and the docs/ pages stay true to the repository.

* every relative link (``[text](path)``, ``![alt](path)``, ``path#heading``) in README.md, docs/*.md and
  docs/experiments/*.md points to a file inside the repository, and a ``#heading`` in a markdown page points to one
  of its headings (GitHub's anchor rules);
* every command shown as ``detoxrl <sub>`` or ``detox-<name>`` is a real sub-command (``orchestration/cli.py``) or
  console script (``pyproject.toml``), and ``feedback`` / ``data`` sub-commands name a real one of theirs;
* README.md is at most 300 lines and links every docs/*.md page and docs/experiments/README.md;
* every dated write-up is a page ``docs/experiments/YYYY-MM-DD-<topic>.md`` that opens with its title and the line
  ``Date: YYYY-MM-DD. Commit: <short hash>.`` (its file's date), and docs/experiments/README.md links each one;
* no table row holding a figure is stated twice across the pages (a figure lives in one place).

Hand-written with regular expressions rather than a markdown library: the project has no markdown dependency,
and the checks need only link targets, headings, code spans and table rows.
"""

from __future__ import annotations

import glob
import os
import re
from collections import defaultdict

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
EXPERIMENTS = os.path.join(ROOT, "docs", "experiments")
EXPERIMENTS_INDEX = os.path.join(EXPERIMENTS, "README.md")
MAX_README_LINES = 300

FENCE = re.compile(r"^\s*(```|~~~).*?^\s*\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`(?:[^`\n]|\n(?![ \t]*\n))+`")  # may wrap onto the next line, not past a blank one
COMMENT = re.compile(r"<!--.*?-->", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$", re.M)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
DETOXRL_CMD = re.compile(r"(?<![\w/.-])detoxrl[ \t]+([a-z][a-z0-9-]*)(?:[ \t]+([a-z][a-z0-9|\\-]*))?")
ALIAS_CMD = re.compile(r"(?<![\w/.-])detox-([a-z][a-z0-9-]*)(?:[ \t]+([a-z][a-z0-9|\\-]*))?")
FIGURE = re.compile(r"\d\.\d|\d%")
EXPERIMENT_NAME = re.compile(r"^(\d{4}-\d{2}-\d{2})-[a-z0-9]+(?:-[a-z0-9]+)*\.md$")
EXPERIMENT_HEAD = re.compile(r"\A# \S[^\n]*\n\nDate: (\d{4}-\d{2}-\d{2})\. Commit: ([0-9a-f]{7,40})\.\n")


def pages() -> list[str]:
    """README.md and every docs/*.md page."""
    return [README] + sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))


def experiment_pages() -> list[str]:
    """The dated write-ups, docs/experiments/YYYY-MM-DD-<topic>.md (not their README.md index)."""
    return sorted(p for p in glob.glob(os.path.join(EXPERIMENTS, "*.md")) if p != EXPERIMENTS_INDEX)


def all_pages() -> list[str]:
    """Every page whose links, commands and figures are checked: README.md, docs/*.md and docs/experiments/*.md."""
    return pages() + sorted(glob.glob(os.path.join(EXPERIMENTS, "*.md")))


def read(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def rel(path: str) -> str:
    return os.path.relpath(path, ROOT)


def prose(text: str) -> str:
    """``text`` without fenced code blocks, inline code spans and HTML comments (none of them render links)."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    text = COMMENT.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return INLINE_CODE.sub("", text)


def code(text: str) -> str:
    """The code of ``text``: fenced blocks and inline code spans, one per line."""
    blocks = [m.group(0) for m in FENCE.finditer(text)]
    rest = FENCE.sub("", text)
    return "\n".join(blocks + [m.group(0).strip("`") for m in INLINE_CODE.finditer(rest)])


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: link text kept, lower case, punctuation dropped, spaces to hyphens."""
    heading = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """Every heading anchor of a markdown page (repeated headings get -1, -2, ... as on GitHub)."""
    seen: dict[str, int] = defaultdict(int)
    out = set()
    for heading in HEADING.findall(prose_keep_code_spans(text)):
        base = slug(heading)
        out.add(base if seen[base] == 0 else f"{base}-{seen[base]}")
        seen[base] += 1
    return out


def prose_keep_code_spans(text: str) -> str:
    """``text`` without fenced blocks and comments (headings may hold inline code, which the anchor keeps)."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return COMMENT.sub("", text)


def link_targets(text: str) -> list[str]:
    """Every link target of the rendered page (inline links, images and reference definitions)."""
    body = prose(text)
    return LINK.findall(body) + REF_DEF.findall(body)


def broken_links(page: str, text: str | None = None) -> list[str]:
    """The relative links of ``page`` that do not resolve, each with the reason."""
    text = read(page) if text is None else text
    problems = []
    for target in link_targets(text):
        if SCHEME.match(target):
            continue  # http(s), mailto: not checked offline
        path, _, anchor = target.partition("#")
        if not path:  # a heading of this page
            if anchor not in anchors(text):
                problems.append(f"{target}: no heading '#{anchor}' in {rel(page)}")
            continue
        resolved = os.path.normpath(os.path.join(os.path.dirname(page), path))
        if os.path.commonpath([resolved, ROOT]) != ROOT:
            problems.append(f"{target}: leaves the repository")
        elif not os.path.exists(resolved):
            problems.append(f"{target}: no such file {rel(resolved)}")
        elif anchor and resolved.endswith(".md") and anchor not in anchors(read(resolved)):
            problems.append(f"{target}: no heading '#{anchor}' in {rel(resolved)}")
    return problems


def real_commands() -> tuple[set[str], set[str], dict[str, set[str]]]:
    """(``detoxrl`` sub-commands, console scripts, {sub-command: its own sub-commands})."""
    import detoxrl.data.cli
    import feedback.cli
    from orchestration.cli import COMMANDS

    scripts: set[str] = set()
    section = None
    for line in read(os.path.join(ROOT, "pyproject.toml")).splitlines():
        header = re.match(r"^\[(.+)\]\s*$", line)
        if header:
            section = header.group(1)
        elif section == "project.scripts":
            key = re.match(r"^\s*([A-Za-z0-9_.-]+)\s*=", line)
            if key:
                scripts.add(key.group(1))
    nested = {"feedback": set(feedback.cli.COMMANDS), "data": set(detoxrl.data.cli.COMMANDS)}
    return set(COMMANDS), scripts, nested


def unknown_commands(text: str, subs: set[str], scripts: set[str], nested: dict[str, set[str]]) -> list[str]:
    """Commands shown in the code of ``text`` that do not exist."""
    from orchestration.cli import ALIASES

    problems = []
    shown = code(text)
    for sub, arg in DETOXRL_CMD.findall(shown):
        if sub not in subs:
            problems.append(f"detoxrl {sub}: no such sub-command")
        elif sub in nested and arg:
            problems += [f"detoxrl {sub} {a}: no such command" for a in re.split(r"\\?\|", arg) if a
                         and a not in nested[sub]]
    for name, arg in ALIAS_CMD.findall(shown):
        script = f"detox-{name}"
        if script not in scripts:
            problems.append(f"{script}: no such console script")
        elif ALIASES.get(script) in nested and arg:
            sub = ALIASES[script]
            problems += [f"{script} {a}: no such command" for a in re.split(r"\\?\|", arg) if a
                         and a not in nested[sub]]
    return problems


def experiment_head_problems(page: str, text: str | None = None) -> list[str]:
    """What is wrong with a dated write-up's file name and opening (title, blank line, ``Date: ... Commit: ...``)."""
    text = read(page) if text is None else text
    name = EXPERIMENT_NAME.match(os.path.basename(page))
    if not name:
        return [f"{rel(page)}: not named YYYY-MM-DD-<topic>.md"]
    head = EXPERIMENT_HEAD.match(text)
    if not head:
        return [f"{rel(page)}: does not open with '# <title>', a blank line and 'Date: YYYY-MM-DD. Commit: <hash>.'"]
    if head.group(1) != name.group(1):
        return [f"{rel(page)}: Date {head.group(1)} is not the date of its file name"]
    return []


def figure_rows(text: str) -> list[str]:
    """Table rows (outside code) that hold a figure, whitespace normalised."""
    rows = []
    for line in prose_keep_code_spans(text).splitlines():
        line = " ".join(line.split())
        if line.startswith("|") and not re.fullmatch(r"[|:\- ]+", line) and FIGURE.search(line):
            rows.append(line)
    return rows


# ------------------------------------------------------------------------------------------------ the docs


@pytest.mark.parametrize("page", all_pages(), ids=rel)
def test_relative_links_resolve(page):
    assert broken_links(page) == []


@pytest.mark.parametrize("page", all_pages(), ids=rel)
def test_commands_shown_are_real(page):
    subs, scripts, nested = real_commands()
    assert unknown_commands(read(page), subs, scripts, nested) == []


def test_readme_is_short():
    n = len(read(README).splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines (at most {MAX_README_LINES}): move details to docs/"


def linked_from(page: str) -> set[str]:
    """The files ``page`` links to (relative links, anchors dropped), as absolute paths."""
    return {os.path.normpath(os.path.join(os.path.dirname(page), t.partition("#")[0]))
            for t in link_targets(read(page)) if not SCHEME.match(t)}


def test_readme_links_every_docs_page():
    linked = linked_from(README)
    missing = [rel(p) for p in pages()[1:] + [EXPERIMENTS_INDEX] if p not in linked]
    assert missing == [], f"docs pages not linked from README.md: {missing}"


def test_experiment_pages_are_dated_and_indexed():
    assert experiment_pages(), "no dated write-ups in docs/experiments/"
    assert [problem for page in experiment_pages() for problem in experiment_head_problems(page)] == []
    linked = linked_from(EXPERIMENTS_INDEX)
    missing = [rel(p) for p in experiment_pages() if p not in linked]
    assert missing == [], f"write-ups not listed in docs/experiments/README.md: {missing}"


def test_no_table_row_with_a_figure_is_stated_twice():
    where = defaultdict(list)
    for page in all_pages():
        for row in figure_rows(read(page)):
            where[row].append(rel(page))
    repeated = {row: places for row, places in where.items() if len(places) > 1}
    assert repeated == {}


# ------------------------------------------------------------------------------------------------ the checker


def test_checker_finds_broken_links_and_ignores_code_and_urls():
    page = os.path.join(ROOT, "docs", "made-up.md")  # resolved like a docs page; never written
    text = "\n".join([
        "# Title", "## A `code` heading: and more!", "",
        "[ok](rl.md) [ok anchor](rl.md#speed) [self](#a-code-heading-and-more) ![img](ablation-reward-pareto.png)",
        "[bad file](nothere.md) [bad anchor](rl.md#no-such-heading) [bad self](#title-2) [out](../../x.md)",
        "[web](https://example.org/x.md) `[in code](missing.md)` <!-- [comment](gone.md) -->",
        "```", "[fenced](also-missing.md)", "```",
        "[ref]: missing-ref.md",
    ])
    assert broken_links(page, text) == [
        "nothere.md: no such file docs/nothere.md",
        "rl.md#no-such-heading: no heading '#no-such-heading' in docs/rl.md",
        "#title-2: no heading '#title-2' in docs/made-up.md",
        "../../x.md: leaves the repository",
        "missing-ref.md: no such file docs/missing-ref.md",
    ]


def test_checker_finds_unknown_commands():
    subs, scripts, nested = {"sft", "feedback"}, {"detox-sft", "detox-feedback"}, {"feedback": {"serve", "add"}}
    text = "\n".join([
        "```bash", "detoxrl sft --config x.yaml", "detoxrl sftt --config x.yaml", "detoxrl feedback serve",
        "detoxrl feedback serv", "detox-feedback add", "detox-sftt", "from evaluation.infer import Detoxifier", "```",
        "Prose: detoxrl rewrites text (not code, not a command). `detoxrl feedback serve\\|add\\|lst`",
        "`detoxrl-toxicity-minilm` `detoxrl <sub>` `detoxrl --help` `detoxrl sft --config",
        "x.yaml` (a code span wrapped onto the next line) then `detoxrl sfx`",
    ])
    assert unknown_commands(text, subs, scripts, nested) == [
        "detoxrl sftt: no such sub-command", "detoxrl feedback serv: no such command",
        "detoxrl feedback lst: no such command", "detoxrl sfx: no such sub-command", "detox-sftt: no such console script",
    ]


def test_checker_finds_badly_opened_experiment_pages():
    page = os.path.join(EXPERIMENTS, "2026-12-02-some-topic.md")  # never written
    good = "# A title\n\nDate: 2026-12-02. Commit: ab35244.\n\nText.\n"
    assert experiment_head_problems(page, good) == []
    assert experiment_head_problems(page, good.replace("2026-12-02.", "2026-12-01.")) == [
        "docs/experiments/2026-12-02-some-topic.md: Date 2026-12-01 is not the date of its file name"]
    assert experiment_head_problems(page, "# A title\n\nText.\n") == [
        "docs/experiments/2026-12-02-some-topic.md: does not open with '# <title>', a blank line and "
        "'Date: YYYY-MM-DD. Commit: <hash>.'"]
    assert experiment_head_problems(os.path.join(EXPERIMENTS, "notes.md"), good) == [
        "docs/experiments/notes.md: not named YYYY-MM-DD-<topic>.md"]


def test_slug_follows_github():
    assert slug("Which loss: measured with the reward's own judges") == "which-loss-measured-with-the-rewards-own-judges"
    assert slug("Reward ablation: `detoxrl ablate`") == "reward-ablation-detoxrl-ablate"
    assert slug("What `finetuning: auto` picks, and why") == "what-finetuning-auto-picks-and-why"
    assert slug("See [the table](x.md)") == "see-the-table"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n## B\n") == {"a", "a-1", "b"}
