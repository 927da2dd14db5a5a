"""End to end: the review page in headless Chromium (Debian's ``chromium`` + ``chromium-driver``, driven
by Selenium; ``.ci/run`` installs both). A reviewer submits a text, sees the rewrite, clicks accept,
edits a correction and saves it; the store must then hold both records. Skips, saying why, when
Chromium, its driver or Selenium is missing, except in CI (``CI=true``), where a missing browser fails the run."""

from __future__ import annotations

import os
import shutil
import threading

import pytest

from feedback.server import ReviewApp, make_server
from feedback.store import FeedbackStore

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)
DRIVER = shutil.which("chromedriver")
IN_CI = os.environ.get("CI", "").strip().lower() in ("true", "1")


def missing(reason: str):
    """Skip on a developer machine; fail in CI, so a green CI run always includes the browser test."""
    if IN_CI:
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def require_browser():
    if CHROMIUM is None:
        missing("Chromium not installed (Debian: apt-get install chromium chromium-driver; .ci/run does it)")
    if DRIVER is None:
        missing("chromedriver not installed (Debian: apt-get install chromium-driver)")


def fake_rewrite(texts: list[str]) -> list[str]:
    return [t.replace("stupid ", "").replace("idiot", "person") for t in texts]


@pytest.fixture()
def browser(tmp_path):
    try:
        from selenium import webdriver
    except ImportError:
        missing("selenium not installed (pip install selenium)")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    os.environ.setdefault("SE_OFFLINE", "true")  # never let Selenium Manager download anything
    options = Options()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


@pytest.fixture()
def page(tmp_path):
    store = FeedbackStore(str(tmp_path / "fb.db"))
    server = make_server(ReviewApp(store, fake_rewrite, "tiny@e2e"), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield store, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def _wait_state(driver, state: str, timeout: float = 30):
    """Wait until the page's status line reaches ``state`` (or an error) and check it is ``state``."""
    from selenium.webdriver.support.ui import WebDriverWait

    def reached(d):
        return d.find_element("id", "status").get_attribute("data-state") in (state, "error")

    WebDriverWait(driver, timeout).until(reached)
    status = driver.find_element("id", "status")
    assert status.get_attribute("data-state") == state, status.text


def test_review_page_accept_then_correct(browser, page):
    store, url = page
    browser.get(url)
    _wait_state(browser, "ready")
    assert browser.find_element("id", "version").text == "tiny@e2e"

    text = "you stupid idiot <b>really</b>"
    browser.find_element("id", "input").send_keys(text)
    browser.find_element("id", "rewrite").click()
    _wait_state(browser, "rewritten")
    output = browser.find_element("id", "output")
    assert browser.find_element("id", "output-version").text == "tiny@e2e"  # which model wrote it
    assert output.text == "you person <b>really</b>"  # shown as text ...
    assert output.find_elements("css selector", "*") == []  # ... never parsed into elements

    browser.find_element("id", "accept").click()
    _wait_state(browser, "saved-accept")
    # one verdict per rewrite: the verdict buttons are off until the text is rewritten again
    assert [browser.find_element("id", b).is_enabled() for b in ("accept", "reject", "rewrite")] == [False, False, True]
    browser.find_element("id", "rewrite").click()
    _wait_state(browser, "rewritten")

    correction = browser.find_element("id", "correction")
    assert correction.get_attribute("value") == "you person <b>really</b>"  # prefilled with the rewrite
    correction.clear()
    correction.send_keys("you are mistaken, really")
    browser.find_element("id", "save-correction").click()
    _wait_state(browser, "saved-correction")

    records = store.records()
    assert [(r.input, r.output, r.verdict, r.correction, r.model_version) for r in records] == [
        (text, "you person <b>really</b>", "accept", None, "tiny@e2e"),
        (text, "you person <b>really</b>", "reject", "you are mistaken, really", "tiny@e2e")]
    rows = browser.find_elements("css selector", "#recent tr")
    assert [r.get_attribute("data-id") for r in rows] == ["2", "1"]  # the table shows them, newest first
    assert rows[0].find_elements("css selector", "td")[-1].text == "tiny@e2e"  # with the model version
    assert browser.find_element("id", "next-train").text.startswith(
        "The next feedback train uses 2 reviews (2 not trained on yet): 2 SFT pairs, 2 verdicts, 1 preference pairs")
    assert browser.find_elements("css selector", "#recent b") == []


def test_review_page_with_a_token(browser, tmp_path):
    store = FeedbackStore(str(tmp_path / "tok.db"))
    token = "e2e-token-0123456789abcdef"
    server = make_server(ReviewApp(store, fake_rewrite, "tiny@tok", token=token), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = server.url()
        assert url.endswith(f"/#token={token}")
        browser.get(url.split("#")[0])  # without the token the page loads but the API refuses it
        _wait_state(browser, "error")
        assert "missing or wrong token" in browser.find_element("id", "status").text
        browser.get(url)
        browser.refresh()  # a fragment-only change does not reload the page
        _wait_state(browser, "ready")
        browser.find_element("id", "input").send_keys("you idiot")
        browser.find_element("id", "rewrite").click()
        _wait_state(browser, "rewritten")
        browser.find_element("id", "accept").click()
        _wait_state(browser, "saved-accept")
    finally:
        server.shutdown()
        server.server_close()
    assert [(r.input, r.output, r.verdict) for r in store.records()] == [("you idiot", "you person", "accept")]
