"""The feedback store: one SQLite file of reviewer verdicts on model rewrites.

Each record is ``id, created_at, model_version, input, output, verdict, correction``:

* ``verdict`` is ``accept`` (the rewrite is good as it is) or ``reject``;
* ``correction`` is the reviewer's own rewrite (optional, and only with ``reject``: a correction
  rejects the model's output and gives the text it should have been; it must differ from it);
* ``model_version`` is the version of the model that produced ``output``
  (``feedback.versions.model_version``), so training knows what each record was collected on;
* ``created_at`` is an ISO 8601 timestamp in UTC (``2025-11-25T17:30:00.123Z``): a given one is
  checked (``datetime.fromisoformat``) and rewritten in UTC; texts must be Unicode (no lone surrogate).

``validate`` checks a record's types and values before any write (``RecordError`` names the field).

A second table, ``trainings``, lists the model versions ``detox-feedback train`` made and which
records went into each.

Durability and concurrency:

* WAL journal mode with ``synchronous=FULL``: readers never block the writer, and a committed
  record survives a crash of the process or the machine;
* every write is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``): a process killed in the
  middle of ``add`` or ``add_many`` leaves either all of its records or none, never a part;
* several processes may write at once: ``BEGIN IMMEDIATE`` takes the write lock up front and waits
  up to ``timeout`` seconds for it (SQLite's busy handler), so writers queue instead of failing;
* a connection per operation, so one ``FeedbackStore`` is safe to share between threads (the
  review page's server threads).

Opening checks the file: not an SQLite database, a damaged one (``PRAGMA quick_check``), or an
SQLite database that is not a feedback store are one-line ``UserError``s that say what to do.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

from detoxrl.errors import UserError

SCHEMA_VERSION = 1
APP_ID = "detoxrl-feedback"
VERDICTS = ("accept", "reject")
SQLITE_HEADER = b"SQLite format 3\x00"
MAX_TEXT_CHARS = 20_000  # the review page bounds its own input far lower; this guards the CLI and the API

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    model_version TEXT NOT NULL,
    input TEXT NOT NULL,
    output TEXT NOT NULL,
    verdict TEXT NOT NULL CHECK (verdict IN ('accept', 'reject')),
    correction TEXT
);
CREATE INDEX IF NOT EXISTS records_version ON records (model_version);
CREATE TABLE IF NOT EXISTS trainings (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    parent_version TEXT NOT NULL,
    new_version TEXT NOT NULL,
    output_dir TEXT NOT NULL,
    record_ids TEXT NOT NULL,
    summary TEXT NOT NULL
);
"""


def utc_now() -> str:
    """The current UTC time as ISO 8601 with milliseconds, e.g. ``2025-11-25T17:30:00.123Z``."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class FeedbackRecord:
    """One reviewer verdict on one rewrite."""

    id: int
    created_at: str
    model_version: str
    input: str
    output: str
    verdict: str
    correction: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Training:
    """One ``detox-feedback train`` run as the store recorded it."""

    id: int
    created_at: str
    parent_version: str
    new_version: str
    output_dir: str
    record_ids: list[int]
    summary: dict


class RecordError(UserError):
    """A record that cannot be stored; ``detail`` names the field (``feedback record: `` + detail is the message)."""

    def __init__(self, detail: str):
        super().__init__(f"feedback record: {detail}")
        self.detail = detail


def describe(value) -> str:
    """A JSON value as an error message names it: ``NaN``, ``the number 5``, ``a list``, ``null``..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value != value:
        return "NaN"
    if isinstance(value, (int, float)):
        return f"the number {str(value)[:30]}"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def lone_surrogate(text: str) -> tuple[int, str] | None:
    """``(1-based character, '\\udXXX')`` of the first lone surrogate in ``text`` (not Unicode text: SQLite and UTF-8
    refuse it), or None. A JSON ``"\\ud800"`` escape without its pair, or a non-UTF-8 byte in a command-line
    argument, gives one."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start + 1, f"\\u{ord(text[exc.start]):04x}"
    return None


def check_text(name: str, value, *, required: bool = True) -> str | None:
    """``value`` stripped: text that is Unicode (no lone surrogate), not empty unless ``required`` is False (then
    None), at most ``MAX_TEXT_CHARS``; a ``RecordError`` naming ``name`` otherwise."""
    if value is None:
        if required:
            raise RecordError(f"'{name}' is missing")
        return None
    if not isinstance(value, str):
        raise RecordError(f"'{name}' must be text (got {describe(value)})")
    bad = lone_surrogate(value)
    if bad:
        raise RecordError(f"'{name}' holds a lone surrogate {bad[1]} at character {bad[0]}, which is not valid "
                          "Unicode; fix the text (a JSON \\ud800-\\udfff escape needs its pair)")
    value = value.strip()
    if not value:
        if required:
            raise RecordError(f"'{name}' is empty")
        return None
    if len(value) > MAX_TEXT_CHARS:
        raise RecordError(f"'{name}' is {len(value)} characters; the limit is {MAX_TEXT_CHARS}")
    return value


def clean_time(value) -> str:
    """``created_at`` as stored: an ISO 8601 timestamp (what ``datetime.fromisoformat`` reads; no zone means UTC),
    rewritten in UTC like ``utc_now`` (``2025-11-25T17:30:00.123Z``); None is now."""
    if value is None:
        return utc_now()
    example = '"2025-11-25T17:30:00Z"'
    if not isinstance(value, str):
        raise RecordError(f"'created_at' must be an ISO 8601 timestamp in a string such as {example} "
                          f"(got {describe(value)})")
    shown = value if len(value) <= 40 else value[:39] + "…"
    try:
        when = _dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise RecordError(f"'created_at' '{shown}' is not an ISO 8601 timestamp; write it like {example} (UTC) "
                          "or with an offset, e.g. 2025-11-25T18:30:00+01:00") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=_dt.timezone.utc)
    try:
        when = when.astimezone(_dt.timezone.utc)
    except OverflowError:
        raise RecordError(f"'created_at' '{shown}' is out of range in UTC (years 1 to 9999)") from None
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def validate(input: str, output: str, verdict: str, model_version: str, correction: str | None = None,
             created_at: str | None = None) -> tuple:
    """The checked, stripped values of one record (``RecordError`` naming the bad field); ``created_at``
    (default: now) is checked as ISO 8601 and stored in UTC."""
    input_, output_ = check_text("input", input), check_text("output", output)
    correction_ = check_text("correction", correction, required=False)
    if verdict is None:
        raise RecordError(f"'verdict' is missing; give {' or '.join(VERDICTS)} (a correction implies reject)")
    if not isinstance(verdict, str):
        raise RecordError(f"'verdict' must be {' or '.join(VERDICTS)} (got {describe(verdict)})")
    if verdict not in VERDICTS:
        raise RecordError(f"verdict '{verdict[:40]}' is not one of {', '.join(VERDICTS)}")
    values = (clean_time(created_at), check_text("model_version", model_version), input_, output_, verdict,
              correction_)
    if correction_ is not None and verdict != "reject":
        raise RecordError("a correction goes with verdict 'reject' (the output needed changing)")
    if correction_ is not None and correction_ == output_:
        raise RecordError("the correction is the same as the output; record an accept instead")
    return values


class FeedbackStore:
    """The SQLite feedback store at ``path`` (see the module docstring).

    ``create=False`` refuses a missing file (for commands that only read, and for training), so a
    typo in ``--store`` is an error rather than a new empty store.
    """

    def __init__(self, path: str, *, create: bool = True, timeout: float = 30.0):
        self.path = os.path.abspath(os.path.expanduser(path))
        self.timeout = timeout
        exists = os.path.exists(self.path)
        if not exists and not create:
            raise UserError(f"feedback store '{path}' does not exist; collect feedback first (detox-feedback serve "
                            "or detox-feedback add), or fix --store")
        if exists and os.path.isdir(self.path):
            raise UserError(f"feedback store '{path}' is a folder; --store takes a file path, e.g. feedback.db")
        if exists and not os.path.isfile(self.path):  # a FIFO would block the header read forever
            raise UserError(f"feedback store '{path}' is not a regular file (a pipe, socket or device); point "
                            "--store at a feedback store or a new file")
        if exists:
            self._check_header()
        else:
            self._make_folder(path)
        try:
            with self._connect() as conn:
                if not (exists and self._check_integrity(conn)):
                    conn.execute("PRAGMA journal_mode=WAL")  # persistent: stored in the file
                    self._init_schema(conn)
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from None

    # ------------------------------------------------------------------------------ opening

    def _corrupt(self, exc: Exception) -> UserError:
        return UserError(
            f"feedback store '{self.path}' is damaged ({exc}); move it aside and restore a backup, or start a new "
            f"store with another --store path (records can be salvaged with: sqlite3 {self.path} .recover)")

    def _make_folder(self, path: str) -> None:
        """The store's folder, made if missing; a part of the path that is a file, or a folder that cannot be
        made (no permission, a read-only or virtual file system), is a one-line ``UserError``."""
        folder = os.path.dirname(self.path)
        head = folder
        while head and not os.path.lexists(head):  # the deepest part of the path that exists
            head = os.path.dirname(head) if os.path.dirname(head) != head else ""
        if head and not os.path.isdir(head):
            what = "a broken symbolic link" if not os.path.exists(head) else "a file, not a folder"
            raise UserError(f"feedback store '{path}': '{head}' is {what}; fix --store")
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise UserError(f"feedback store '{path}': cannot create its folder '{folder}' "
                            f"({exc.strerror or exc}); fix --store, or create the folder first") from None

    def _check_header(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                head = fh.read(len(SQLITE_HEADER))
        except OSError as exc:
            raise UserError(f"feedback store '{self.path}' cannot be read ({exc.strerror or exc}); fix its "
                            "permissions or --store") from None
        if head and head != SQLITE_HEADER:
            raise UserError(f"feedback store '{self.path}' is not an SQLite database (its first bytes are not "
                            "'SQLite format 3'): the file is corrupted or is some other file; point --store at a "
                            "feedback store, or move this file aside to start a new one")

    def _check_integrity(self, conn: sqlite3.Connection) -> bool:
        """True for a healthy feedback store; False for an empty database; ``UserError`` otherwise."""
        rows = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
        if rows != ["ok"]:
            problems = "; ".join(rows[:3]) + (f"; and {len(rows) - 3} more" if len(rows) > 3 else "")
            raise self._corrupt(Exception(f"integrity check failed: {problems}"))
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            return False  # an empty database file: the schema is created next
        app = None
        if "meta" in tables:
            row = conn.execute("SELECT value FROM meta WHERE key='app'").fetchone()
            app = row[0] if row else None
        if app != APP_ID:
            raise UserError(f"'{self.path}' is an SQLite database but not a detoxrl feedback store (tables: "
                            f"{', '.join(sorted(tables))}); point --store at a feedback store or a new file")
        version = int(conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise UserError(f"feedback store '{self.path}' has schema version {version}, newer than this detoxrl "
                            f"({SCHEMA_VERSION}); upgrade detoxrl")
        return True

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        with self._transaction(conn):
            for statement in SCHEMA.strip().split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('app', ?)", (APP_ID,))
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('created_at', ?)", (utc_now(),))

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """A fresh connection in autocommit mode (transactions are explicit), closed afterwards."""
        try:
            conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        except sqlite3.Error as exc:
            raise UserError(f"feedback store '{self.path}' cannot be opened: {exc}") from None
        try:
            conn.execute(f"PRAGMA busy_timeout={int(self.timeout * 1000)}")
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            yield conn
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc)):
                raise UserError(f"feedback store '{self.path}' stayed locked by another writer for {self.timeout:g} "
                                "s; try again") from None
            if isinstance(exc, (sqlite3.IntegrityError, sqlite3.ProgrammingError)):
                raise
            raise self._corrupt(exc) from None
        finally:
            conn.close()

    @staticmethod
    @contextlib.contextmanager
    def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; ``ROLLBACK`` on any exception (all or nothing)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # ------------------------------------------------------------------------------ writing

    def add(self, input: str, output: str, verdict: str, model_version: str, correction: str | None = None,
            created_at: str | None = None) -> FeedbackRecord:
        """Store one record (one transaction); returns it with its id."""
        return self.add_many([dict(input=input, output=output, verdict=verdict, model_version=model_version,
                                   correction=correction, created_at=created_at)])[0]

    def add_many(self, records: Iterable[dict]) -> list[FeedbackRecord]:
        """Store several records in ONE transaction: all of them or, on any error or crash, none."""
        rows = [validate(**r) for r in records]
        out: list[FeedbackRecord] = []
        with self._connect() as conn, self._transaction(conn):
            for row in rows:
                cur = conn.execute("INSERT INTO records (created_at, model_version, input, output, verdict, correction)"
                                   " VALUES (?, ?, ?, ?, ?, ?)", row)
                out.append(FeedbackRecord(cur.lastrowid, *row))
        return out

    def record_training(self, parent_version: str, new_version: str, output_dir: str, record_ids: list[int],
                        summary: dict) -> int:
        """Note that ``new_version`` was trained from ``parent_version`` on ``record_ids``; returns its id."""
        with self._connect() as conn, self._transaction(conn):
            cur = conn.execute(
                "INSERT INTO trainings (created_at, parent_version, new_version, output_dir, record_ids, summary) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (utc_now(), parent_version, new_version, output_dir, json.dumps(sorted(record_ids)),
                 json.dumps(summary, ensure_ascii=False, default=str)))
            return int(cur.lastrowid)

    # ------------------------------------------------------------------------------ reading

    def records(self, *, verdict: str | None = None, model_versions: Iterable[str] | None = None,
                limit: int | None = None, newest_first: bool = False) -> list[FeedbackRecord]:
        """Records, oldest first (or newest first), optionally of one verdict and some model versions."""
        where, params = [], []
        if verdict is not None:
            if verdict not in VERDICTS:
                raise UserError(f"verdict '{verdict}' is not one of {', '.join(VERDICTS)}")
            where.append("verdict = ?")
            params.append(verdict)
        versions = [v for v in (model_versions or []) if v]
        if versions:
            where.append(f"model_version IN ({', '.join('?' * len(versions))})")
            params += versions
        sql = "SELECT id, created_at, model_version, input, output, verdict, correction FROM records"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC" if newest_first else " ORDER BY id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with self._connect() as conn:
            return [FeedbackRecord(*row) for row in conn.execute(sql, params)]

    def get(self, record_id: int) -> FeedbackRecord | None:
        with self._connect() as conn:
            row = conn.execute("SELECT id, created_at, model_version, input, output, verdict, correction FROM records "
                               "WHERE id = ?", (record_id,)).fetchone()
        return FeedbackRecord(*row) if row else None

    def count(self) -> dict[str, int]:
        """``{"records", "accept", "reject", "corrections"}``."""
        with self._connect() as conn:
            total, accept, corrections = conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(verdict = 'accept'), 0), COALESCE(SUM(correction IS NOT NULL), 0) "
                "FROM records").fetchone()
        return {"records": total, "accept": accept, "reject": total - accept, "corrections": corrections}

    def used_record_ids(self) -> set[int]:
        """The ids of the records some ``feedback train`` run has trained on."""
        return {i for t in self.trainings() for i in t.record_ids}

    def trainings(self) -> list[Training]:
        with self._connect() as conn:
            rows = conn.execute("SELECT id, created_at, parent_version, new_version, output_dir, record_ids, summary "
                                "FROM trainings ORDER BY id").fetchall()
        return [Training(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), json.loads(r[6])) for r in rows]

    def __repr__(self) -> str:
        return f"<FeedbackStore {self.path}>"
