"""The fast ingest path gives exactly what the careful one gives: the C-level header split against the
line-by-line parse, events skipped on the raw bytes against the tracker's own interest, replays with and
without skipping, the clock guard's decisions, and the queue bounded in bytes."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onechance.ami.flow import FlowControl
from onechance.ami.parser import (
    ALWAYS_KEPT,
    AmiFramer,
    AmiMessage,
    EventFilter,
    _parse_careful,
    block_timestamp,
    parse_block,
)
from onechance.journey import JourneyTracker, JourneyUpdate
from onechance.journey.clock import ClockGuard
from onechance.pipeline import PIPELINE_EVENTS
from onechance.replay import JourneyLog, replay_files
from onechance.sim import BANNER, Centre, RateProfile, SimConfig

from .truthcheck import DATA

CAPTURES = sorted(DATA.glob("*.ami"))


def tracker_filter() -> EventFilter:
    interest = JourneyTracker().interest()
    return EventFilter(interest.events, interest.conditions)


# ---- the header split ---------------------------------------------------------------------------------------
line = st.one_of(
    st.builds(lambda k, v: f"{k}: {v}", st.sampled_from(["Event", "Response", "Uniqueid", "Key", "A-b", "x"]),
              st.text(max_size=12)),
    st.text(max_size=20),  # anything: no colon, "Key:" with nothing after, control characters, bare CR/LF
    st.sampled_from(["Key:", "Key:value", "Key:  two spaces", ": empty key", "Key: a: b", "K:x: y", "Event: X",
                     "Event: Y", "Response: Success", "Asterisk Call Manager/11.0.0", "Tab:\tv", "Nul: a\x00b"]),
)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(line, min_size=1, max_size=8))
def test_the_fast_header_split_agrees_with_the_careful_parse(lines):
    text = "\r\n".join(lines)
    if "\r\n\r\n" in text:  # the framer never gives a block holding a terminator
        return
    assert parse_block(text) == _parse_careful(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(line, min_size=1, max_size=8), st.integers(min_value=1, max_value=64))
def test_the_framer_with_a_filter_builds_what_the_careful_parse_builds(lines, chunk):
    """Every block that is built is built exactly as the careful parse does it, whatever the chunking."""
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogatepass")
    if data.count(b"\r\n\r\n") != 1:
        return
    framer = AmiFramer(event_filter=tracker_filter())
    got = [m for i in range(0, len(data), chunk) for m in framer.iter_feed(data[i : i + chunk])]
    msg, _banner, _bad = _parse_careful(data[:-4].decode("utf-8", "replace"))
    if msg is not None and framer.skipped == 0:
        assert got == [msg]
    assert len(got) + framer.skipped + framer.bad_messages <= 1


def test_odd_lines_take_the_careful_path_and_keep_their_meaning():
    cases = {
        b"Event: X\r\nKey:\r\nB: 1": {"Event": "X", "Key": "", "B": "1"},  # empty value, no space
        b"Event: X\r\nKey:value\r\nURL: sip:1@h:5060": {"Event": "X", "Key": "value", "URL": "sip:1@h:5060"},
        b"Event: X\r\nK:x: y": {"Event": "X", "K": "x: y"},  # a colon in the key part
        b"Event: X\r\nV: a\x00b\x1b[0m\tc": {"Event": "X", "V": "ab[0m c"},  # controls out, a tab is a space
        b"Event: X\r\nA: 1\nB: 2\rC: 3": {"Event": "X", "A": "1", "B": "2", "C": "3"},  # bare LF and CR
        b"Event: X\r\nName: \xff\xfeok": {"Event": "X", "Name": "\ufffd\ufffdok"},  # not UTF-8
    }
    for raw, want in cases.items():
        (m,) = AmiFramer().feed(raw + b"\r\n\r\n")
        assert m.headers == want, raw
    (m,) = AmiFramer().feed(b"Event: X\r\nVariable: A=1\r\nVariable: B=2\r\n\r\n")
    assert m.headers == {"Event": "X", "Variable": "A=1"} and m.getall("Variable") == ["A=1", "B=2"]


# ---- skipping on the raw bytes -------------------------------------------------------------------------------
def test_what_is_skipped_is_exactly_what_the_tracker_does_not_read():
    interest = JourneyTracker().interest()
    flt = EventFilter(interest.events, interest.conditions)
    for path in CAPTURES:
        body = path.read_bytes().partition(b"\r\n")[2]
        for block in body.split(b"\r\n\r\n"):
            if not block.strip():
                continue
            (msg,) = AmiFramer().feed(block + b"\r\n\r\n") or (None,)
            if msg is None:
                continue
            framer = AmiFramer(event_filter=flt)
            built = framer.feed(block + b"\r\n\r\n")
            wanted = interest.wants(msg) or msg.event is None or "ActionID" in msg.headers or \
                msg.event in ALWAYS_KEPT or (msg.event or "").endswith("Complete")
            assert bool(built) == wanted, (path.name, block[:80])
            assert framer.messages == 1 and framer.skipped == (0 if wanted else 1)


def test_responses_list_items_and_the_link_s_own_events_are_never_skipped():
    flt = EventFilter({"Hangup"})
    never = [
        b"Response: Success\r\nActionID: oc-1\r\nPing: Pong\r\nTimestamp: 1.5",
        b"Event: CoreShowChannel\r\nActionID: oc-2\r\nChannel: PJSIP/1-1",
        b"Event: CoreShowChannelsComplete\r\nActionID: oc-2\r\nListItems: 0",
        b"Event: QueueStatusComplete\r\nActionID: oc-3",
        b"Event: QueueMember\r\nQueue: q",
        b"Event: QueueEntry\r\nQueue: q",
        b"Event: QueueParams\r\nQueue: q",
        b"Event: Shutdown\r\nShutdown: Cleanly",
        b"Event: FullyBooted\r\nStatus: Fully Booted",
        b"Event: OriginateResponse\r\nActionID: oc-4\r\nResponse: Success",
        b"Event: Anything\r\nPrivilege: x\r\nActionID: someone-else",
    ]
    framer = AmiFramer(event_filter=flt)
    got = framer.feed(b"".join(b + b"\r\n\r\n" for b in never))
    assert len(got) == len(never) and framer.skipped == 0
    framer.feed(b"Event: VarSet\r\nVariable: X\r\n\r\nEvent: Newstate\r\nUniqueid: 1\r\n\r\n")
    assert framer.skipped == 2 and framer.messages == len(never) + 2


def test_an_event_the_careful_parse_gives_the_tracker_is_never_skipped_on_odd_bytes():
    """Found by bench/fuzz.py: the raw-bytes skip must read a block as the careful parse does (a bare CR or LF
    ends a line, control characters are removed), or an event the tracker reads is lost to the filter only."""
    interest = JourneyTracker().interest()
    flt = EventFilter(interest.events, interest.conditions)
    odd = [
        b"Event: NewCallerid\rPrivilege: call,all\r\nUniqueid: 1",  # bare CR ends the Event line
        b"Event: Hangup\nUniqueid: 1",  # bare LF
        b"Event: Hang\x00up\r\nUniqueid: 1",  # a NUL inside the name
        b"Event: Hangup\x1b\r\nUniqueid: 1",
        b"Event: Hang\xc2\x85up\r\nUniqueid: 1",  # a C1 control (NEL) in UTF-8
        b"Event: VarSet\r\nVariable: QUEUESTATUS\rValue: TIMEOUT",  # the condition's value ended by a bare CR
        b"Event: VarSet\r\nVariable: QUEUE\x00STATUS\r\nValue: FULL",
        b"Event: VarSet\r\nVariable: QUEUE\xc2\x9fSTATUS\r\nValue: FULL",
        b"Event: VarSet\r\nUniqueid: 1\nVariable: QUEUESTATUS\r\nValue: FULL",  # the field after a bare LF
        b"Event: VarSet\r\nVari\x07able: QUEUESTATUS\r\nValue: FULL",  # a control character in its key
        b"Event: VarSet\r\nA: 1\rVariable: QUEUESTATUS\r\nVariable: OTHER\r\nValue: FULL",  # a first one hidden
        b"Event: Newexten\r\nApplication: Que\x7fue\r\nUniqueid: 1",
    ]
    for block in odd:
        msg, _banner, _bad = _parse_careful(block.decode("utf-8", "replace"))
        assert msg is not None and interest.wants(msg), block
        framer = AmiFramer(event_filter=flt)
        assert framer.feed(block + b"\r\n\r\n") == [msg], block
        assert framer.skipped == 0
    # and what no reading makes wanted is still skipped
    for block in (b"Event: Newstate\r\nUniqueid: 1", b"Event: VarSet\r\nVariable: BRIDGEPEER\r\nValue: x",
                  b"Event: VarSet\r\nVariable: QUEUESTATUS \r\nValue: x", b"Event: Newexten\r\nApplication: Dial",
                  b"Event: VarSet\r\nUniqueid: 1"):
        framer = AmiFramer(event_filter=flt)
        assert framer.feed(block + b"\r\n\r\n") == [] and framer.skipped == 1, block


odd_line = st.one_of(
    line,
    st.builds(lambda k, sep, v: k + sep + v,
              st.sampled_from(["Event", "Variable", "Application", "Uniqueid", "Vari\x00able", "ActionID"]),
              st.sampled_from([": ", ":", ":  ", ""]),
              st.sampled_from(["Hangup", "VarSet", "Newexten", "Newstate", "QUEUESTATUS", "Queue", "BRIDGEPEER",
                               "Hang\x00up", "QUEUE\x85STATUS", "Hangup\rX: 1", "VarSet\nVariable: QUEUESTATUS",
                               "Queue\x7f", "1"])),
)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(odd_line, min_size=1, max_size=6))
def test_a_skipped_block_is_never_one_the_tracker_reads(lines):
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogatepass")
    if data.count(b"\r\n\r\n") != 1:
        return
    framer = AmiFramer(event_filter=tracker_filter())
    framer.feed(data)
    msg, _banner, _bad = _parse_careful(data[:-4].decode("utf-8", "replace"))
    if framer.skipped:
        assert msg is not None and not JourneyTracker().interest().wants(msg)


def test_the_pipeline_reads_the_members_and_queues_too():
    assert {"QueueMemberStatus", "QueueMemberPause", "QueueMemberRemoved", "QueueCallerJoin"} <= PIPELINE_EVENTS


def _journeys(stream: bytes, skip: bool) -> list[dict[str, object]]:
    tracker = JourneyTracker()
    interest = tracker.interest()
    framer = AmiFramer(event_filter=EventFilter(interest.events, interest.conditions) if skip else None)
    log = JourneyLog()
    for i in range(0, len(stream), 65536):
        for msg in framer.iter_feed(stream[i : i + 65536]):
            log.add(tracker.feed(msg))
    log.add(tracker.flush())
    return [j.to_json() for j in log.ordered(tracker)]


def test_skipping_changes_no_journey_of_any_capture_or_simulated_centre(tmp_path: Path):
    streams = [p.read_bytes() for p in CAPTURES]
    for seed, style in ((1, "sip"), (2, "local")):
        streams.append(BANNER + Centre(SimConfig.default(seed=seed, style=style, rate=RateProfile(scale=4)))
                       .run(calls=150))
    for stream in streams:
        full = _journeys(stream, skip=False)
        assert full
        assert _journeys(stream, skip=True) == full
    # and `onechance replay`, which skips, says the same
    for path in CAPTURES:
        assert [j.to_json() for j in replay_files([str(path)]).journeys] == _journeys(path.read_bytes(), False)


def _updates(stream: bytes, skip: bool) -> list[tuple[str, float, object]]:
    tracker = JourneyTracker()
    interest = tracker.interest()
    framer = AmiFramer(event_filter=EventFilter(interest.events, interest.conditions) if skip else None)
    out: list[tuple[str, float, object]] = []
    for i in range(0, len(stream), 65536):
        for msg in framer.iter_feed(stream[i : i + 65536]):
            for u in tracker.feed(msg):
                if isinstance(u, JourneyUpdate):
                    out.append((u.kind, u.at, u.record.to_json()))
                else:
                    out.append(("recovered", u.at, u))
    return out


def test_skipping_changes_no_update_either():
    """Found by bench/fuzz.py: every update, with the record of its call as it was then, is the same with skipping
    and without.  (A Local answer confirmed by the time of a skipped event used to be reported with the record of
    the call after the next event: the operator's leg already ended by that event's hang-up.)"""
    for path in CAPTURES:
        stream = path.read_bytes()
        full = _updates(stream, skip=False)
        assert _updates(stream, skip=True) == full, path.name


def test_a_skipped_event_tells_the_time_its_timestamp_says():
    """The raw reading of a skipped block's Timestamp agrees with the careful parse (``Timestamp:1.5`` too)."""
    for block in (b"Event: Newstate\r\nTimestamp: 1795368765.95\r\nUniqueid: 1",
                  b"Event: Newstate\r\nTimestamp:1795368765.95\r\nUniqueid: 1",
                  b"Event: Newstate\r\nTimestamp:  1795368765.95", b"Event: Newstate\r\nTimestamp:1795368765.95"):
        msg, _banner, _bad = _parse_careful(block.decode())
        assert msg is not None and msg.ts == 1795368765.95
        assert block_timestamp(block) == msg.ts, block
    for block in (b"Event: Newstate\r\nTimestamp: nan", b"Event: Newstate\r\nTimestamp:", b"Event: Newstate",
                  b"Event: Newstate\r\nTimestamp: -inf\r\nUniqueid: 1"):
        assert block_timestamp(block) is None, block


def test_skipped_events_still_count_and_tell_the_time():
    result = replay_files([str(DATA / "load_a.ami")])
    raw = (DATA / "load_a.ami").read_bytes()
    assert result.events == raw.count(b"\r\n\r\n")  # every message counted, skipped or built
    assert result.skipped > result.events // 2
    framer = AmiFramer(event_filter=tracker_filter())
    msgs = framer.feed(raw)
    flt = tracker_filter()
    assert any(m.before is not None for m in msgs)
    assert all(m.before is None or not flt.wanted(m.before) for m in msgs)


# ---- the clock guard ------------------------------------------------------------------------------------------
def test_the_clock_guard_holds_a_jump_until_the_stream_decides():
    g: ClockGuard[str] = ClockGuard(300.0)
    assert g.admit("a", 1000.0) == [("a", 1000.0, 0.0)]
    assert g.admit("liar", 99999999999.0) == []  # held
    assert g.admit("none", None) == []  # no time: waits in order
    assert g.admit("b", 1001.0) == [("liar", 1000.0, 0.0), ("none", None, 0.0), ("b", 1001.0, 0.0)]
    assert (g.jumps, g.steps, g.reference) == (1, 0, 1001.0)
    # a clock that really moved: three events agree
    assert g.admit("c", 9001.0) == [] and g.admit("d", 9002.0) == []
    assert g.admit("e", 9003.0) == [("c", 9001.0, 0.0), ("d", 9002.0, 0.0), ("e", 9003.0, 0.0)]
    assert (g.jumps, g.steps, g.reference) == (1, 1, 9003.0)
    # live: an arrival time that agrees vouches at once
    assert g.admit("f", 20000.0, arrival=19950.0) == [("f", 20000.0, 19950.0)]
    # the end of the stream: what is still held was a lie
    assert g.admit("g", 10.0) == []
    assert g.flush() == [("g", 20000.0, 0.0)] and g.jumps == 2


def test_a_tracker_holding_a_jump_flushes_it_at_a_link_loss_and_on_tick():
    tracker = JourneyTracker()
    first = AmiMessage({"Event": "Newchannel", "Timestamp": "1800000000.0", "Uniqueid": "1.1", "Linkedid": "1.1",
                        "Channel": "PJSIP/a-1", "CallerIDNum": "+3725551000"})
    liar = AmiMessage({"Event": "Hangup", "Timestamp": "1900000000.0", "Uniqueid": "1.1"})
    assert tracker.feed(first)
    assert tracker.feed(liar) == [] and tracker.clock.holding == 1
    updates = tracker.close_all(1800000001.0)
    (ended,) = [u for u in updates if getattr(u, "kind", None) == "ended"]
    assert ended.record.ended_at == 1800000000.0  # the hang-up, at the last trusted time
    assert tracker.clock.holding == 0 and tracker.clock.jumps == 1


# ---- the queue bounded in bytes --------------------------------------------------------------------------------
class _Reader:
    def __init__(self) -> None:
        self.reading = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


def test_the_queue_pauses_reading_on_bytes_and_counts_messages():
    flow: FlowControl[str] = FlowControl(1000, max_weight=1000)
    reader = _Reader()
    flow.attach(reader)
    for i in range(3):
        assert flow.put(f"read{i}", weight=200, count=50)
    assert reader.reading and flow.count == 150 and flow.weight == 600
    assert flow.put("read3", weight=200, count=50)  # 800 >= 3/4 of the bytes
    assert not reader.reading and flow.count == 200
    for _ in range(2):
        flow.queue.get_nowait()
        flow.item_done()
    assert flow.weight == 400 and flow.count == 100 and not reader.reading  # above a quarter of the bytes
    flow.queue.get_nowait()
    flow.item_done()
    assert reader.reading and flow.weight == 200 and flow.count == 50
