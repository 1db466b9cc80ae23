"""Each ``/api/calls`` filter is defined twice -- ``CallFilter.matches`` for the calls in memory, ``call_conditions``
in SQL -- and both must say the same on the captures: every call of every capture (plus calls cut by a lost
link, for ``uncertain``), in the store (SQLite and PostgreSQL) and in memory, asked the same filters and pages.
Single filters are also checked against predicates written here from the journey JSON."""

from __future__ import annotations

import dataclasses
import functools
import random
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import make_url, text

from onechance.ami.parser import AmiFramer
from onechance.journey import CallRecord, JourneyTracker, JourneyUpdate, UpdateKind
from onechance.replay import JourneyLog
from onechance.sinks import CallFilter, RecentCalls, call_key
from onechance.store import StoreCallQuery, make_engine, store_journeys, upgrade

from .pg import connect
from .storehelp import CAPTURES, DATA, final_records

CUT = "cut"


def cut_records(name: str = "load_a") -> list[CallRecord]:
    """The calls of the first half of a capture, the link lost there: those in progress closed uncertain."""
    msgs = list(AmiFramer().iter_feed((DATA / f"{name}.ami").read_bytes()))
    tracker = JourneyTracker(pbx=CUT)
    log = JourneyLog()
    last = 0.0
    for msg in msgs[: len(msgs) // 2]:
        log.add(tracker.feed(msg))
        last = max(last, float(msg.headers.get("Timestamp") or 0.0))
    log.add(tracker.close_all(last, "link_lost"))
    return log.ordered()


@functools.cache
def _records() -> tuple[CallRecord, ...]:
    return (*(r for name in CAPTURES for r in final_records(name, pbx=name)), *cut_records())


def all_records() -> list[CallRecord]:
    return list(_records())


@pytest.fixture
async def both(engine) -> tuple[StoreCallQuery, RecentCalls, list[dict[str, Any]]]:
    records = all_records()
    await store_journeys(engine, records, stored_at=0.0)
    memory = RecentCalls(size=100000)
    for r in records:
        memory.handle(JourneyUpdate(UpdateKind.ENDED, r, r.ended_at or r.started_at))
    return StoreCallQuery(engine), memory, [dict(r.to_json()) for r in records]


def test_the_dataset_has_every_kind_of_call():
    calls = [r.to_json() for r in all_records()]
    for what in ("lost", "recovered", "uncertain", "bounced"):
        assert any(c[what] for c in calls) and not all(c[what] for c in calls), what
    assert {c["direction"] for c in calls} >= {"inbound", "outbound"}
    assert {c["outcome"] for c in calls} >= {"answered", "abandoned", "timeout", "rejected", "exited", "unanswered"}


async def _same(store: StoreCallQuery, memory: RecentCalls, flt: CallFilter) -> list[dict[str, Any]]:
    page = memory.page(flt)
    assert await store.list_calls(flt) == page.calls, flt
    assert await store.count_calls(flt) == page.total, flt
    return [dict(c) for c in page.calls]


def _singles(calls: list[dict[str, Any]]) -> list[tuple[CallFilter, Callable[[dict[str, Any]], bool]]]:
    starts = sorted(c["started_at"] for c in calls)
    mid, q1 = starts[len(starts) // 2], starts[len(starts) // 4]
    anna, dmitri = "Anna Tamm", "Дмитрий Орлов"
    key = next(c["caller_key"] for c in calls if c["recovered"])
    return [
        (CallFilter(since=mid), lambda c: c["started_at"] >= mid),
        (CallFilter(until=mid), lambda c: c["started_at"] < mid),
        (CallFilter(since=q1, until=mid), lambda c: q1 <= c["started_at"] < mid),
        (CallFilter(outcomes=frozenset({"abandoned"})), lambda c: c["outcome"] == "abandoned"),
        (CallFilter(outcomes=frozenset({"answered", "rejected"})), lambda c: c["outcome"] in ("answered", "rejected")),
        (CallFilter(queue="sales"), lambda c: any(v["queue"] == "sales" for v in c["queues"])),
        (CallFilter(queue=frozenset({"billing", "empty"})),
         lambda c: any(v["queue"] in ("billing", "empty") for v in c["queues"])),
        (CallFilter(pbx="load_a"), lambda c: c["pbx"] == "load_a"),
        (CallFilter(pbx=frozenset({"bounced", CUT})), lambda c: c["pbx"] in ("bounced", CUT)),
        (CallFilter(callers=frozenset({key})), lambda c: c["caller_key"] == key),
        (CallFilter(operators=frozenset({anna})), lambda c: anna in c["operators"]),
        (CallFilter(operators=frozenset({anna, dmitri})), lambda c: anna in c["operators"] or dmitri in c["operators"]),
        (CallFilter(directions=frozenset({"outbound"})), lambda c: c["direction"] == "outbound"),
        (CallFilter(lost=True), lambda c: c["lost"]),
        (CallFilter(lost=False), lambda c: not c["lost"]),
        (CallFilter(recovered=True), lambda c: c["recovered"]),
        (CallFilter(uncertain=True), lambda c: c["uncertain"]),
        (CallFilter(uncertain=False), lambda c: not c["uncertain"]),
        (CallFilter(bounced=True), lambda c: c["bounced"]),
        (CallFilter(outcomes=frozenset()), lambda c: False),
    ]


async def test_each_filter_means_the_same_in_sql_and_in_memory(both):
    store, memory, calls = both
    for flt, pred in _singles(calls):
        flt = dataclasses.replace(flt, limit=100000)
        got = await _same(store, memory, flt)
        want = sorted((c for c in calls if pred(c)), key=lambda c: (c["started_at"], c["call_id"], c["pbx"]),
                      reverse=True)
        assert got == want, flt
        assert want or flt.outcomes == frozenset(), f"the filter {flt} selects nothing in the dataset"


async def test_random_combinations_and_pages_agree(both):
    store, memory, calls = both
    rng = random.Random(20261122)
    starts = sorted(c["started_at"] for c in calls)
    pools: dict[str, list[Any]] = {
        "outcomes": sorted({c["outcome"] for c in calls}),
        "queue": sorted({v["queue"] for c in calls for v in c["queues"]}),
        "pbx": sorted({c["pbx"] for c in calls}),
        "callers": sorted({c["caller_key"] for c in calls if c["caller_key"]}),
        "operators": sorted({op for c in calls for op in c["operators"]}),
        "directions": ["inbound", "outbound", "internal"],
    }
    nonempty = 0
    for _ in range(150):
        kw: dict[str, Any] = {}
        for name, pool in pools.items():
            if rng.random() < 0.3:
                kw[name] = frozenset(rng.sample(pool, rng.randint(1, min(3, len(pool)))))
        for name in ("lost", "recovered", "uncertain", "bounced"):
            if rng.random() < 0.2:
                kw[name] = rng.random() < 0.5
        if rng.random() < 0.3:
            kw["since"] = rng.choice(starts)
        if rng.random() < 0.3:
            kw["until"] = rng.choice(starts)
        flt = CallFilter(**kw, limit=rng.randint(1, 30), order=rng.choice(["asc", "desc"]))
        found = await _same(store, memory, flt)
        if rng.random() < 0.5:
            every = await _same(store, memory, dataclasses.replace(flt, limit=100000))
            if len(every) > 2:
                pivot = call_key(every[rng.randrange(len(every))])  # type: ignore[arg-type]
                await _same(store, memory, dataclasses.replace(flt, after=pivot))
                await _same(store, memory, dataclasses.replace(flt, offset=rng.randrange(len(every))))
        nonempty += bool(found)
    assert nonempty > 30  # the combinations are not all empty


async def _walk_odd_ids(store: StoreCallQuery, memory: RecentCalls) -> None:
    same_start = [dataclasses.replace(r, pbx=p, call_id=cid, started_at=1.5) for r in all_records()[:1]
                  for p in ("b", "B", "ä", "a-1", "a1") for cid in ("1.5", "15", "Z", "a", "é")]
    await store_journeys(store.engine, same_start, stored_at=0.0)
    for r in same_start:
        memory.handle(JourneyUpdate(UpdateKind.ENDED, r, 2.0))
    for order in ("asc", "desc"):
        flt = CallFilter(until=2.0, order=order, limit=7)
        walked: list[dict[str, Any]] = []
        for _ in range(10):
            page = await _same(store, memory, flt)
            walked += page
            if len(page) < flt.limit:
                break
            flt = dataclasses.replace(flt, after=call_key(page[-1]))  # type: ignore[arg-type]
        assert len(walked) == len(same_start)
        keys = [(c["started_at"], c["call_id"], c["pbx"]) for c in walked]
        assert keys == sorted(keys, reverse=order == "desc")


async def test_call_ids_compare_by_code_point_in_every_database(both):
    """Keyset paging compares call ids and PBX names in SQL and in Python alike."""
    store, memory, _calls = both
    await _walk_odd_ids(store, memory)


@pytest.mark.postgres
async def test_a_postgresql_database_with_a_language_collation_pages_alike(pg_server):
    """A database created with a language collation (ICU en-US orders 'a' < 'B' and ignores punctuation
    at first) still pages exactly: onechance compares text with COLLATE "C"."""
    name = f"oc_icu_{uuid.uuid4().hex[:12]}"
    conn = await connect(pg_server.url)
    try:
        await conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING \'UTF8\' LOCALE \'C\' '
                           "LOCALE_PROVIDER icu ICU_LOCALE 'en-US'")
    finally:
        await conn.close()
    url = str(make_url(pg_server.url).set(database=name).render_as_string(hide_password=False))
    engine = make_engine(url)
    try:
        await upgrade(engine)
        async with engine.connect() as c:  # the database really orders text by language rules
            assert (await c.execute(text("SELECT 'a' < 'B'"))).scalar_one() is True
        await _walk_odd_ids(StoreCallQuery(engine), RecentCalls(size=1000))
    finally:
        await engine.dispose()
        conn = await connect(pg_server.url)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()
