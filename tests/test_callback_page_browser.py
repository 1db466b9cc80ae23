"""The callback page in a real browser: headless Chromium driven by selenium, against the real daemon fed real
captures over TCP (the fake Asterisk of ``onechance.demo``).

Three daemons: an open one (no token) with the lost callers of six captures and one whose caller name is a
script; one with a token and the "call back now" button; one refreshing every 5 s.  Two browsers: one with
JavaScript, one without (the page must work without it).  Selenium blocks: every browser call runs in a thread
(``asyncio.to_thread``) so the daemon in this event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select, WebDriverWait

from onechance.demo import DemoPbx
from onechance.replay import replay_files

from .livehelp import SECRET, api_for, capture, fake_pbx, running, settings_for, settled

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "page-token-for-the-browser-tests"
XSS_NAME = "<script>alert(1)</script>"
NEVER_EXPIRE = {"expire_after": 3e8}  # the captures are from 2026: their callers must stay on the list
CHROME_ARGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync")
INSTALL = ("install Chromium and its driver: `apt-get install chromium chromium-driver` (Debian; or `make deps` "
           "as root)")

#: the open daemon's PBXs (each plays the capture of its name; "xss" plays "abandoned" with another caller)
OPEN_PBXS = ("exit_with_key", "join_empty", "abandon_then_callback", "abandoned", "xss", "queue_timeout",
             "outbound_callback_unanswered")
WAITING_PBXS = {"abandoned", "exit_with_key", "outbound_callback_unanswered", "queue_timeout", "join_empty", "xss"}


def xss_capture() -> bytes:
    """``abandoned`` with the caller's name a script and another number (the test's own copy of the bytes)."""
    raw = capture("abandoned")
    assert b"Kati Kask" in raw and b"5550102" in raw
    return raw.replace(b"Kati Kask", XSS_NAME.encode()).replace(b"5550102", b"5550199")


def capture_bytes(name: str) -> bytes:
    return xss_capture() if name == "xss" else capture(name)


def lost_at(name: str) -> float:
    """When the capture's (first) caller was lost, from the replay of the same bytes."""
    with tempfile.NamedTemporaryFile(suffix=".ami") as f:
        f.write(capture_bytes(name))
        f.flush()
        journeys = replay_files([f.name], pbx=name).journeys
    return min(j.to_json()["ended_at"] for j in journeys if j.to_json()["lost"])


class OriginatingPbx(DemoPbx):
    """The fake Asterisk, answering Originate as Asterisk 22 does with ``Async: true``: "Originate successfully
    queued" at once, then, once the operator's phone is answered (here 0.2 s later), the ``OriginateResponse``
    event with the action's ActionID; or "Permission denied" when ``originate`` is in :attr:`deny_actions` (a
    manager user without the ``originate`` write class).  Keeps every Originate action it received, headers as
    sent."""

    def __init__(self, data: bytes, **kw: Any) -> None:
        super().__init__(data, speed=0.0, chunks=(1, 64), username="onechance", secret=SECRET,
                         login_fail_delay=0.05, **kw)
        self.ignore_actions.add("originate")  # answered below, not by the base class
        self.originated: list[dict[str, str]] = []
        self.answer_after = 0.2  # seconds until the operator answers the phone (OriginateResponse)
        self._answers: set[asyncio.Future[None]] = set()

    async def _read_action(self, conn: Any) -> dict[str, str] | None:
        action = await super()._read_action(conn)
        if action is not None and action.get("action", "").lower() == "originate" and conn.authenticated:
            head = {"ActionID": action["actionid"]} if "actionid" in action else {}
            if "originate" in self.deny_actions:
                await self._send(conn, {"Response": "Error", **head, "Message": "Permission denied"})
            else:
                self.originated.append(dict(action))
                await self._send(conn, {"Response": "Success", **head, "Message": "Originate successfully queued"})
                self._answers.add(asyncio.ensure_future(self._picked_up(conn, head, action)))
        return action

    async def stop(self) -> None:
        for answer in self._answers:
            answer.cancel()
        await super().stop()

    async def _picked_up(self, conn: Any, head: dict[str, str], action: dict[str, str]) -> None:
        await asyncio.sleep(self.answer_after)  # the operator picks up
        if not conn.closed:
            await self._send(conn, {"Event": "OriginateResponse", "Privilege": "call,all", **head,
                                    "Response": "Success", "Channel": action.get("channel", ""),
                                    "Context": action.get("context", ""), "Exten": action.get("exten", ""),
                                    "Reason": "4", "Uniqueid": "1795700000.1",
                                    "CallerIDNum": "<unknown>", "CallerIDName": "<unknown>"})


# ---- the browsers ---------------------------------------------------------------------------------------
def _chrome(javascript: bool) -> Iterator[WebDriver]:
    driver_path = shutil.which("chromedriver") or "/usr/bin/chromedriver"
    browser_path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(driver_path).exists():
        pytest.fail(f"chromedriver is missing: the browser tests need it; {INSTALL}")
    if not Path(browser_path).exists():
        pytest.fail(f"chromium is missing: the browser tests need it; {INSTALL}")
    with tempfile.TemporaryDirectory(prefix="onechance-chrome-") as profile:
        options = webdriver.ChromeOptions()
        options.binary_location = browser_path
        for arg in (*CHROME_ARGS, f"--user-data-dir={profile}", "--window-size=1200,900"):
            options.add_argument(arg)
        if not javascript:
            options.add_experimental_option("prefs", {"profile.managed_default_content_settings.javascript": 2})
        driver = webdriver.Chrome(options=options, service=Service(driver_path))
        try:
            driver.set_page_load_timeout(20)
            yield driver
        finally:
            driver.quit()


@pytest.fixture(scope="module")
def chrome() -> Iterator[WebDriver]:
    """Chromium with JavaScript."""
    yield from _chrome(javascript=True)


@pytest.fixture(scope="module")
def chrome_nojs() -> Iterator[WebDriver]:
    """Chromium with JavaScript off."""
    yield from _chrome(javascript=False)


async def inb(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a blocking browser step in a thread (the daemon runs in this event loop)."""
    return await asyncio.to_thread(fn, *args)


def wait_ready(d: WebDriver) -> None:
    WebDriverWait(d, 15, poll_frequency=0.05).until(
        lambda d: d.execute_script("return document.readyState") == "complete", "the page did not load")


def open_url(d: WebDriver, url: str) -> None:
    d.get(url)
    wait_ready(d)


def _gone(el: WebElement) -> Callable[[WebDriver], bool]:
    """``EC.staleness_of``, also when chromedriver says so with "Node with given id does not belong to the
    document" (a WebDriverException, not a StaleElementReferenceException) for an element of a page left."""
    def check(_d: WebDriver) -> bool:
        try:
            el.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in (exc.msg or ""):
                return True
            raise
        return False
    return check


def submit(d: WebDriver, form: WebElement) -> None:
    """Press the form's button and wait for the next page."""
    html = d.find_element(By.TAG_NAME, "html")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    WebDriverWait(d, 15, poll_frequency=0.05).until(_gone(html), "the form did not lead to a new page")
    wait_ready(d)


def fill(el: WebElement, text: str) -> None:
    el.clear()
    el.send_keys(text)


ROWS_JS = """
return Array.from(document.querySelectorAll(arguments[0])).map(function (li) {
  var q = function (s) { var e = li.querySelector(s); return e ? e.textContent : null; };
  var tel = li.querySelector("a.tel");
  return {id: li.dataset.id, pbx: li.dataset.pbx, state: li.dataset.state, name: q(".name"),
          number: q(".tel"), tel: tel ? tel.getAttribute("href") : null, waiting: q(".waiting"),
          lost: q(".lost"), claimed_by: q(".claimed-by"), claimed: q(".claimed"), attempts: q(".attempts"),
          note: q(".note-text"), text: li.textContent.replace(/\\s+/g, " ").trim()};
});
"""


def rows(d: WebDriver, selector: str = "#waiting > li.entry") -> list[dict[str, Any]]:
    return d.execute_script(ROWS_JS, selector)  # type: ignore[no-any-return]


def flash(d: WebDriver) -> str | None:
    found = d.find_elements(By.ID, "flash")
    return found[0].text if found else None


def entry_el(d: WebDriver, pbx: str) -> WebElement:
    return d.find_element(By.CSS_SELECTOR, f'#waiting > li[data-pbx="{pbx}"]')


# ---- the daemons ----------------------------------------------------------------------------------------
@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def open_daemon() -> Any:
    async with contextlib.AsyncExitStack() as stack:
        pbxs = {}
        for i, name in enumerate(OPEN_PBXS):
            pbx = (DemoPbx(xss_capture(), speed=0.0, chunks=(1, 64), seed=i, username="onechance", secret=SECRET,
                           login_fail_delay=0.05) if name == "xss" else fake_pbx(name, seed=i))
            pbxs[name] = await stack.enter_async_context(pbx)
        app = await stack.enter_async_context(running(settings_for([(n, p.port) for n, p in pbxs.items()],
                                                                   callbacks=NEVER_EXPIRE)))
        await asyncio.gather(*(settled(app, n, p) for n, p in pbxs.items()))
        api = await stack.enter_async_context(api_for(app))
        yield app, api, f"http://127.0.0.1:{app.http_port}"


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def token_daemon() -> Any:
    async with contextlib.AsyncExitStack() as stack:
        xss = await stack.enter_async_context(OriginatingPbx(xss_capture(), seed=1))
        other = await stack.enter_async_context(fake_pbx("outbound_callback_unanswered", seed=2))
        settings = settings_for([("xss", xss.port), ("outbound_callback_unanswered", other.port)], token=TOKEN,
                                callbacks={**NEVER_EXPIRE, "originate": True, "originate_context": "callback-out"})
        app = await stack.enter_async_context(running(settings))
        await asyncio.gather(settled(app, "xss", xss), settled(app, "outbound_callback_unanswered", other))
        api = await stack.enter_async_context(api_for(app, TOKEN))
        yield app, api, f"http://127.0.0.1:{app.http_port}", xss


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def refreshing_daemon() -> Any:
    async with contextlib.AsyncExitStack() as stack:
        pbx = await stack.enter_async_context(fake_pbx("abandoned"))
        app = await stack.enter_async_context(running(settings_for([("abandoned", pbx.port)],
                                                                   callbacks={**NEVER_EXPIRE, "page_refresh": 5})))
        await settled(app, "abandoned", pbx)
        api = await stack.enter_async_context(api_for(app))
        yield app, api, f"http://127.0.0.1:{app.http_port}"


async def api_callbacks(api: Any, state: str = "open") -> list[dict[str, Any]]:
    return (await api.json("/api/callbacks", params={"state": state}))["callbacks"]  # type: ignore[no-any-return]


async def api_post(api: Any, path: str, body: dict[str, str]) -> dict[str, Any]:
    async with api.session.post(api.base + path, json=body, headers=api.headers) as resp:
        assert resp.status == 200, (path, resp.status, await resp.text())
        return await resp.json()  # type: ignore[no-any-return]


# ---- the open page --------------------------------------------------------------------------------------
async def test_the_page_lists_the_lost_callers_oldest_first(open_daemon, chrome_nojs):
    _app, api, base = open_daemon
    await inb(open_url, chrome_nojs, base + "/callbacks")
    got = await inb(rows, chrome_nojs)
    # every caller the captures lost and nobody reached, each once, oldest lost first
    assert sorted(r["pbx"] for r in got) == sorted(WAITING_PBXS)
    times = [lost_at(r["pbx"]) for r in got]
    assert times == sorted(times), [r["pbx"] for r in got]
    assert [r["pbx"] for r in got][-2:] == ["outbound_callback_unanswered", "exit_with_key"]
    # the same order as the API's, which says when each was lost
    api_open = await api_callbacks(api)
    assert [r["id"] for r in got] == [e["id"] for e in api_open]
    by_pbx = {r["pbx"]: r for r in got}
    kati = by_pbx["abandoned"]
    assert kati["name"] == "Kati Kask" and kati["number"] == "+3725550102" and kati["tel"] == "tel:+3725550102"
    assert kati["lost"] == "1 lost call" and kati["state"] == "waiting" and kati["claimed_by"] is None
    # waits are counted in the PBX's clock (the capture's: its last event came seconds after the abandon),
    # not ours (days later)
    assert re.search(r"waiting for (less than a minute|\d+ min)\b", kati["waiting"]), kati["waiting"]
    assert " d" not in kati["waiting"].split("since")[0], kati["waiting"]
    assert by_pbx["exit_with_key"]["name"] == "Ольга Смирнова"
    assert by_pbx["join_empty"]["text"].count("queue empty") == 1
    # the operator's unanswered call back is an attempt, with its time and who
    petr = by_pbx["outbound_callback_unanswered"]
    attempt_at = time.strftime("%H:%M", time.localtime(1795656531.397273))
    assert "Called back 1 time" in petr["attempts"] and "by Anna Tamm: no answer" in petr["attempts"]
    assert attempt_at in petr["attempts"]
    # the caller recovered by calling again is closed (inbound) and not on the list
    everything = await api_callbacks(api, "all")
    helle = [e for e in everything if e["pbx"] == "abandon_then_callback"]
    assert len(helle) == 1 and helle[0]["state"] == "done" and helle[0]["resolution"] == "inbound"
    assert "Helle Kuusk" not in " ".join(r["text"] for r in got)
    summary = await inb(lambda: chrome_nojs.find_element(By.ID, "summary").text)
    assert summary.startswith("6 callers wait for a call back; the longest for ")


async def test_a_caller_name_is_shown_as_text_never_run(open_daemon, chrome):
    _app, _api, base = open_daemon
    await inb(open_url, chrome, base + "/callbacks")
    row = next(r for r in await inb(rows, chrome) if r["pbx"] == "xss")
    assert row["name"] == XSS_NAME and row["number"] == "+3725550199"
    source = await inb(lambda: chrome.page_source)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in source and XSS_NAME not in source

    def no_alert() -> bool:
        try:
            chrome.switch_to.alert  # noqa: B018
        except NoAlertPresentException:
            return True
        return False

    assert await inb(no_alert)
    scripts = await inb(lambda: [s.get_attribute("src") for s in chrome.find_elements(By.TAG_NAME, "script")])
    assert scripts == [base + "/static/page.js"]


async def test_claim_note_and_done_through_the_forms_without_javascript(open_daemon, chrome_nojs):
    _app, api, base = open_daemon
    d = chrome_nojs
    await inb(open_url, d, base + "/callbacks")
    rein = next(r for r in await inb(rows, d) if r["pbx"] == "queue_timeout")
    assert rein["name"] == "Rein Rebane"

    def claim() -> None:
        form = entry_el(d, "queue_timeout").find_element(By.CSS_SELECTOR, "form.claim")
        fill(form.find_element(By.NAME, "by"), "Mari Maasikas")
        submit(d, form)

    await inb(claim)
    assert await inb(flash, d) == "Claimed by Mari Maasikas."
    assert (await inb(lambda: d.current_url)).startswith(base + "/callbacks?msg=")
    row = next(r for r in await inb(rows, d) if r["pbx"] == "queue_timeout")
    assert row["state"] == "claimed" and row["claimed_by"] == "Mari Maasikas"
    assert re.search(r"Claimed by Mari Maasikas since today \d\d:\d\d \(less than a minute ago\)", row["claimed"])
    entry = await api.json(f"/api/callbacks/{rein['id']}")
    assert entry["state"] == "claimed" and entry["claimed_by"] == "Mari Maasikas" and entry["claimed_at"]
    # the name is remembered for the next claim
    names = await inb(lambda: {e.get_attribute("value") for e in d.find_elements(By.CSS_SELECTOR, "form.claim "
                                                                                  "input[name=by]")})
    assert names == {"Mari Maasikas"}

    note = 'call after 14:00 <b>not bold</b> & "quoted"'

    def add_note() -> None:
        el = entry_el(d, "queue_timeout")
        el.find_element(By.CSS_SELECTOR, "details.more summary").click()
        form = el.find_element(By.CSS_SELECTOR, "form.note")
        fill(form.find_element(By.NAME, "note"), note)
        submit(d, form)

    await inb(add_note)
    assert await inb(flash, d) == "Note saved."
    row = next(r for r in await inb(rows, d) if r["pbx"] == "queue_timeout")
    assert row["note"] == note
    assert (await api.json(f"/api/callbacks/{rein['id']}"))["note"] == note

    def done() -> None:
        form = entry_el(d, "queue_timeout").find_element(By.CSS_SELECTOR, "form.done")
        Select(form.find_element(By.NAME, "reason")).select_by_value("reached")
        fill(form.find_element(By.NAME, "note"), "spoke to him, sorted")
        submit(d, form)

    await inb(done)
    assert await inb(flash, d) == "Done (reached)."
    assert "queue_timeout" not in {r["pbx"] for r in await inb(rows, d)}
    closed = await inb(rows, d, "#closed li.entry")
    # closed in the last 24 hours of each PBX's clock: this one by hand, and the caller abandon_then_callback's
    # PBX reached again (seconds after the abandon, in that capture's time)
    assert sorted(c["pbx"] for c in closed) == ["abandon_then_callback", "queue_timeout"]
    closed = [c for c in closed if c["pbx"] == "queue_timeout"]
    assert "marked done: reached" in closed[0]["text"] and "claimed by Mari Maasikas" in closed[0]["text"]
    entry = await api.json(f"/api/callbacks/{rein['id']}")
    assert (entry["state"], entry["resolution"], entry["done_reason"]) == ("done", "manual", "reached")
    assert entry["note"] == "spoke to him, sorted"
    assert rein["id"] not in {e["id"] for e in await api_callbacks(api)}
    # reloading the page after the POST sends nothing again (it was a 303 to a GET)
    await inb(d.refresh)
    await inb(wait_ready, d)
    assert await inb(flash, d) == "Done (reached)."
    assert (await api.json(f"/api/callbacks/{rein['id']}"))["state"] == "done"


async def test_the_queue_filter_and_a_claim_keep_to_the_queue(open_daemon, chrome_nojs):
    _app, api, base = open_daemon
    d = chrome_nojs
    await inb(open_url, d, base + "/callbacks")

    def choose() -> None:
        form = d.find_element(By.CSS_SELECTOR, "form.filter")
        Select(form.find_element(By.NAME, "queue")).select_by_value("empty")
        submit(d, form)

    await inb(choose)
    assert (await inb(lambda: d.current_url)) == base + "/callbacks?queue=empty&pbx="  # the form's "all" PBXs
    got = await inb(rows, d)
    assert [r["pbx"] for r in got] == ["join_empty"] and got[0]["name"] == "Urmas Ots"

    def claim() -> None:
        form = entry_el(d, "join_empty").find_element(By.CSS_SELECTOR, "form.claim")
        fill(form.find_element(By.NAME, "by"), "Jaan")
        submit(d, form)

    await inb(claim)
    assert (await inb(lambda: d.current_url)).startswith(base + "/callbacks?queue=empty&msg=")
    assert [r["claimed_by"] for r in await inb(rows, d)] == ["Jaan"]
    assert (await api.json(f"/api/callbacks/{got[0]['id']}"))["claimed_by"] == "Jaan"


async def test_the_page_fits_a_phone_screen(open_daemon, chrome):
    _app, api, base = open_daemon
    olga = next(e for e in await api_callbacks(api) if e["pbx"] == "exit_with_key")
    async with api.session.post(f"{api.base}/api/callbacks/{olga['id']}/note",
                                json={"note": "x" * 400 + " " + "https://example.org/" + "y" * 300}) as resp:
        assert resp.status == 200

    def measure() -> dict[str, Any]:
        chrome.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                               {"width": 390, "height": 844, "deviceScaleFactor": 3, "mobile": True})
        try:
            open_url(chrome, base + "/callbacks")
            return chrome.execute_script("""
              var right = 0;
              document.querySelectorAll("input, select, button, a, .note").forEach(function (e) {
                right = Math.max(right, e.getBoundingClientRect().right); });
              return {scroll: document.documentElement.scrollWidth, inner: window.innerWidth, right: right,
                      entries: document.querySelectorAll("#waiting > li").length};""")
        finally:
            chrome.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})

    m = await inb(measure)
    assert m["inner"] == 390 and m["entries"] >= 5
    assert m["scroll"] <= m["inner"], m
    assert m["right"] <= 390, m


# ---- with a token -----------------------------------------------------------------------------------------
def login(d: WebDriver, base: str, token: str) -> None:
    open_url(d, base + "/login")
    form = d.find_element(By.CSS_SELECTOR, "form.login")
    fill(form.find_element(By.NAME, "token"), token)
    submit(d, form)


def ensure_login(d: WebDriver, base: str) -> None:
    open_url(d, base + "/callbacks")
    if urlpath(d.current_url) == "/login":
        login(d, base, TOKEN)
    assert urlpath(d.current_url) == "/callbacks"


def urlpath(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1].split("?")[0].split("#")[0]


async def test_with_a_token_the_page_asks_for_it_once(token_daemon, chrome):
    _app, _api, base, _pbx = token_daemon
    d = chrome
    await inb(open_url, d, base + "/")
    await inb(d.delete_all_cookies)
    await inb(open_url, d, base + "/callbacks")
    assert urlpath(await inb(lambda: d.current_url)) == "/login"
    assert await inb(lambda: d.find_elements(By.CSS_SELECTOR, "#waiting")) == []
    # a wrong token is refused
    await inb(login, d, base, "not-the-token")
    assert urlpath(await inb(lambda: d.current_url)) == "/login"
    assert await inb(lambda: d.find_element(By.ID, "login-error").text) == "That is not the token."
    assert await inb(d.get_cookie, "oc_session") is None
    # the right one: the list, and a session cookie the page's scripts cannot read
    await inb(login, d, base, TOKEN)
    assert urlpath(await inb(lambda: d.current_url)) == "/callbacks"
    assert {r["pbx"] for r in await inb(rows, d)} == {"xss", "outbound_callback_unanswered"}
    cookie = await inb(d.get_cookie, "oc_session")
    assert cookie is not None
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
    assert cookie["secure"] is False  # plain http on loopback
    assert TOKEN not in cookie["value"]
    assert abs(cookie["expiry"] - (time.time() + 12 * 3600)) < 120
    assert "oc_session" not in await inb(d.execute_script, "return document.cookie")
    # once: the page and the login form do not ask again
    await inb(open_url, d, base + "/callbacks")
    assert urlpath(await inb(lambda: d.current_url)) == "/callbacks"
    await inb(open_url, d, base + "/login")
    assert urlpath(await inb(lambda: d.current_url)) == "/callbacks"


async def test_after_login_the_forms_work(token_daemon, chrome):
    _app, api, base, _pbx = token_daemon
    d = chrome
    await inb(ensure_login, d, base)

    def claim() -> None:
        form = entry_el(d, "outbound_callback_unanswered").find_element(By.CSS_SELECTOR, "form.claim")
        fill(form.find_element(By.NAME, "by"), "Anna Tamm")
        submit(d, form)

    await inb(claim)
    assert await inb(flash, d) == "Claimed by Anna Tamm."
    petr = next(e for e in await api_callbacks(api) if e["pbx"] == "outbound_callback_unanswered")
    assert petr["state"] == "claimed" and petr["claimed_by"] == "Anna Tamm"


async def test_call_back_now_rings_the_operator_then_dials_the_caller(token_daemon, chrome):
    _app, api, base, pbx = token_daemon
    d = chrome
    await inb(ensure_login, d, base)

    def call(extension: str | None) -> None:
        form = entry_el(d, "xss").find_element(By.CSS_SELECTOR, "form.call")
        if extension is not None:
            fill(form.find_element(By.NAME, "extension"), extension)
        submit(d, form)

    pbx.answer_after = 60.0  # the operator is slow to pick up: the page does not wait for that
    started = time.monotonic()
    await inb(call, "101")
    assert await inb(flash, d) == "Calling your phone (101): answer it and the PBX dials the caller.", \
        await inb(lambda: d.find_element(By.TAG_NAME, "main").text)
    assert time.monotonic() - started < 10
    assert len(pbx.originated) == 1
    sent = {k: v for k, v in pbx.originated[0].items() if k != "actionid"}
    assert sent == {"action": "Originate", "channel": "PJSIP/101", "context": "callback-out",
                    "exten": "+3725550199", "priority": "1", "callerid": '"Callback scriptalert1script" <+3725550199>',
                    "async": "true", "timeout": "30000"}
    # the extension is remembered; a manager user without the originate class: the PBX's refusal, shown
    pbx.deny_actions.add("originate")
    try:
        assert await inb(lambda: entry_el(d, "xss").find_element(By.NAME, "extension").get_attribute("value")) \
            == "101"
        await inb(call, None)
        assert await inb(flash, d) == "Not called: xss: the PBX refused to originate the call: Permission denied"
        assert len(pbx.originated) == 1
    finally:
        pbx.deny_actions.discard("originate")
    xss = next(e for e in await api_callbacks(api) if e["pbx"] == "xss")
    assert xss["state"] == "waiting"  # ringing someone is no claim and no attempt (the PBX reports the call)


async def test_call_back_now_takes_digits_only(token_daemon):
    _app, _api, base, pbx = token_daemon
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as s:
        async with s.post(base + "/login", data={"token": TOKEN}) as resp:
            assert resp.status == 200 and resp.url.path == "/callbacks"
            page = await resp.text()
        csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
        entry = re.search(r'<li class="entry \w+" id="e-([0-9a-f]+)" data-id="\1" data-pbx="xss"', page)
        assert csrf and entry
        before = pbx.actions.count("originate"), len(pbx.originated)  # (the link's pings go on meanwhile)
        for bad in ("101\r\nAction: Command\r\nCommand: core stop now", "", "10a", "1" * 16, "١٠١", "+101",
                    "1 01"):
            async with s.post(f"{base}/callbacks/{entry.group(1)}/call",
                              data={"csrf": csrf.group(1), "extension": bad}) as resp:
                text = await resp.text()
                assert resp.status == 400, (bad, resp.status)
                assert "Your extension: digits only, 1 to 15 of them" in text
        assert (pbx.actions.count("originate"), len(pbx.originated)) == before


async def test_logging_out_asks_for_the_token_again(token_daemon, chrome):
    _app, _api, base, _pbx = token_daemon
    d = chrome
    await inb(ensure_login, d, base)

    def logout() -> None:
        submit(d, d.find_element(By.CSS_SELECTOR, "form.logout"))

    await inb(logout)
    assert urlpath(await inb(lambda: d.current_url)) == "/login"
    assert await inb(d.get_cookie, "oc_session") is None
    await inb(open_url, d, base + "/callbacks")
    assert urlpath(await inb(lambda: d.current_url)) == "/login"


# ---- refreshing ---------------------------------------------------------------------------------------------
async def test_the_page_refreshes_itself_with_and_without_javascript(refreshing_daemon, chrome, chrome_nojs):
    _app, api, base = refreshing_daemon

    def load(d: WebDriver) -> None:
        open_url(d, base + "/callbacks")
        d.execute_script("window.__loaded_before = true;")  # gone once the page is loaded again

    def shows_claim(d: WebDriver) -> str:
        WebDriverWait(d, 15, poll_frequency=0.2).until(
            lambda d: any(r["claimed_by"] == "Kaja" for r in rows(d)), "the page did not refresh itself")
        return str(d.execute_script("return String(window.__loaded_before)"))

    await asyncio.gather(inb(load, chrome), inb(load, chrome_nojs))
    kati = next(e for e in await api_callbacks(api))
    await api_post(api, f"/api/callbacks/{kati['id']}/claim", {"by": "Kaja"})
    marks = await asyncio.gather(inb(shows_claim, chrome), inb(shows_claim, chrome_nojs))
    assert marks == ["undefined", "undefined"]

    # with JavaScript, typing holds the refresh back: the text typed is not lost
    def type_and_wait() -> tuple[str, str]:
        d = chrome
        d.execute_script("window.__loaded_before = true;")
        el = entry_el(d, "abandoned")
        el.find_element(By.CSS_SELECTOR, "details.more summary").click()
        field = el.find_element(By.CSS_SELECTOR, "form.note input[name=note]")
        fill(field, "half a sentence")
        # until 1.3 refresh periods after this page was loaded: a reload would have come by then
        WebDriverWait(d, 10, poll_frequency=0.2).until(lambda d: d.execute_script("return performance.now()") > 6500)
        return (str(d.execute_script("return String(window.__loaded_before)")),
                str(field.get_attribute("value")))

    assert await inb(type_and_wait) == ("true", "half a sentence")
