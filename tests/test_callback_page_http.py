"""The callback page over plain HTTP against the real daemon fed real captures: the login and its cookie,
cross-site requests, and everything a browser (or anyone) can send -- answered with 400, 403, 404, 405 or 413
pages, never a 500.  The browser side is in test_callback_page_browser.py."""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import subprocess
import tempfile
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from onechance.callback_page import MAX_FORM, Sessions
from onechance.compose import build_app
from onechance.config import ConfigError

from .livehelp import api_for, fake_pbx, running, settings_for, settled

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "page-token-for-the-http-tests"
PBXS = ("abandoned", "queue_timeout", "exit_with_key")
NEVER_EXPIRE = {"expire_after": 3e8}


class Client:
    """Plain HTTP, cookies by hand, no redirects followed."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base = session, base

    async def request(self, method: str, path: str, *, cookie: str | None = None, data: Any = None,
                      headers: dict[str, str] | None = None) -> tuple[int, Any, str]:
        hdrs = dict(headers or {})
        if cookie is not None:
            hdrs["Cookie"] = cookie
        async with self.session.request(method, self.base + path, data=data, headers=hdrs,
                                        allow_redirects=False) as resp:
            return resp.status, resp.headers, await resp.text(errors="replace")

    async def login(self, token: str = TOKEN) -> str:
        """A new session: the ``oc_session=...`` cookie to send."""
        status, headers, _ = await self.request("POST", "/login", data={"token": token})
        assert status == 303 and headers["Location"] == "/callbacks"
        morsel = SimpleCookie(headers["Set-Cookie"])["oc_session"]
        return f"oc_session={morsel.value}"

    async def page(self, cookie: str, path: str = "/callbacks") -> tuple[str, dict[str, str], str]:
        """The page's CSRF token, its entries (pbx -> id) and its HTML."""
        status, _, html = await self.request("GET", path, cookie=cookie)
        assert status == 200, html
        csrf = set(re.findall(r'name="csrf" value="([^"]*)"', html))
        assert len(csrf) == 1
        entries = dict(re.findall(r'<li class="entry \w+" id="e-[0-9a-f]+" data-id="([0-9a-f]+)" '
                                  r'data-pbx="([^"]+)"', html))
        return csrf.pop(), {pbx: eid for eid, pbx in entries.items()}, html


async def raw(port: int, request: bytes) -> tuple[int, bytes]:
    """Bytes no HTTP client library would send; the status and body of the answer."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def daemon() -> Any:
    async with contextlib.AsyncExitStack() as stack:
        pbxs = {n: await stack.enter_async_context(fake_pbx(n, seed=i)) for i, n in enumerate(PBXS)}
        app = await stack.enter_async_context(running(settings_for([(n, p.port) for n, p in pbxs.items()],
                                                                   token=TOKEN, callbacks=NEVER_EXPIRE)))
        await asyncio.gather(*(settled(app, n, p) for n, p in pbxs.items()))
        api = await stack.enter_async_context(api_for(app, TOKEN))
        session = await stack.enter_async_context(aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()))
        yield app, api, Client(session, f"http://127.0.0.1:{app.http_port}")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def open_daemon() -> Any:
    async with contextlib.AsyncExitStack() as stack:
        pbx = await stack.enter_async_context(fake_pbx("abandoned"))
        app = await stack.enter_async_context(running(settings_for([("abandoned", pbx.port)],
                                                                   callbacks=NEVER_EXPIRE)))
        await settled(app, "abandoned", pbx)
        api = await stack.enter_async_context(api_for(app))
        session = await stack.enter_async_context(aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()))
        yield app, api, Client(session, f"http://127.0.0.1:{app.http_port}")


def is_page(headers: Any, body: str) -> bool:
    return headers["Content-Type"].startswith("text/html") and body.lstrip().startswith("<!doctype html>")


# ---- the login ----------------------------------------------------------------------------------------------
async def test_without_a_session_the_page_sends_to_the_login_form(daemon):
    _app, _api, c = daemon
    for cookie in (None, "oc_session=", "oc_session=123.abc.def", "oc_session=9999999999.x." + "0" * 64):
        status, headers, _ = await c.request("GET", "/callbacks", cookie=cookie)
        assert status == 303 and headers["Location"] == "/login", cookie
    status, headers, body = await c.request("GET", "/login")
    assert status == 200 and is_page(headers, body)
    assert 'action="/login"' in body and 'type="password"' in body and "Set-Cookie" not in headers


async def test_the_login_sets_an_httponly_samesite_cookie_that_is_not_the_token(daemon):
    _app, _api, c = daemon
    status, headers, _ = await c.request("POST", "/login", data={"token": TOKEN})
    assert status == 303 and headers["Location"] == "/callbacks"
    raw_cookie = headers["Set-Cookie"]
    morsel = SimpleCookie(raw_cookie)["oc_session"]
    assert morsel["httponly"] is True and morsel["samesite"] == "Strict" and morsel["path"] == "/"
    assert morsel["max-age"] == str(12 * 3600) and not morsel["secure"]
    assert TOKEN not in raw_cookie and re.fullmatch(r"\d+\.[\w-]+\.[0-9a-f]{64}", morsel.value)
    # two logins, two sessions
    assert await c.login() != await c.login()
    # the session opens the page
    status, _, body = await c.request("GET", "/callbacks", cookie=f"oc_session={morsel.value}")
    assert status == 200 and "Kati Kask" in body


async def test_a_wrong_token_is_refused(daemon):
    _app, _api, c = daemon
    for wrong in ("", "nope", TOKEN + "x", TOKEN[:-1], TOKEN.upper(), "ä" * 40):
        status, headers, body = await c.request("POST", "/login", data={"token": wrong})
        assert status == 403 and is_page(headers, body) and "That is not the token." in body, wrong
        assert "Set-Cookie" not in headers
    status, _, body = await c.request("POST", "/login", data=b"token=\xff\xfe",
                                      headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 400 and "not valid UTF-8" in body


async def test_the_session_cookie_does_not_open_the_api(daemon):
    _app, _api, c = daemon
    cookie = await c.login()
    for path in ("/api/callbacks", "/api/calls", "/api/live"):
        status, _, body = await c.request("GET", path, cookie=cookie)
        assert status == 401 and "bearer" in body, path


async def test_logging_out_ends_the_session(daemon):
    _app, _api, c = daemon
    cookie = await c.login()
    csrf, _, _ = await c.page(cookie)
    status, headers, _ = await c.request("POST", "/logout", cookie=cookie, data={"csrf": csrf})
    assert status == 303 and headers["Location"] == "/login"
    gone = SimpleCookie(headers["Set-Cookie"])["oc_session"]
    assert gone.value == "" and gone["max-age"] == "0"
    status, headers, _ = await c.request("GET", "/callbacks", cookie=cookie)  # the old cookie, kept by someone
    assert status == 303 and headers["Location"] == "/login"


async def test_sessions_expire_and_cannot_be_forged():
    now = [1_800_000_000.0]
    sessions = Sessions("tok", 2.0, clock=lambda: now[0])
    value = sessions.new()
    assert sessions.valid(value) == value
    expiry, nonce, mac = value.split(".")
    assert int(expiry) == 1_800_000_000 + 7200
    for forged in (f"{int(expiry) + 9999}.{nonce}.{mac}", f"{expiry}.other.{mac}", f"{expiry}.{nonce}.{'0' * 64}",
                   f"{expiry}.{nonce}", "", "a.b.c", value + "x", f"-1.{nonce}.{mac}"):
        assert sessions.valid(forged) is None, forged
    assert Sessions("another token", 2.0, clock=lambda: now[0]).valid(value) is None
    assert sessions.csrf(value) != sessions.csrf(sessions.new())
    now[0] += 7199
    assert sessions.valid(value) == value
    now[0] += 1
    assert sessions.valid(value) is None


# ---- cross-site requests ---------------------------------------------------------------------------------
async def test_forged_cross_site_posts_are_refused(daemon):
    _app, api, c = daemon
    cookie = await c.login()
    csrf, entries, _ = await c.page(cookie)
    other_csrf, _, _ = await c.page(await c.login())
    eid = entries["abandoned"]
    path = f"/callbacks/{eid}/claim"
    same = c.base
    cases = [
        ("no CSRF token", cookie, {"by": "Eve"}, {}),
        ("an empty CSRF token", cookie, {"by": "Eve", "csrf": ""}, {}),
        ("a wrong CSRF token", cookie, {"by": "Eve", "csrf": "0" * 64}, {}),
        ("another session's CSRF token", cookie, {"by": "Eve", "csrf": other_csrf}, {}),
        ("no session cookie", None, {"by": "Eve", "csrf": csrf}, {}),
        ("a foreign Origin", cookie, {"by": "Eve", "csrf": csrf}, {"Origin": "http://evil.example"}),
        ("a foreign Origin on our port", cookie, {"by": "Eve", "csrf": csrf},
         {"Origin": f"http://evil.example:{c.base.rsplit(':', 1)[1]}"}),
        ("a null Origin", cookie, {"by": "Eve", "csrf": csrf}, {"Origin": "null"}),
        ("a foreign Referer", cookie, {"by": "Eve", "csrf": csrf}, {"Referer": "http://evil.example/x"}),
        ("Sec-Fetch-Site: cross-site", cookie, {"by": "Eve", "csrf": csrf}, {"Sec-Fetch-Site": "cross-site"}),
    ]
    for what, ck, data, headers in cases:
        status, hdrs, body = await c.request("POST", path, cookie=ck, data=data, headers=headers)
        assert status == 403 and is_page(hdrs, body), what
    for what, headers in (("logout", {"Origin": "http://evil.example"}), ("login", {"Origin": "http://evil.example"})):
        status, _, _ = await c.request("POST", f"/{what}", cookie=cookie,
                                       data={"csrf": csrf, "token": TOKEN}, headers=headers)
        assert status == 403, what
    entry = await api.json(f"/api/callbacks/{eid}")
    assert entry["state"] == "waiting" and entry["claimed_by"] is None
    # the same request from the page itself goes through
    status, headers, _ = await c.request("POST", path, cookie=cookie, data={"by": "Ann", "csrf": csrf},
                                         headers={"Origin": same, "Referer": same + "/callbacks",
                                                  "Sec-Fetch-Site": "same-origin"})
    assert status == 303 and headers["Location"].startswith("/callbacks?msg=Claimed+by+Ann.&sig=")
    assert headers["Location"].endswith(f"#e-{eid}")
    assert (await api.json(f"/api/callbacks/{eid}"))["claimed_by"] == "Ann"
    # the message shows once redirected; a message that is not ours does not
    status, _, body = await c.request("GET", headers["Location"].split("#")[0], cookie=cookie)
    assert status == 200 and '<p class="flash" id="flash" role="status">Claimed by Ann.</p>' in body
    status, _, body = await c.request("GET", "/callbacks?msg=Call+premium+0900+now&sig=0123", cookie=cookie)
    assert status == 200 and "Call premium" not in body and 'id="flash"' not in body


async def test_the_open_page_hands_out_an_anonymous_session_and_checks_its_forms(open_daemon):
    _app, api, c = open_daemon
    status, headers, _ = await c.request("GET", "/login")
    assert status == 303 and headers["Location"] == "/callbacks"
    status, headers, body = await c.request("GET", "/callbacks")
    assert status == 200 and "Kati Kask" in body
    morsel = SimpleCookie(headers["Set-Cookie"])["oc_session"]
    assert morsel["httponly"] is True and morsel["samesite"] == "Strict"
    cookie = f"oc_session={morsel.value}"
    csrf, entries, _ = await c.page(cookie)
    eid = entries["abandoned"]
    status, _, _ = await c.request("POST", f"/callbacks/{eid}/note", data={"csrf": csrf, "note": "x"})
    assert status == 403
    status, _, _ = await c.request("POST", f"/callbacks/{eid}/note", cookie=cookie,
                                   data={"csrf": csrf, "note": "x"}, headers={"Origin": "http://evil.example"})
    assert status == 403
    assert (await api.json(f"/api/callbacks/{eid}"))["note"] is None
    status, headers, _ = await c.request("POST", f"/callbacks/{eid}/note", cookie=cookie,
                                         data={"csrf": csrf, "note": "x"})
    assert status == 303 and (await api.json(f"/api/callbacks/{eid}"))["note"] == "x"


# ---- everything else a browser can send ------------------------------------------------------------------
async def test_unknown_entries_and_routes_are_404_pages(daemon):
    _app, _api, c = daemon
    cookie = await c.login()
    csrf, entries, _ = await c.page(cookie)
    eid = entries["abandoned"]
    for path in ("/callbacks/0123456789abcdef0123456789abcdef/claim", "/callbacks/%3Cscript%3E/done",
                 f"/callbacks/{eid}/explode", f"/callbacks/{eid}/call", f"/callbacks/{eid}"):
        status, headers, body = await c.request("POST", path, cookie=cookie,
                                                data={"csrf": csrf, "by": "A", "reason": "reached"})
        assert status in (404, 405) and is_page(headers, body), path
        assert "<script>" not in body
        if path.startswith("/callbacks/0123"):
            assert status == 404 and "no such caller on the worklist" in body
    for path in ("/nope", "/callbacks/", "/static/nope.js", "/static/../callback_page.py", "/%ff"):
        status, headers, body = await c.request("GET", path, cookie=cookie)
        assert status == 404 and is_page(headers, body), path


async def test_wrong_methods_are_405_pages(daemon):
    _app, _api, c = daemon
    cookie = await c.login()
    _, entries, _ = await c.page(cookie)
    for method, path, allow in (("GET", f"/callbacks/{entries['abandoned']}/claim", "POST"),
                                ("PUT", "/callbacks", "GET"), ("DELETE", "/login", "GET"),
                                ("GET", "/logout", "POST"), ("POST", "/", "GET")):
        status, headers, body = await c.request(method, path, cookie=cookie)
        assert status == 405 and is_page(headers, body), (method, path)
        assert allow in headers["Allow"]


async def test_bad_form_values_are_400_pages(daemon):
    _app, api, c = daemon
    cookie = await c.login()
    csrf, entries, _ = await c.page(cookie)
    eid = entries["exit_with_key"]
    form = "application/x-www-form-urlencoded"
    cases = [
        ("claim", {"by": ""}, "Your name: this field is required"),
        ("claim", {"by": "   "}, "Your name: this field is required"),
        ("claim", {"by": "x" * 129}, "Your name: at most 128 characters"),
        ("note", {"note": "x" * 2001}, "Note: at most 2000 characters"),
        ("done", {"reason": "maybe"}, "Result: choose reached or gave up"),
        ("done", {}, "Result: choose reached or gave up"),
        ("done", {"reason": "reached", "note": "y" * 2001}, "Note: at most 2000 characters"),
    ]
    for action, data, message in cases:
        status, headers, body = await c.request("POST", f"/callbacks/{eid}/{action}", cookie=cookie,
                                                data={"csrf": csrf, **data})
        assert status == 400 and is_page(headers, body) and message in body, (action, data, status)
    bodies = [
        (f"csrf={csrf}&by=%ff%fe".encode(), form, "not valid UTF-8"),
        (f"csrf={csrf}&by=".encode() + b"\xc3\x28", form, "not valid UTF-8"),
        (f"csrf={csrf}&by=a&by=b".encode(), form, "given twice"),
        (f"csrf={csrf}&".encode() + b"&".join(b"f%d=1" % i for i in range(40)), form, "more than 16 fields"),
        (f'{{"csrf": "{csrf}", "by": "A"}}'.encode(), "application/json", "expected a form"),
        (f"csrf={csrf}&by=A".encode(), "multipart/form-data; boundary=x", "expected a form"),
        (f"csrf={csrf}&by=A".encode(), form + "; charset=iso-8859-1", "must be sent as UTF-8"),
    ]
    for data, ctype, message in bodies:
        status, headers, body = await c.request("POST", f"/callbacks/{eid}/claim", cookie=cookie, data=data,
                                                headers={"Content-Type": ctype})
        assert status == 400 and message in body, (data[:60], status, body[-300:])
    for query in ("?queue=%ff", "?pbx=%c3%28", "?queue=" + "q" * 201):
        status, headers, body = await c.request("GET", "/callbacks" + query, cookie=cookie)
        assert status == 400 and is_page(headers, body), query
        # a good form under a bad address: refused before anything is done
        status, headers, body = await c.request("POST", f"/callbacks/{eid}/claim{query}", cookie=cookie,
                                                data={"csrf": csrf, "by": "Someone"})
        assert status == 400 and is_page(headers, body), query
    entry = await api.json(f"/api/callbacks/{eid}")
    assert entry["state"] == "waiting" and entry["note"] is None and entry["claimed_by"] is None


async def test_oversized_bodies_are_refused(daemon):
    _app, api, c = daemon
    cookie = await c.login()
    csrf, entries, _ = await c.page(cookie)
    eid = entries["exit_with_key"]
    big = f"csrf={csrf}&note=".encode() + b"x" * MAX_FORM
    status, headers, body = await c.request("POST", f"/callbacks/{eid}/note", cookie=cookie, data=big,
                                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 413 and is_page(headers, body)

    async def chunks():  # no Content-Length: read until too much
        yield f"csrf={csrf}&note=".encode()
        for _ in range(64):
            yield b"y" * 4096

    status, headers, body = await c.request("POST", f"/callbacks/{eid}/note", cookie=cookie, data=chunks(),
                                            headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 413 and is_page(headers, body)
    huge = b"note=" + b"z" * (3 * 1024 * 1024)
    status, _, _ = await c.request("POST", "/login", data=huge,
                                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 413
    assert (await api.json(f"/api/callbacks/{eid}"))["note"] is None


async def test_bytes_that_are_not_utf8_never_make_a_500(daemon):
    app, _api, c = daemon
    cookie = await c.login()
    csrf, entries, _ = await c.page(cookie)
    eid = entries["exit_with_key"]
    host = b"Host: 127.0.0.1:%d\r\nConnection: close\r\n" % app.http_port
    requests = [
        b"GET /callbacks?queue=\xff HTTP/1.1\r\n" + host + b"Cookie: " + cookie.encode() + b"\r\n\r\n",
        b"GET /callbacks HTTP/1.1\r\n" + host + b"Cookie: oc_session=\xff\xfe." + cookie.encode() + b"\r\n\r\n",
        b"GET /callbacks HTTP/1.1\r\n" + host + b"Cookie: " + cookie.encode() + b"; oc_name=%ff\xff\r\n\r\n",
        b"GET /\xff\xfe HTTP/1.1\r\n" + host + b"\r\n",
    ]
    post = f"csrf={csrf}&by=".encode() + b"\xff\xfe"
    requests.append(b"POST /callbacks/" + eid.encode() + b"/claim HTTP/1.1\r\n" + host + b"Cookie: "
                    + cookie.encode() + b"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: "
                    + str(len(post)).encode() + b"\r\n\r\n" + post)
    origin_post = f"csrf={csrf}&by=A".encode()
    requests.append(b"POST /callbacks/" + eid.encode() + b"/claim HTTP/1.1\r\n" + host + b"Cookie: "
                    + cookie.encode() + b"\r\nOrigin: http://\xff\xfe\r\nContent-Type: "
                    b"application/x-www-form-urlencoded\r\nContent-Length: " + str(len(origin_post)).encode()
                    + b"\r\n\r\n" + origin_post)
    statuses = []
    for request in requests:
        status, _body = await raw(app.http_port, request)
        statuses.append(status)
    assert all(s < 500 for s in statuses), statuses
    # a bad query: 400; a mangled session cookie: no session (to the login); a mangled name cookie: ignored;
    # a form that is not UTF-8: 400; an Origin that is not even text: another site (403)
    assert [statuses[i] for i in (0, 1, 2, 4, 5)] == [400, 303, 200, 400, 403], statuses


async def test_the_landing_page_links_everything_and_the_page_headers(daemon):
    _app, _api, c = daemon
    status, headers, body = await c.request("GET", "/")
    assert status == 200 and is_page(headers, body)
    for href in ("/callbacks", "/metrics", "/api/calls", "/api/live", "/readyz"):
        assert f'href="{href}"' in body, href
    assert "docs/callbacks.md" in body
    cookie = await c.login()
    _, headers, _ = await c.request("GET", "/callbacks", cookie=cookie)
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Frame-Options"] == "DENY" and headers["Cache-Control"] == "no-store"
    for name, ctype in (("page.css", "text/css"), ("page.js", "text/javascript")):
        status, headers, body = await c.request("GET", f"/static/{name}")
        assert status == 200 and headers["Content-Type"].startswith(ctype) and len(body) > 100


async def test_a_channel_template_without_the_extension_is_a_configuration_error(tmp_path):
    for template in ("PJSIP/101", "PJSIP/{ext}", "PJSIP/{extension}/{0}", "PJSIP/{extension"):
        settings = settings_for([("pbx", 1)], callbacks={"originate": True, "originate_channel": template})
        with pytest.raises(ConfigError, match=r"callbacks\.originate_channel"):
            build_app(settings.model_copy(update={"data_dir": tmp_path}))


# ---- over https -------------------------------------------------------------------------------------------
async def test_over_https_the_cookie_is_secure(tmp_path):
    """The daemon's own application served over TLS (a self-signed certificate made here with openssl)."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"], check=True, capture_output=True, timeout=60)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    client_ctx.check_hostname = False
    with tempfile.TemporaryDirectory() as data_dir:
        settings = settings_for([("pbx", 1)], token=TOKEN).model_copy(update={"data_dir": Path(data_dir)})
        daemon = build_app(settings)  # not run: only its HTTP application is served here
        runner = web.AppRunner(daemon.http)
        await runner.setup()
        try:
            site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
            await site.start()
            port = runner.addresses[0][1]
            async with aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar()) as session, \
                    session.post(f"https://127.0.0.1:{port}/login", data={"token": TOKEN}, ssl=client_ctx,
                                 allow_redirects=False) as resp:
                assert resp.status == 303
                morsel = SimpleCookie(resp.headers["Set-Cookie"])["oc_session"]
            assert morsel["secure"] is True and morsel["httponly"] is True and morsel["samesite"] == "Strict"
        finally:
            await runner.cleanup()
            for close in daemon.closers:
                await close()
