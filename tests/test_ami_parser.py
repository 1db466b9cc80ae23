"""The AMI byte framer: any chunking, any garbage; never a crash, never a lost neighbour."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from onechance.ami.parser import AmiFramer, AmiMessage
from onechance.journey import JourneyTracker
from onechance.replay import JourneyLog

from .truthcheck import DATA

ANSWERED = (DATA / "answered.ami").read_bytes()
ATTENDED = (DATA / "attended_transfer.ami").read_bytes()


def frame_all(data: bytes, cuts: list[int] | None = None) -> tuple[list[AmiMessage], AmiFramer]:
    framer = AmiFramer()
    out: list[AmiMessage] = []
    prev = 0
    for cut in [*sorted(set(cuts or [])), len(data)]:
        out.extend(framer.feed(data[prev:cut]))
        prev = cut
    return out, framer


def journeys(messages: list[AmiMessage]) -> list[dict]:
    tracker = JourneyTracker()
    log = JourneyLog()
    for m in messages:
        log.add(tracker.feed(m))
    return [j.to_json() for j in log.ordered(tracker)]


REFERENCE, _ = frame_all(ANSWERED)
REFERENCE_JOURNEYS = journeys(REFERENCE)


def test_basic_message():
    msgs = AmiFramer().feed(b"Event: Newchannel\r\nChannel: PJSIP/1-0001\r\nAccountCode: \r\n\r\n")
    assert len(msgs) == 1
    m = msgs[0]
    assert m.event == "Newchannel"
    assert m["Channel"] == "PJSIP/1-0001"
    assert m["AccountCode"] == ""  # an empty value is kept, even on the last line
    assert "AccountCode" in m


def test_repeated_headers_keep_every_value():
    raw = b"Event: Status\r\nVariable: A=1\r\nVariable: B=2\r\nVariable: C=\r\n\r\n"
    (m,) = AmiFramer().feed(raw)
    assert m["Variable"] == "A=1"
    assert m.getall("Variable") == ["A=1", "B=2", "C="]
    assert AmiFramer().feed(m.to_bytes())[0] == m


def test_banner_and_lines_without_colon():
    framer = AmiFramer()
    msgs = framer.feed(b"Asterisk Call Manager/11.0.0\r\nResponse: Success\r\nno colon here\r\nMessage: ok\r\n\r\n")
    assert framer.banner == "Asterisk Call Manager/11.0.0"
    assert len(msgs) == 1 and msgs[0]["Message"] == "ok"
    assert framer.bad_lines == 1
    assert framer.bad_messages == 0


def test_value_with_colons_and_no_space():
    (m,) = AmiFramer().feed(b"Event: X\r\nKey:value\r\nURL: sip:1@h:5060\r\n\r\n")
    assert m["Key"] == "value"
    assert m["URL"] == "sip:1@h:5060"


def test_block_without_event_or_response_is_counted_and_skipped():
    framer = AmiFramer()
    msgs = framer.feed(b"Event: A\r\n\r\nFoo: bar\r\n\r\nEvent: B\r\n\r\n")
    assert [m.event for m in msgs] == ["A", "B"]
    assert framer.bad_messages == 1


def test_invalid_utf8_is_replaced_not_raised():
    (m,) = AmiFramer().feed(b"Event: X\r\nCallerIDName: \xff\xfe\xd0\r\n\r\n")
    assert "\ufffd" in m["CallerIDName"]


def test_oversized_message_is_dropped_and_the_stream_resyncs():
    framer = AmiFramer(max_message_bytes=1000)
    out = framer.feed(b"Event: A\r\n\r\n")
    out += framer.feed(b"Event: Huge\r\nData: " + b"x" * 5000)
    out += framer.feed(b"y" * 5000)
    out += framer.feed(b"\r\n\r\nEvent: B\r\n\r\n")
    assert [m.event for m in out] == ["A", "B"]
    assert framer.bad_messages == 1
    assert framer.pending_bytes < 1000


def test_truncated_end_is_reported():
    framer = AmiFramer()
    framer.feed(b"Event: A\r\n\r\nEvent: B\r\nFoo: ba")
    assert framer.finish() is False
    framer2 = AmiFramer()
    framer2.feed(b"Event: A\r\n\r\n")
    assert framer2.finish() is True


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.integers(min_value=0, max_value=len(ANSWERED)), max_size=300))
def test_any_chunking_gives_the_same_messages(cuts):
    msgs, framer = frame_all(ANSWERED, cuts)
    assert msgs == REFERENCE
    assert framer.bad_messages == 0


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=4000), st.lists(st.integers(min_value=0, max_value=4000), max_size=20))
def test_random_bytes_never_crash(data, cuts):
    msgs, framer = frame_all(data, cuts)
    framer.finish()
    tracker = JourneyTracker()
    for m in msgs:
        tracker.feed(m)  # must not raise either
    assert tracker.errors == 0


garbage_line = st.one_of(
    st.text(alphabet=st.characters(blacklist_characters="\r\n:", blacklist_categories=("Cs",)), min_size=1,
            max_size=40),
    st.builds(lambda k, v: f"{k}: {v}", st.text(alphabet="abcdefghxyz", min_size=1, max_size=8),
              st.text(alphabet=st.characters(blacklist_characters="\r\n", blacklist_categories=("Cs",)),
                      max_size=30)),
)
garbage_block = st.one_of(
    st.lists(garbage_line, min_size=1, max_size=6).map(lambda ls: ("\r\n".join(ls)).encode("utf-8")),
    st.binary(min_size=1, max_size=60).filter(lambda b: b"\r\n\r\n" not in b and b"Event" not in b
                                              and b"Response" not in b and not b.endswith(b"\r")
                                              and not b.startswith(b"\n")),
).filter(
    # a whitespace-only block is just extra blank lines, and a banner line is the banner: not malformed
    lambda b: b.strip() != b"" and b"Asterisk Call Manager/" not in b
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=len(REFERENCE)), garbage_block), min_size=1,
                max_size=8),
       st.lists(st.integers(min_value=0, max_value=len(ANSWERED) + 2000), max_size=50))
def test_malformed_messages_do_not_change_neighbouring_journeys(insertions, cuts):
    blocks = [m.to_bytes() for m in REFERENCE]
    for pos, junk in sorted(insertions, key=lambda t: -t[0]):
        blocks.insert(pos, junk + b"\r\n\r\n")
    stream = b"".join(blocks)
    msgs, framer = frame_all(stream, [c for c in cuts if c <= len(stream)])
    assert framer.bad_messages == len(insertions)
    assert journeys(msgs) == REFERENCE_JOURNEYS


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_dropping_or_mangling_events_never_crashes_the_tracker(data):
    msgs, _ = frame_all(ATTENDED)
    idx = data.draw(st.lists(st.integers(min_value=0, max_value=len(msgs) - 1), max_size=40))
    mangled = list(msgs)
    for i in idx:
        m = mangled[i]
        key = data.draw(st.sampled_from(sorted(m.headers)))
        headers = dict(m.headers)
        if data.draw(st.booleans()):
            headers.pop(key)
        else:
            headers[key] = data.draw(st.text(max_size=10))
        mangled[i] = AmiMessage(headers)
    tracker = JourneyTracker()
    for m in mangled:
        tracker.feed(m)
    assert tracker.errors == 0
    tracker.close_all(2e9)
    assert tracker.calls == {}
