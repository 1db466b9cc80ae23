"""``GET /api/calls`` of a real daemon over real HTTP, its store SQLite then PostgreSQL, fed the captures:
paging by cursor and by offset (each call exactly once, ``total`` right), every filter against the replayed
journeys, caller numbers in any format, repeated and comma-separated values, CSV, bad parameters.

The daemon keeps only the last 25 calls in memory, so most answers come from the store merged with memory."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import pytest_asyncio

from onechance.demo import Restart, load_capture
from onechance.journey import TrackerSettings
from onechance.replay import replay_files
from onechance.store import JourneyWriter

from .livehelp import api_for, capture, fake_pbx, running, settings_for, settled, without_iso
from .storehelp import wait_drained
from .truthcheck import DATA

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "calls-token"
PBXS = ("load_a", "abandon_then_callback", "outbound_callback", "bounced", "join_empty", "short_abandon",
        "exit_with_key", "queue_timeout")
CUT = "cut"  # "answered" with the PBX restarting in the middle of the call, then "abandoned"
REGION = "EE"
LOST_CALLER = "+3725550111"  # abandon_then_callback: lost, then calls again and is answered


def _key(c: dict[str, Any]) -> tuple[float, str, str]:
    return c["started_at"], c["call_id"], c["pbx"]


def _replayed() -> list[dict[str, Any]]:
    settings = TrackerSettings(default_region=REGION)
    return [dict(j.to_json()) for n in PBXS
            for j in replay_files([str(DATA / f"{n}.ami")], pbx=n, settings=settings).journeys]


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database(request: pytest.FixtureRequest) -> Any:
    """The daemon's database: SQLite in its data directory, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield None
        return
    server = request.getfixturevalue("pg_server")
    url = server.create_database()
    yield url
    server.drop_database(url)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def daemon(database: str | None) -> Any:
    (answered,) = replay_files([str(DATA / "answered.ami")]).journeys
    recs = load_capture(capture("answered"))
    middle = next(i for i, r in enumerate(recs) if r.ts and r.ts > (answered.started_at + answered.ended_at) / 2)
    async with contextlib.AsyncExitStack() as stack:
        pbxs = {n: await stack.enter_async_context(fake_pbx(n, seed=i)) for i, n in enumerate(PBXS)}
        cut = await stack.enter_async_context(fake_pbx("answered", seed=99))
        cut.plan = {middle: Restart(capture=capture("abandoned"), down_for=0.3)}
        pbxs[CUT] = cut
        db: dict[str, Any] = {"flush_interval": 0.05}
        if database:
            db["url"] = database
        settings = settings_for([(n, p.port) for n, p in pbxs.items()], token=TOKEN, http={"recent_calls": 25},
                                database=db, journey={"default_region": REGION})
        app = await stack.enter_async_context(running(settings))
        await asyncio.gather(*(settled(app, n, p) for n, p in pbxs.items()))
        writer = next(s for s in app.services if isinstance(s, JourneyWriter))
        await wait_drained(writer)
        api = await stack.enter_async_context(api_for(app, TOKEN))
        cut_calls = await api.calls(pbx=CUT)
        assert [c["uncertain"] for c in sorted(cut_calls, key=_key)] == [True, False]
        truth = sorted([*_replayed(), *cut_calls], key=_key, reverse=True)
        yield app, api, truth


async def _walk(api: Any, params: dict[str, str], limit: int = 7) -> tuple[list[dict[str, Any]], set[int]]:
    """Every page from the first, following next; the calls and the totals the pages gave."""
    out: list[dict[str, Any]] = []
    totals: set[int] = set()
    path, query = "/api/calls", {**params, "limit": str(limit)}
    for _ in range(500):
        body = await api.json(path, params=query)
        assert len(body["calls"]) <= limit and body["partial"] is False
        out += [without_iso(c) for c in body["calls"]]
        totals.add(body["total"])
        if body["next"] is None:
            return out, totals
        assert len(body["calls"]) == limit  # only the last page is short
        path, query = body["next"], None
    raise AssertionError("too many pages")


@pytest.mark.parametrize("order", ["desc", "asc"])
@pytest.mark.parametrize("by", ["cursor", "offset"])
@pytest.mark.parametrize("pbx", ["load_a", None])
async def test_paging_gives_each_call_exactly_once(daemon, order, by, pbx):
    _app, api, truth = daemon
    want = [c for c in truth if pbx is None or c["pbx"] == pbx]
    if order == "asc":
        want = want[::-1]
    params = {"order": order, **({"pbx": pbx} if pbx else {}), **({"offset": "0"} if by == "offset" else {})}
    got, totals = await _walk(api, params)
    assert got == want  # every call once, in order, each exactly as replayed
    assert totals == {len(want)}
    assert len(want) > 60 if pbx is None else len(want) == 60


async def test_next_links_keep_the_parameters_and_page_by_what_the_client_chose(daemon):
    _app, api, _truth = daemon
    body = await api.json("/api/calls", params={"pbx": "load_a", "lost": "true", "limit": "3"})
    assert body["next"].startswith("/api/calls?") and "pbx=load_a" in body["next"] and "lost=true" in body["next"]
    assert "cursor=" in body["next"] and "offset=" not in body["next"]
    body = await api.json("/api/calls", params={"pbx": "load_a", "offset": "3", "limit": "3"})
    assert "offset=6" in body["next"] and "cursor=" not in body["next"]
    body = await api.json("/api/calls", params={"pbx": "load_a", "offset": "57", "limit": "3"})
    assert len(body["calls"]) == 3 and body["next"] is None
    body = await api.json("/api/calls", params={"pbx": "load_a", "offset": "60"})
    assert body == {"calls": [], "total": 60, "next": None, "partial": False}


FILTERS: list[tuple[dict[str, str], Callable[[dict[str, Any]], bool]]] = [
    ({"outcome": "abandoned"}, lambda c: c["outcome"] == "abandoned"),
    ({"outcome": "answered,rejected"}, lambda c: c["outcome"] in ("answered", "rejected")),
    ({"queue": "sales"}, lambda c: any(v["queue"] == "sales" for v in c["queues"])),
    ({"queue": "billing,empty"}, lambda c: any(v["queue"] in ("billing", "empty") for v in c["queues"])),
    ({"pbx": "load_a,bounced"}, lambda c: c["pbx"] in ("load_a", "bounced")),
    ({"caller": LOST_CALLER}, lambda c: c["caller_key"] == LOST_CALLER),
    ({"lost": "true"}, lambda c: c["lost"]),
    ({"lost": "0"}, lambda c: not c["lost"]),
    ({"lost": "TRUE,false"}, lambda c: True),
    ({"recovered": "1"}, lambda c: c["recovered"]),
    ({"uncertain": "true"}, lambda c: c["uncertain"]),
    ({"uncertain": "false"}, lambda c: not c["uncertain"]),
    ({"bounced": "true"}, lambda c: c["bounced"]),
    ({"operator": "Anna Tamm"}, lambda c: "Anna Tamm" in c["operators"]),
    ({"operator": "Дмитрий Орлов,Мария Иванова"},
     lambda c: "Дмитрий Орлов" in c["operators"] or "Мария Иванова" in c["operators"]),
    ({"direction": "outbound"}, lambda c: c["direction"] == "outbound"),
    ({"lost": "true", "queue": "support", "order": "asc"},
     lambda c: c["lost"] and any(v["queue"] == "support" for v in c["queues"])),
    ({"outcome": "answered", "operator": "Anna Tamm", "bounced": "false", "pbx": "load_a"},
     lambda c: c["outcome"] == "answered" and "Anna Tamm" in c["operators"] and not c["bounced"]
     and c["pbx"] == "load_a"),
]


@pytest.mark.parametrize("params, pred", FILTERS, ids=["&".join(f"{k}={v}" for k, v in p.items()) for p, _ in FILTERS])
async def test_filters_against_the_replayed_journeys(daemon, params, pred):
    _app, api, truth = daemon
    want = [c for c in truth if pred(c)]
    if params.get("order") == "asc":
        want = want[::-1]
    got, totals = await _walk(api, params, limit=5)
    assert got == want
    assert totals == {len(want)}
    assert want, "the filter selects nothing: it proves nothing"


async def test_repeated_values_are_comma_separated_values(daemon):
    _app, api, _truth = daemon
    for name, values in (("outcome", ["answered", "rejected"]), ("queue", ["billing", "empty"]),
                         ("pbx", ["load_a", "bounced"]), ("operator", ["Anna Tamm", "Дмитрий Орлов"]),
                         ("caller", ["+3725500001", LOST_CALLER])):
        query = "&".join(f"{name}={v}" for v in values)
        status, repeated = await api.get(f"/api/calls?limit=1000&{query}")
        assert status == 200
        commas = await api.json("/api/calls", params={"limit": "1000", name: ",".join(values)})
        assert repeated == commas and commas["total"] > 1, name


@pytest.mark.parametrize("number", [LOST_CALLER, "003725550111", "+372 555 0111", "5550111", "555 01 11"])
async def test_a_caller_in_any_format_finds_the_same_calls(daemon, number):
    _app, api, truth = daemon
    got = await api.calls(caller=number)
    assert sorted(map(_key, got)) == sorted(_key(c) for c in truth if c["caller_key"] == LOST_CALLER)
    assert len(got) == 2 and {c["outcome"] for c in got} == {"abandoned", "answered"}


async def test_from_and_until_in_iso_or_epoch(daemon):
    _app, api, truth = daemon
    starts = sorted({c["started_at"] for c in truth})
    low, high = starts[len(starts) // 4], starts[3 * len(starts) // 4]
    want = sorted(_key(c) for c in truth if low <= c["started_at"] < high)
    as_iso = {"from": datetime.fromtimestamp(low, UTC).isoformat(), "until": str(high)}
    for params in ({"from": str(low), "until": str(high)}, {"since": str(low), "until": str(high)}, as_iso):
        got = await api.calls(**params)
        assert sorted(map(_key, got)) == want, params
    # the ISO form without microseconds rounds down: a second earlier than low keeps low in
    whole = datetime.fromtimestamp(int(low), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert low in {c["started_at"] for c in await api.calls(**{"from": whole, "until": str(high)})}
    assert await api.calls(**{"from": str(high), "until": str(high)}) == []


async def test_csv_parses_back_to_the_calls(daemon):
    _app, api, truth = daemon
    headers = {**api.headers, "Accept": "text/csv"}
    rows: list[dict[str, str]] = []
    path = "/api/calls?pbx=load_a,abandon_then_callback,exit_with_key&limit=9&order=asc"
    for _ in range(20):
        async with api.session.get(api.base + path, headers=headers) as resp:
            assert resp.status == 200 and resp.content_type == "text/csv" and resp.charset == "utf-8"
            text = await resp.text()
            assert text.startswith("call_id,pbx,started_at,ended_at,caller,caller_name,outcome,lost,first_queue,"
                                   "queues,operators,wait_seconds,talk_seconds,transfers,bounced,recovered,"
                                   "uncertain,direction\r\n")
            rows += list(csv.DictReader(io.StringIO(text, newline="")))
            assert resp.headers["X-Total-Count"] == "63"
            link = resp.headers.get("Link")
        if link is None:
            break
        assert link.startswith("</api/calls?") and link.endswith('>; rel="next"')
        path = link[1:link.index(">")]
    want = [c for c in truth if c["pbx"] in ("load_a", "abandon_then_callback", "exit_with_key")][::-1]
    assert len(rows) == len(want) == 63
    for row, c in zip(rows, want, strict=True):
        assert row["call_id"] == c["call_id"] and row["pbx"] == c["pbx"]
        assert datetime.fromisoformat(row["started_at"]).timestamp() == pytest.approx(c["started_at"], abs=0.001)
        assert datetime.fromisoformat(row["ended_at"]).timestamp() == pytest.approx(c["ended_at"], abs=0.001)
        assert row["caller"] == ("'" + c["caller"] if c["caller"].startswith("+") else c["caller"])
        assert row["caller_name"] == c["caller_name"] and row["outcome"] == c["outcome"]
        assert row["queues"] == ";".join(v["queue"] for v in c["queues"])
        assert row["first_queue"] == (c["queues"][0]["queue"] if c["queues"] else "")
        assert row["operators"] == ";".join(c["operators"])
        assert float(row["wait_seconds"]) == c["wait_seconds"] and float(row["talk_seconds"]) == c["talk_seconds"]
        assert int(row["transfers"]) == len(c["transfers"]) and row["direction"] == c["direction"]
        for flag in ("lost", "bounced", "recovered", "uncertain"):
            assert row[flag] == ("true" if c[flag] else "false")
    assert any(r["recovered"] == "true" for r in rows) and any(r["caller_name"] != r["caller_name"].encode(
        "ascii", "ignore").decode() for r in rows)  # non-ASCII names survive


async def test_json_is_the_default_and_csv_only_when_preferred(daemon):
    _app, api, _truth = daemon
    for accept, csv_wanted in (("", False), ("*/*", False), ("application/json", False), ("text/csv", True),
                               ("text/csv;q=0.5, application/json", False), ("text/*", True),
                               ("application/json;q=0.1, text/csv", True), ("text/html,*/*;q=0.8", False)):
        async with api.session.get(api.base + "/api/calls?limit=1", headers={**api.headers, "Accept": accept}) as r:
            assert r.status == 200
            assert (r.content_type == "text/csv") is csv_wanted, accept


@pytest.mark.parametrize("params, message", [
    ({"limit": "0"}, "limit: expected a whole number from 1 to 1000"),
    ({"limit": "1001"}, "limit"),
    ({"limit": "1.5"}, "limit"),
    ({"offset": "-1"}, "offset"),
    ({"order": "newest"}, "order: asc or desc"),
    ({"from": "yesterday"}, "from: expected epoch seconds or an ISO 8601 date-time"),
    ({"until": "2026-13-01"}, "until"),
    ({"from": "1", "since": "1"}, "from or since"),
    ({"lost": "yes"}, "lost: expected true or false"),
    ({"uncertain": "2"}, "uncertain"),
    ({"outcome": "lost"}, "outcome: unknown lost"),
    ({"direction": "sideways"}, "direction"),
    ({"caller": "anonymous"}, "caller: 'anonymous' is not a phone number"),
    ({"cursor": "garbage!"}, "cursor: not a cursor of this API"),
    ({"cursor": "WzEsMiwzXQ"}, "cursor"),  # valid base64 of [1,2,3]
    ({"cursor": "x", "offset": "10"}, "cursor: page by cursor or by offset, not both"),
    ({"pbx": "p", "sort": "asc"}, "unknown parameter(s): sort"),
])
async def test_bad_parameters_are_400_with_one_line(daemon, params, message):
    _app, api, _truth = daemon
    status, body = await api.get("/api/calls", params=params)
    assert status == 400 and message in body["error"] and "\n" not in body["error"]
    assert list(body) == ["error"]


async def test_a_cursor_keeps_its_order_and_a_parameter_is_given_once(daemon):
    _app, api, _truth = daemon
    body = await api.json("/api/calls", params={"limit": "2"})
    cursor = body["next"].split("cursor=")[1]
    status, err = await api.get("/api/calls", params={"cursor": cursor, "order": "asc"})
    assert status == 400 and "order=desc" in err["error"]
    status, err = await api.get("/api/calls?limit=1&limit=2")
    assert status == 400 and err["error"] == "limit: give it once"
