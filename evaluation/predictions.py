"""Reading a predictions file for ``detox-eval`` (a system whose outputs were produced elsewhere).

Formats, by extension:

* ``.txt``: one output per line, in test-set order; the line count must equal the number of test
  sentences (an empty line is an empty output).
* ``.tsv`` / ``.csv`` (with a header) and ``.jsonl`` (one object per line): a source column
  (``source``, ``input``, ``inputs`` or ``toxic``) and an output column (``output``, ``prediction``,
  ``outputs`` or ``neutral``). Rows are matched to test sentences by source text, exactly or else by
  the core's ``norm_key``; every test sentence needs a row (extra rows are ignored).
"""

from __future__ import annotations

import csv
import json
import os

from detoxrl.data import norm_key
from detoxrl.data.loaders import tsv_quoting
from detoxrl.errors import UserError
from detoxrl.validate import json_kind, read_lines

SOURCE_KEYS = ("source", "input", "inputs", "toxic")
OUTPUT_KEYS = ("output", "prediction", "outputs", "neutral")


def _rows(path: str, errors: str = "strict") -> list[tuple[int, dict]]:
    """``(line, row)`` pairs; a JSON value that is not an object fails here, the cells' types in ``_check``."""
    lower = path.lower()
    lines = read_lines(path, f"predictions file '{path}'", errors, keepends=True)
    if lower.endswith(".jsonl"):
        rows = []
        for i, line in enumerate(lines, 1):
            if line.strip():
                try:
                    rows.append((i, json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise UserError(f"{path}:{i}: malformed JSON line ({exc.msg})") from None
                if not isinstance(rows[-1][1], dict):
                    raise UserError(f"{path}:{i}: expected a JSON object with source and output keys")
        return rows
    tsv = not lower.endswith(".csv")
    width = len(lines[0].split("\t")) if tsv and lines else 0
    quoting = tsv_quoting(lines, width) if tsv else csv.QUOTE_MINIMAL  # a source may start with a bare quote
    try:
        reader = csv.DictReader(lines, delimiter="\t" if tsv else ",", quoting=quoting)
        return [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        raise UserError(f"predictions file '{path}': cannot parse it as CSV/TSV ({exc})") from None


def _check(rows: list[tuple[int, dict]], skey: str, okey: str, path: str) -> None:
    """Every row has its source and output as text: a missing, null or non-text output would be scored as some
    other rewrite (empty, or the number's digits) without a word."""
    for line, row in rows:
        for key in (skey, okey):
            value = row.get(key)
            if isinstance(value, str):
                continue
            what = f"no '{key}'" if key not in row else f"'{key}' is {json_kind(value)}"
            raise UserError(f"{path}:{line}: {what}; every row needs its {key} as text (\"\" for an empty "
                            "rewrite)")


def _pick(keys, row: dict, path: str, what: str) -> str:
    for k in keys:
        if k in row:
            return k
    raise UserError(f"predictions file '{path}': no {what} column; name it one of {', '.join(keys)} "
                    f"(found: {', '.join(map(str, row)) or 'none'})")


def check_predictions(path: str, errors: str = "strict") -> None:
    """What can be checked of a predictions file before the test set loads: it decodes, and (tables, JSONL) it
    parses and every row has its source and output as text."""
    if not path.lower().endswith((".tsv", ".csv", ".jsonl")):
        read_lines(path, f"predictions file '{path}'", errors)
        return
    rows = _rows(path, errors)
    if rows:
        _check(rows, _pick(SOURCE_KEYS, rows[0][1], path, "source"), _pick(OUTPUT_KEYS, rows[0][1], path, "output"),
               path)


def read_predictions(path: str, sources: list[str], errors: str = "strict") -> list[str]:
    """The outputs for ``sources`` from ``path`` (see the module docstring); ``errors`` as ``detoxrl.validate``."""
    if not os.path.isfile(path):
        raise UserError(f"predictions file '{path}' not found")
    if path.lower().endswith(".txt"):
        lines = read_lines(path, f"predictions file '{path}'", errors)
        if len(lines) != len(sources):
            raise UserError(f"predictions file '{path}' has {len(lines)} lines but the test set has {len(sources)} "
                            "sentences; a .txt file needs one output per test sentence, in order (or use a .tsv "
                            "with source and output columns)")
        return lines
    if not path.lower().endswith((".tsv", ".csv", ".jsonl")):
        raise UserError(f"predictions file '{path}': unknown extension; use .txt, .tsv, .csv or .jsonl")
    rows = _rows(path, errors)
    if not rows:
        raise UserError(f"predictions file '{path}' has no rows")
    skey, okey = _pick(SOURCE_KEYS, rows[0][1], path, "source"), _pick(OUTPUT_KEYS, rows[0][1], path, "output")
    _check(rows, skey, okey, path)
    exact = {r[skey].strip(): r[okey] for _, r in rows}
    loose = {norm_key(k): v for k, v in exact.items()}
    outputs, missing = [], []
    for s in sources:
        if s.strip() in exact:
            outputs.append(exact[s.strip()])
        elif norm_key(s) in loose:
            outputs.append(loose[norm_key(s)])
        else:
            missing.append(s)
    if missing:
        raise UserError(f"predictions file '{path}' has no output for {len(missing)} of {len(sources)} test "
                        f"sentences (first: {missing[0][:80]!r}); produce it on the same test set")
    return outputs
