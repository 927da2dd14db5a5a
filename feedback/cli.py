"""``detox-feedback``: collect reviewer feedback on rewrites and train the next model version on it.

    detox-feedback serve  --model outputs/sft/default                  # the review page, http://127.0.0.1:8765/
    detox-feedback serve  --model outputs/rl/default --best_of 8 --temperature 0.7   # best-of-n rewrites
    detox-feedback add    --input "you idiot" --output "you are wrong" --verdict accept --model outputs/sft/default
    detox-feedback add    --file records.jsonl --model_version sft@1a2b  # many at once (one transaction)
    detox-feedback list   [--verdict reject] [--limit 20] [--format jsonl]
    detox-feedback export --output pairs.jsonl --what pairs              # records | pairs | verdicts
    detox-feedback train  --config configs/feedback/default.yaml

Every command takes ``--store PATH`` (default ``outputs/feedback/feedback.db``), ``--config file.yaml``
with its own fields, and ``--help``. Errors are one line on stderr, exit code 2.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass, field
from typing import Literal

from detoxrl.config import DetoxParser, prog_name, run_cli
from detoxrl.data import Pair, write_instruction_json
from detoxrl.errors import ConfigError, UserError
from detoxrl.io import atomic_write_text
from detoxrl.log import setup_logging
from detoxrl.validate import ENCODING_HELP, check_output_file, read_lines
from feedback.store import FeedbackStore, RecordError, check_text, validate
from feedback.train import FeedbackTrainConfig, feedback_data
from feedback.versions import model_version

DEFAULT_STORE = "outputs/feedback/feedback.db"
USAGE = ("usage: detox-feedback {serve,add,list,export,train} [--config FILE.yaml] [flags]   "
         "(detox-feedback COMMAND --help for its flags)")


@dataclass
class ServeArgs:
    """Options of ``detox-feedback serve``."""

    store: str = field(default=DEFAULT_STORE, metadata={"help": "The feedback store (created if missing)."})
    model: str = field(default="outputs/sft/default",
                       metadata={"help": "The model whose rewrites are reviewed: a run folder, merged/ folder or "
                                 "hub id."})
    host: str = field(default="127.0.0.1", metadata={"help": "Address to bind; anything but loopback needs --token."})
    port: int = field(default=8765, metadata={"help": "Port (0: any free port)."})
    token: str | None = field(
        default=None, metadata={"help": "Require this token on every API call ('auto': a random one, printed in the "
                                "URL). Unset: $DETOX_FEEDBACK_TOKEN, else none (loopback only)."})
    max_chars: int = field(default=2000, metadata={"help": "Longest text a reviewer may submit, in characters."})
    max_body_bytes: int = field(default=16384, metadata={"help": "Largest request body accepted, in bytes."})
    device: str = field(default="auto", metadata={"help": "Device of the model: auto | cpu | cuda[:N]."})
    max_new_tokens: int | None = field(default=None, metadata={"help": "Longest rewrite (default: the model card's)."})
    best_of: int | None = field(
        default=None, metadata={"help": "Best-of-n: sample N rewrites per text and show the one the reward of "
                                "rerank_config scores highest (default: the model card's, i.e. greedy)."})
    temperature: float | None = field(default=None, metadata={"help": "Sampling temperature (default: the card's)."})
    top_p: float | None = field(default=None, metadata={"help": "Nucleus sampling mass (default: the card's)."})
    rerank_config: str | None = field(
        default=None, metadata={"help": "best_of > 1: the reward config that picks the rewrite (unset: the reward the "
                                "model's run was trained with, else configs/rewards/default.yaml)."})

    def __post_init__(self):
        from detoxrl.validate import check_generation

        # checked here, before the store is opened and the model loads (a bad port used to fail after loading)
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be in 0..65535 (got {self.port}); 0 picks a free port")
        if self.max_chars < 1:
            raise ConfigError(f"--max_chars must be >= 1 (got {self.max_chars})")
        if self.max_body_bytes < 64:
            raise ConfigError(f"--max_body_bytes must be >= 64 (got {self.max_body_bytes})")
        check_generation({"max_new_tokens": self.max_new_tokens, "best_of": self.best_of,
                          "temperature": self.temperature, "top_p": self.top_p})


@dataclass
class AddArgs:
    """Options of ``detox-feedback add``: one record from flags, or many from ``--file``."""

    store: str = field(default=DEFAULT_STORE, metadata={"help": "The feedback store (created if missing)."})
    input: str | None = field(default=None, metadata={"help": "The text the model rewrote."})
    output: str | None = field(
        default=None, metadata={"help": "The model's rewrite. Unset: --model rewrites --input now."})
    verdict: Literal["accept", "reject"] | None = field(
        default=None, metadata={"help": "accept | reject (a --correction implies reject)."})
    correction: str | None = field(default=None, metadata={"help": "The rewrite it should have been (optional)."})
    model_version: str | None = field(
        default=None, metadata={"help": "Version of the model that wrote the output (default: from --model)."})
    model: str | None = field(
        default=None, metadata={"help": "The model that wrote the output: gives the version, and the output when "
                                "--output is unset."})
    file: str | None = field(
        default=None, metadata={"help": "A JSONL file of records (input, output, verdict, correction?, "
                                "model_version?), added in one transaction."})
    encoding_errors: Literal["strict", "replace"] = field(default="strict", metadata={"help": "--file: " + ENCODING_HELP})


@dataclass
class ListArgs:
    """Options of ``detox-feedback list``."""

    store: str = field(default=DEFAULT_STORE, metadata={"help": "The feedback store."})
    verdict: Literal["accept", "reject"] | None = field(default=None, metadata={"help": "Only this verdict."})
    model_version: list[str] = field(default_factory=list, metadata={"help": "Only records of these versions."})
    limit: int = field(default=20, metadata={"help": "Newest N records (0: all)."})
    format: Literal["table", "jsonl"] = field(default="table", metadata={"help": "table | jsonl."})


@dataclass
class ExportArgs:
    """Options of ``detox-feedback export``."""

    store: str = field(default=DEFAULT_STORE, metadata={"help": "The feedback store."})
    output: str | None = field(default=None, metadata={"help": "File to write (required)."})
    what: Literal["records", "pairs", "verdicts", "preference"] = field(
        default="records",
        metadata={"help": "records: every record (.jsonl, exact, or .csv, where a cell starting with = + - @ gets a "
                  "leading ' against spreadsheet formula injection); pairs: corrections and accepted rewrites as "
                  "instruction JSON(L), what detox-sft reads; verdicts: (input, output, label) JSONL; preference: "
                  "(prompt, chosen, rejected) JSONL in TRL's preference format (feedback/preference.py)."})
    model_version: list[str] = field(default_factory=list, metadata={"help": "Only records of these versions."})


# ----------------------------------------------------------------------------------- commands


def _detoxifier(model: str, device: str = "auto", max_new_tokens: int | None = None, **decoding):
    try:
        from evaluation.infer import Detoxifier
    except ImportError as exc:  # pragma: no cover - the inference module ships with detoxrl
        raise UserError(f"evaluation.infer is not available ({exc}); reinstall detoxrl") from None
    return Detoxifier.from_pretrained(model, device=None if device == "auto" else device,
                                      max_new_tokens=max_new_tokens, **decoding)


def _rewriter(model: str, device: str = "auto", max_new_tokens: int | None = None):
    det = _detoxifier(model, device, max_new_tokens)
    return lambda texts: det(list(texts))


def serve(args: ServeArgs) -> None:
    from feedback.server import ReviewApp, bind, check_token, is_loopback, resolve_token

    token = resolve_token(args.token)
    if not is_loopback(args.host) and token is None:  # fail before loading the model
        raise UserError(f"binding {args.host} exposes the review page to the network; set a token (--token auto, "
                        "--token VALUE or $DETOX_FEEDBACK_TOKEN), or bind 127.0.0.1")
    check_token(token)
    # the cheap things that can fail come first: the port (nothing made yet), the store, then the model
    server = bind(args.host, args.port, token)
    try:
        store = FeedbackStore(args.store)
        version = model_version(args.model)
        det = _detoxifier(args.model, args.device, args.max_new_tokens, best_of=args.best_of,
                          temperature=args.temperature, top_p=args.top_p, rerank_config=args.rerank_config)
        server.app = ReviewApp(store, lambda texts: det(list(texts)), version, token=token, max_chars=args.max_chars,
                               max_body_bytes=args.max_body_bytes, decoding=det.decoding())
        print(f"review page for model {version}: {server.url()}\nstore: {store.path} "
              f"({store.count()['records']} records)\nCtrl+C stops the server.", flush=True)
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _version_of(args: AddArgs) -> str:
    if args.model_version:
        return args.model_version
    if args.model:
        return model_version(args.model)
    raise UserError(f"{prog_name('detox-feedback add')}: "
                    f"say which model wrote the output: --model PATH (its version is read from "
                    "it) or --model_version VERSION")


class _KeyTwice(Exception):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list) -> dict:
    """``object_pairs_hook`` that refuses a key given twice (``json`` keeps the last one silently)."""
    seen: dict = {}
    for key, value in pairs:
        if key in seen:
            raise _KeyTwice(key)
        seen[key] = value
    return seen


def _read_jsonl(path: str, errors: str = "strict") -> list[tuple[int, dict]]:
    """``(line number, object)`` per non-empty line; a line that is not one JSON object is a ``UserError``."""
    where = f"--file '{path}'"
    rows = []
    for n, line in enumerate(read_lines(path, where, errors), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, object_pairs_hook=_unique_keys)
        except _KeyTwice as exc:
            raise UserError(f"{where}: line {n}: key '{exc.key}' is given twice; keep one") from None
        except json.JSONDecodeError as exc:
            raise UserError(f"{where}: line {n}: malformed JSON ({exc.msg} at column {exc.colno})") from None
        except RecursionError:
            raise UserError(f"{where}: line {n}: malformed JSON (nested too deeply); a record is one flat object "
                            "of input, output, verdict, correction?, model_version?, created_at?") from None
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            raise UserError(f"{where}: line {n}: malformed JSON ({str(exc).split(';')[0]})") from None
        if not isinstance(row, dict):
            raise UserError(f"{where}: line {n}: expected a JSON object with input, output, verdict")
        rows.append((n, row))
    return rows


def _file_records(args: AddArgs) -> list[dict]:
    """Every record of ``--file``, checked (types, values, created_at) before anything is stored."""
    where = f"--file '{args.file}'"
    default_version = args.model_version or (model_version(args.model) if args.model else None)
    records = []
    for n, row in _read_jsonl(args.file, args.encoding_errors):
        unknown = set(row) - {"input", "output", "verdict", "correction", "model_version", "created_at"}
        if unknown:
            raise UserError(f"{where}: line {n}: unknown field(s) {', '.join(sorted(unknown))}; a record has input, "
                            "output, verdict, correction?, model_version?, created_at?")
        version = default_version if row.get("model_version") is None else row["model_version"]
        if version is None:
            raise UserError(f"{where}: line {n}: no model_version; add it to the record or pass --model_version")
        correction, verdict = row.get("correction"), row.get("verdict")
        if verdict is None and isinstance(correction, str) and correction.strip():
            verdict = "reject"  # a correction implies reject
        try:
            values = validate(row.get("input"), row.get("output"), verdict, version, correction,
                              row.get("created_at"))
        except RecordError as exc:
            raise UserError(f"{where}: line {n}: {exc.detail}; nothing was added") from None
        records.append(dict(zip(("created_at", "model_version", "input", "output", "verdict", "correction"), values)))
    return records


def add(args: AddArgs) -> None:
    if args.file:
        if args.input or args.output:
            raise UserError(f"{prog_name('detox-feedback add')}: give either --file or --input/--output, not both")
        records = _file_records(args)
        store = FeedbackStore(args.store)  # only once the file is read: a bad file leaves no store behind
        try:
            added = store.add_many(records)
        except UserError as exc:
            raise UserError(f"{args.file}: {exc}; nothing was added") from None
        print(f"added {len(added)} records (ids {added[0].id}-{added[-1].id}) to {store.path}" if added else
              f"{args.file} holds no records")
        return
    if not args.input:
        raise UserError(f"{prog_name('detox-feedback add')}: --input TEXT is required (or --file records.jsonl)")
    verdict = args.verdict or ("reject" if args.correction else None)
    if verdict is None:
        raise UserError(f"{prog_name('detox-feedback add')}: "
                        f"--verdict accept|reject is required (or give a --correction)")
    version = _version_of(args)
    try:  # checked before the store is opened (and before the model rewrites)
        validate(args.input, "-" if args.output is None else args.output, verdict, version,
                 None if args.output is None else args.correction)
        check_text("correction", args.correction, required=False)
    except RecordError as exc:
        raise UserError(f"{prog_name('detox-feedback add')}: {exc.detail}") from None
    store = FeedbackStore(args.store)
    output = args.output
    if output is None:
        if not args.model:
            raise UserError(f"{prog_name('detox-feedback add')}: "
                            f"--output is required unless --model is given to rewrite --input")
        output = _rewriter(args.model)([args.input])[0]
        print(f"rewrite: {output}")
    record = store.add(args.input, output, verdict, version, correction=args.correction)
    print(f"added record {record.id} ({record.verdict}{', corrected' if record.correction else ''}, model "
          f"{record.model_version}) to {store.path}")


def _short(text: str | None, width: int) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def list_records(args: ListArgs) -> None:
    store = FeedbackStore(args.store, create=False)
    records = store.records(verdict=args.verdict, model_versions=args.model_version or None,
                            limit=args.limit or None, newest_first=True)
    if args.format == "jsonl":
        for r in records:
            print(json.dumps(r.as_dict(), ensure_ascii=False))
        return
    counts = store.count()
    print(f"{store.path}: {counts['records']} records ({counts['accept']} accepted, {counts['reject']} rejected, "
          f"{counts['corrections']} with a correction); newest {len(records)}:")
    print(f"{'id':>5}  {'time':19}  {'model':18}  {'verdict':7}  {'input':30}  {'output':30}  correction")
    for r in records:
        print(f"{r.id:>5}  {r.created_at[:19]:19}  {_short(r.model_version, 18):18}  {r.verdict:7}  "
              f"{_short(r.input, 30):30}  {_short(r.output, 30):30}  {_short(r.correction, 30)}")
    trainings = store.trainings()
    if trainings:
        last = trainings[-1]
        print(f"last training: {last.parent_version} -> {last.new_version} on {len(last.record_ids)} records "
              f"({last.created_at[:19]}, {last.output_dir})")


FORMULA_LEAD = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(cell: str) -> str:
    """A cell a spreadsheet will not run as a formula (OWASP "CSV injection"): one that starts with
    ``= + - @``, a tab or a carriage return gets a leading ``'``. Lossy by nature: JSONL export is exact."""
    return "'" + cell if cell.startswith(FORMULA_LEAD) else cell


def export(args: ExportArgs) -> None:
    if not args.output:
        raise UserError(f"{prog_name('detox-feedback export')}: --output PATH is required")
    check_output_file(args.output, "--output")
    store = FeedbackStore(args.store, create=False)
    records = store.records(model_versions=args.model_version or None)
    path, lower = args.output, args.output.lower()
    if args.what == "pairs":
        pairs = feedback_data(records).pairs
        write_instruction_json([Pair(p.source, p.target) for p in pairs], path)
        print(f"wrote {len(pairs)} SFT pairs (corrections and accepted rewrites) from {len(records)} records to {path}")
        return
    if args.what == "preference":
        if not lower.endswith(".jsonl"):
            raise UserError(f"--output '{path}': preference pairs are written as .jsonl")
        from feedback.preference import export_rows, preference_pairs

        prefs = preference_pairs(records)
        if not prefs.pairs:
            raise UserError(f"store '{args.store}' has no preference pairs in its {len(records)} records (a rejected "
                            "rewrite with a correction, or an accepted and a rejected rewrite of the same input)")
        atomic_write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in export_rows(prefs)))
        c = prefs.counts()
        print(f"wrote {len(prefs.pairs)} preference pairs ({c['from_corrections']} from corrections, "
              f"{c['across_records']} across records) from {len(records)} records to {path}")
        return
    if args.what == "verdicts":
        if not lower.endswith(".jsonl"):
            raise UserError(f"--output '{path}': verdicts are written as .jsonl")
        rows = feedback_data(records).verdicts
        atomic_write_text(path, "".join(json.dumps({"input": i, "output": o, "label": bool(y)}, ensure_ascii=False)
                                        + "\n" for i, o, y in rows))
        print(f"wrote {len(rows)} verdicts from {len(records)} records to {path}")
        return
    if lower.endswith(".jsonl"):
        text = "".join(json.dumps(r.as_dict(), ensure_ascii=False) + "\n" for r in records)
    elif lower.endswith(".csv"):
        buf = io.StringIO()
        writer = csv.writer(buf, quoting=csv.QUOTE_ALL)
        writer.writerow(["id", "created_at", "model_version", "input", "output", "verdict", "correction"])
        escaped = 0
        for r in records:  # every column: a store written before created_at was checked may hold any text there
            cells = [str(r.id), r.created_at, r.model_version, r.input, r.output, r.verdict, r.correction or ""]
            safe = [csv_safe(c) for c in cells]
            escaped += sum(a != b for a, b in zip(cells, safe))
            writer.writerow(safe)
        text = buf.getvalue()
        if escaped:
            print(f"{escaped} cells start with = + - @ or a tab and got a leading ' so spreadsheets show them as text; "
                  "the CSV is not exact there: export to .jsonl for the exact texts", file=sys.stderr)
    else:
        raise UserError(f"--output '{path}': records are written as .jsonl or .csv")
    atomic_write_text(path, text)
    print(f"wrote {len(records)} records to {path}")


def train(cfg: FeedbackTrainConfig) -> None:
    from feedback.train import run

    summary = run(cfg)
    if "version" in summary:
        print(f"new model version {summary['version']} in {cfg.output_dir} ({' + '.join(summary['steps'])}, "
              f"{summary['minutes']:.1f} min); review it with: detox-feedback serve --model {cfg.output_dir}")
    else:
        print(f"feedback reward model in {summary['reward_model']['path']}; use it in PPO with --w_feedback 1 "
              f"--feedback_model {summary['reward_model']['path']}")


COMMANDS = {"serve": (ServeArgs, serve), "add": (AddArgs, add), "list": (ListArgs, list_records),
            "export": (ExportArgs, export), "train": (FeedbackTrainConfig, train)}


def _main(args: list[str] | None) -> None:
    args = list(sys.argv[1:] if args is None else args)
    if not args or args[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\n" + USAGE.replace("detox-feedback", prog_name("detox-feedback")))
        return
    command = args.pop(0)
    if command not in COMMANDS:
        raise UserError(f"{prog_name('detox-feedback')}: "
                        f"unknown command '{command}'; use serve, add, list, export or train")
    options_type, handler = COMMANDS[command]
    setup_logging()
    (options,) = DetoxParser([options_type], prog=f"detox-feedback {command}").parse(args)
    handler(options)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``detox-feedback``; returns the exit code (2 with one line on stderr for user errors)."""
    return run_cli(_main, args)


if __name__ == "__main__":
    sys.exit(main())
