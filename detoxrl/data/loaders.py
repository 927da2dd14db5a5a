"""Readers that turn each supported source (files in several layouts, Hub datasets) into ``Pair``s.

Every reader returns raw pairs (cleaning is ``clean.py``'s job). A missing file, a missing column,
a malformed JSON line or a file without any usable row is a ``UserError`` naming the file; a single
bad row (wrong number of cells, empty text) is logged as a warning naming ``file:line`` and skipped.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from detoxrl.data.clean import norm_key
from detoxrl.data.config import DataConfig
from detoxrl.validate import json_kind, locate_decode_error
from detoxrl.errors import UserError
from detoxrl.hub import hub_reachable, offline_env
from detoxrl.io import atomic_write_text
from detoxrl.paths import candidate_paths, resolve_path
from detoxrl.prompts import DEFAULT_INSTRUCTION

log = logging.getLogger("detoxrl.data")

MAX_ROW_WARNINGS = 10
LOCAL_EXAMPLE = "../shared/data/paradetox/paradetox.tsv"

Row = tuple[str, dict]  # (origin "file:line", {column: value})
PIN_SPLITS = ("", "train", "dev")


@dataclass(frozen=True)
class Pair:
    """One (toxic source, neutral target) example.

    ``group`` keeps paraphrases of one source together in the dev split (default: ``norm_key(source)``);
    ``origin`` is where the pair came from (``file:line``), for messages. ``split`` pins the pair to
    ``train`` or ``dev`` (instruction JSON's optional ``split`` field); empty: the grouped split decides.
    """

    source: str
    target: str
    lang: str = "en"
    group: str = ""
    origin: str = ""
    split: str = ""

    def __post_init__(self) -> None:
        if not self.group:
            object.__setattr__(self, "group", norm_key(self.source))
        if self.split not in PIN_SPLITS:
            raise ValueError(f"Pair.split must be one of {PIN_SPLITS} (got {self.split!r})")


class _Skips:
    """Log skipped rows: the first ``MAX_ROW_WARNINGS`` one by one, then a count."""

    def __init__(self, where: str):
        self.where, self.count = where, 0

    def skip(self, origin: str, reason: str) -> None:
        self.count += 1
        if self.count <= MAX_ROW_WARNINGS:
            log.warning("%s: %s; row skipped", origin, reason)

    def finish(self, pairs: list[Pair], rows: int) -> list[Pair]:
        if self.count > MAX_ROW_WARNINGS:
            log.warning("%s: %d bad rows skipped in all (first %d shown)", self.where, self.count, MAX_ROW_WARNINGS)
        if not pairs:
            seen = f"{rows} read, {self.count} skipped" + (": see the warnings above" if self.count else "")
            raise UserError(f"{self.where}: no usable rows ({seen}); check the file's layout and dataset_format")
        return pairs


def _text(value) -> str:
    return value.strip() if isinstance(value, str) else ""


def _require(columns: Iterable[str], needed: Iterable[str], where: str, layout: str) -> None:
    columns = list(columns)
    for name in needed:
        if name not in columns:
            found = ", ".join(repr(c) for c in columns) or "none"
            raise UserError(f"{where}: missing column '{name}' ({layout}); columns found: {found}")


# ---------------------------------------------------------------- tables (TSV / CSV)


def _open_text(path: str):
    try:
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise UserError(f"cannot read dataset file '{path}': {exc.strerror}") from None


def read_header(path: str) -> list[str]:
    """The header cells of a TSV (or ``.csv``) file."""
    with _open_text(path) as fh:
        try:
            return next(csv.reader(fh, delimiter=_delimiter(path)), [])
        except UnicodeDecodeError:  # the reader decodes ahead: the bad byte may sit on any line
            raise UserError(locate_decode_error(path)) from None
        except csv.Error as exc:
            raise UserError(f"{path}:1: cannot parse the header ({exc}); is it a UTF-8 TSV/CSV file?") from None


def _delimiter(path: str) -> str:
    return "," if path.lower().endswith(".csv") else "\t"


_QUOTED_CELL = re.compile(r'^"(?:[^"]|"")*"$')


def tsv_quoting(lines: Iterable[str], width: int) -> int:
    """``csv.QUOTE_NONE`` for TSV ``lines`` that use no CSV quoting (every line holds ``width`` cells and no cell is
    wrapped in quotes), so a text that merely starts with ``"`` stays one row; else ``csv.QUOTE_MINIMAL`` (quoted
    cells may hold tabs, newlines and doubled quotes, as in ParaDetox's files)."""
    for line in lines:
        cells = line.rstrip("\r\n").split("\t")
        if line.strip() and (len(cells) != width or any(_QUOTED_CELL.match(c) for c in cells)):
            return csv.QUOTE_MINIMAL
    return csv.QUOTE_NONE


def _quoting(path: str, width: int) -> int:
    """``tsv_quoting`` of a dataset file (CSV files keep CSV quoting)."""
    if _delimiter(path) != "\t":
        return csv.QUOTE_MINIMAL
    with _open_text(path) as fh:
        try:
            return tsv_quoting(fh, width)
        except UnicodeDecodeError:
            return csv.QUOTE_MINIMAL  # reported with its line by the reader


def _read_table(path: str, skips: _Skips) -> tuple[list[str], Iterator[Row]]:
    """Header and rows (with CSV quoting where the file uses it, ``_quoting``: quoted cells may hold newlines and
    tabs)."""
    header = read_header(path)
    quoting = _quoting(path, len(header))

    def rows() -> Iterator[Row]:
        with _open_text(path) as fh:
            reader = csv.reader(fh, delimiter=_delimiter(path), quoting=quoting)
            line = 1
            try:
                next(reader, None)
                line = reader.line_num + 1
                for cells in reader:
                    origin, line = f"{path}:{line}", reader.line_num + 1
                    if cells and len(cells) != len(header):
                        skips.skip(origin, f"{len(cells)} cells, the header has {len(header)}")
                    elif cells:
                        yield origin, dict(zip(header, cells))
            except csv.Error as exc:
                raise UserError(f"{path}:{line}: cannot parse the row ({exc}); is a quote left open?") from None
            except UnicodeDecodeError:
                raise UserError(locate_decode_error(path)) from None

    return header, rows()


# ---------------------------------------------------------------- layouts (rows -> pairs)


def _wide_layout(columns: Iterable[str]) -> tuple[str, list[str]] | None:
    """ParaDetox ``toxic, neutral1..3`` or RuParaDetox ``toxic_comment, neutral_comment1..3``."""
    columns = list(columns)
    for source, prefix in (("toxic", "neutral"), ("toxic_comment", "neutral_comment")):
        targets = [c for c in columns if re.fullmatch(rf"{prefix}\d+", c)]
        if source in columns and targets:
            return source, targets
    return None


def _wide_pairs(rows: Iterable[Row], source: str, targets: list[str], lang: str, skips: _Skips) -> list[Pair]:
    pairs, n = [], 0
    for origin, row in rows:
        n += 1
        toxic = _text(row.get(source))
        neutrals = [t for t in (_text(row.get(c)) for c in targets) if t]
        if not toxic:
            skips.skip(origin, f"empty '{source}' cell")
        elif not neutrals:
            skips.skip(origin, f"no neutral paraphrase in {', '.join(targets)}")
        else:
            group = norm_key(toxic)
            pairs += [Pair(toxic, neutral, lang, group, origin) for neutral in neutrals]
    return skips.finish(pairs, n)


def _long_pairs(
    rows: Iterable[Row], source: str, target: str, lang: str | None, skips: _Skips, lang_column: bool
) -> list[Pair]:
    """One pair per row; with a ``lang`` column, rows are tagged by it and filtered by ``lang``."""
    pairs, n, other_lang, seen_langs = [], 0, 0, set()
    for origin, row in rows:
        n += 1
        row_lang = _text(row.get("lang")) if lang_column else (lang or "en")
        seen_langs.add(row_lang)
        if lang_column and lang and row_lang != lang:
            other_lang += 1
            continue
        toxic, neutral = _text(row.get(source)), _text(row.get(target))
        if not toxic or not neutral:
            skips.skip(origin, f"empty '{source if not toxic else target}' cell")
        else:
            pairs.append(Pair(toxic, neutral, row_lang or lang or "en", origin=origin))
    if not pairs and other_lang:
        found = ", ".join(sorted(seen_langs))
        raise UserError(f"{skips.where}: no rows with lang '{lang}'; languages found: {found} (set lang to one "
                        "of them, or unset it)")
    return skips.finish(pairs, n)


def _paranmt_pairs(rows: Iterable[Row], toxic_threshold: float, neutral_threshold: float, lang: str,
                   skips: _Skips) -> list[Pair]:
    """Orient each row toxic -> neutral by its two scores, then keep clearly toxic -> clearly neutral pairs."""
    pairs, n, too_mild, too_toxic = [], 0, 0, 0
    for origin, row in rows:
        n += 1
        try:
            ref_tox, trn_tox = float(row["ref_tox"]), float(row["trn_tox"])
        except (TypeError, ValueError):
            ref_tox = trn_tox = float("nan")
        if not (0 <= ref_tox <= 1 and 0 <= trn_tox <= 1):  # also false for NaN
            skips.skip(origin, f"ref_tox/trn_tox are not scores in [0, 1] ({row['ref_tox']!r}, {row['trn_tox']!r})")
            continue
        ref, trn = _text(row.get("reference")), _text(row.get("translation"))
        if not ref or not trn:
            skips.skip(origin, "empty 'reference' or 'translation' cell")
            continue
        (toxic, tox), (neutral, neu) = sorted([(ref, ref_tox), (trn, trn_tox)], key=lambda x: -x[1])
        if tox <= toxic_threshold:
            too_mild += 1
        elif neu >= neutral_threshold:
            too_toxic += 1
        else:
            pairs.append(Pair(toxic, neutral, lang, origin=origin))
    log.info("%s: kept %d of %d rows (%d with toxic side <= toxic_threshold %s, %d with neutral side >= "
             "neutral_threshold %s)", skips.where, len(pairs), n, too_mild, toxic_threshold, too_toxic,
             neutral_threshold)
    if not pairs and (too_mild or too_toxic):
        raise UserError(f"{skips.where}: no row passed the ParaNMT filters ({too_mild} rows <= toxic_threshold "
                        f"{toxic_threshold}, {too_toxic} >= neutral_threshold {neutral_threshold}); loosen them")
    return skips.finish(pairs, n)


PARANMT_COLUMNS = ("reference", "translation", "ref_tox", "trn_tox")
MULTILINGUAL_COLUMNS = ("toxic_sentence", "neutral_sentence")


# ---------------------------------------------------------------- file readers


def read_paradetox(path: str, lang: str | None = None) -> list[Pair]:
    """ParaDetox TSV (``toxic, neutral1..3``) or RuParaDetox (``toxic_comment, neutral_comment1..3``): one
    pair per non-empty neutral slot. Tagged ``lang``, else ``en`` (``ru`` for the RuParaDetox layout)."""
    skips = _Skips(path)
    header, rows = _read_table(path, skips)
    layout = _wide_layout(header)
    if layout is None:  # name what is missing, for the layout the header is closest to
        need = ["toxic_comment", "neutral_comment1"] if "toxic_comment" in header else ["toxic", "neutral1"]
        _require(header, need, path, "ParaDetox layout: toxic, neutral1..3 or toxic_comment, neutral_comment1..3")
    source, targets = layout or ("", [])
    return _wide_pairs(rows, source, targets, lang or ("ru" if source == "toxic_comment" else "en"), skips)


def read_paranmt(path: str, toxic_threshold: float = 0.9, neutral_threshold: float = 0.2,
                 lang: str | None = None) -> list[Pair]:
    """ParaNMT-detox ``filtered.tsv``: reference, translation, ref_tox, trn_tox (other columns ignored)."""
    skips = _Skips(path)
    header, rows = _read_table(path, skips)
    _require(header, PARANMT_COLUMNS, path, "ParaNMT layout: reference, translation, similarity, lenght_diff, "
             "ref_tox, trn_tox")
    return _paranmt_pairs(rows, toxic_threshold, neutral_threshold, lang or "en", skips)


def read_multilingual(path: str, lang: str | None = None) -> list[Pair]:
    """Multilingual ParaDetox TSV (``lang, toxic_sentence, neutral_sentence, source``), filtered by ``lang``."""
    skips = _Skips(path)
    header, rows = _read_table(path, skips)
    _require(header, MULTILINGUAL_COLUMNS, path, "multilingual layout: lang, toxic_sentence, neutral_sentence")
    return _long_pairs(rows, *MULTILINGUAL_COLUMNS, lang, skips, lang_column="lang" in header)


# ---------------------------------------------------------------- instruction JSON / JSONL


def _json_records(path: str) -> Iterator[Row]:
    with _open_text(path) as fh:
        if path.lower().endswith(".jsonl"):
            for i, line in enumerate(fh, 1):
                if line.strip():
                    try:
                        yield f"{path}:{i}", json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise UserError(f"{path}:{i}: malformed JSON line ({exc.msg} at column {exc.colno}); "
                                        "fix or delete that line") from None
            return
        try:
            data = json.load(fh)
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}:{exc.lineno}: malformed JSON ({exc.msg} at column {exc.colno})") from None
    if isinstance(data, dict) and isinstance(data.get("inputs"), list):  # parallel lists
        _require(data, ("inputs", "outputs"), path, "instruction JSON: instructions, inputs, outputs")
        for key in ("instructions", "outputs"):
            if key in data and not isinstance(data[key], list):
                raise UserError(f"{path}: 'inputs' is a list but '{key}' is {json_kind(data[key])}; with parallel "
                                "lists every key holds a list of the same length")
        if len(data["inputs"]) != len(data["outputs"]):
            raise UserError(f"{path}: 'inputs' has {len(data['inputs'])} items but 'outputs' has "
                            f"{len(data['outputs'])}; they must be parallel lists")
        data = [{k: v[i] for k, v in data.items() if isinstance(v, list) and i < len(v)}
                for i in range(len(data["inputs"]))]
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a list of records or a mapping of parallel lists "
                        "(keys instructions, inputs, outputs)")
    yield from ((f"{path}[{i}]", rec) for i, rec in enumerate(data))


def read_instruction_json(path: str, lang: str | None = None) -> list[Pair]:
    """Records with ``inputs`` (toxic) and ``outputs`` (neutral); ``instructions``, ``lang`` and ``split`` are optional.

    ``.jsonl``: one record per line. ``.json``: a list of records, or ``{"instructions": [...],
    "inputs": [...], "outputs": [...]}``. ``split`` (``train`` or ``dev``) pins a record to that split
    instead of letting the grouped split choose (see ``detoxrl/data/split.py``).
    """
    skips, pairs, n = _Skips(path), [], 0
    for origin, record in _json_records(path):
        n += 1
        if not isinstance(record, dict):
            raise UserError(f"{origin}: expected a JSON object with keys instructions, inputs, outputs")
        _require(record, ("inputs", "outputs"), origin, "instruction JSON: instructions, inputs, outputs")
        source, target = _text(record["inputs"]), _text(record["outputs"])
        if not source or not target:
            skips.skip(origin, f"empty or non-text '{'inputs' if not source else 'outputs'}'")
            continue
        split = record.get("split")
        if split is not None and not isinstance(split, str):
            raise UserError(f"{origin}: 'split' is {json.dumps(split)} ({json_kind(split)}); use \"train\" or \"dev\" "
                            "(or leave it out)")
        split = _text(split)
        if split not in PIN_SPLITS:
            raise UserError(f"{origin}: 'split' is '{split}'; use train or dev (or leave it out)")
        pairs.append(Pair(source, target, _text(record.get("lang")) or lang or "en", origin=origin, split=split))
    return skips.finish(pairs, n)


def write_instruction_json(pairs: Iterable[Pair], path: str, instruction: str = DEFAULT_INSTRUCTION) -> str:
    """Write ``{"instructions", "inputs", "outputs"}`` records atomically: ``.jsonl`` one per line, ``.json`` a list.

    A pair pinned to a split (``Pair.split``) also gets a ``split`` field, which the reader honours.
    """
    records = [{"instructions": instruction, "inputs": p.source, "outputs": p.target,
                **({"split": p.split} if p.split else {})} for p in pairs]
    lower = path.lower()
    if lower.endswith(".jsonl"):
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    elif lower.endswith(".json"):
        text = json.dumps(records, ensure_ascii=False, indent=1) + "\n"
    else:
        raise UserError(f"output '{path}': unknown extension; use .jsonl (one record per line) or .json (a list)")
    atomic_write_text(path, text)
    return path


# ---------------------------------------------------------------- Hugging Face Hub


def load_hub(dataset_id: str, split: str = "train", *, source_column: str | None = None,
             target_column: str | None = None, lang: str | None = None, toxic_threshold: float = 0.9,
             neutral_threshold: float = 0.2, tried: list[str] | None = None) -> list[Pair]:
    """A Hub dataset through ``datasets.load_dataset``; columns given, or detected from the known layouts."""
    try:
        import datasets

        if not hub_reachable():
            raise ConnectionError("the hub is unreachable or HF_HUB_OFFLINE=1")
        ds = datasets.load_dataset(dataset_id, split=split)
    except Exception as exc:  # any failure here (offline, unknown id, bad split) is the user's to fix
        where = f"no local file exists at {', '.join(tried)}; " if tried else ""
        reason = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        online = "go online and unset HF_HUB_OFFLINE" if offline_env() else "check the id and go online"
        raise UserError(
            f"dataset '{dataset_id}': tried the Hugging Face Hub (split '{split}') and it failed ({reason}); "
            f"{where}point dataset at a local copy (e.g. {LOCAL_EXAMPLE}) or {online}"
        ) from None
    where = f"{dataset_id}[{split}]"
    columns = list(ds.column_names)
    rows = ((f"{where}:{i + 1}", row) for i, row in enumerate(ds))
    skips = _Skips(where)
    if source_column and target_column:
        _require(columns, (source_column, target_column), where, "source_column / target_column")
        return _long_pairs(rows, source_column, target_column, lang, skips, lang_column="lang" in columns)
    if wide := _wide_layout(columns):
        return _wide_pairs(rows, *wide, lang or ("ru" if wide[0] == "toxic_comment" else "en"), skips)
    if all(c in columns for c in PARANMT_COLUMNS):
        return _paranmt_pairs(rows, toxic_threshold, neutral_threshold, lang or "en", skips)
    for source, target in (("en_toxic_comment", "en_neutral_comment"), MULTILINGUAL_COLUMNS, ("inputs", "outputs"),
                           ("toxic", "neutral")):
        if source in columns and target in columns:
            return _long_pairs(rows, source, target, lang, skips, lang_column="lang" in columns)
    raise UserError(f"{where}: cannot tell which columns hold the toxic and neutral text (columns: "
                    f"{', '.join(columns)}); set source_column and target_column")


# ---------------------------------------------------------------- dispatch

_FILE_EXTENSIONS = (".tsv", ".csv", ".json", ".jsonl", ".txt", ".parquet")


def _looks_like_hub_id(value: str) -> bool:
    return bool(re.fullmatch(r"[\w.-]+(/[\w.-]+)?", value)) and not value.lower().endswith(_FILE_EXTENSIONS) \
        and not value.startswith(".")


def detect_format(path: str) -> str:
    """``instruction`` for .json/.jsonl, else ``paradetox``/``paranmt``/``multilingual`` by the header."""
    if path.lower().endswith((".json", ".jsonl")):
        return "instruction"
    header = read_header(path)
    if _wide_layout(header):
        return "paradetox"
    if all(c in header for c in PARANMT_COLUMNS):
        return "paranmt"
    if all(c in header for c in MULTILINGUAL_COLUMNS):
        return "multilingual"
    raise UserError(f"{path}: cannot tell the dataset format from its columns ({', '.join(header) or 'none'}); "
                    "set dataset_format to paradetox, paranmt, multilingual or instruction")


def load_raw_pairs(cfg: DataConfig) -> tuple[list[Pair], str, str]:
    """Raw pairs for a ``DataConfig``, with the path or Hub id actually used and the format read."""
    fmt, value = cfg.dataset_format, cfg.dataset
    hub_args = dict(source_column=cfg.source_column, target_column=cfg.target_column, lang=cfg.lang,
                    toxic_threshold=cfg.toxic_threshold, neutral_threshold=cfg.neutral_threshold)
    if fmt == "hub":
        return load_hub(value, cfg.dataset_split, **hub_args), value, "hub"
    path, tried = resolve_path(value), candidate_paths(value)
    if path is None:
        if fmt == "auto" and _looks_like_hub_id(value):
            return load_hub(value, cfg.dataset_split, **hub_args, tried=tried), value, "hub"
        raise UserError(f"dataset file '{value}' not found (tried {', '.join(tried)}); fix the path in `dataset`, "
                        "or set DETOXRL_DATA_DIR to your copy of the shared data folder")
    if os.path.isdir(path):
        raise UserError(f"dataset '{path}' is a folder; point dataset at a file inside it")
    if fmt == "auto":
        fmt = detect_format(path)
    log.debug("reading %s as %s", path, fmt)
    if fmt == "paradetox":
        pairs = read_paradetox(path, cfg.lang)
    elif fmt == "paranmt":
        pairs = read_paranmt(path, cfg.toxic_threshold, cfg.neutral_threshold, cfg.lang)
    elif fmt == "multilingual":
        pairs = read_multilingual(path, cfg.lang)
    else:
        pairs = read_instruction_json(path, cfg.lang)
    return pairs, path, fmt

