"""A PBX that lies (issue 12): event times that jump, ``nan`` times, events sent twice, control characters in
names, repeated headers in an action's answer, calls cut again and again.  Each is played to the real parser,
tracker, consumer or daemon: the journeys must be those of the honest stream."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import math
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from onechance.ami.items import AmiEvents, LinkDown
from onechance.ami.link import AmiLink, LinkState, Snapshot
from onechance.ami.parser import AmiFramer, AmiMessage, block_timestamp
from onechance.config import AmiSettings
from onechance.demo import DemoPbx, PbxState, load_capture
from onechance.journey import CallPolicy, JourneyTracker, JourneyUpdate, UpdateKind
from onechance.metrics import CallMetrics
from onechance.pipeline import PbxPipeline
from onechance.queues import QueueCatalog
from onechance.replay import JourneyLog, replay_files
from onechance.store.queries import list_calls
from onechance.store.upsert import store_journeys

from .livehelp import FAST_AMI, SECRET, api_for, capture, running, sample, settings_for, settled, wait_until
from .test_daemon_resync import snapshot_of
from .truthcheck import DATA

BANNER = b"Asterisk Call Manager/11.0.0\r\n"
SEVEN_HOURS = 7 * 3600.0


def blocks_of(name: str) -> list[bytes]:
    """A capture's messages, each with its terminator, the banner left out."""
    body = capture(name).partition(b"\r\n")[2]
    return [b + b"\r\n\r\n" for b in body.split(b"\r\n\r\n") if b.strip()]


def timestamp_of(block: bytes) -> float:
    return float(block.split(b"\r\nTimestamp: ", 1)[1].split(b"\r\n", 1)[0])


def replay(tmp_path: Path, blocks: list[bytes], name: str = "s.ami") -> tuple[list[dict[str, Any]], Any]:
    path = tmp_path / name
    path.write_bytes(BANNER + b"".join(blocks))
    result = replay_files([str(path)])
    return [j.to_json() for j in result.journeys], result


def ghost(event: str, stamp: str, uid: str = "1700000000.999") -> bytes:
    """An event about a channel nobody knows (it changes no call), stamped ``stamp``."""
    return (f"Event: {event}\r\nPrivilege: call,all\r\nTimestamp: {stamp}\r\nChannel: PJSIP/ghost-000000ff\r\n"
            f"ChannelState: 6\r\nChannelStateDesc: Up\r\nCallerIDNum: 999\r\nCallerIDName: Ghost\r\n"
            f"Context: nowhere\r\nExten: s\r\nPriority: 1\r\nUniqueid: {uid}\r\nLinkedid: {uid}\r\n"
            f"Cause: 16\r\nCause-txt: Normal Clearing\r\n\r\n").encode()


# ---- time that jumps --------------------------------------------------------------------------------------
@pytest.mark.parametrize("event", ["Hangup", "Newstate"])  # one the tracker reads, one it does not
@pytest.mark.parametrize("how", ["7 hours ahead", "99999999999", "7 hours back"])
def test_one_event_from_another_time_changes_no_journey(tmp_path, event, how):
    honest = blocks_of("load_a")
    mid = len(honest) // 2
    ts = timestamp_of(honest[mid])
    stamp = {"7 hours ahead": f"{ts + SEVEN_HOURS:.6f}", "99999999999": "99999999999",
             "7 hours back": f"{ts - SEVEN_HOURS:.6f}"}[how]
    want, _ = replay(tmp_path, honest, "honest.ami")
    got, result = replay(tmp_path, [*honest[:mid], ghost(event, stamp), *honest[mid:]])
    assert len(want) == 60 and all(not j["uncertain"] for j in want)
    assert got == want
    assert result.clock_jumps == (1 if event == "Hangup" else 0)  # an event nobody reads is never even read


def test_a_quiet_hour_and_a_clock_step_are_believed(tmp_path):
    """Two calls three hours apart (a quiet night, or the PBX's clock stepped): both kept with their own times."""
    first, second = blocks_of("answered"), blocks_of("abandoned")
    shift = 3 * 3600.0

    def later(block: bytes) -> bytes:
        head, sep, rest = block.partition(b"\r\nTimestamp: ")
        if not sep:
            return block
        stamp, _, tail = rest.partition(b"\r\n")
        return head + sep + f"{float(stamp) + shift:.6f}".encode() + b"\r\n" + tail

    alone, _ = replay(tmp_path, [later(b) for b in second], "alone.ami")
    got, result = replay(tmp_path, [*first, *(later(b) for b in second)])
    assert [j["call_id"] for j in got][-1:] == [alone[0]["call_id"]]
    assert got[-1] == alone[0]
    assert result.clock_jumps == 0 and all(not j["uncertain"] for j in got)


def _events(stream: bytes) -> list[AmiMessage]:
    return [m for m in AmiFramer().feed(stream) if m.event]


def test_live_a_jump_away_from_the_arrival_time_is_counted_logged_and_not_trusted(caplog):
    """Live, the arrival time vouches for a quiet spell; an event whose time disagrees with both the recent
    events and its arrival is not trusted: counted, logged once, and the journeys are those without it."""
    msgs = _events(capture("load_a"))
    mid = len(msgs) // 2
    liar = AmiFramer().feed(ghost("Hangup", f"{msgs[mid].ts + SEVEN_HOURS:.6f}"))[0]

    def run(stream: list[AmiMessage]) -> tuple[list[dict[str, Any]], PbxPipeline]:
        tracker = JourneyTracker()
        log = JourneyLog()
        pipeline = PbxPipeline(tracker, asyncio.Queue(), [log], name="p")
        t0 = time.time()
        first = stream[0].ts or 0.0
        for msg in stream:  # each event arrives when its honest time says (one read each)
            honest = msg.ts if msg is not liar else msgs[mid].ts
            pipeline.handle(AmiEvents([msg], t0 + ((honest or first) - first)))
        pipeline.handle(LinkDown(t0, "link_lost"))
        return [j.to_json() for j in log.ordered(tracker)], pipeline

    want, _ = run(msgs)
    with caplog.at_level(logging.WARNING, logger="onechance.pipeline"):
        got, pipeline = run([*msgs[:mid], liar, *msgs[mid:]])
    assert got == want
    assert pipeline.clock_jumps == 1 and pipeline.link_counters()["clock_jumps"] == 1.0
    warnings = [r for r in caplog.records if "not trusted" in r.getMessage()]
    assert len(warnings) == 1


def test_live_a_quiet_spell_vouched_by_the_arrival_time_is_never_held():
    """Two hours without an event, then one: its arrival says the time is right, so it is applied at once."""
    msgs = _events(capture("answered"))
    tracker = JourneyTracker()
    pipeline = PbxPipeline(tracker, asyncio.Queue(), [], name="p")
    t0 = time.time()
    for i, msg in enumerate(msgs):
        gap = 7200.0 if i >= len(msgs) // 2 else 0.0
        msg.ts = (msg.ts or 0.0) + gap  # the PBX went quiet for two hours (its clock and ours agree)
        pipeline.handle(AmiEvents([msg], t0 + (msg.ts - (msgs[0].ts or 0.0))))
        assert tracker.clock.holding == 0
    assert pipeline.clock_jumps == 0 and tracker.clock.steps == 0


async def test_the_daemon_counts_an_untrusted_time_in_its_metrics():
    honest = blocks_of("load_a")
    mid = len(honest) // 2
    lying = BANNER + b"".join([*honest[:mid], ghost("Hangup", "99999999999"), *honest[mid:]])
    want = [j.to_json() for j in replay_files([str(DATA / "load_a.ami")], pbx="p").journeys]
    pbx = DemoPbx(lying, speed=0.0, chunks=(1, 64), username="onechance", secret=SECRET, login_fail_delay=0.05)
    async with pbx, running(settings_for([("p", pbx.port)])) as app:
        await settled(app, "p", pbx)
        async with api_for(app) as api:
            got = sorted(await api.calls(pbx="p"), key=lambda c: (c["started_at"], c["call_id"]))
            m = await api.metrics()
    assert got == want
    assert sample(m, "onechance_ami_clock_jumps_total", pbx="p") == 1.0


# ---- numbers that are not numbers --------------------------------------------------------------------------
@pytest.mark.parametrize("stamp", ["nan", "NaN", "inf", "-inf", "1e999", "12:30:00", ""])
def test_a_timestamp_that_is_not_a_finite_number_is_refused_at_the_parser(stamp):
    (m,) = AmiFramer().feed(f"Event: Hangup\r\nTimestamp: {stamp}\r\nUniqueid: 1.1\r\n\r\n".encode())
    assert m.ts is None and "Timestamp" not in m.headers
    (ok,) = AmiFramer().feed(b"Event: Hangup\r\nTimestamp: 1800000000.25\r\nUniqueid: 1.1\r\n\r\n")
    assert ok.ts == 1800000000.25 and ok.headers["Timestamp"] == "1800000000.25"


@pytest.mark.parametrize("stamp", ["1e308", "-1.7976931348623157e308", "1e18", "100000000000", "-1"])
def test_a_timestamp_no_pbx_could_send_is_refused_at_the_parser_too(stamp):
    """Epoch seconds from 1970 to the year 5138 (below 1e11), or no time at all: read raw or parsed."""
    block = f"Event: Hangup\r\nTimestamp: {stamp}\r\nUniqueid: 1.1".encode()
    (m,) = AmiFramer().feed(block + b"\r\n\r\n")
    assert m.ts is None and "Timestamp" not in m.headers
    assert block_timestamp(block) is None
    for fine in ("0", "1800000000.25", "99999999999"):
        block = f"Event: Hangup\r\nTimestamp: {fine}\r\nUniqueid: 1.1".encode()
        (ok,) = AmiFramer().feed(block + b"\r\n\r\n")
        assert ok.ts == float(fine) == block_timestamp(block)


def test_times_from_both_ends_of_the_float_range_never_overflow_a_record(tmp_path):
    """Found by bench/fuzz.py: a caller queued at -1.7e308 (the first time seen is trusted: nothing to doubt it
    against) and the events after stepping the clock to +1.7e308 made a wait of ``inf``, which no JSON can carry."""
    honest = blocks_of("answered")
    join = next(i for i, b in enumerate(honest) if b.startswith(b"Event: QueueCallerJoin"))
    stamped = []
    for i, b in enumerate(honest):
        if b"\r\nTimestamp: " in b:
            head, _, rest = b.partition(b"\r\nTimestamp: ")
            stamp = b"-1.7976931348623157e308" if i <= join else b"1.7976931348623157e308"
            b = head + b"\r\nTimestamp: " + stamp + b"\r\n" + rest.partition(b"\r\n")[2]
        stamped.append(b)
    got, _result = replay(tmp_path, stamped)
    assert len(got) == 1 and got[0]["outcome"] == "answered"
    json.dumps(got, allow_nan=False)  # raises on NaN or infinities
    assert all(math.isfinite(v) for v in (got[0]["wait_seconds"], got[0]["talk_seconds"], got[0]["started_at"]))


async def test_nan_never_reaches_the_json_or_the_database(tmp_path, engine):
    honest = blocks_of("answered")
    mid = next(i for i, b in enumerate(honest) if b.startswith((b"Event: AgentConnect", b"Event: Hangup")))
    nan = [b.replace(b"\r\nTimestamp: ", b"\r\nTimestamp: nan\r\nX-Was: ", 1) if i == mid else b
           for i, b in enumerate(honest)]
    got, result = replay(tmp_path, nan)
    assert len(got) == 1
    text = json.dumps(got, allow_nan=False)  # raises on NaN or infinities
    assert "nan" not in text.lower().replace("nancy", "")
    records = result.journeys
    assert await store_journeys(engine, records, stored_at=time.time()) == 1
    (stored,) = await list_calls(engine)
    assert all(math.isfinite(v) for v in (stored["started_at"], stored["ended_at"] or 0.0))
    json.dumps(stored, allow_nan=False)


# ---- the same event twice ----------------------------------------------------------------------------------
def test_every_event_twice_gives_the_same_journeys(tmp_path):
    for name in ("load_a", "attended_transfer", "call_pickup", "bounced", "exit_with_key"):
        honest = blocks_of(name)
        want, _ = replay(tmp_path, honest, "honest.ami")
        got, result = replay(tmp_path, [b for b in honest for _ in (0, 1)])
        assert got == want, name
        assert result.duplicates >= len(honest) // 4  # the timestamped ones that are read at all


@pytest.mark.parametrize("seed", range(4))
def test_random_events_repeated_a_little_later_give_the_same_journeys(tmp_path, seed):
    rng = random.Random(seed)
    honest = blocks_of("load_a")
    want, _ = replay(tmp_path, honest, "honest.ami")
    out = list(honest)
    for i in sorted(rng.sample(range(len(honest)), 400), reverse=True):
        out.insert(min(len(out), i + 1 + rng.randint(0, 40)), honest[i])
    got, _ = replay(tmp_path, out)
    assert got == want


def test_a_repeated_agent_connect_fed_to_the_tracker_does_not_double_the_operator():
    """Past the framer too (a repetition with a time of its own): one leg, one operator, one talk."""
    msgs = _events(capture("answered"))
    i = next(k for k, m in enumerate(msgs) if m.event == "AgentConnect")
    again = AmiMessage(dict(msgs[i].headers, Timestamp=f"{(msgs[i].ts or 0) + 0.2:.6f}"))

    def journeys(stream: list[AmiMessage]) -> list[dict[str, Any]]:
        tracker = JourneyTracker()
        log = JourneyLog()
        for m in stream:
            log.add(tracker.feed(m))
        return [j.to_json() for j in log.ordered(tracker)]

    (want,) = journeys(msgs)
    (got,) = journeys([*msgs[: i + 1], again, *msgs[i + 1 :]])
    assert len(want["operators"]) == 1
    assert got["operators"] == want["operators"] and got["talk_seconds"] == want["talk_seconds"]
    assert got == want


# ---- control characters ------------------------------------------------------------------------------------
NASTY = "Ann\x00a\x07 O\\\\aBrien\x1b[31m\tTamm\\n\x7f"


@pytest.mark.parametrize("where", ["raw", "escaped"])
async def test_control_characters_never_reach_a_record_or_the_database(tmp_path, engine, where):
    """NUL (PostgreSQL refuses it in text), escapes, ANSI sequences: a caller name as a person reads it."""
    honest = blocks_of("answered")
    name = NASTY if where == "raw" else "Ann\\a O\\'Brien\\tTamm\\0"  # Asterisk's C escapes of a name
    nasty = [b.replace(b"CallerIDName: ", f"CallerIDName: {name}".encode()) for b in honest]
    got, result = replay(tmp_path, nasty)
    (call,) = got
    text = json.dumps(call)
    assert all(ch.isprintable() for value in _strings(call) for ch in value), call["caller_name"]
    assert "\\u0000" not in text and "\\u001b" not in text
    assert "Ann" in call["caller_name"] and "Tamm" in call["caller_name"]
    assert await store_journeys(engine, result.journeys, stored_at=time.time()) == 1
    (stored,) = await list_calls(engine)
    assert stored["caller_name"] == call["caller_name"]


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def test_a_bare_line_feed_ends_a_line_and_nothing_else_changes():
    crlf = b"Event: Newchannel\r\nUniqueid: 1.1\r\nCallerIDName: Ann\r\nExten: 7001\r\n\r\n"
    lf = b"Event: Newchannel\r\nUniqueid: 1.1\nCallerIDName: Ann\rExten: 7001\r\n\r\n"
    (a,) = AmiFramer().feed(crlf)
    (b,) = AmiFramer().feed(lf)
    assert a == b


# ---- repeated headers in an action's answer ----------------------------------------------------------------
class _Pbx:
    """A fake Asterisk whose Pong carries two Timestamp lines (and two Ping lines); then a few events."""

    def __init__(self) -> None:
        self.port = 0
        self.server: asyncio.AbstractServer | None = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(BANNER)
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                action = dict(line.split(": ", 1) for line in raw.decode().split("\r\n") if ": " in line)
                aid = action.get("ActionID", "")
                name = action.get("Action", "").lower()
                if name == "login":
                    writer.write(f"Response: Success\r\nActionID: {aid}\r\nMessage: Authentication accepted\r\n\r\n"
                                 "Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n".encode())
                elif name == "ping":
                    now = time.time()
                    writer.write(f"Response: Success\r\nActionID: {aid}\r\nPing: Pong\r\nPing: Pong\r\n"
                                 f"Timestamp: {now + 3600:.6f}\r\nTimestamp: {now:.6f}\r\n\r\n".encode())
                elif name in ("coreshowchannels", "queuestatus"):
                    done = "CoreShowChannelsComplete" if name == "coreshowchannels" else "QueueStatusComplete"
                    writer.write(f"Response: Success\r\nActionID: {aid}\r\nEventList: start\r\nMessage: follows\r\n"
                                 f"\r\nEvent: {done}\r\nActionID: {aid}\r\nEventList: Complete\r\nListItems: 0\r\n"
                                 f"EventList: Complete\r\n\r\n".encode())
                    if name == "queuestatus":
                        writer.write(b"".join(blocks_of("answered")))
                elif name == "logoff":
                    writer.write(f"Response: Goodbye\r\nActionID: {aid}\r\n\r\n".encode())
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def __aenter__(self) -> _Pbx:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@contextlib.asynccontextmanager
async def _link(port: int) -> AsyncIterator[AmiLink]:
    link = AmiLink(AmiSettings(name="t", host="127.0.0.1", port=port, username="onechance", secret=SECRET,
                               **FAST_AMI))
    task = asyncio.create_task(link.run())
    try:
        yield link
    finally:
        await link.stop()
        await asyncio.wait_for(task, 5)


async def test_repeated_headers_in_a_pong_and_a_list_end_do_not_break_the_resync(caplog):
    async with _Pbx() as pbx, _link(pbx.port) as link:
        await wait_until(lambda: link.ready, what="logged in and resynced")
        items: list[Any] = []
        while not any(isinstance(i, Snapshot) for i in items):
            items.append(await asyncio.wait_for(link.queue.get(), 5))
            link.item_done()
        snap = next(i for i in items if isinstance(i, Snapshot))
        assert snap.complete and snap.clock_offset is not None
        assert 3590 < snap.clock_offset < 3610  # the first Timestamp, however many the PBX sent
        await asyncio.sleep(0.5)  # a few watchdog pings, answered the same way
        assert link.state == LinkState.READY and link.reconnects == 0 and link.resyncs == 1
    assert "Traceback" not in caplog.text and "internal error" not in caplog.text


# ---- calls cut again and again: each unresolved call counted once ---------------------------------------------
def test_a_call_closed_at_many_gaps_is_one_unresolved_call():
    recs = load_capture(capture("load_a"))
    registry = CollectorRegistry()
    policy = CallPolicy()
    catalog = QueueCatalog()
    metrics = CallMetrics(registry, policy, catalog)
    ended: list[JourneyUpdate] = []

    class Ended:
        def handle(self, update: Any) -> None:
            if isinstance(update, JourneyUpdate) and update.kind == UpdateKind.ENDED:
                ended.append(update)

    tracker = JourneyTracker(policy, pbx="p")
    pipeline = PbxPipeline(tracker, asyncio.Queue(), [metrics, Ended()], name="p", catalog=catalog)
    state = PbxState()
    pipeline.handle(snapshot_of(state))
    rng = random.Random(7)
    cuts = set(rng.sample(range(100, len(recs) - 100), 50))
    last = 0.0
    for i, rec in enumerate(recs):
        if i in cuts:  # the link drops and comes back at once: every call in progress closed, then taken up
            pipeline.handle(LinkDown(last, "link_lost"))
            pipeline.handle(snapshot_of(state))
        last = max(last, rec.ts or 0.0)
        pipeline.handle(AmiEvents([rec.msg], rec.ts or last))
        state.apply(rec.msg)
    # each gap closed every call in progress, and each resync took them all up again: their ends at the gaps
    # were held back and dropped, so each call was told ended once, at its real end
    assert [u for u in ended if u.record.closed_reason == "link_lost"] == []
    assert len(ended) == len({u.record.call_id for u in ended}) == 60

    def unresolved() -> float | None:
        return registry.get_sample_value("onechance_calls_unresolved_total", {"pbx": "p", "reason": "link_lost"})

    assert unresolved() == 0
    assert sum(s.value for family in registry.collect() for s in family.samples
               if s.name == "onechance_calls_total" and s.labels["pbx"] == "p") == 60
    # a call closed at several gaps the resync did not follow (the hold ran out each time) counts once
    closed = JourneyUpdate(UpdateKind.ENDED, dataclasses.replace(ended[0].record, closed_reason="link_lost"),
                           ended[0].at)
    for _ in range(3):
        metrics.handle(closed)
    assert unresolved() == 1


def test_a_pbx_without_timestampevents_is_said_once_and_a_timed_one_never(caplog):
    """``timestampevents = no`` (Asterisk's and FreePBX's default) makes every figure rougher: said once, in one
    WARNING naming the setting; a PBX whose events are timed is never warned about."""
    caplog.set_level(logging.WARNING, logger="onechance.pipeline")
    untimed = _events(_strip_timestamps(capture("load_a")))
    assert untimed and all(m.ts is None for m in untimed)
    pipeline = PbxPipeline(JourneyTracker(), asyncio.Queue(), [], name="p")
    t0 = time.time()
    for i in range(0, len(untimed), 7):
        pipeline.handle(AmiEvents(untimed[i:i + 7], t0 + i))
    said = [r.getMessage() for r in caplog.records if "carry no Timestamp" in r.getMessage()]
    assert said == [said[0]] and "timestampevents = no" in said[0] and said[0].startswith("p: ")
    caplog.clear()
    timed = _events(capture("load_a"))
    pipeline = PbxPipeline(JourneyTracker(), asyncio.Queue(), [], name="p")
    for i in range(0, len(timed), 7):
        pipeline.handle(AmiEvents(timed[i:i + 7], t0 + i))
    assert not [r for r in caplog.records if "carry no Timestamp" in r.getMessage()]


def _strip_timestamps(stream: bytes) -> bytes:
    return b"\r\n".join(line for line in stream.split(b"\r\n") if not line.startswith(b"Timestamp: "))
