"""Bad inputs of ``detoxrl feedback``, one table in the shape of ``tests/test_bad_inputs.py``: records files
for ``add --file``, ``--store`` paths that cannot be made, ``serve`` flags refused before the model loads,
and requests the review page must answer with a 4xx and a JSON error instead of a 500 and a traceback.

CLI rows run ``feedback.cli.main(argv)`` in-process (``proc:`` rows as a subprocess) and end with exit
code 2, one ``error: `` line naming the file, line and field, no traceback and no store left behind.
``http`` rows talk to a served review page (fake model) over a raw socket, since they send what
``http.client`` will not (a stalled body, a non-ASCII Content-Length, a hang-up); they check the status,
the JSON ``error``, that nothing was stored, and that neither the log nor stderr holds a traceback.
"""

from __future__ import annotations

import csv
import http.client
import json
import logging
import os
import socket
import sqlite3
import struct
import sys
import threading
import time

import pytest

from feedback import cli as feedback_cli
from tests.test_bad_inputs import NOPE, Case, fill, make_stores, run_proc
from tests.test_bad_inputs import paths  # noqa: F401 - the fixture every row's paths come from

MAINS = {"detox-feedback": feedback_cli.main}

GOOD = '{"input": "you idiot", "output": "you are wrong", "verdict": "accept"}'


def _with(extra: str) -> str:
    """GOOD plus one more field, written as raw JSON text (NaN and escapes stay as given)."""
    return GOOD[:-1] + ", " + extra + "}"


# Records files: line 1 is a good record (so "nothing stored" shows all-or-nothing), the bad one follows.
RECORD_FILES = {
    "no_output": [GOOD, '{"input": "shut up", "verdict": "reject"}'],
    "created_list": [GOOD, _with('"created_at": [2025, 11, 25]')],
    "created_nan": [GOOD, _with('"created_at": NaN')],
    "correction_nan": [GOOD, '{"input": "shut up", "output": "no", "correction": NaN}'],
    "input_surrogate": [GOOD, '{"input": "you \\ud800 idiot", "output": "you", "verdict": "accept"}'],
    "correction_surrogate": [GOOD, '{"input": "shut up", "output": "no", "correction": "please \\udfff stop"}'],
    "created_not_a_date": [GOOD, _with('"created_at": "not a date"')],
    "created_number": [GOOD, _with('"created_at": 5')],
    "created_formula": [GOOD, _with('"created_at": "=HYPERLINK(\\"http://x\\")"')],
    "created_out_of_range": [GOOD, _with('"created_at": "0001-01-01T00:00:00+01:00"')],
    "huge_integer": [GOOD, '{"input": 1' + "0" * 5000 + ', "output": "x", "verdict": "accept"}'],
    "deep_nesting": [GOOD, "[" * 15000],
    "duplicate_key": [GOOD, '{"input": "a", "input": "b", "output": "c", "verdict": "accept"}'],
    "created_times": ['{"input": "a", "output": "b", "verdict": "accept", "created_at": "2025-11-25T17:30:00+01:00"}',
                      '{"input": "c", "output": "d", "verdict": "accept", "created_at": "2025-11-25T17:30:00"}',
                      '{"input": "e", "output": "f", "verdict": "accept", "created_at": "2025-11-25T17:30:00.123Z"}'],
}


def _add_file(name: str, **kw) -> Case:
    return Case("detox-feedback", ["add", "--store", "{tmp}/fb.db", "--file", "{%s}" % name, "--model_version", "m@1"],
                absent=["{tmp}/fb.db"], **kw)


def _add_one(store: str, *extra: str, **kw) -> Case:
    return Case("detox-feedback", ["add", "--store", store, "--input", "you idiot", "--output", "you are wrong",
                                   "--verdict", "accept", "--model_version", "m@1", *extra], **kw)


def _serve(*extra: str, **kw) -> Case:
    return Case("detox-feedback", ["serve", "--store", "{tmp}/fb.db", "--model", NOPE, *extra],
                absent=["{tmp}/fb.db"], **kw)


FB_CASES = {
    # ---- add --file: each record checked up front, the error names file, line and field; nothing stored
    "add-file-record-without-output": _add_file("no_output", err="--file '{no_output}': line 2: 'output' is missing"),
    "add-file-created-at-a-list": _add_file("created_list", err="--file '{created_list}': line 2: 'created_at' must be "
                                                                "an ISO 8601 timestamp"),
    "add-file-created-at-nan": _add_file("created_nan", err="line 2: 'created_at' must be an ISO 8601 timestamp "
                                                            "in a string such as \"2025-11-25T17:30:00Z\" (got NaN)"),
    "add-file-correction-nan": _add_file("correction_nan", err="--file '{correction_nan}': line 2: 'correction' must "
                                                               "be text (got NaN)"),
    "add-file-input-lone-surrogate": _add_file("input_surrogate", err="--file '{input_surrogate}': line 2: 'input' "
                                                                      "holds a lone surrogate \\ud800 at character 5"),
    "add-file-correction-lone-surrogate": _add_file("correction_surrogate", err="line 2: 'correction' holds a lone "
                                                                                "surrogate \\udfff"),
    "add-file-created-at-not-a-date": _add_file("created_not_a_date", err="line 2: 'created_at' 'not a date' is not "
                                                                          "an ISO 8601 timestamp"),
    "add-file-created-at-a-number": _add_file("created_number", err="line 2: 'created_at' must be an ISO 8601 "
                                                                    "timestamp in a string such as"),
    "add-file-created-at-a-formula": _add_file("created_formula", err="line 2: 'created_at' '=HYPERLINK(\"http://x\")' "
                                                                      "is not an ISO 8601 timestamp"),
    "add-file-created-at-out-of-range": _add_file("created_out_of_range", err="line 2: 'created_at' "
                                                                              "'0001-01-01T00:00:00+01:00' is out of"),
    "add-file-integer-of-5000-digits": _add_file("huge_integer", err="--file '{huge_integer}': line 2: malformed JSON"),
    "add-file-nested-15000-deep": _add_file("deep_nesting", err="--file '{deep_nesting}': line 2: malformed JSON "
                                                                "(nested too deeply)"),
    "add-file-key-given-twice": _add_file("duplicate_key", err="line 2: key 'input' is given twice"),
    "add-file-created-at-stored-as-utc": Case("detox-feedback", ["add", "--store", "{tmp}/fb.db", "--file",
                                                                 "{created_times}", "--model_version", "m@1"],
                                              rc=0, check="created_at_utc"),
    "add-input-lone-surrogate-from-argv": Case("detox-feedback", ["add", "--store", "{tmp}/fb.db", "--input",
                                                                  "you \udcff idiot", "--output", "you are wrong",
                                                                  "--verdict", "accept", "--model_version", "m@1"],
                                               err="'input' holds a lone surrogate \\udcff at character 5",
                                               absent=["{tmp}/fb.db"]),
    # ---- the CSV export's formula guard covers every column (created_at written by an older version)
    "export-csv-escapes-created-at": Case("detox-feedback", ["export", "--store", "{formula_store}", "--output",
                                                             "{tmp}/r.csv"], rc=0, check="csv_every_column"),
    # ---- --store paths that cannot be made: one line, not FileNotFoundError / PermissionError / a hang
    "store-folder-cannot-be-made": _add_one("/proc/detoxrl-no-such-folder/fb.db",
                                            err="feedback store '/proc/detoxrl-no-such-folder/fb.db': cannot create "
                                                "its folder '/proc/detoxrl-no-such-folder' (No such file or "
                                                "directory)"),
    "store-folder-not-permitted": _add_one("/sys/detoxrl-no-such-folder/fb.db",
                                           err="feedback store '/sys/detoxrl-no-such-folder/fb.db': cannot create its "
                                               "folder '/sys/detoxrl-no-such-folder' ("),
    "store-under-a-file": _add_one("{file}/fb.db", err="feedback store '{file}/fb.db': '{file}' is a file, not a "
                                                       "folder"),
    "store-two-levels-under-a-file": _add_one("{file}/sub/fb.db", err="'{file}' is a file, not a folder"),
    "serve-store-under-a-file": Case("detox-feedback", ["serve", "--store", "{file}/fb.db", "--model", NOPE, "--port",
                                                        "0"], err="'{file}' is a file, not a folder"),
    "store-is-a-fifo": Case("proc:feedback.cli", ["add", "--store", "{fifo_store}", "--input", "a", "--output", "b",
                                                  "--verdict", "accept", "--model_version", "m@1"],
                            err="feedback store '{fifo_store}' is not a regular file"),
    # ---- serve: flags refused before the store is made and the model loads
    "serve-port-70000": _serve("--port", "70000", err="port must be in 0..65535 (got 70000)"),
    "serve-port-negative": _serve("--port", "-1", err="port must be in 0..65535 (got -1)"),
    "serve-port-in-use": _serve("--port", "{busy_port}", err="cannot bind 127.0.0.1:{busy_port}"),
    "serve-token-too-short": _serve("--token", "short", err="the token is too short"),
    "serve-max-body-bytes-tiny": _serve("--max_body_bytes", "10", err="max_body_bytes must be >= 64 (got 10)"),
    "serve-max-chars-zero": _serve("--max_chars", "0", err="max_chars must be >= 1 (got 0)"),
    # ---- review page: a 4xx with a JSON error, nothing stored, no traceback
    "http-body-stalls": Case("http", ["stall"], rc=408, err="did not arrive within 1 s", check="stall_logged"),
    "http-json-nested-15000-deep": Case("http", ["deep"], rc=400, err="nested too deeply"),
    "http-json-integer-of-5000-digits": Case("http", ["huge_integer"], rc=400, err="not valid JSON"),
    "http-content-length-superscript-two": Case("http", ["superscript_length"], rc=400,
                                                err="Content-Length must be a number of bytes"),
    "http-content-length-5000-digits": Case("http", ["long_length"], rc=413, err="the limit is"),
    "http-two-content-lengths": Case("http", ["two_lengths"], rc=400, err="one Content-Length header"),
    "http-text-lone-surrogate": Case("http", ["surrogate_text"], rc=400, err="'text' holds a lone surrogate"),
    "http-correction-lone-surrogate": Case("http", ["surrogate_correction"], rc=400,
                                           err="'correction' holds a lone surrogate"),
    "http-body-over-the-limit-client-sees-413": Case("http", ["big_body"], rc=413, err="the limit is 16384"),
    "http-client-hangs-up-during-the-rewrite": Case("http", ["hang_up_after_request"], rc=0),
    "http-client-hangs-up-mid-body": Case("http", ["hang_up_mid_body"], rc=0),
    "http-client-hangs-up-mid-headers": Case("http", ["hang_up_mid_headers"], rc=0),
}


@pytest.fixture()
def fb_paths(paths, tmp_path):  # noqa: F811 - the imported fixture
    """``paths`` plus the records files above, a FIFO and a port something else listens on."""
    p = dict(paths)
    for name, lines in RECORD_FILES.items():
        path = tmp_path / f"{name}.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        p[name] = str(path)
    os.mkfifo(tmp_path / "fifo.db")
    p["fifo_store"] = str(tmp_path / "fifo.db")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    p["busy_port"] = str(busy.getsockname()[1])
    p["formula_store"] = str(tmp_path / "formulas.db")
    yield p
    busy.close()


def make_feedback_stores(p: dict, argv: list[str]) -> None:
    """``{formula_store}``: records whose created_at an older version stored as given (formulas)."""
    make_stores(p, argv)
    if "{formula_store}" in argv:
        from feedback.store import FeedbackStore

        store = FeedbackStore(p["formula_store"])
        store.add_many([{"input": "a", "output": "b", "verdict": "accept", "model_version": "m@1"}] * 3)
        with sqlite3.connect(p["formula_store"]) as conn:
            conn.executemany("UPDATE records SET created_at = ? WHERE id = ?",
                             [('=HYPERLINK("http://x")', 1), ("@SUM(A1)", 2)])


# ------------------------------------------------------------------------------------ the review page


def _request(port: int, path: str, body: bytes, length: bytes | None = None, extra: bytes = b"") -> bytes:
    length = str(len(body)).encode() if length is None else length
    return (b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\nContent-Length: %s\r\n%s\r\n"
            % (path.encode(), port, length, extra))


def _exchange(port: int, data: bytes, *, hang_up_after: float | None = None) -> tuple[int, dict | None]:
    """Send raw bytes, read the whole answer: (status, JSON body). ``hang_up_after``: wait that long, then
    reset the connection without reading (status 0). A send the server cut short still reads what came back."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=15)
    try:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the server closed early; what it answered may still be readable
        if hang_up_after is not None:
            time.sleep(hang_up_after)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST on close
            return 0, None
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    finally:
        sock.close()
    if not answer:
        return -1, None  # no answer at all
    head, _, body = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body) if body.startswith(b"{") else None


def run_http_raw(what: str, tmp_path) -> tuple[int, dict | None, int, float]:
    """(status, JSON body, records stored, seconds) of the request ``what`` against a served review page."""
    from feedback.server import ReviewApp, make_server
    from feedback.store import FeedbackStore

    def rewrite(texts):
        if texts[0] == "slow":
            time.sleep(0.5)
        return [t.upper() for t in texts]

    app = ReviewApp(FeedbackStore(str(tmp_path / "page.db")), rewrite, "fake@1")
    server = make_server(app, "127.0.0.1", 0)
    server.read_timeout = 1.0
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    start = time.monotonic()
    try:
        if what == "stall":  # headers promise 100 bytes, none follow
            status, body = _exchange(port, _request(port, "/api/rewrite", b"", b"100"))
        elif what == "deep":
            status, body = _exchange(port, _request(port, "/api/rewrite", b"[" * 15000) + b"[" * 15000)
        elif what == "huge_integer":
            raw = b'{"text": 1' + b"0" * 5000 + b"}"
            status, body = _exchange(port, _request(port, "/api/rewrite", raw) + raw)
        elif what == "superscript_length":
            status, body = _exchange(port, _request(port, "/api/rewrite", b"", "\u00b2".encode("latin-1")) + b"{}")
        elif what == "long_length":
            status, body = _exchange(port, _request(port, "/api/rewrite", b"", b"1" * 5000) + b"{}")
        elif what == "two_lengths":
            raw = b'{"text": "hi"}'
            status, body = _exchange(port, _request(port, "/api/rewrite", raw, extra=b"Content-Length: 0\r\n") + raw)
        elif what == "surrogate_text":
            raw = b'{"text": "you \\ud800 idiot"}'
            status, body = _exchange(port, _request(port, "/api/rewrite", raw) + raw)
        elif what == "surrogate_correction":
            raw = b'{"text": "you idiot"}'
            first, rw = _exchange(port, _request(port, "/api/rewrite", raw) + raw)
            assert first == 200, (first, rw)
            raw = json.dumps({"rewrite_id": rw["rewrite_id"], "verdict": "reject",
                              "correction": "please \ud800 stop"}).encode()
            status, body = _exchange(port, _request(port, "/api/feedback", raw) + raw)
        elif what == "big_body":  # http.client sends all 10 MB before it reads: it must get the 413, not a reset
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
            try:
                conn.request("POST", "/api/rewrite", b'{"text": "' + b"a" * 10_000_000 + b'"}',
                             {"Content-Type": "application/json"})
                res = conn.getresponse()
                status, body = res.status, json.loads(res.read())
            except OSError as exc:  # BrokenPipeError / ConnectionResetError while sending
                status, body = -1, {"error": repr(exc)}
            finally:
                conn.close()
        elif what == "hang_up_after_request":  # the model is still writing when the client resets
            raw = b'{"text": "slow"}'
            status, body = _exchange(port, _request(port, "/api/rewrite", raw) + raw, hang_up_after=0.1)
        elif what == "hang_up_mid_body":
            status, body = _exchange(port, _request(port, "/api/rewrite", b"", b"100") + b'{"text": "y',
                                     hang_up_after=0.1)
        elif what == "hang_up_mid_headers":  # the request line, half a header, then a reset
            status, body = _exchange(port, b"POST /api/rewrite HTTP/1.1\r\nHost: 127.0", hang_up_after=0.1)
        else:
            raise AssertionError(what)
        seconds = time.monotonic() - start
        if what.startswith("hang_up"):
            time.sleep(0.6)  # the handler meets the closed connection
            info = _exchange(port, b"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
            assert info[0] == 200, info  # and the server lives on
        return status, body, app.store.count()["records"], seconds
    finally:
        server.shutdown()
        server.server_close()  # joins the request threads: everything they log is in caplog now
        thread.join(10)


# ------------------------------------------------------------------------------------ the rows


@pytest.mark.parametrize("name", list(FB_CASES))
def test_bad_feedback_input(name, fb_paths, tmp_path, capsys, caplog, monkeypatch):
    case = FB_CASES[name]
    if any(a.startswith(("/proc/", "/sys/")) for a in case.argv) and sys.platform != "linux":
        pytest.skip("needs Linux's /proc and /sys")
    caplog.set_level(logging.DEBUG, logger="detoxrl.feedback")
    make_feedback_stores(fb_paths, case.argv)
    argv = [fill(a, fb_paths) for a in case.argv]
    if case.cmd == "http":
        status, body, stored, seconds = run_http_raw(argv[0], tmp_path)
        err = capsys.readouterr().err
        assert status == case.rc, (status, body, caplog.text[-2000:])
        if case.rc >= 400:
            assert isinstance(body, dict) and fill(case.err, fb_paths) in body["error"], body
        assert stored == 0  # nothing stored on a refusal
        assert "Traceback" not in caplog.text and "Traceback" not in err, caplog.text + err
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text  # a client's fault
        if case.check:
            CHECKS[case.check](caplog=caplog, seconds=seconds, paths=fb_paths, err=err, out="")
        return
    if case.cmd.startswith("proc:"):
        rc, out, err = run_proc(case.cmd[5:], argv, case)
    else:
        rc = MAINS[case.cmd](argv)
        captured = capsys.readouterr()
        out, err = captured.out, captured.err
    assert rc == case.rc, (rc, err[-2000:])
    assert "Traceback" not in err
    if case.rc == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), err
        assert fill(case.err, fb_paths) in lines[0], lines[0]
    for path in case.absent:
        assert not os.path.exists(fill(path, fb_paths)), path
    if case.check:
        CHECKS[case.check](out=out, err=err, paths=fb_paths, caplog=caplog, seconds=None)


def _created_at_utc(paths, **_):
    from feedback.store import FeedbackStore

    stored = [r.created_at for r in FeedbackStore(paths["tmp"] + "/fb.db").records()]
    assert stored == ["2025-11-25T16:30:00.000Z", "2025-11-25T17:30:00.000Z", "2025-11-25T17:30:00.123Z"]


def _csv_every_column(paths, err, **_):
    with open(paths["tmp"] + "/r.csv", encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["created_at"][:2] for r in rows[:2]] == ["'=", "'@"], rows  # a leading ' : text, not a formula
    assert all(not cell.startswith(("=", "+", "-", "@")) for r in rows for cell in r.values()), rows
    assert "2 cells start with" in err, err


def _stall_logged(caplog, seconds, **_):
    assert seconds < 10, seconds  # answered after the 1 s read timeout, not the old 60 s
    lines = [r for r in caplog.records if r.name == "detoxrl.feedback" and r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "408" in lines[0].getMessage(), caplog.text


CHECKS = {"created_at_utc": _created_at_utc, "csv_every_column": _csv_every_column, "stall_logged": _stall_logged}


def test_the_table_is_large_enough():
    assert len(FB_CASES) >= 35
    assert sum(c.cmd == "http" for c in FB_CASES.values()) >= 10
