"""``GET /api/queues`` and ``GET /api/operators`` of a real daemon fed the captures, its store SQLite then
PostgreSQL: the day's figures are what ``onechance report`` computes (``daily_figures``) and what the replayed
journeys imply, the members by state are the pipeline's (and the metrics'), callers waiting show live; the
figures are cached; a store that fails leaves the live figures answering."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio

from onechance.api_queues import FIGURES_KEY, DayFigures, day_bounds, local_zone
from onechance.demo import Hold, load_capture
from onechance.journey import CallPolicy
from onechance.members import MemberState
from onechance.replay import replay_files
from onechance.store import JourneyWriter, daily_figures, make_engine, upgrade

from .livehelp import api_for, capture, fake_pbx, pipeline, running, sample, settings_for, settled, wait_until
from .storehelp import wait_drained
from .truthcheck import DATA

pytestmark = pytest.mark.asyncio(loop_scope="module")

PBXS = {"p1": "load_a", "p2": "abandon_then_callback", "p3": "join_empty", "p4": "outbound_callback"}
STATES = [str(s) for s in MemberState]


def _replayed(pbx: str) -> list[dict[str, Any]]:
    return [dict(j.to_json()) for j in replay_files([str(DATA / f"{PBXS[pbx]}.ami")], pbx=pbx).journeys]


def _days() -> list[str]:
    """The days (UTC) the captures' calls are on."""
    starts = [c["started_at"] for p in PBXS for c in _replayed(p)]
    return sorted({datetime.fromtimestamp(s, UTC).date().isoformat() for s in starts})


def _day() -> str:
    """load_a's day."""
    return datetime.fromtimestamp(_replayed("p1")[0]["started_at"], UTC).date().isoformat()


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('queues') / 'onechance.db'}"
        return
    server = request.getfixturevalue("pg_server")
    url = server.create_database()
    yield url
    server.drop_database(url)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def daemon(database: str) -> Any:
    async with contextlib.AsyncExitStack() as stack:
        pbxs = {p: await stack.enter_async_context(fake_pbx(n, seed=i)) for i, (p, n) in enumerate(PBXS.items())}
        settings = settings_for([(p, f.port) for p, f in pbxs.items()],
                                database={"url": database, "flush_interval": 0.05})
        app = await stack.enter_async_context(running(settings))
        await asyncio.gather(*(settled(app, p, f) for p, f in pbxs.items()))
        await wait_drained(next(s for s in app.services if isinstance(s, JourneyWriter)))
        api = await stack.enter_async_context(api_for(app))
        engine = make_engine(database)
        stack.push_async_callback(engine.dispose)
        yield app, api, engine


def _visits_on(calls: list[dict[str, Any]], day: str) -> dict[str, dict[str, int]]:
    """Per queue, from the journeys: visits offered, answered, abandoned, rejected; lost callers by first queue."""
    out: dict[str, dict[str, int]] = {}

    def row(q: str) -> dict[str, int]:
        return out.setdefault(q, {"offered": 0, "answered": 0, "abandoned": 0, "rejected": 0, "lost": 0})

    for c in calls:
        for v in (*c["queues"], *c["consultations"]):
            if datetime.fromtimestamp(v["joined_at"], UTC).date().isoformat() != day:
                continue
            r = row(v["queue"])
            if v["result"] == "rejected":
                r["rejected"] += 1
                continue
            r["offered"] += 1
            r["answered"] += v["result"] == "answered"
            r["abandoned"] += v["result"] == "abandoned"
        if c["lost"] and datetime.fromtimestamp(c["started_at"], UTC).date().isoformat() == day:
            row(c["queues"][0]["queue"] if c["queues"] else "")["lost"] += 1
    return out


@pytest.mark.parametrize("index", [0, 1])
async def test_the_days_figures_are_the_reports_and_the_journeys(daemon, index):
    _app, api, engine = daemon
    days = _days()
    assert len(days) == 2
    day = days[index]
    body = await api.json("/api/queues", params={"date": day, "tz": "UTC"})
    assert body["date"] == day and body["timezone"] == "UTC" and body["partial"] is False
    start, end = day_bounds(datetime.fromisoformat(day).date(), ZoneInfo("UTC"))
    checked = 0
    for pbx in PBXS:
        report = {d.queue: d for d in await daily_figures(engine, start, end, pbx=pbx, policy=CallPolicy())}
        mine = {q["queue"]: q for q in body["queues"] if q["pbx"] == pbx}
        assert set(report) - {""} <= set(mine)
        journeys = _visits_on(_replayed(pbx), day)
        for queue, q in mine.items():
            today = q["today"]
            d = report.get(queue)
            if d is None:
                assert today["offered"] == today["answered"] == today["lost"] == 0 and today["service_level"] is None
                assert queue not in journeys
                continue
            assert today == {"offered": d.offered, "answered": d.answered, "abandoned": d.abandoned,
                             "timeouts": d.timeouts, "rejected": d.rejected, "lost": d.lost,
                             "recovered": d.recovered, "asa_seconds": d.asa_seconds,
                             "service_level": d.service_level}, (pbx, queue)
            assert {k: today[k] for k in journeys[queue]} == journeys[queue], (pbx, queue)
            checked += bool(d.offered)
    assert checked >= 1
    if day == _day():
        load = {q["queue"]: q["today"] for q in body["queues"] if q["pbx"] == "p1"}
        assert load["support"]["service_level"] is not None and load["support"]["lost"] > 0
        assert {q["queue"]: q["today"]["rejected"] for q in body["queues"] if q["pbx"] == "p3"}["empty"] == 1
    else:
        p4 = {q["queue"]: q["today"] for q in body["queues"] if q["pbx"] == "p4"}
        assert p4["support"]["lost"] == 1 and p4["support"]["recovered"] == 1


async def test_members_by_state_are_the_pipelines_and_the_metrics(daemon):
    app, api, _engine = daemon
    body = await api.json("/api/queues", params={"tz": "UTC"})
    metrics = await api.metrics()
    seen = 0
    for q in body["queues"]:
        counts = pipeline(app, q["pbx"]).members.counts()
        assert q["members"] == {s: counts.get((q["queue"], MemberState(s)), 0) for s in STATES}
        for s in STATES:
            gauge = sample(metrics, "onechance_queue_members", pbx=q["pbx"], queue=q["queue"], state=s)
            assert q["members"][s] == gauge
        assert q["waiting"] == 0 and q["oldest_wait_seconds"] == 0
        seen += sum(q["members"].values())
    assert seen > 0
    load = {q["queue"]: q for q in body["queues"] if q["pbx"] == "p1"}
    assert sum(load["support"]["members"].values()) == 3 and sum(load["sales"]["members"].values()) == 2


async def test_filters_and_errors(daemon):
    _app, api, _engine = daemon
    every = await api.json("/api/queues", params={"tz": "UTC"})
    body = await api.json("/api/queues", params={"pbx": "p1,p2", "queue": "support", "tz": "UTC"})
    assert body["queues"] == [q for q in every["queues"] if q["pbx"] in ("p1", "p2") and q["queue"] == "support"]
    assert [q["pbx"] for q in body["queues"]] == ["p1", "p2"]
    body = await api.json("/api/queues?pbx=p1&pbx=p2&queue=support&tz=UTC")
    assert [q["pbx"] for q in body["queues"]] == ["p1", "p2"]
    for path in ("/api/queues", "/api/operators"):
        for params, message in (({"date": "22.11.2026"}, "date: expected YYYY-MM-DD"),
                                ({"tz": "Mars/Olympus"}, "tz: unknown time zone"),
                                ({"since": "1"}, "unknown parameter(s): since"),
                                ({"date": "2026-11-22", "tz": "UTC", "tz ": "x"}, "unknown parameter")):
            status, err = await api.get(path, params=params)
            assert status == 400 and message in err["error"], (path, params, err)


async def test_operators_are_the_members_with_their_days_calls(daemon):
    app, api, _engine = daemon
    day = _day()
    body = await api.json("/api/operators", params={"date": day, "tz": "UTC"})
    assert body["partial"] is False
    start, end = day_bounds(datetime.fromisoformat(day).date(), ZoneInfo("UTC"))
    for pbx in PBXS:
        members = list(pipeline(app, pbx).members.members())
        mine = [o for o in body["operators"] if o["pbx"] == pbx]
        by_interface = {o["interface"]: o for o in mine if o["member"]}
        assert set(by_interface) == {m.interface for m in members}
        legs: dict[str, tuple[set[str], float]] = {}
        for c in _replayed(pbx):
            for leg in c["legs"]:
                if leg["answered_at"] is not None and start <= leg["answered_at"] < end:
                    ids, talk = legs.get(leg["interface"], (set(), 0.0))
                    legs[leg["interface"]] = (ids | {c["call_id"]}, talk + leg["talk_seconds"])
        for interface, o in by_interface.items():
            ms = [m for m in members if m.interface == interface]
            assert o["queues"] == sorted(m.queue for m in ms) and o["name"] == ms[0].name
            assert o["queue_states"] == {m.queue: str(m.state) for m in ms}
            assert o["state"] in o["queue_states"].values()
            ids, talk = legs.pop(interface, (set(), 0.0))
            assert o["answered"] == len(ids) and o["talk_seconds"] == pytest.approx(talk, abs=0.01), o
        # who talked with callers without being a member (the outbound callback's dialler) is listed too
        others = {o["interface"]: o for o in mine if not o["member"]}
        for interface, (ids, talk) in legs.items():
            assert others[interface]["answered"] == len(ids), (pbx, interface)
            assert others[interface]["talk_seconds"] == pytest.approx(talk, abs=0.01)
    load = [o for o in body["operators"] if o["pbx"] == "p1"]
    assert {o["name"] for o in load} >= {"Anna Tamm", "Дмитрий Орлов"} and all(o["member"] for o in load)
    answered = [c for c in _replayed("p1") if c["outcome"] == "answered"]
    assert sum(o["answered"] for o in load) >= len(answered)  # each answered call, once per operator
    queue_only = await api.json("/api/operators", params={"date": day, "tz": "UTC", "queue": "billing"})
    assert {o["name"] for o in queue_only["operators"] if o["pbx"] == "p1"} == {"Мария Иванова", "Laura Lill"}


async def test_the_days_figures_are_cached_and_shared(daemon):
    app, api, _engine = daemon
    figures = app.http[FIGURES_KEY]
    params = {"date": "2026-11-20", "tz": "Europe/Tallinn"}  # a day no other test asks for
    before = figures.queries
    first = await api.json("/api/queues", params=params)
    assert figures.queries == before + len(PBXS)
    assert await api.json("/api/queues", params=params) == first
    assert figures.queries == before + len(PBXS)  # from the cache
    results = await asyncio.gather(*(api.json("/api/operators", params=params) for _ in range(10)))
    assert all(r == results[0] for r in results) and figures.queries == before + len(PBXS) + 1


async def test_concurrent_requests_share_one_query_and_it_expires(tmp_path):
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'onechance.db'}")
    try:
        await upgrade(engine)
        now = [100.0]
        figures = DayFigures(engine, CallPolicy(), ttl=5.0, clock=lambda: now[0])
        results = await asyncio.gather(*(figures.operators(0.0, 10.0) for _ in range(20)))
        assert results == [[]] * 20 and figures.queries == 1
        now[0] += 4.9
        await figures.operators(0.0, 10.0)
        assert figures.queries == 1
        now[0] += 0.2
        await figures.operators(0.0, 10.0)
        assert figures.queries == 2 and figures.failures == 0
    finally:
        await engine.dispose()


async def test_today_by_default_in_the_machines_zone(tmp_path):
    """A capture moved to the present: without date, the figures are today's (in the machine's zone)."""
    async with fake_pbx("abandon_then_callback") as pbx:
        pbx.start_at_present()
        settings = settings_for([("p", pbx.port)], data_dir=tmp_path, database={"flush_interval": 0.05})
        async with running(settings) as app:
            await settled(app, "p", pbx)
            await wait_drained(next(s for s in app.services if isinstance(s, JourneyWriter)))
            async with api_for(app) as api:
                body = await api.json("/api/queues")
                ops = await api.json("/api/operators")
        zone = ZoneInfo(body["timezone"]) if body["timezone"] != "localtime" else None
        assert body["date"] == datetime.now(zone).date().isoformat() and body["partial"] is False
        start, end = day_bounds(datetime.fromisoformat(body["date"]).date(), zone or local_zone().tz)
        engine = make_engine(settings.database_url())
        try:
            (report,) = [d for d in await daily_figures(engine, start, end, pbx="p") if d.queue == "support"]
        finally:
            await engine.dispose()
        support = next(q for q in body["queues"] if q["queue"] == "support")
        assert support["today"]["offered"] == report.offered >= 1  # 2, unless the calls straddle midnight
        assert support["today"]["answered"] == report.answered and support["today"]["lost"] == report.lost
        assert sum(o["answered"] for o in ops["operators"]) == report.answered


async def test_callers_waiting_show_live():
    name = "answered"
    (ref,) = replay_files([str(DATA / f"{name}.ami")]).journeys
    recs = load_capture(capture(name))
    waiting_at = next(i for i, r in enumerate(recs) if r.ts and r.ts > ref.queues[0].joined_at + 0.5)
    async with fake_pbx(name) as pbx:
        pbx.plan = {waiting_at: Hold()}
        async with running(settings_for([("p", pbx.port)])) as app, api_for(app) as api:
            await wait_until(lambda: pbx.holding.is_set() and pipeline(app, "p").ready, what="holding")
            await wait_until(lambda: pipeline(app, "p").queue.qsize() == 0, what="drained")
            body = await api.json("/api/queues", params={"queue": "support"})
            (support,) = body["queues"]
            assert support["waiting"] == 1 and 0 < support["oldest_wait_seconds"] < 5
            metrics = await api.metrics()
            assert support["oldest_wait_seconds"] == pytest.approx(
                sample(metrics, "onechance_queue_oldest_wait_seconds", pbx="p", queue="support"), abs=0.5)
            pbx.release()
            await settled(app, "p", pbx)
            (support,) = (await api.json("/api/queues", params={"queue": "support"}))["queues"]
            assert support["waiting"] == 0 and support["oldest_wait_seconds"] == 0


async def test_a_database_that_refuses_leaves_the_live_figures():
    async with fake_pbx("answered") as pbx:
        settings = settings_for([("p", pbx.port)], http={"store_timeout": 1.0},
                                database={"url": "postgresql+asyncpg://nobody:x@127.0.0.1:9/none"})
        async with running(settings) as app, api_for(app) as api:
            await settled(app, "p", pbx)
            body = await api.json("/api/queues")
            assert body["partial"] is True and body["queues"]
            assert all(q["today"] is None and set(q["members"]) == set(STATES) for q in body["queues"])
            ops = await api.json("/api/operators")
            assert ops["partial"] is True and ops["operators"]
            assert all(o["answered"] is None and o["talk_seconds"] is None for o in ops["operators"])
            calls = await api.json("/api/calls")
            assert calls["partial"] is True and calls["total"] == 1


async def test_a_request_that_goes_away_does_not_cancel_the_shared_query(tmp_path):
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'onechance.db'}")
    figures = DayFigures(engine, CallPolicy(), ttl=60.0)
    release = asyncio.Event()

    async def slow() -> list[int]:
        await release.wait()
        return [1]

    try:
        first = asyncio.create_task(figures._cached(("k",), slow))
        second = asyncio.create_task(figures._cached(("k",), slow))
        await asyncio.sleep(0.05)
        first.cancel()  # the client of the first request hung up
        release.set()
        assert await second == [1]
        assert first.cancelled() and figures.queries == 1 and figures.failures == 0
        assert await figures._cached(("k",), slow) == [1] and figures.queries == 1  # cached, not a failure
    finally:
        await engine.dispose()
