"""The review page: ``detox-feedback serve``. A reviewer types or pastes text, sees the model's rewrite,
and clicks accept or reject, or edits the rewrite and saves a correction. Every click is one record
in the feedback store.

One page, HTML/CSS/JS in the packaged file ``feedback/review.html`` (no build step), served by the standard library's
``ThreadingHTTPServer``. The model is any ``rewrite(texts: list[str]) -> list[str]`` plus the version
string the store records with each verdict; ``detox-feedback serve`` builds it from
``evaluation.infer.Detoxifier`` and tests inject a fake.

JSON API (what the page calls):

=====================  =========================================================================
``GET /api/info``      ``{model_version, decoding, max_chars, counts, next_train}`` (``next_train``: what the next
                       ``detox-feedback train`` would use: reviews, new ones, SFT pairs, verdicts, preference pairs)
``POST /api/rewrite``  ``{text}`` -> ``{rewrite_id, input, output, model_version}``
``POST /api/feedback`` ``{rewrite_id, verdict: accept|reject, correction?}`` -> the stored record
``GET /api/records``   the newest records (``?limit=N``, at most 100)
=====================  =========================================================================

The feedback call names a rewrite the server produced (kept in memory, the newest
``max_pending`` of them), so the stored input, output and model version are the server's own,
never the browser's. A saved correction is a ``reject`` of the output with the corrected text.

Safety:

* binds ``127.0.0.1`` by default; any other address requires a token (``--token``, or the
  ``DETOX_FEEDBACK_TOKEN`` environment variable). With a token, every API call must carry it
  (``Authorization: Bearer <token>``); the page reads it from the URL fragment (``/#token=...``),
  which browsers never send to the server or put in logs;
* without a token (loopback only) the ``Host`` header must name the loopback address, which
  stops DNS-rebinding pages from reaching the API; a cross-origin ``Origin`` is refused; always,
  ``Origin: null`` and a request with two ``Host`` headers are refused (403);
* a ``rewrite_id`` takes one verdict: it is claimed under a lock, so of concurrent posts exactly
  one is stored and the others get 409;
* request bodies are bounded (``max_body_bytes``, checked from ``Content-Length`` before reading)
  and texts are bounded (``max_chars``); POSTs must be ``application/json``;
* a bad request is a 4xx with a JSON ``{"error"}``, never a 500 (malformed, deeply nested or
  surrogate-holding JSON, an odd or repeated ``Content-Length``: 400; too large: 413, after which up
  to ``linger_bytes`` of the body are read and dropped so the client sees it; a body that stalls
  longer than ``ReviewServer.read_timeout``: 408 and one warning line); a client that hangs up is a
  debug line, never a traceback;
* the page inserts every user or model text with ``textContent``, never as HTML, and a strict
  Content-Security-Policy (per-response nonce, no inline handlers, no other origins) backs that up.
"""

from __future__ import annotations

import hmac
import html
import ipaddress
import json
import logging
import os
import secrets
import socket
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from urllib.parse import parse_qs, urlsplit

from detoxrl.errors import UserError
from feedback.store import VERDICTS, FeedbackStore, lone_surrogate

# The page, with a ``{{nonce}}`` placeholder for its CSP script nonce (package data, see pyproject.toml).
PAGE = files("feedback").joinpath("review.html").read_text(encoding="utf-8")

log = logging.getLogger("detoxrl.feedback")

Rewriter = Callable[[list[str]], list[str]]
TOKEN_ENV = "DETOX_FEEDBACK_TOKEN"
# the client went away: nothing to answer, nothing to log above debug
HUNG_UP = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ApiError(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class ReviewApp:
    """What the review page serves: the store, the model (as a rewrite function) and the limits."""

    store: FeedbackStore
    rewrite: Rewriter
    model_version: str
    token: str | None = None
    max_chars: int = 2000
    max_body_bytes: int = 16 * 1024
    max_pending: int = 1000
    decoding: str = "greedy"  # how the rewrites are decoded, shown on the page (e.g. best of 8 by the reward)
    _pending: OrderedDict = field(default_factory=OrderedDict, repr=False)
    _answered: OrderedDict = field(default_factory=OrderedDict, repr=False)  # rewrite_id -> record id
    _pending_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _model_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self):
        if not self.model_version or not self.model_version.strip():
            raise UserError("the review page needs a model version string (what the store records per verdict)")
        if self.max_chars < 1 or self.max_body_bytes < 64:
            raise UserError("max_chars must be >= 1 and max_body_bytes >= 64")
        check_token(self.token)

    # ---------------------------------------------------------------- the API, as plain functions

    def info(self) -> dict:
        return {"model_version": self.model_version, "decoding": self.decoding, "max_chars": self.max_chars,
                "counts": self.store.count(), "next_train": next_train(self.store)}

    def _text(self, payload: dict, key: str, required: bool = True) -> str | None:
        value = payload.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or (required and not value.strip()):
            raise ApiError(HTTPStatus.BAD_REQUEST, f"'{key}' must be a non-empty string")
        bad = lone_surrogate(value)
        if bad:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"'{key}' holds a lone surrogate {bad[1]} at character {bad[0]}, "
                                                   "which is not valid Unicode; send the text as UTF-8")
        if len(value) > self.max_chars:
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                           f"'{key}' is {len(value)} characters; the limit is {self.max_chars}")
        return value.strip() or None

    def do_rewrite(self, payload: dict) -> dict:
        text = self._text(payload, "text")
        with self._model_lock:  # one generation at a time: models are not thread-safe
            outputs = self.rewrite([text])
        if not isinstance(outputs, list) or len(outputs) != 1 or not isinstance(outputs[0], str):
            raise ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, "the model returned no rewrite")
        output = outputs[0].strip()
        rewrite_id = secrets.token_urlsafe(12)
        with self._pending_lock:
            self._pending[rewrite_id] = (text, output, self.model_version)
            while len(self._pending) > self.max_pending:
                self._pending.popitem(last=False)
        return {"rewrite_id": rewrite_id, "input": text, "output": output, "model_version": self.model_version}

    def do_feedback(self, payload: dict) -> dict:
        rewrite_id = payload.get("rewrite_id")
        verdict = payload.get("verdict")
        if verdict not in VERDICTS:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"'verdict' must be one of {', '.join(VERDICTS)}")
        correction = self._text(payload, "correction", required=False)
        if not isinstance(rewrite_id, str):
            raise ApiError(HTTPStatus.BAD_REQUEST, "'rewrite_id' must be the id /api/rewrite returned")
        with self._pending_lock:  # claim the rewrite: of concurrent posts for one id, exactly one gets it
            if rewrite_id in self._answered:
                raise ApiError(HTTPStatus.CONFLICT, f"this rewrite already has a verdict (record "
                                                    f"{self._answered[rewrite_id]}); rewrite the text again")
            found = self._pending.get(rewrite_id)
            if found is None:
                raise ApiError(HTTPStatus.GONE, "unknown or expired rewrite; rewrite the text again")
            text, output, version = found
            if correction is not None:
                if verdict != "reject":
                    raise ApiError(HTTPStatus.BAD_REQUEST, "a correction is saved with verdict 'reject' (the "
                                                           "rewrite needed changing)")
                if correction == output:
                    raise ApiError(HTTPStatus.BAD_REQUEST, "the correction is the same as the rewrite; accept it "
                                                           "instead")
            del self._pending[rewrite_id]
            self._answered[rewrite_id] = None  # taken; the record id follows once stored
        try:
            record = self.store.add(text, output, verdict, version, correction=correction)
        except BaseException:
            with self._pending_lock:  # not stored: the reviewer may try again
                self._answered.pop(rewrite_id, None)
                self._pending[rewrite_id] = found
            raise
        with self._pending_lock:
            self._answered[rewrite_id] = record.id
            while len(self._answered) > self.max_pending:
                self._answered.popitem(last=False)
        return record.as_dict()

    def recent(self, query: dict) -> dict:
        try:
            limit = max(1, min(100, int(query.get("limit", ["20"])[0])))
        except ValueError:
            raise ApiError(HTTPStatus.BAD_REQUEST, "'limit' must be a number") from None
        return {"records": [r.as_dict() for r in self.store.records(newest_first=True, limit=limit)]}


def next_train(store) -> dict:
    """What the next ``detox-feedback train`` (default settings: every record) would train on: its reviews, how many
    of them no training has used yet, and the SFT pairs, verdicts and preference pairs they give."""
    from feedback.preference import preference_pairs
    from feedback.train import feedback_data

    records = store.records()
    used = store.used_record_ids()
    counts = feedback_data(records).counts()
    return {"reviews": len(records), "new_reviews": sum(r.id not in used for r in records),
            "sft_pairs": counts["sft_pairs"], "verdicts": counts["desirable"] + counts["undesirable"],
            "preference_pairs": len(preference_pairs(records).pairs)}


class ReviewHandler(BaseHTTPRequestHandler):
    server_version = "detox-feedback"
    sys_version = ""
    # HTTP/1.0 (the default): one request per connection, so an unread body never spills into the next
    _unread = 0  # bytes of a refused body still on their way (drained after the answer, see _linger)

    @property
    def app(self) -> ReviewApp:
        return self.server.app  # type: ignore[attr-defined]

    def setup(self) -> None:
        self.timeout = self.server.read_timeout  # type: ignore[attr-defined]  # per read: no thread held forever
        super().setup()

    # ---------------------------------------------------------------- plumbing

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - BaseHTTPRequestHandler API
        log.debug("%s %s", self.address_string(), format % args)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Referrer-Policy", "no-referrer")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: HTTPStatus, payload: dict) -> None:
        try:
            body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate in some text: ASCII escapes keep the JSON valid
            body = json.dumps(payload).encode("ascii")
        self._send(status, body, "application/json; charset=utf-8")

    def _error(self, status: HTTPStatus, message: str) -> None:
        if self.path.startswith("/api/"):
            self._json(status, {"error": message})
        else:  # a plain page; the message is escaped (it may quote the request)
            page = f"<!doctype html><title>{status.value}</title><p>{html.escape(message)}</p>"
            self._send(status, page.encode("utf-8"), "text/html; charset=utf-8")

    def _check_host(self) -> None:
        """One Host header, never ``Origin: null``; without a token the Host must also be the loopback address
        we serve (DNS rebinding guard) and a given Origin must be that same host."""
        if len(self.headers.get_all("Host") or []) > 1:  # proxies and servers may read different ones
            raise ApiError(HTTPStatus.FORBIDDEN, "a request may carry one Host header")
        origin = self.headers.get("Origin")
        if origin is not None and origin.strip().lower() == "null":  # sandboxed frames, file:// pages, redirects
            raise ApiError(HTTPStatus.FORBIDDEN, "requests from an opaque origin (Origin: null) are refused")
        if self.app.token is not None:
            return
        host = (self.headers.get("Host") or "").strip()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if not is_loopback(name.strip("[]")):
            raise ApiError(HTTPStatus.FORBIDDEN, "this review page only answers requests for localhost")
        if origin and urlsplit(origin).netloc != host:
            raise ApiError(HTTPStatus.FORBIDDEN, "cross-origin requests are refused")

    def _check_token(self) -> None:
        token = self.app.token
        if token is None:
            return
        given = self.headers.get("Authorization", "")
        given = given[7:] if given.startswith("Bearer ") else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise ApiError(HTTPStatus.UNAUTHORIZED, "missing or wrong token: open the page with the URL that "
                                                    "detox-feedback serve printed (it ends in #token=...)")

    def _read_json(self) -> dict:
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            raise ApiError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the request body as application/json")
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            raise ApiError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
        self.close_connection = True  # whatever happens below, this connection ends with the answer
        if len(lengths) > 1:  # which one a proxy used is unknown
            raise ApiError(HTTPStatus.BAD_REQUEST, "a request may carry one Content-Length header")
        length = lengths[0].strip()
        if not (length.isascii() and length.isdigit()):  # "²".isdigit() is True, and int() refuses it
            raise ApiError(HTTPStatus.BAD_REQUEST, "Content-Length must be a number of bytes (ASCII digits)")
        limit = self.app.max_body_bytes
        if len(length) > 18 or int(length) > limit:  # 18 digits: int() of thousands of digits raises
            self._unread = int(length) if len(length) <= 18 else 1 << 62
            shown = length if len(length) <= 18 else f"a {len(length)}-digit number of"
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"request body is {shown} bytes; the limit is {limit}")
        size = int(length)
        try:
            raw = self.rfile.read(size)
        except TimeoutError:
            log.warning("review page: %s %s from %s: the request body (%d bytes) did not arrive within %g s; "
                        "answered 408", self.command, self.path, self.address_string(), size, self.timeout)
            raise ApiError(HTTPStatus.REQUEST_TIMEOUT, f"the request body did not arrive within {self.timeout:g} s "
                                                       f"(Content-Length {size})") from None
        if len(raw) < size:
            raise ApiError(HTTPStatus.BAD_REQUEST, f"the request body ended after {len(raw)} of {size} bytes")
        try:
            payload = json.loads(raw.decode("utf-8"))
        except RecursionError:
            raise ApiError(HTTPStatus.BAD_REQUEST,
                           "the request body is not valid JSON here: nested too deeply") from None
        except (UnicodeDecodeError, ValueError):  # JSONDecodeError, and an integer of more than 4300 digits
            raise ApiError(HTTPStatus.BAD_REQUEST, "the request body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise ApiError(HTTPStatus.BAD_REQUEST, "the request body must be a JSON object")
        return payload

    def _linger(self) -> None:
        """After refusing a body unread: stop writing, then read and drop what the client still sends (bounded by
        ``server.linger_bytes`` and ``linger_seconds``), so closing does not reset the connection before the
        client has read the answer (a client still sending would see a reset, not the 413)."""
        left, deadline = min(self._unread, self.server.linger_bytes), time.monotonic() + self.server.linger_seconds
        self._unread = 0
        try:
            self.connection.shutdown(socket.SHUT_WR)
            while left > 0 and (wait := deadline - time.monotonic()) > 0:
                self.connection.settimeout(wait)
                chunk = self.connection.recv(min(left, 1 << 16))
                if not chunk:
                    break
                left -= len(chunk)
        except OSError:  # timeout, reset: the connection closes now either way
            pass

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        try:
            self._check_host()
            if method == "GET" and url.path in ("/", "/index.html"):
                nonce = secrets.token_urlsafe(16)
                csp = (f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
                       "connect-src 'self'; img-src 'self'; form-action 'none'; frame-ancestors 'none'; "
                       "base-uri 'none'")
                self._send(HTTPStatus.OK, PAGE.replace("{{nonce}}", nonce).encode("utf-8"), "text/html; charset=utf-8",
                           {"Content-Security-Policy": csp})
                return
            if not url.path.startswith("/api/"):
                raise ApiError(HTTPStatus.NOT_FOUND, f"no page at {url.path}")
            routes = {("GET", "/api/info"): lambda: self.app.info(),
                      ("GET", "/api/records"): lambda: self.app.recent(parse_qs(url.query)),
                      ("POST", "/api/rewrite"): lambda: self.app.do_rewrite(self._read_json()),
                      ("POST", "/api/feedback"): lambda: self.app.do_feedback(self._read_json())}
            route = routes.get((method, url.path))
            if route is None:
                known = any(path == url.path for _, path in routes)
                raise ApiError(HTTPStatus.METHOD_NOT_ALLOWED if known else HTTPStatus.NOT_FOUND,
                               f"{method} {url.path} is not part of the API")
            self._check_token()
            self._json(HTTPStatus.OK, route())
        except HUNG_UP as exc:
            self._hung_up(method, url.path, exc)
        except ApiError as exc:
            self._answer_error(method, url.path, exc.status, exc.message)
        except UserError as exc:
            self._answer_error(method, url.path, HTTPStatus.BAD_REQUEST, str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad request must not stop the server
            log.exception("review page: %s %s failed", method, url.path)
            self._answer_error(method, url.path, HTTPStatus.INTERNAL_SERVER_ERROR,
                               f"internal error ({type(exc).__name__}); see the server log")

    def _answer_error(self, method: str, path: str, status: HTTPStatus, message: str) -> None:
        try:
            self._error(status, message)
            if self._unread:
                self._linger()
        except HUNG_UP as exc:
            self._hung_up(method, path, exc)

    def _hung_up(self, method: str, path: str, exc: BaseException) -> None:
        self.close_connection = True
        log.debug("review page: %s %s: the client hung up (%s)", method, path, type(exc).__name__)

    def do_GET(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler API
        self._handle("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")


class ReviewServer(ThreadingHTTPServer):
    daemon_threads = True
    read_timeout = 60.0  # seconds a client may stall while sending its request: then 408 (the body) or close
    linger_bytes = 16 << 20  # after a 413, read and drop at most this much of the refused body ...
    linger_seconds = 2.0  # ... for at most this long, so the client sees the 413 and not a reset

    def __init__(self, address: tuple[str, int], app: ReviewApp | None):
        self.app = app  # None until the model is loaded (``bind``): nothing is served before serve_forever
        super().__init__(address, ReviewHandler)

    def handle_error(self, request, client_address) -> None:
        """An error outside ``_handle`` (reading the request line or headers): a client that hung up is a debug line,
        anything else one logged error (socketserver would print it to stderr)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, HUNG_UP + (TimeoutError,)):
            log.debug("review page: %s: the client hung up or stalled (%s)", client_address[0], type(exc).__name__)
        else:
            log.error("review page: request from %s failed", client_address[0], exc_info=True)

    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/" + (f"#token={self.app.token}" if self.app.token else "")


def resolve_token(token: str | None) -> str | None:
    """``auto`` -> a new random token; unset -> ``$DETOX_FEEDBACK_TOKEN`` (or None)."""
    if token == "auto":
        return secrets.token_urlsafe(24)
    return token or os.environ.get(TOKEN_ENV) or None


def check_token(token: str | None) -> None:
    if token is not None and len(token) < 16:
        raise UserError("the token is too short: use at least 16 characters (e.g. --token auto for a random one)")


def bind(host: str = "127.0.0.1", port: int = 8765, token: str | None = None) -> ReviewServer:
    """The bound review server, its app not yet set (``detox-feedback serve`` binds before it loads the model, so a
    busy port fails first). A non-loopback ``host`` needs a token."""
    if not is_loopback(host) and token is None:
        raise UserError(f"binding {host} exposes the review page to the network; set a token (--token auto, "
                        f"--token VALUE or ${TOKEN_ENV}), or bind 127.0.0.1")
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise UserError(f"--port must be in 0..65535 (got {port}); 0 picks a free port")
    try:
        return ReviewServer((host, port), None)
    except OSError as exc:
        raise UserError(f"cannot bind {host}:{port} ({exc.strerror or exc}); pick another --port") from None


def make_server(app: ReviewApp, host: str = "127.0.0.1", port: int = 8765) -> ReviewServer:
    """Bind the review page (``port=0`` picks a free port). A non-loopback ``host`` needs ``app.token``."""
    server = bind(host, port, app.token)
    server.app = app
    return server
