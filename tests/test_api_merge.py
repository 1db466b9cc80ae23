"""``/api/calls`` answers from the store merged with the calls in memory, exactly: a call in memory not yet
stored appears, a newer copy in memory replaces (and is filtered instead of) an older stored one, a call only
in the store appears, and paging and totals stay exact over all of it.  When the store is down or broken the
memory answers alone and says so (``partial``)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest

from onechance.journey import CallRecord, JourneyUpdate, Recovered, Update, UpdateKind
from onechance.replay import replay_files
from onechance.sinks import CallFilter, MergedCallQuery, RecentCalls
from onechance.store import JourneyWriter, StoreCallQuery, store_journeys

from .livehelp import api_for, fake_pbx, running, settings_for, settled, without_iso
from .storehelp import DATA, wait_drained

PBX = "p"
MEMORY = 30


def _key(c: dict[str, Any]) -> tuple[float, str, str]:
    return c["started_at"], c["call_id"], c["pbx"]


def _updates(name: str) -> list[Update]:
    out: list[Update] = []
    replay_files([str(DATA / f"{name}.ami")], pbx=PBX, on_update=out.append)
    return out


async def _walk(api: Any, params: dict[str, str], limit: int = 7) -> tuple[list[dict[str, Any]], set[int]]:
    out: list[dict[str, Any]] = []
    totals: set[int] = set()
    path, query = "/api/calls", {**params, "limit": str(limit)}
    for _ in range(100):
        body = await api.json(path, params=query)
        out += [without_iso(c) for c in body["calls"]]
        totals.add(body["total"])
        if body["next"] is None:
            return out, totals
        path, query = body["next"], None
    raise AssertionError("too many pages")


async def test_store_and_memory_each_holding_part_of_the_calls_merge_exactly(engine):
    """load_a (60 calls); the memory keeps the last 30 that ended; the store holds every other call, 10 of the
    memory's as they ended, 10 as they were when they started (an older copy, in progress), and not the last 10."""
    updates = _updates("load_a")
    final = {r.key: r for r in replay_files([str(DATA / "load_a.ami")], pbx=PBX).journeys}
    ended = [u.record.key for u in updates if isinstance(u, JourneyUpdate) and u.kind == UpdateKind.ENDED]
    memory_keys = list(dict.fromkeys(reversed(ended)))[:MEMORY][::-1]  # the last 30 to end, in end order
    first_seen: dict[tuple[str, str], CallRecord] = {}
    for u in updates:
        if isinstance(u, JourneyUpdate):
            first_seen.setdefault(u.record.key, u.record)
    stored = [r for k, r in final.items() if k not in memory_keys]
    stored += [final[k] for k in memory_keys[:10]]
    older = [first_seen[k] for k in memory_keys[10:20]]
    assert all(r.outcome == "in_progress" and r.updated_at < final[r.key].updated_at for r in older)
    await store_journeys(engine, stored + older, stored_at=0.0)
    query = StoreCallQuery(engine)
    assert await query.count_calls(CallFilter()) == 50
    assert await query.count_calls(CallFilter(outcomes=frozenset({"in_progress"}))) == 10

    truth = sorted((dict(r.to_json()) for r in final.values()), key=_key, reverse=True)
    async with fake_pbx("load_a") as pbx, running(settings_for([(PBX, pbx.port)], http={"recent_calls": MEMORY}),
                                                  store_query=query) as app:
        await settled(app, PBX, pbx)
        async with api_for(app) as api:
            for order in ("desc", "asc"):
                for extra in ({}, {"offset": "0"}):
                    got, totals = await _walk(api, {"order": order, **extra})
                    assert got == (truth if order == "desc" else truth[::-1]), (order, extra)
                    assert totals == {60}
            for offset in range(0, 61, 4):  # each offset page on its own (the window arithmetic)
                body = await api.json("/api/calls", params={"offset": str(offset), "limit": "5"})
                assert [without_iso(c) for c in body["calls"]] == truth[offset:offset + 5], offset
                assert body["total"] == 60 and body["partial"] is False
            # filters that the stale copies match and some of their newer copies do not (dropped from the store's
            # answer), with calls only in memory added: every offset page, in both orders
            for params, pred in (({"outcome": "answered,in_progress"}, lambda c: c["outcome"] == "answered"),
                                 ({"lost": "false"}, lambda c: not c["lost"])):
                want = [c for c in truth if pred(c)]
                for order in ("desc", "asc"):
                    ordered = want if order == "desc" else want[::-1]
                    for offset in range(0, len(want) + 1, 3):
                        body = await api.json("/api/calls", params={**params, "order": order, "limit": "4",
                                                                    "offset": str(offset)})
                        assert [without_iso(c) for c in body["calls"]] == ordered[offset:offset + 4], (params, offset)
                        assert body["total"] == len(want)
            # the 10 stale copies match in_progress in the store, their newer copies do not
            body = await api.json("/api/calls", params={"outcome": "in_progress"})
            assert body == {"calls": [], "total": 0, "next": None, "partial": False}
            for params, pred in (({"lost": "true"}, lambda c: c["lost"]),
                                 ({"outcome": "answered"}, lambda c: c["outcome"] == "answered"),
                                 ({"queue": "billing", "order": "asc"},
                                  lambda c: any(v["queue"] == "billing" for v in c["queues"]))):
                want = [c for c in truth if pred(c)]
                got, totals = await _walk(api, params, limit=4)
                assert got == (want[::-1] if params.get("order") == "asc" else want), params
                assert totals == {len(want)}
            for k in (memory_keys[15], memory_keys[25], next(iter(final))):  # older, memory-only, store-only
                assert without_iso(await api.json(f"/api/calls/{k[1]}")) == final[k].to_json()


async def test_a_recovery_the_store_has_not_written_counts_for_the_recovered_filter(engine):
    """The lost call is only in the store (not recovered there); the memory holds the call that reached the
    caller again and the recovery: the merged answer shows the lost call recovered, and filters it so."""
    updates = _updates("abandon_then_callback")
    lost, answered = replay_files([str(DATA / "abandon_then_callback.ami")], pbx=PBX).journeys
    (recovery,) = [u for u in updates if isinstance(u, Recovered)]
    assert lost.recovered and recovery.call_id == lost.call_id
    unrecovered = dataclasses.replace(lost, recovered=False, recovered_by=None, recovered_at=None,
                                      recovered_how=None, updated_at=lost.ended_at or lost.started_at)
    await store_journeys(engine, [unrecovered], stored_at=0.0)
    memory = RecentCalls(size=1)
    memory.handle(JourneyUpdate(UpdateKind.ENDED, answered, answered.ended_at or 0.0))
    memory.handle(recovery)
    merged = MergedCallQuery(StoreCallQuery(engine), memory)

    page = await merged.page(CallFilter(recovered=True))
    assert [c["call_id"] for c in page.calls] == [lost.call_id] and page.total == 1
    assert page.calls[0]["recovered_by"] == answered.call_id
    page = await merged.page(CallFilter(recovered=False))
    assert [c["call_id"] for c in page.calls] == [answered.call_id] and page.total == 1
    page = await merged.page(CallFilter())
    assert [c["recovered"] for c in page.calls] == [False, True] and page.total == 2
    # the writer stores the recovery: the store answers for it from then on (it is not looked up again)
    await store_journeys(engine, [lost], stored_at=1.0)
    page = await merged.page(CallFilter(recovered=True, limit=1))
    assert [c["call_id"] for c in page.calls] == [lost.call_id] and page.total == 1 and not page.more
    assert (PBX, lost.call_id) in merged._recovery_stored


class BrokenStore:
    """A database that refuses every connection."""

    def __init__(self) -> None:
        self.queries = 0

    async def _refuse(self) -> Any:
        self.queries += 1
        raise ConnectionRefusedError("connection refused")

    async def list_calls(self, flt: Any) -> Any:
        return await self._refuse()

    async def count_calls(self, flt: Any) -> Any:
        return await self._refuse()

    async def stored_versions(self, keys: Any, flt: Any) -> Any:
        return await self._refuse()

    async def stored_calls(self, keys: Any) -> Any:
        return await self._refuse()

    async def get_call(self, call_id: str, pbx: str | None = None) -> Any:
        return await self._refuse()


async def test_a_broken_store_leaves_the_memory_answering_alone_and_saying_so():
    truth = sorted((dict(r.to_json()) for r in replay_files([str(DATA / "load_a.ami")], pbx=PBX).journeys),
                   key=_key, reverse=True)
    broken = BrokenStore()
    async with fake_pbx("load_a") as pbx, running(settings_for([(PBX, pbx.port)]), store_query=broken) as app:
        await settled(app, PBX, pbx)
        async with api_for(app) as api:
            body = await api.json("/api/calls", params={"limit": "10"})
            assert body["partial"] is True and body["total"] == 60
            assert [without_iso(c) for c in body["calls"]] == truth[:10]
            for extra in ({}, {"offset": "0"}):
                path, query, got = "/api/calls", {"limit": "9", "order": "asc", **extra}, []
                for _ in range(20):
                    page = await api.json(path, params=query)
                    assert page["partial"] is True and page["total"] == 60
                    got += [without_iso(c) for c in page["calls"]]
                    if page["next"] is None:
                        break
                    path, query = page["next"], None
                assert got == truth[::-1]
            lost = await api.json("/api/calls", params={"lost": "true", "limit": "1000"})
            assert lost["total"] == sum(c["lost"] for c in truth) and lost["partial"] is True
            assert without_iso(await api.json(f"/api/calls/{truth[0]['call_id']}")) == truth[0]
    assert broken.queries >= 5


@pytest.mark.postgres
async def test_postgresql_stopped_under_the_api_and_started_again(own_pg_server, own_pg_url):
    """A real outage: the database server stops; the API answers from memory (partial), the queues' live
    figures still answer; once the server is back, the store answers again."""
    truth_count = len(replay_files([str(DATA / "load_a.ami")], pbx=PBX).journeys)
    try:
        async with fake_pbx("load_a") as pbx:
            settings = settings_for([(PBX, pbx.port)], http={"store_timeout": 2.0},
                                    database={"url": own_pg_url, "flush_interval": 0.05, "retry_interval": 0.2})
            async with running(settings) as app, api_for(app) as api:
                await settled(app, PBX, pbx)
                await wait_drained(next(s for s in app.services if isinstance(s, JourneyWriter)))
                body = await api.json("/api/calls", params={"limit": "5"})
                assert body["partial"] is False and body["total"] == truth_count
                queues = await api.json("/api/queues", params={"date": "2026-11-22", "tz": "UTC"})
                assert queues["partial"] is False and any(q["today"]["offered"] for q in queues["queues"])
                await asyncio.to_thread(own_pg_server.stop)
                body = await api.json("/api/calls", params={"limit": "5"})
                assert body["partial"] is True and body["total"] == truth_count and len(body["calls"]) == 5
                later = await api.json("/api/queues", params={"date": "2026-11-21", "tz": "UTC"})  # not cached
                assert later["partial"] is True and later["queues"] and all(q["today"] is None for q in later["queues"])
                assert {q["queue"] for q in later["queues"]} >= {"support", "sales", "billing"}
                await asyncio.to_thread(own_pg_server.start)

                async def answered_by_store() -> bool:
                    return (await api.json("/api/calls", params={"limit": "1"}))["partial"] is False

                for _ in range(50):
                    if await answered_by_store():
                        break
                    await asyncio.sleep(0.2)
                assert await answered_by_store()
    finally:
        own_pg_server.ensure_running()
