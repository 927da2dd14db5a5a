"""The review page: ``detox-feedback serve``. A reviewer types or pastes text, sees the model's rewrite,
and clicks accept or reject, or edits the rewrite and saves a correction. Every click is one record
in the feedback store.

One page, HTML/CSS/JS in the packaged file ``feedback/review.html`` (no build step), served by the standard library's
``ThreadingHTTPServer``. The model is any ``rewrite(texts: list[str]) -> list[str]`` plus the version
string the store records with each verdict; ``detox-feedback serve`` builds it from
``detoxrl.infer.Detoxifier`` and tests inject a fake.

JSON API (what the page calls):

=====================  =========================================================================
``GET /api/info``      ``{model_version, decoding, max_chars, counts}``
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
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from urllib.parse import parse_qs, urlsplit

from detoxrl.errors import UserError
from feedback.store import VERDICTS, FeedbackStore

# The page, with a ``{{nonce}}`` placeholder for its CSP script nonce (package data, see pyproject.toml).
PAGE = files("feedback").joinpath("review.html").read_text(encoding="utf-8")

log = logging.getLogger("detoxrl.feedback")

Rewriter = Callable[[list[str]], list[str]]
TOKEN_ENV = "DETOX_FEEDBACK_TOKEN"


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
        if self.token is not None and len(self.token) < 16:
            raise UserError("the token is too short: use at least 16 characters (e.g. --token auto for a random one)")

    # ---------------------------------------------------------------- the API, as plain functions

    def info(self) -> dict:
        return {"model_version": self.model_version, "decoding": self.decoding, "max_chars": self.max_chars,
                "counts": self.store.count()}

    def _text(self, payload: dict, key: str, required: bool = True) -> str | None:
        value = payload.get(key)
        if value is None and not required:
            return None
        if not isinstance(value, str) or (required and not value.strip()):
            raise ApiError(HTTPStatus.BAD_REQUEST, f"'{key}' must be a non-empty string")
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


class ReviewHandler(BaseHTTPRequestHandler):
    server_version = "detox-feedback"
    sys_version = ""
    timeout = 60  # seconds a client may take to send its request (no thread is held forever)
    # HTTP/1.0 (the default): one request per connection, so an unread body never spills into the next

    @property
    def app(self) -> ReviewApp:
        return self.server.app  # type: ignore[attr-defined]

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
        self._send(status, json.dumps(payload, ensure_ascii=False).encode("utf-8"), "application/json; charset=utf-8")

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
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            raise ApiError(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required")
        if int(length) > self.app.max_body_bytes:
            self.close_connection = True  # the body is never read
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                           f"request body is {length} bytes; the limit is {self.app.max_body_bytes}")
        raw = self.rfile.read(int(length))
        try:
            payload = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise ApiError(HTTPStatus.BAD_REQUEST, "the request body is not valid JSON") from None
        if not isinstance(payload, dict):
            raise ApiError(HTTPStatus.BAD_REQUEST, "the request body must be a JSON object")
        return payload

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
        except ApiError as exc:
            self._error(exc.status, exc.message)
        except UserError as exc:
            self._error(HTTPStatus.BAD_REQUEST, str(exc))
        except Exception as exc:  # noqa: BLE001 - one bad request must not stop the server
            log.exception("review page: %s %s failed", method, url.path)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error ({type(exc).__name__}); see the server log")

    def do_GET(self) -> None:  # noqa: N802 - BaseHTTPRequestHandler API
        self._handle("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._handle("POST")


class ReviewServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], app: ReviewApp):
        self.app = app
        super().__init__(address, ReviewHandler)

    def url(self) -> str:
        host, port = self.server_address[:2]
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}/" + (f"#token={self.app.token}" if self.app.token else "")


def resolve_token(token: str | None) -> str | None:
    """``auto`` -> a new random token; unset -> ``$DETOX_FEEDBACK_TOKEN`` (or None)."""
    if token == "auto":
        return secrets.token_urlsafe(24)
    return token or os.environ.get(TOKEN_ENV) or None


def make_server(app: ReviewApp, host: str = "127.0.0.1", port: int = 8765) -> ReviewServer:
    """Bind the review page (``port=0`` picks a free port). A non-loopback ``host`` needs ``app.token``."""
    if not is_loopback(host) and app.token is None:
        raise UserError(f"binding {host} exposes the review page to the network; set a token (--token auto, "
                        f"--token VALUE or ${TOKEN_ENV}), or bind 127.0.0.1")
    try:
        return ReviewServer((host, port), app)
    except OSError as exc:
        raise UserError(f"cannot bind {host}:{port} ({exc.strerror or exc}); pick another --port") from None
