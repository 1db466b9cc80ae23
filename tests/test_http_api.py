"""The HTTP API over real HTTP: authentication, filters, errors, one call, the live view.

(``test_api_*.py``: paging, every filter on both stores, CSV, the merge with memory, queues and operators, the
OpenAPI description.)"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio

from onechance.demo import Hold, load_capture
from onechance.replay import replay_files

from .livehelp import (
    api_for,
    capture,
    fake_pbx,
    pipeline,
    running,
    sample,
    settings_for,
    settled,
    wait_until,
    without_iso,
)
from .truthcheck import DATA

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "api-token-for-tests"
PBXS = ("abandon_then_callback", "bounced", "short_abandon", "join_empty")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def daemon() -> Any:
    async with contextlib.AsyncExitStack() as stack:
        pbxs = {n: await stack.enter_async_context(fake_pbx(n, seed=i)) for i, n in enumerate(PBXS)}
        app = await stack.enter_async_context(
            running(settings_for([(n, p.port) for n, p in pbxs.items()], token=TOKEN)))
        await asyncio.gather(*(settled(app, n, p) for n, p in pbxs.items()))
        api = await stack.enter_async_context(api_for(app, TOKEN))
        yield app, api


def _all() -> list[dict[str, Any]]:
    out = []
    for name in PBXS:
        out.extend(j.to_json() for j in replay_files([str(DATA / f"{name}.ami")], pbx=name).journeys)
    return out


async def test_api_needs_the_bearer_token(daemon):
    _app, api = daemon
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": TOKEN}):
        for path in ("/api/calls", "/api/live", "/api/calls/x"):
            status, body = await api.get(path, headers=headers)
            assert status == 401, (path, headers)
            assert body == {"error": "missing or wrong bearer token"}
    status, _ = await api.get("/api/calls", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200


@pytest.mark.parametrize("header", [f"bearer {TOKEN}", f"BEARER {TOKEN}", f"BeArEr {TOKEN}", f"Bearer  {TOKEN}",
                                    f"Bearer {TOKEN} "])
async def test_the_auth_scheme_is_case_insensitive(daemon, header):
    _app, api = daemon
    status, body = await api.get("/api/calls", headers={"Authorization": header}, params={"limit": "1"})
    assert status == 200, body


@pytest.mark.parametrize("header", [f"Basic {TOKEN}", f"Bearer{TOKEN}", "Bearer", f"Bearer {TOKEN}x",
                                    f"Bearer {TOKEN[:-1]}", f"{TOKEN} Bearer", f"Token {TOKEN}"])
async def test_anything_but_the_bearer_token_is_refused(daemon, header):
    _app, api = daemon
    status, body = await api.get("/api/calls", headers={"Authorization": header})
    assert status == 401 and body == {"error": "missing or wrong bearer token"}


async def test_a_token_that_is_not_utf8_gets_a_401_not_a_500(daemon):
    app, _api = daemon
    reader, writer = await asyncio.open_connection("127.0.0.1", app.http_port)
    writer.write(b"GET /api/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\xfe" + TOKEN.encode()
                 + b"\r\nConnection: close\r\n\r\n")
    status_line = await reader.readline()
    body = await reader.read()
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 401 "), status_line
    assert body.endswith(b'{"error": "missing or wrong bearer token"}')


async def test_health_ready_and_metrics_need_no_token(daemon):
    _app, api = daemon
    status, body = await api.get("/healthz", headers={})
    assert status == 200 and body["status"] == "ok"
    status, body = await api.get("/readyz", headers={})
    assert status == 200 and body["ready"] is True and set(body["pbx"]) == set(PBXS)
    status, text = await api.get("/metrics", headers={})
    assert status == 200 and "onechance_calls_total" in text


async def test_calls_newest_first_in_the_replay_shape(daemon):
    _app, api = daemon
    calls = await api.calls()  # the ISO times checked and taken out (livehelp.without_iso)
    want = sorted(_all(), key=lambda c: (c["started_at"], c["call_id"], c["pbx"]), reverse=True)
    assert calls == want
    body = await api.json("/api/calls", params={"limit": "2"})
    assert [c["call_id"] for c in body["calls"]] == [c["call_id"] for c in want[:2]]
    assert body["total"] == len(want) and body["partial"] is False and "cursor=" in body["next"]
    first = body["calls"][0]
    assert list(first)[list(first).index("started_at") + 1] == "started_at_iso"  # next to the epoch field
    assert list(first)[list(first).index("ended_at") + 1] == "ended_at_iso"


@pytest.mark.parametrize("params, expected", [
    ({"outcome": "abandoned"}, lambda c: c["outcome"] == "abandoned"),
    ({"outcome": "answered,rejected"}, lambda c: c["outcome"] in ("answered", "rejected")),
    ({"queue": "sales"}, lambda c: any(q["queue"] == "sales" for q in c["queues"])),
    ({"pbx": "bounced"}, lambda c: c["pbx"] == "bounced"),
    ({"queue": "support", "outcome": "abandoned"},
     lambda c: c["outcome"] == "abandoned" and any(q["queue"] == "support" for q in c["queues"])),
])
async def test_call_filters(daemon, params, expected):
    _app, api = daemon
    calls = await api.calls(**params)
    want = [c["call_id"] for c in _all() if expected(c)]
    assert sorted(c["call_id"] for c in calls) == sorted(want)
    assert want


async def test_since_takes_epoch_seconds_or_iso_dates(daemon):
    _app, api = daemon
    starts = sorted(c["started_at"] for c in _all())
    middle = starts[len(starts) // 2]
    by_epoch = await api.calls(since=str(middle))
    assert sorted(c["started_at"] for c in by_epoch) == [s for s in starts if s >= middle]
    iso = datetime.fromtimestamp(middle, UTC).isoformat()
    assert await api.calls(since=iso) == by_epoch
    assert await api.calls(since=iso.replace("+00:00", "Z")) == by_epoch
    assert await api.calls(since=str(starts[-1] + 1)) == []


@pytest.mark.parametrize("params, message", [
    ({"limit": "0"}, "limit"),
    ({"limit": "1001"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"outcome": "lost"}, "outcome"),
    ({"since": "yesterday"}, "since"),
    ({"since": "nan"}, "since"),
    ({"since": "inf"}, "since"),
    ({"sort": "asc"}, "unknown parameter"),
    ({"lost": "maybe"}, "lost"),
    ({"cursor": "not-a-cursor"}, "cursor"),
])
async def test_bad_parameters_get_a_400_with_a_json_error(daemon, params, message):
    _app, api = daemon
    status, body = await api.get("/api/calls", params=params)
    assert status == 400
    assert message in body["error"]


async def test_limit_up_to_1000(daemon):
    _app, api = daemon
    status, body = await api.get("/api/calls", params={"limit": "1000"})
    assert status == 200 and len(body["calls"]) == len(_all()) and body["next"] is None


async def test_one_call_by_id(daemon):
    _app, api = daemon
    want = _all()[0]
    assert without_iso(await api.json(f"/api/calls/{want['call_id']}")) == want
    assert without_iso(await api.json(f"/api/calls/{want['call_id']}", params={"pbx": want["pbx"]})) == want
    status, body = await api.get(f"/api/calls/{want['call_id']}", params={"pbx": "elsewhere"})
    assert status == 404 and "no call" in body["error"]
    status, body = await api.get("/api/calls/1234.5")
    assert status == 404 and body["error"] == "no call '1234.5'"
    status, body = await api.get("/api/calls/x", params={"verbose": "1"})
    assert status == 400
    status, body = await api.get("/api/nothing-here")
    assert status == 404 and "error" in body
    async with api.session.post(api.base + "/api/calls", headers=api.headers) as resp:
        assert resp.status == 405 and await resp.json() == {"error": "Method Not Allowed"}
        assert resp.headers["Allow"] == "GET,HEAD"


async def test_live_view_while_a_caller_waits():
    """The stream is held while the caller waits in the queue: /api/live, /api/calls/{id} and the queue
    gauges show the call in progress; once the stream goes on, it moves to /api/calls."""
    name = "answered"
    (ref,) = replay_files([str(DATA / f"{name}.ami")]).journeys
    visit = ref.queues[0]
    recs = load_capture(capture(name))
    waiting_at = next(i for i, r in enumerate(recs) if r.ts and r.ts > visit.joined_at + 0.5)
    assert recs[waiting_at].ts < visit.left_at
    async with fake_pbx(name) as pbx:
        pbx.plan = {waiting_at: Hold()}
        async with running(settings_for([("p", pbx.port)])) as app, api_for(app) as api:
            await wait_until(lambda: pbx.holding.is_set() and pipeline(app, "p").ready, what="holding")
            await wait_until(lambda: pipeline(app, "p").queue.qsize() == 0, what="drained")
            live = await api.json("/api/live")
            assert [c["call_id"] for c in live["calls"]] == [ref.call_id]
            (call,) = live["calls"]
            assert call["outcome"] == "in_progress" and call["ended_at"] is None
            assert call["queues"][0]["result"] == "waiting"
            assert live["queues"]["p"]["support"]["callers"] == 1
            assert 0 < live["queues"]["p"]["support"]["oldest_wait_seconds"] < 5
            assert await api.json(f"/api/calls/{ref.call_id}") == call
            assert await api.calls() == []
            m = await api.metrics()
            assert sample(m, "onechance_queue_callers", pbx="p", queue="support") == 1
            assert 0 < sample(m, "onechance_queue_oldest_wait_seconds", pbx="p", queue="support") < 5
            assert sample(m, "onechance_calls_in_progress", pbx="p") == 1
            pbx.release()
            await settled(app, "p", pbx)
            assert (await api.json("/api/live"))["calls"] == []
            (done,) = await api.calls()
            assert done["call_id"] == ref.call_id and done["outcome"] == "answered"
            m = await api.metrics()
            assert sample(m, "onechance_queue_callers", pbx="p", queue="support") == 0


async def test_readyz_says_why_before_the_first_login():
    async with fake_pbx("answered") as pbx:
        pbx.refuse_logins = 10**6
        async with running(settings_for([("p", pbx.port)])) as app, api_for(app) as api:
            status, body = await api.get("/readyz")
            assert status == 503 and body["ready"] is False and body["reason"].startswith("p: ")
            await wait_until(lambda: pipeline(app, "p").link.login_failures >= 1, what="a refused login")
            status, body = await api.get("/readyz")
            assert status == 503 and "login refused" in body["reason"]


class StuckStore:
    """A store whose queries never return (a locked table, a connection to a server that vanished)."""

    def __init__(self) -> None:
        self.queries = 0

    async def _stuck(self) -> Any:
        self.queries += 1
        await asyncio.Event().wait()

    async def list_calls(self, flt: Any) -> list[dict[str, Any]]:
        return await self._stuck()

    async def count_calls(self, flt: Any) -> int:
        return await self._stuck()

    async def stored_versions(self, keys: Any, flt: Any) -> dict[Any, Any]:
        return await self._stuck()

    async def stored_calls(self, keys: Any) -> dict[Any, Any]:
        return await self._stuck()

    async def get_call(self, call_id: str, pbx: str | None = None) -> dict[str, Any] | None:
        return await self._stuck()


async def test_a_request_stuck_in_flight_does_not_hold_up_the_exit():
    """SIGTERM while a request waits on a store query that never returns (a locked table): the process
    still exits promptly instead of waiting aiohttp's default 60 s per shutdown stage."""
    async with fake_pbx("answered") as pbx:
        async with running(settings_for([("p", pbx.port)]), store_query=StuckStore()) as app:
            async with api_for(app) as api:
                request = asyncio.create_task(api.get("/api/calls"))
                await asyncio.sleep(0.3)
                assert not request.done()
                request.cancel()
            t0 = time.monotonic()
        assert time.monotonic() - t0 < 5  # and running() checked the exit code is 0


async def test_a_stuck_store_query_is_answered_from_memory():
    stuck = StuckStore()
    async with fake_pbx("answered") as pbx, running(settings_for([("p", pbx.port)], http={"store_timeout": 0.3}),
                                                    store_query=stuck) as app:
        await settled(app, "p", pbx)
        async with api_for(app) as api:
            body = await asyncio.wait_for(api.json("/api/calls"), 3)
            assert [c["outcome"] for c in body["calls"]] == ["answered"]
            assert body["partial"] is True and body["total"] == 1 and body["next"] is None
            (call,) = body["calls"]
            assert await asyncio.wait_for(api.json(f"/api/calls/{call['call_id']}"), 3) == call
    assert stuck.queries == 2
