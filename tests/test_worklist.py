"""The callback worklist on real captures and a real store: one entry per caller, resolved by a call in or a
call back, by hand, or by expiry; attempts; restarts."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from onechance.journey import CallPolicy, JourneyTracker, TrackerSettings
from onechance.replay import replay_files
from onechance.store import JourneyWriter, load_callbacks, make_engine, upgrade
from onechance.worklist import NotFound, Worklist, WorklistError

from .amibuild import Chan, Script
from .storehelp import final_records
from .truthcheck import DATA


@pytest.fixture
async def store(tmp_path):
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite'}")
    await upgrade(engine)
    writer = JourneyWriter(engine, tmp_path / "spool", CollectorRegistry(), flush_interval=0.01)
    await writer.start()
    yield engine, writer
    await writer.close()
    await engine.dispose()


def new_worklist(writer: JourneyWriter, engine: Any = None, clock: Any = None, closed: list | None = None,
                 **kw: Any) -> tuple[Worklist, CollectorRegistry]:
    registry = CollectorRegistry()
    worklist = Worklist(writer, registry, expire_after=kw.pop("expire_after", 7 * 86400),
                        on_close=(lambda p, c, at: closed.append((p, c))) if closed is not None else None,
                        load=(lambda: load_callbacks(engine)) if engine is not None else None,
                        **({"clock": clock} if clock else {}), **kw)
    return worklist, registry


def feed(worklist: Worklist, *names: str, pbx: str = "p") -> None:
    replay_files([str(DATA / f"{n}.ami") for n in names], pbx=pbx, on_update=worklist.handle)


async def test_lost_callers_are_listed_and_those_reached_are_closed(store):
    engine, writer = store
    closed: list = []
    worklist, registry = new_worklist(writer, closed=closed)
    feed(worklist, "abandoned", "exit_with_key", "abandon_then_callback", "outbound_callback",
         "outbound_callback_unanswered", "answered", "short_abandon", "bounced")
    waiting = {e.caller: e for e in worklist.entries()}
    # the abandoned caller, the key exit, the unanswered call back; not the answered, short, bounced ones
    assert set(waiting) == {"+3725550102", "+79160001234", "+79160007788"}
    unanswered = waiting["+79160007788"]
    assert [(a.by, a.answered) for a in unanswered.attempts] == [("Anna Tamm", False)]
    done = {e.caller: e for e in worklist.entries(["done"])}
    assert done["+3725550244"].resolution == "outbound"  # called back and answered
    assert done["+3725550111"].resolution == "inbound"  # called again and answered
    assert registry.get_sample_value("onechance_callbacks_resolved_total",
                                     {"pbx": "p", "queue": "support", "how": "outbound"}) == 1
    assert registry.get_sample_value("onechance_callbacks_pending", {"pbx": "p", "queue": "support"}) == 3
    assert registry.get_sample_value("onechance_time_to_callback_seconds_count",
                                     {"pbx": "p", "queue": "support"}) == 2
    assert sorted(c for _p, c in closed) == sorted(c.call_id for e in done.values() for c in e.calls)
    await writer.flush()
    stored = {r.caller: r for r in await load_callbacks(engine, open_only=False)}
    assert {c: r.state for c, r in stored.items()} == {
        "+3725550102": "waiting", "+79160001234": "waiting", "+79160007788": "waiting",
        "+3725550244": "done", "+3725550111": "done"}
    assert stored["+79160007788"].attempts == 1 and stored["+79160007788"].attempt_list[0].answered is False


def _lost_call(s: Script, n: int, number: str) -> None:
    uid = f"1800000100.{n}"
    caller = Chan(f"PJSIP/trunk-{n:08x}", uid, uid, number, "Jaan Kivi")
    s.at(100).newchannel(caller).join(caller, "support").at(30)
    s.ev("HangupRequest", caller.block(), Cause="16").abandon(caller, "support", 30).hangup(caller, request=False)


async def test_one_entry_per_person_whatever_the_number_format(store):
    _engine, writer = store
    s = Script()
    for n, number in enumerate(("+3725550107", "003725550107", "5550107")):
        _lost_call(s, n + 1, number)
    tracker = JourneyTracker(CallPolicy(), TrackerSettings(default_region="EE"), pbx="p")
    worklist, _ = new_worklist(writer, region="EE")
    for m in s.events:
        for u in tracker.feed(m):
            worklist.handle(u)
    (entry,) = worklist.entries()
    assert entry.caller_key == "+3725550107" and len(entry.calls) == 3 and entry.caller == "+3725550107"


async def test_claim_note_done_by_hand_and_their_errors(store):
    engine, writer = store
    closed: list = []
    worklist, registry = new_worklist(writer, closed=closed)
    feed(worklist, "abandoned")
    (entry,) = worklist.entries()
    await worklist.claim(entry.id, "Anna")
    await worklist.note(entry.id, "busy tone twice\x07")
    assert [e.claimed_by for e in worklist.entries(["claimed"])] == ["Anna"]
    with pytest.raises(WorklistError, match="reason"):
        await worklist.done(entry.id, "bored")
    with pytest.raises(WorklistError, match="who"):
        await worklist.claim(entry.id, "   ")
    with pytest.raises(NotFound):
        await worklist.claim("nope", "Anna")
    await worklist.done(entry.id, "gave_up", "no answer in 3 days")
    assert worklist.entries() == [] and closed
    with pytest.raises(WorklistError, match="already closed"):
        await worklist.claim(entry.id, "Boris")
    assert await writer.flush(timeout=10)  # durable (spooled) when the call returned, stored soon after
    (row,) = await load_callbacks(engine, open_only=False)
    assert (row.state, row.resolution, row.done_reason, row.claimed_by, row.note) == (
        "done", "manual", "gave_up", "Anna", "no answer in 3 days")
    assert registry.get_sample_value("onechance_callbacks_resolved_total",
                                     {"pbx": "p", "queue": "support", "how": "manual"}) == 1


async def test_open_entries_survive_a_restart_and_expire(store):
    engine, writer = store
    first, _ = new_worklist(writer)
    feed(first, "abandoned", "outbound_callback_unanswered")
    await writer.flush()
    now = [2e9]
    second, registry = new_worklist(writer, engine, clock=lambda: now[0], expire_after=3600)
    task = asyncio.create_task(second.run())
    for _ in range(100):
        if len(second.entries()) == 2:
            break
        await asyncio.sleep(0.02)
    assert sorted(e.caller for e in second.entries()) == ["+3725550102", "+79160007788"]
    assert second.entries()[0].attempts or second.entries()[1].attempts  # attempts come back too
    second.sweep()  # 2e9 is long after the captures' calls: both expire
    assert second.entries() == []
    assert {e.resolution for e in second.entries(["done"])} == {"expired"}
    assert registry.get_sample_value("onechance_callbacks_resolved_total",
                                     {"pbx": "p", "queue": "support", "how": "expired"}) == 2
    await second.aclose()
    await task


async def test_waits_and_expiry_count_in_the_pbx_clock(store):
    """A PBX whose clock is an hour ahead of ours: a caller it lost a minute ago (in its time) has waited a
    minute, not -59 minutes (the oldest-callback gauge read 0), and expires by that clock too."""
    _engine, writer = store
    first = next(r for r in final_records("abandoned") if r.lost)
    lost_at = first.ended_at
    assert lost_at is not None
    ours = lost_at - 3600 + 60  # our clock: the PBX's minus an hour, a minute after the loss
    worklist, registry = new_worklist(writer, clock=lambda: ours, pbx_offset=lambda pbx: 3600.0,
                                      expire_after=120)
    feed(worklist, "abandoned")
    (entry,) = worklist.entries()
    assert worklist.view(entry)["waiting_seconds"] == pytest.approx(60, abs=1)
    oldest = registry.get_sample_value("onechance_callback_oldest_seconds", {"pbx": "p", "queue": entry.queue})
    assert oldest == pytest.approx(60, abs=1)
    worklist.sweep()
    assert worklist.entries() != []  # 60 s < expire_after
    ours += 120
    worklist.sweep()
    assert worklist.entries() == [] and worklist.get(entry.id).resolution == "expired"
