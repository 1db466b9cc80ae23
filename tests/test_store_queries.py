"""Queries for the API and the tracker's restart: calls by time, outcome, queue, caller; the callback
worklist; lost calls reloaded into a new tracker and recovered there."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from onechance.ami.parser import AmiFramer
from onechance.journey import CallRecord, JourneyTracker, JourneyUpdate, LostCall, Recovered, UpdateKind
from onechance.store import (
    JourneyWriter,
    StoreCallQuery,
    callback_worklist,
    get_call,
    list_calls,
    load_lost_calls,
    store_journeys,
    upgrade,
)

from .storehelp import CAPTURES, capture, final_records, stored_journeys, wait_drained


@pytest.fixture
async def stored(engine) -> list[dict]:
    records = [r for name in CAPTURES for r in final_records(name)]
    await upgrade(engine)
    await store_journeys(engine, records, stored_at=0.0)
    return [dict(r.to_json()) for r in records]


async def test_calls_come_back_exactly_as_replay_prints_them(engine, stored):
    for j in stored[:10]:
        assert await get_call(engine, j["call_id"]) == j
        assert await get_call(engine, j["call_id"], pbx="") == j
    assert await get_call(engine, "no-such-call") is None
    assert await get_call(engine, stored[0]["call_id"], pbx="elsewhere") is None


async def test_calls_by_time_range_newest_first(engine, stored):
    starts = sorted(j["started_at"] for j in stored)
    mid = starts[len(starts) // 2]
    got = await list_calls(engine, since=mid, limit=1000)
    assert [j["started_at"] for j in got] == sorted((s for s in starts if s >= mid), reverse=True)
    older = await list_calls(engine, until=mid, limit=1000, newest_first=False)
    assert [j["started_at"] for j in older] == [s for s in starts if s < mid]
    page1 = await list_calls(engine, limit=10)
    page2 = await list_calls(engine, limit=10, offset=10)
    assert len(page1) == len(page2) == 10
    assert {j["call_id"] for j in page1}.isdisjoint(j["call_id"] for j in page2)


async def test_calls_by_outcome_queue_and_caller(engine, stored):
    abandoned = await list_calls(engine, outcome="abandoned", limit=1000)
    assert abandoned and {j["outcome"] for j in abandoned} == {"abandoned"}
    assert len(abandoned) == sum(j["outcome"] == "abandoned" for j in stored)
    lost = await list_calls(engine, outcome=["timeout", "rejected"], limit=1000)
    assert {j["outcome"] for j in lost} == {"timeout", "rejected"}
    assert await list_calls(engine, outcome="timeout,rejected", limit=1000) == lost

    billing = await list_calls(engine, queue="billing", limit=1000)
    expected = {j["call_id"] for j in stored if any(v["queue"] == "billing" for v in j["queues"])}
    assert expected and {j["call_id"] for j in billing} == expected

    caller = stored[0]["caller"]
    assert {j["caller"] for j in await list_calls(engine, caller=caller)} == {caller}
    bounced = await list_calls(engine, bounced=True, limit=1000)
    assert bounced and {j["call_id"] for j in bounced} == {j["call_id"] for j in stored if j["bounced"]}


async def test_the_callback_worklist_holds_lost_calls_not_yet_recovered(engine, stored):
    work = await callback_worklist(engine)
    expected = [
        j for j in stored
        if j["outcome"] in ("abandoned", "timeout", "rejected", "exited") and not j["short_abandon"]
        and not j["recovered"] and j["direction"] == "inbound"
    ]
    assert len(expected) >= 2 and sorted(j["call_id"] for j in work) == sorted(j["call_id"] for j in expected)
    assert [j["started_at"] for j in work] == sorted(j["started_at"] for j in work)  # oldest first
    assert any(j["short_abandon"] for j in stored) and not any(j["short_abandon"] for j in work)
    recovered = [j for j in stored if j["recovered"]]
    assert recovered and not {j["call_id"] for j in recovered} & {j["call_id"] for j in work}
    rejected = {j["call_id"] for j in stored if j["outcome"] == "rejected"}
    assert rejected and {j["call_id"] for j in await callback_worklist(engine, queue="empty")} == rejected


def messages(name: str) -> list:
    framer = AmiFramer()
    out = list(framer.iter_feed(Path(capture(name)).read_bytes()))
    framer.finish()
    return out


async def test_lost_calls_reloaded_after_a_restart_are_recovered_by_the_new_tracker(engine, tmp_path):
    """A caller abandons, the daemon restarts, the caller calls again and is answered: the first call
    (reloaded from the store into the new tracker) becomes recovered, and its row keeps every field."""
    msgs = messages("abandon_then_callback")
    first = JourneyTracker()
    writer = JourneyWriter(engine, tmp_path / "spool", CollectorRegistry(), flush_interval=0.01)
    await writer.start()
    cut = None
    for i, msg in enumerate(msgs):
        for update in first.feed(msg):
            assert isinstance(update, JourneyUpdate)
            writer.submit(update.record)
            if update.kind == UpdateKind.ENDED and update.record.outcome == "abandoned":
                cut = i + 1
        if cut is not None:
            break
    assert cut is not None
    await wait_drained(writer)
    lost_before = (await callback_worklist(engine))[0]

    # --- restart: a new tracker learns the lost calls from the store --------------------------------
    second = JourneyTracker()
    worklist = await load_lost_calls(engine, since=lost_before["ended_at"] - 1)
    assert worklist == [LostCall("", lost_before["call_id"], lost_before["caller"], "support",
                                 lost_before["ended_at"])]
    for entry in worklist:
        second.remember_lost(entry)
    recovered = []
    for msg in msgs[cut:]:
        for update in second.feed(msg):
            if isinstance(update, Recovered):
                recovered.append(update.call_id)
                writer.submit(update)
            elif update.kind == UpdateKind.ENDED:
                writer.submit(update.record)
    assert recovered == [lost_before["call_id"]]
    await wait_drained(writer)
    await writer.close()

    rows = await stored_journeys(engine)
    after = rows[("", lost_before["call_id"])]
    assert after["recovered"] is True and after["recovered_by"] and after["recovered_how"] == "inbound"
    recovery = ("recovered", "recovered_by", "recovered_at", "recovered_how", "updated_at")
    assert {k: v for k, v in after.items() if k not in recovery} == {
        k: v for k, v in lost_before.items() if k not in recovery
    }
    assert await callback_worklist(engine) == []
    assert await load_lost_calls(engine, since=0) == []


async def test_the_store_answers_the_http_apis_call_query(engine, stored):
    """``StoreCallQuery`` gives what the in-memory ``CallFilter`` semantics give, from SQL."""
    from onechance.sinks import CallFilter

    query = StoreCallQuery(engine)
    mid = sorted(j["started_at"] for j in stored)[len(stored) // 3]
    for flt in (
        CallFilter(limit=1000),
        CallFilter(since=mid, limit=7),
        CallFilter(outcomes=frozenset({"abandoned", "timeout"}), limit=1000),
        CallFilter(queue="sales", limit=1000),
        CallFilter(pbx="", queue="support", outcomes=frozenset({"answered"}), since=mid, limit=1000),
        CallFilter(pbx="other", limit=1000),  # no call of that PBX: nothing
    ):
        expected = sorted((c for c in stored if flt.matches(CallRecord.from_json(c))),
                          key=lambda c: (c["started_at"], c["call_id"]), reverse=True)[: flt.limit]
        assert bool(expected) is (flt.pbx != "other"), flt  # the filters select something, but "other"
        assert await query.list_calls(flt) == expected, flt
    assert await query.get_call(stored[3]["call_id"]) == stored[3]
