"""The review page's server over real HTTP (a fake rewriter, no model): the API round trip, request and
text bounds, the token for a non-local bind, the Host/Origin guard, and that user text is never
rendered as HTML by the server."""

from __future__ import annotations

import http.client
import json
import threading

import pytest

from detoxrl.errors import UserError
from feedback.server import PAGE, ReviewApp, make_server, resolve_token
from feedback.store import FeedbackStore

TOKEN = "t" * 24


def fake_rewrite(texts: list[str]) -> list[str]:
    return [t.replace("idiot", "person").replace("stupid", "unwise") for t in texts]


@pytest.fixture()
def served(tmp_path):
    """``served(**app_kwargs)`` -> (app, port); the server runs in a thread until the test ends."""
    servers = []

    def start(**kw):
        app = ReviewApp(FeedbackStore(str(tmp_path / "fb.db")), kw.pop("rewrite", fake_rewrite), "tiny@123", **kw)
        server = make_server(app, "127.0.0.1", 0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return app, server.server_address[1]

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()


def call(port, method, path, body=None, headers=None, raw: bytes | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    hdrs = {"Host": f"127.0.0.1:{port}", **(headers or {})}
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    if data is not None and "Content-Type" not in hdrs:
        hdrs["Content-Type"] = "application/json"
    conn.request(method, path, body=data, headers=hdrs)
    res = conn.getresponse()
    text = res.read().decode()
    conn.close()
    ctype = res.getheader("Content-Type", "")
    return res.status, (json.loads(text) if ctype.startswith("application/json") else text), res


def test_rewrite_accept_and_correct_round_trip(served):
    app, port = served()
    status, info, _ = call(port, "GET", "/api/info")
    assert status == 200 and info["model_version"] == "tiny@123" and info["counts"]["records"] == 0
    status, rw, _ = call(port, "POST", "/api/rewrite", {"text": "  you stupid idiot  "})
    assert status == 200 and rw["input"] == "you stupid idiot" and rw["output"] == "you unwise person"
    status, rec, _ = call(port, "POST", "/api/feedback", {"rewrite_id": rw["rewrite_id"], "verdict": "accept"})
    assert status == 200 and rec["id"] == 1 and rec["verdict"] == "accept" and rec["correction"] is None
    status, err, _ = call(port, "POST", "/api/feedback", {"rewrite_id": rw["rewrite_id"], "verdict": "reject",
                                                          "correction": "you are mistaken"})
    assert status == 409 and "already has a verdict (record 1)" in err["error"]  # one verdict per rewrite
    status, rw, _ = call(port, "POST", "/api/rewrite", {"text": "you stupid idiot"})
    status, rec, _ = call(port, "POST", "/api/feedback", {"rewrite_id": rw["rewrite_id"], "verdict": "reject",
                                                          "correction": "you are mistaken"})
    assert status == 200 and rec["id"] == 2
    records = app.store.records()
    assert [(r.input, r.output, r.verdict, r.correction, r.model_version) for r in records] == [
        ("you stupid idiot", "you unwise person", "accept", None, "tiny@123"),
        ("you stupid idiot", "you unwise person", "reject", "you are mistaken", "tiny@123")]
    status, recent, _ = call(port, "GET", "/api/records?limit=1")
    assert [r["id"] for r in recent["records"]] == [2]
    # what the next `feedback train` uses, by hand: 2 reviews, none trained on; SFT pairs (input, accepted output)
    # and (input, correction); verdicts: the accepted output (1; the reject of the same output is the same
    # (input, text) and the first verdict wins) and the correction (1); one preference pair (correction > output)
    assert call(port, "GET", "/api/info")[1]["next_train"] == {"reviews": 2, "new_reviews": 2, "sft_pairs": 2,
                                                               "verdicts": 2, "preference_pairs": 1}
    app.store.record_training("tiny@123", "tiny@124", "out", [1], {})
    assert call(port, "GET", "/api/info")[1]["next_train"]["new_reviews"] == 1


def test_the_browser_cannot_choose_what_is_stored(served):
    app, port = served()
    # an unknown rewrite id is refused: input/output/version always come from the server's own rewrite
    status, err, _ = call(port, "POST", "/api/feedback", {"rewrite_id": "made-up", "verdict": "accept",
                                                          "input": "x", "output": "y"})
    assert status == 410 and "rewrite the text again" in err["error"]
    _, rw, _ = call(port, "POST", "/api/rewrite", {"text": "you idiot"})
    for body, message in [({"verdict": "maybe"}, "'verdict' must be one of accept, reject"),
                          ({"verdict": "accept", "correction": "better"}, "saved with verdict 'reject'"),
                          ({"verdict": "reject", "correction": "you person"}, "same as the rewrite")]:
        status, err, _ = call(port, "POST", "/api/feedback", {"rewrite_id": rw["rewrite_id"], **body})
        assert status == 400 and message in err["error"], err
    assert app.store.count()["records"] == 0


def test_pending_rewrites_are_bounded(served):
    app, port = served(max_pending=2)
    ids = [call(port, "POST", "/api/rewrite", {"text": f"text {i}"})[1]["rewrite_id"] for i in range(3)]
    assert call(port, "POST", "/api/feedback", {"rewrite_id": ids[0], "verdict": "accept"})[0] == 410
    assert call(port, "POST", "/api/feedback", {"rewrite_id": ids[2], "verdict": "accept"})[0] == 200


def test_request_and_text_sizes_are_bounded(served):
    app, port = served(max_chars=50, max_body_bytes=1024)
    status, err, res = call(port, "POST", "/api/rewrite", raw=b"{" + b" " * 5000 + b"}")
    assert status == 413 and "5002 bytes; the limit is 1024" in err["error"]
    status, err, _ = call(port, "POST", "/api/rewrite", {"text": "x" * 51})
    assert status == 413 and "51 characters; the limit is 50" in err["error"]
    status, err, _ = call(port, "POST", "/api/rewrite", raw=b"text=hi", headers={"Content-Type": "text/plain"})
    assert status == 415
    status, err, _ = call(port, "POST", "/api/rewrite", raw=b"[1, 2]")
    assert status == 400 and "JSON object" in err["error"]
    status, err, _ = call(port, "POST", "/api/rewrite", raw=b"{not json")
    assert status == 400 and "not valid JSON" in err["error"]
    assert call(port, "POST", "/api/rewrite", {"text": "   "})[0] == 400


def test_host_and_origin_guard_without_token(served):
    _, port = served()
    status, err, _ = call(port, "GET", "/api/info", headers={"Host": "evil.example:80"})
    assert status == 403 and "localhost" in err["error"]
    status, err, _ = call(port, "POST", "/api/rewrite", {"text": "hi"}, headers={"Origin": "http://evil.example"})
    assert status == 403 and "cross-origin" in err["error"]
    assert call(port, "GET", "/api/info", headers={"Host": f"localhost:{port}"})[0] == 200


def test_token_is_required_on_every_api_call(served):
    _, port = served(token=TOKEN)
    status, page, _ = call(port, "GET", "/")
    assert status == 200 and "Review rewrites" in page  # the page itself holds no data
    for method, path, body in [("GET", "/api/info", None), ("GET", "/api/records", None),
                               ("POST", "/api/rewrite", {"text": "hi"})]:
        assert call(port, method, path, body)[0] == 401
        assert call(port, method, path, body, headers={"Authorization": "Bearer " + "x" * 24})[0] == 401
        assert call(port, method, path, body, headers={"Authorization": "Bearer " + TOKEN})[0] == 200


def test_non_local_bind_needs_a_token(tmp_path):
    app = ReviewApp(FeedbackStore(str(tmp_path / "fb.db")), fake_rewrite, "v")
    with pytest.raises(UserError, match="binding 0.0.0.0 exposes the review page.*--token auto"):
        make_server(app, "0.0.0.0", 0)
    with pytest.raises(UserError, match="token is too short"):
        ReviewApp(app.store, fake_rewrite, "v", token="short")
    assert len(resolve_token("auto")) >= 24 and resolve_token("given-token-value") == "given-token-value"


def test_page_sets_a_strict_csp_and_never_renders_text_as_html(served):
    _, port = served()
    status, page, res = call(port, "GET", "/")
    csp = res.getheader("Content-Security-Policy")
    nonce = csp.split("'nonce-")[1].split("'")[0]
    assert f'<script nonce="{nonce}">' in page and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert res.getheader("X-Content-Type-Options") == "nosniff"
    assert call(port, "GET", "/")[2].getheader("Content-Security-Policy") != csp  # a fresh nonce per response
    # the page's script writes texts with textContent only
    script = PAGE.split("<script")[1]
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "document.write" not in script
    # a 404 page quoting the path escapes it
    status, text, _ = call(port, "GET", "/<script>alert(1)</script>")
    assert status == 404 and "<script>alert" not in text


def test_a_failing_model_is_a_500_and_the_server_lives_on(served):
    def broken(texts):
        raise RuntimeError("out of memory")

    _, port = served(rewrite=broken)
    status, err, _ = call(port, "POST", "/api/rewrite", {"text": "hi"})
    assert status == 500 and "RuntimeError" in err["error"]
    assert call(port, "GET", "/api/info")[0] == 200
