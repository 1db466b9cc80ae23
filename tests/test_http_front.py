"""The HTTP front under attack, over real TCP: slow clients, oversized requests and bodies, an API flood.

Each test reproduces an attack of issue 12 at a small scale (``bench/http_load.py`` runs them at full scale)
and checks what must hold while it runs: ``/healthz``, ``/readyz`` and ``/metrics`` answer, nothing is logged
as an error (no traceback, never the token), and every refusal is counted in
``onechance_http_rejected_total{reason}``.  Timing bounds are generous: behaviour is asserted, not speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import resource
import subprocess
import time
from typing import Any

import aiohttp
import pytest

from onechance import __version__
from onechance.http_front import FRONT_KEY, HttpFront, HttpLimits

from .daemonproc import ONECHANCE, _wait_port, clean_env
from .livehelp import api_for, fake_pbx, running, sample, settings_for, settled

TOKEN = "front-token-SECRET-4711"


async def _raw(port: int, data: bytes, *, read_timeout: float = 10.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the server answers before it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), read_timeout)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def _status(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def _probe(session: aiohttp.ClientSession, url: str) -> tuple[int, float]:
    t0 = time.monotonic()
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=10)) as resp:
            await resp.read()
            return resp.status, time.monotonic() - t0
    except (aiohttp.ClientError, OSError, TimeoutError):
        return 0, time.monotonic() - t0


def _no_error_logged(caplog: pytest.LogCaptureFixture) -> None:
    bad = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not bad, [r.getMessage() for r in bad]
    assert TOKEN not in caplog.text


# ---- slow clients ------------------------------------------------------------------------------------------
async def _slow_client(port: int, stop: float, closed: list[float]) -> None:
    """Open a connection and send a request one byte at a time, never finishing it; when the server cuts it,
    open another a second later (until ``stop``).  ``closed`` gets how long each connection lived."""
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: a\r\n" * 1000
    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.2)
            continue
        opened = time.monotonic()
        try:
            for byte in request:
                if time.monotonic() >= stop:
                    return
                writer.write(bytes([byte]))
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    if await asyncio.wait_for(reader.read(1000), 0.25) == b"":
                        break  # the server closed it
        except OSError:
            pass
        finally:
            closed.append(time.monotonic() - opened)
            writer.close()
        await asyncio.sleep(1.0)


async def test_slow_clients_cannot_starve_health_and_metrics():
    """Issue 12: 1,100 slow clients (a byte every 5 s) took every file descriptor; /healthz and /metrics were
    unreachable for a minute and 300,000 tracebacks were logged.  Here: a daemon with 256 descriptors, 300
    slow clients for 5 s; every probe of /healthz and /metrics on a new connection is answered, slow
    connections are cut after ``http.header_timeout``, nothing is logged as an error."""
    env = clean_env(ONECHANCE_HTTP__LISTEN="127.0.0.1:0", ONECHANCE_HTTP__HEADER_TIMEOUT="1",
                    ONECHANCE_HTTP__TOKEN=TOKEN, ONECHANCE_DEMO__SPEED="20")

    def few_descriptors() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    proc = subprocess.Popen([*ONECHANCE, "demo"], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=env, preexec_fn=few_descriptors)
    lines: list[str] = []
    try:
        port = await _wait_port(proc, lines)
        stop = time.monotonic() + 5.0
        closed: list[float] = []
        attackers = [asyncio.create_task(_slow_client(port, stop, closed)) for _ in range(300)]
        results: dict[str, list[tuple[int, float]]] = {"/healthz": [], "/metrics": []}
        connector = aiohttp.TCPConnector(force_close=True)  # a new connection for every probe
        async with aiohttp.ClientSession(connector=connector) as session:
            await asyncio.sleep(1.0)  # the slow clients are all connected
            while time.monotonic() < stop:
                for path, got in results.items():
                    got.append(await _probe(session, f"http://127.0.0.1:{port}{path}"))
                await asyncio.sleep(0.1)
            await asyncio.gather(*attackers)
            async with session.get(f"http://127.0.0.1:{port}/metrics") as resp:
                metrics = await resp.text()
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=30)
    log = "".join(lines) + err
    for path, got in results.items():
        assert got and all(status == 200 for status, _t in got), (path, [g for g in got if g[0] != 200], len(got))
    assert len(closed) > 600, "the server cut the slow connections (and the attackers came back)"
    assert max(closed) < 4.0, max(closed)  # header_timeout 1 s, or evicted sooner
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
    assert TOKEN not in log
    cut = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
              if line.startswith("onechance_http_rejected_total{") and
              ('reason="timeout"' in line or 'reason="evicted"' in line or 'reason="connections"' in line))
    assert cut >= 300


# ---- oversized requests ------------------------------------------------------------------------------------
@pytest.fixture
async def daemon(caplog: pytest.LogCaptureFixture) -> Any:
    caplog.set_level(logging.DEBUG)
    async with fake_pbx("answered") as pbx, running(settings_for(
            [("p", pbx.port)], token=TOKEN,
            http={"header_timeout": 1.0, "max_body_size": 4096, "api_concurrency": 2, "api_queue": 2})) as app:
        await settled(app, "p", pbx)
        async with api_for(app, TOKEN) as api:
            yield app, api
        await _handlers_done()


def _handling_requests() -> list[asyncio.Task[Any]]:
    """The requests aiohttp is handling now (in this event loop)."""
    return [t for t in asyncio.all_tasks() if not t.done()
            and t.get_coro().__qualname__ == "RequestHandler._handle_request"]  # type: ignore[union-attr]


async def _handlers_done(timeout: float = 10.0) -> None:
    """Wait until every request aiohttp is handling has ended (those of connections a test cut too): one left
    pending when the test's event loop closes is destroyed later, logging an asyncio ERROR into whichever test
    runs then."""
    deadline = time.monotonic() + timeout
    while _handling_requests():
        assert time.monotonic() < deadline, "aiohttp request handlers still running"
        await asyncio.sleep(0.02)


async def test_an_oversized_header_is_refused_quietly_without_the_token_in_any_log(daemon, caplog):
    app, api = daemon
    pad = b"x" * 20000
    for request in (
        b"GET /api/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + pad + b"\r\n\r\n",
        b"GET /api/calls?q=" + pad + b" HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: y\r\n" % i for i in range(500)) + b"\r\n",
    ):
        answer = await _raw(app.http_port, request)
        assert _status(answer) == 431, answer[:200]
        assert answer.endswith(b'{"error": "request line or headers too large"}')
        assert TOKEN.encode() not in answer
    answer = await _raw(app.http_port, b"\x16\x03\x01 not http at all\r\n\r\n")
    assert _status(answer) == 400
    m = await api.metrics()
    assert sample(m, "onechance_http_rejected_total", reason="header_too_large") == 3
    assert sample(m, "onechance_http_rejected_total", reason="bad_request") == 1
    _no_error_logged(caplog)
    status, _body = await api.get("/healthz")
    assert status == 200


async def test_a_body_over_the_limit_is_refused_with_413(daemon, caplog):
    _app, api = daemon
    big = {"note": "n" * 8000}
    async with api.session.post(f"{api.base}/api/callbacks/1/note", json=big, headers=api.headers) as resp:
        assert resp.status == 413 and "error" in await resp.json()
    # chunked, without a Content-Length: the limit holds all the same
    async def chunks() -> Any:
        for _ in range(10):
            yield b"n" * 1000

    async with api.session.post(f"{api.base}/api/callbacks/1/note", data=chunks(),
                                headers={**api.headers, "Content-Type": "application/json"}) as resp:
        assert resp.status == 413
    m = await api.metrics()
    assert sample(m, "onechance_http_rejected_total", reason="body_too_large") == 2
    _no_error_logged(caplog)


async def test_a_slow_body_is_cut_after_the_header_timeout(daemon, caplog):
    app, _api = daemon
    reader, writer = await asyncio.open_connection("127.0.0.1", app.http_port)
    writer.write(b"POST /api/callbacks/1/note HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode()
                 + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
    t0 = time.monotonic()
    answer = b""
    for _ in range(40):  # a byte every 0.1 s: the body would take 100 s
        writer.write(b" ")
        with contextlib.suppress(TimeoutError):
            answer += await asyncio.wait_for(reader.read(1000), 0.1)
        if answer:
            break
    writer.close()
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert time.monotonic() - t0 < 3.5
    _no_error_logged(caplog)


async def test_an_idle_connection_that_never_sends_a_request_is_closed(daemon):
    app, api = daemon
    reader, writer = await asyncio.open_connection("127.0.0.1", app.http_port)
    t0 = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert 0.5 < time.monotonic() - t0 < 4
    m = await api.metrics()
    assert sample(m, "onechance_http_rejected_total", reason="timeout") >= 1


# ---- API saturation -------------------------------------------------------------------------------------
class GateStore:
    """A store whose queries wait until the gate opens (a slow database)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.waiting = 0

    async def _wait(self, value: Any) -> Any:
        self.waiting += 1
        try:
            await self.gate.wait()
        finally:
            self.waiting -= 1
        return value

    async def list_calls(self, flt: Any) -> list[dict[str, Any]]:
        return await self._wait([])

    async def count_calls(self, flt: Any) -> int:
        return await self._wait(0)

    async def stored_versions(self, keys: Any, flt: Any) -> dict[Any, Any]:
        return await self._wait({})

    async def stored_calls(self, keys: Any) -> dict[Any, Any]:
        return await self._wait({})

    async def get_call(self, call_id: str, pbx: str | None = None) -> dict[str, Any] | None:
        return await self._wait(None)


async def test_a_saturated_api_answers_503_and_health_metrics_stay_up(caplog):
    """Issue 12: 1,000 concurrent ``/api/calls?limit=1000`` stalled /healthz for 62 s.  Here: 2 API requests at
    once, 2 waiting; 20 more are told 503 with Retry-After at once, while /healthz, /readyz and /metrics
    answer; once the store answers, the admitted ones complete."""
    caplog.set_level(logging.INFO)
    store = GateStore()
    async with fake_pbx("answered") as pbx, running(settings_for(
            [("p", pbx.port)], token=TOKEN, http={"api_concurrency": 2, "api_queue": 2, "store_timeout": 30}),
            store_query=store) as app:
        await settled(app, "p", pbx)
        async with api_for(app, TOKEN) as api:
            calls = [asyncio.create_task(api.get("/api/calls", params={"limit": "1000"})) for _ in range(24)]
            deadline = time.monotonic() + 10
            while store.waiting < 2 or sum(t.done() for t in calls) < 20:
                assert time.monotonic() < deadline, (store.waiting, sum(t.done() for t in calls))
                await asyncio.sleep(0.02)
            refused = [t.result() for t in calls if t.done()]
            assert all(status == 503 for status, _b in refused), refused
            assert refused[0][1] == {"error": "busy: too many API requests at once, retry in a moment"}
            for path in ("/healthz", "/readyz", "/metrics"):
                status, _body = await asyncio.wait_for(api.get(path), 5)
                assert status == 200, path
            m = await api.metrics()
            assert sample(m, "onechance_http_rejected_total", reason="busy") == 20
            store.gate.set()
            admitted = await asyncio.wait_for(asyncio.gather(*calls), 20)
            assert sum(1 for status, _b in admitted if status == 200) == 4
            async with api.session.get(api.base + "/api/calls", headers=api.headers) as resp:
                assert resp.status == 200
        await _handlers_done()
    _no_error_logged(caplog)


async def test_a_request_whose_client_left_is_ended_at_shutdown(caplog):
    """A client that gives up while its request waits for a slow store: aiohttp lets the handler run on and
    forgets it once the connection is closed.  At shutdown the front ends it (one left waiting when the loop
    closes is destroyed pending, an asyncio ERROR), and says so."""
    caplog.set_level(logging.INFO)
    store = GateStore()
    async with fake_pbx("answered") as pbx:
        async with running(settings_for([("p", pbx.port)], http={"store_timeout": 60}), store_query=store) as app:
            async with api_for(app) as api:
                request = asyncio.create_task(api.get("/api/calls"))
                while store.waiting < 1:
                    await asyncio.sleep(0.02)
                request.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await request
            await asyncio.sleep(0.1)  # the connection is closed, the handler still waits for the store
            assert len(_handling_requests()) == 1
        assert _handling_requests() == []
        assert store.waiting == 0
    assert "shutdown: 1 HTTP request(s) of closed connections cut" in caplog.text
    _no_error_logged(caplog)


async def test_a_503_says_when_to_retry(caplog):
    store = GateStore()
    async with fake_pbx("answered") as pbx, running(settings_for(
            [("p", pbx.port)], http={"api_concurrency": 1, "api_queue": 0, "store_timeout": 30}),
            store_query=store) as app, api_for(app) as api:
        first = asyncio.create_task(api.get("/api/calls"))
        while store.waiting < 1:
            await asyncio.sleep(0.02)
        async with api.session.get(api.base + "/api/live") as resp:
            assert resp.status == 503 and resp.headers["Retry-After"] == "1"
        store.gate.set()
        assert (await first)[0] == 200
        await _handlers_done()


async def test_over_the_connection_limit_a_health_check_is_still_answered(caplog):
    """Every connection held by an API request that waits its turn, and more coming: a newcomer cannot be let in,
    yet ``GET /healthz`` is answered 200 at the door (a flood of API requests must not fail a liveness probe)
    and anything else 503; the door answers quietly and is counted."""
    caplog.set_level(logging.INFO)
    store = GateStore()
    async with fake_pbx("answered") as pbx, running(settings_for(
            [("p", pbx.port)], http={"max_connections": 4, "api_concurrency": 1, "api_queue": 1000,
                                     "store_timeout": 30}), store_query=store) as app:
        await settled(app, "p", pbx)
        front = app.http[FRONT_KEY]
        port = app.http_port
        held = []
        for _ in range(front.hard_max):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET /api/calls HTTP/1.1\r\nHost: x\r\n\r\n")
            held.append((reader, writer))
        try:
            deadline = time.monotonic() + 10
            while store.waiting < 1 or front.connections < front.hard_max:
                assert time.monotonic() < deadline, (store.waiting, front.connections, front.hard_max)
                await asyncio.sleep(0.02)
            health = await _raw(port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", read_timeout=5)
            assert _status(health) == 200 and health.endswith(b'"status": "ok", "version": "' + __version__.encode()
                                                               + b'"}'), health
            assert _status(await _raw(port, b"GET /api/live HTTP/1.1\r\nHost: x\r\n\r\n", read_timeout=5)) == 503
            assert _status(await _raw(port, b"GET /healthzzz HTTP/1.1\r\nHost: x\r\n\r\n", read_timeout=5)) == 503
            silent_at = time.monotonic()
            assert _status(await _raw(port, b"", read_timeout=5)) == 503  # says nothing: the door shuts soon
            assert time.monotonic() - silent_at < 2
            assert front.rejected["connections"] >= 4 and not front.door
        finally:
            store.gate.set()
            for _reader, writer in held:
                writer.close()
            deadline = time.monotonic() + 15  # every held request answered or dropped before the daemon stops
            while front.connections and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
        assert front.connections == 0
        await _handlers_done()
    _no_error_logged(caplog)


# ---- the exposure warning -------------------------------------------------------------------------------
@pytest.mark.parametrize("host, token, warned", [
    ("127.0.0.1", None, False), ("::1", None, False), ("localhost", None, False),
    ("0.0.0.0", None, True), ("::", None, True), ("192.168.1.10", None, True), ("pbx.example.org", None, True),
    ("0.0.0.0", TOKEN, False),
])
def test_listening_beyond_loopback_without_a_token_is_warned(host, token, warned, caplog):
    caplog.set_level(logging.WARNING)
    HttpFront(HttpLimits(), token=token).check_exposure(host)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert bool(messages) == warned, messages
    if warned:
        assert "http.token" in messages[0] and host in messages[0]
