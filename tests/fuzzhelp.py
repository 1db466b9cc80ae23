"""The fuzz harness of the AMI framer and the journey tracker (issue 12): one definition of the fuzz input's shape
and of the invariants, shared by ``bench/fuzz.py`` (atheris, coverage-guided, a million inputs) and
``tests/test_fuzz_quick.py`` (a few thousand, and hypothesis).

An input is bytes; :meth:`Harness.__call__` turns it into an AMI stream and checks it.  Its first byte picks the mode:

* **raw** (even first byte): ``[mode][n][n cut offsets, 2 bytes each][stream]``: the bytes themselves are the
  stream, cut at those offsets for the second pass;
* **structured** (odd first byte): ``[mode][capture][start, 2 bytes][length][flags][mutations...]``: a window of
  real messages from one capture of ``tests/data`` (up to :data:`MAX_WINDOW` of the messages the tracker reads, or
  up to :data:`ALL_WINDOW` of all of them), then up to
  :data:`MAX_MUTATIONS` mutations read by a :class:`atheris.FuzzedDataProvider`: header values taken from other
  messages (ids, channels: calls merged, channels moved), timestamps ``nan``/``inf``/huge/negative/jumping,
  repeated and missing headers, event names swapped, messages repeated, dropped, moved or cut short, control
  characters, NULs, bare CR/LF, invalid UTF-8, lines without a colon; then chunk boundaries, ``tick`` calls
  (at times the daemon could pass: its clock follows the PBX's trusted timestamps, which are below
  :data:`~onechance.ami.parser.MAX_TIMESTAMP`) and the arrival time (replay: 0, or live).

Each stream goes through the framer (with the tracker's :class:`~onechance.ami.parser.EventFilter`, as
``onechance replay`` and the daemon build it) and a fresh :class:`~onechance.journey.JourneyTracker`, driven as
the daemon does: ``feed``, ``tick``, ``flush`` and ``close_all``.  Invariants checked on every input (an
:class:`InvariantError`, or any exception escaping, is a crash for the fuzzer):

1. no exception escapes the framer or the tracker, and no event handler fails inside it (``tracker.errors``);
2. every call record the tracker reports (updates, ``live()``) is JSON-serialisable with ``allow_nan=False``,
   with an ``outcome`` among the documented words, no control character in any string, and waits and talk times
   that are not negative; the update's own details serialise too;
3. the same bytes cut into other chunks give the same updates (kind, time, details, the record of the call as it
   was then) and the same framer counts;
4. the framer without the event filter (every message built and fed) gives the same updates as with it, when the
   stream's times allow it (:func:`time_in_order`);
5. bounds: live calls, channels and watched lost calls never outnumber the channel and call ids fed; after ``flush``
   nothing is held; after ``close_all`` no call is live; a framer never keeps more than ``max_message_bytes``
   pending (a small limit is tried too, with messages cut off).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import atheris  # type: ignore[import-untyped]  # FuzzedDataProvider; the instrumentation is bench/fuzz.py's

from onechance.ami.parser import MAX_TIMESTAMP, TERMINATOR, AmiFramer, EventFilter, block_timestamp
from onechance.journey import (
    AlertKind,
    CallPolicy,
    CallRecord,
    JourneyTracker,
    JourneyUpdate,
    Outcome,
    Recovered,
    Update,
)
from onechance.journey.tracker import SWEEP_INTERVAL

__all__ = ["CAPTURES", "MAX_WINDOW", "Corpus", "Harness", "InvariantError", "raw_input", "structured_input"]

CAPTURES = Path(__file__).resolve().parent / "data"
BANNER = b"Asterisk Call Manager/11.0.0\r\n"
#: messages in a structured input's window (every call of the single-call captures fits in one)
MAX_WINDOW = 64
#: a window of every message (the skipped kinds too) is this long at most: a whole call
ALL_WINDOW = 4 * MAX_WINDOW
MAX_MUTATIONS = 24
MAX_TICKS = 4
#: chunk boundaries at most in the second pass (a step of a few bytes over a long stream is capped to this many)
MAX_CUTS = 2048
#: a small framer limit, to exercise the discarding of a message that grows without a terminator
SMALL_LIMITS = (64, 300, 1000, 4096)
OUTCOMES = frozenset(str(o) for o in Outcome)
_ID_KEYS = ("Uniqueid", "Linkedid")
#: every byte but the C0 controls (a tab aside), DEL and 0xC2 (a C1 control's first byte in UTF-8)
_PLAIN_BYTES = bytes(b for b in range(256) if b == 0x09 or (0x20 <= b != 0x7F and b != 0xC2))
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

#: values worth trying in a ``Timestamp``: not numbers, not finite, huge, negative, odd spellings float() takes
ODD_TIMESTAMPS = (
    b"nan", b"NaN", b"-nan", b"inf", b"-inf", b"Infinity", b"1e308", b"-1e308", b"1e309", b"1.7976931348623157e308",
    b"-1", b"0", b"-0.0", b"1e-320", b"99999999999", b"1e18", b"", b" ", b"  1700000000", b"1_700_000_000",
    b"0x10", b"1700000000.5\x00", b"\xd9\xa1\xd9\xa2", b"\xff\xfe", b"1700000000.123456789012345678901234567890",
)
#: seconds to move a timestamp by: within the clock guard's tolerance, just past it, hours, a week, ages
TIME_SHIFTS = (0.000001, 0.5, 1.0, 5.0, 60.0, 299.0, 301.0, 3600.0, 7 * 3600.0, 7 * 86400.0 + 1, 1e9, 1e15)
#: seconds after the last trusted time to tick at: a sweep, a long wait, the over-age close, the watch list's end
TICK_SHIFTS = (0.0, 1.0, 29.0, 31.0, SWEEP_INTERVAL, SWEEP_INTERVAL + 1, 3600.0, 6 * 3600.0 + 1, 7 * 86400.0 + 1,
               -1.0, -3600.0, 1e10)
ODD_BYTES = (b"\x00", b"\r", b"\n", b"\r\n", b"\t", b"\x7f", b"\x1b", b"\xc2\x85", b"\xc2\x9f", b"\xff", b"\xc3",
             b"\xe2\x80\xa8", b": ", b":", b"\\", b'"', b"\\n", b"\\\"", b"\xd0\x90", b" ")
ODD_VALUES = (b"", b" ", b"<unknown>", b"<Unknown>", b"unknown", b"0", b"-1", b"1", b"2", b"16", b"Local/;1",
              b"Local/101@agents-00000001;3", b"PJSIP/", b"+", b"+3725551234", b"00000", b"x" * 300, b"\\", b"\\\\x",
              b"QUEUESTATUS", b"ATTENDEDTRANSFER", b"TIMEOUT", b"FULL", b"JOINEMPTY", b"JOINUNAVAIL", b"LEAVEEMPTY",
              b"WITHDRAW", b"Queue", b"Success", b"Fail", b"Up", b"6", b"ANSWER", b"NOANSWER", b"Yes", b"No")
OTHER_EVENTS = (b"Newstate", b"Cdr", b"Cel", b"QueueStatusComplete", b"CoreShowChannelsComplete", b"FullyBooted",
                b"Shutdown", b"CoreShowChannel", b"QueueEntry", b"QueueParams", b"OriginateResponse",
                b"MusicOnHoldStart", b"SuccessfulAuth", b"", b"Hangup ", b" Hangup", b"hangup", b"XComplete",
                b"Complete")
#: headers the tracker reads (an event may be given one it lacks)
_PREFIXES = ("", "Dest", "Transferee", "Transferer", "OrigTransferer", "SecondTransferer", "LocalOne", "LocalTwo",
             "Target")
TRACKER_KEYS = tuple(k.encode() for k in (
    "AppData", "Application", "BridgeUniqueid", "Cause", "Context", "DialStatus", "DialString", "Digit", "Exten",
    "Extension", "HoldTime", "Interface", "Location", "MemberName", "Newname", "Queue", "Reason", "StateInterface",
    "TransferTargetExten", "SecondTransfererExten", "Value", "Variable", "Result", "Duration",
    *(p + k for p in _PREFIXES for k in ("Uniqueid", "Linkedid", "Channel", "CallerIDNum", "CallerIDName"))))
SEPARATORS = (b": ", b":", b":  ", b" : ", b"", b":\t")
ENDINGS = (b"\r\n", b"\n\n", b"\r\r", b"\r\n\r\n\r\n", b"\r\n\n", b"", b"\r\n\r\n\r\n\r\n")

T = TypeVar("T")


class InvariantError(AssertionError):
    """An input broke one of the harness's invariants (the message says which and how)."""


# ---- the corpus: real messages ---------------------------------------------------------------------------
def blocks(data: bytes) -> list[bytes]:
    """A capture's messages (without their terminators), the banner left out."""
    if data.startswith(b"Asterisk Call Manager/"):
        data = data.partition(b"\r\n")[2]
    return [b for b in data.split(TERMINATOR) if b.strip()]


@dataclass(frozen=True)
class Corpus:
    """The real captures, split into messages: all of them, and those the tracker reads (``kept``)."""

    names: tuple[str, ...]
    every: tuple[tuple[bytes, ...], ...]
    kept: tuple[tuple[bytes, ...], ...]
    #: key -> distinct values seen (capped), to put one message's value into another
    values: dict[bytes, tuple[bytes, ...]] = field(repr=False)
    #: distinct event names (seen, or handled by the tracker), and a few messages of the kinds the tracker skips
    events: tuple[bytes, ...] = ()
    skipped: tuple[bytes, ...] = ()

    @classmethod
    def load(cls, directory: Path = CAPTURES) -> Corpus:
        paths = sorted(directory.glob("*.ami"))
        if not paths:
            raise FileNotFoundError(f"{directory}: no *.ami capture")
        flt = event_filter()
        names, every, kept = [], [], []
        values: dict[bytes, dict[bytes, None]] = {}
        events: dict[bytes, None] = {}
        skipped: dict[bytes, None] = {}
        for path in paths:
            all_blocks = blocks(path.read_bytes())
            names.append(path.stem)
            every.append(tuple(all_blocks))
            kept.append(tuple(b for b in all_blocks if flt.wanted(b)))
            for b in all_blocks:
                for line in b.split(b"\r\n"):
                    key, _, value = line.partition(b": ")
                    bucket = values.setdefault(key, {})
                    if len(bucket) < 64:
                        bucket[value] = None
                    if key == b"Event":
                        events[value] = None
                if not flt.wanted(b):
                    name = b[7 : b.find(b"\r\n")]
                    if sum(1 for s in skipped if s.startswith(b"Event: " + name + b"\r\n")) < 4:
                        skipped[b] = None
        for handled in sorted(JourneyTracker().handled_events()):  # those no capture has too (Rename, AgentDump...)
            events[handled.encode()] = None
        return cls(tuple(names), tuple(every), tuple(kept), {k: tuple(v) for k, v in values.items()},
                   tuple(events), tuple(skipped))


def event_filter() -> EventFilter:
    """The framer's filter exactly as ``onechance replay`` and the daemon build it from the tracker."""
    interest = JourneyTracker().interest()
    return EventFilter(interest.events, interest.conditions)


def policy() -> CallPolicy:
    """Every alert kind on, long waits after 30 s: ``tick`` has something to raise."""
    return CallPolicy.with_defaults(long_wait_seconds=30.0, alert_kinds=frozenset(AlertKind))


# ---- building a case from the input ------------------------------------------------------------------
@dataclass
class Case:
    """One stream and how to drive it."""

    stream: bytes
    cuts: list[int]  # chunk boundaries of the second pass
    arrival: float = 0.0  # 0: a replay; else the arrival time of every event (live)
    ticks: dict[int, list[float]] = field(default_factory=dict)  # after the n-th message: tick(ref + shift)
    end_shift: float = SWEEP_INTERVAL + 1  # the tick after the end of the stream
    small_limit: int | None = None  # also run a framer with this max_message_bytes


def _pick(fdp: Any, seq: Sequence[T]) -> T:
    index: int = fdp.ConsumeIntInRange(0, len(seq) - 1)
    return seq[index]


def parse_raw(data: bytes) -> Case:
    n = data[1] % 16 if len(data) > 1 else 0
    offsets = data[2 : 2 + 2 * n]
    stream = data[2 + 2 * n :]
    cuts = sorted({int.from_bytes(offsets[i : i + 2], "big") % (len(stream) + 1) for i in range(0, len(offsets), 2)})
    mode = data[0] if data else 0
    limit = SMALL_LIMITS[mode >> 1 & 3] if mode & 0x80 else None
    return Case(stream, cuts, small_limit=limit)


def raw_input(stream: bytes, cuts: Iterable[int] = ()) -> bytes:
    """A raw-mode input for ``stream`` (a seed)."""
    offsets = list(cuts)[:15]
    return bytes((0, len(offsets))) + b"".join(c.to_bytes(2, "big") for c in offsets) + stream


def structured_input(capture: int, start: int, length: int, flags: int = 0, rest: bytes = b"") -> bytes:
    """A structured-mode input: a window of real messages, mutated as ``rest`` says (a seed: no mutation)."""
    return bytes((1, capture, start >> 8, start & 0xFF, length, flags)) + rest


class _Message:
    """A message being mutated: its lines as ``[key, separator, value]`` (split when first needed: most messages
    of a window are never touched) and how it ends."""

    __slots__ = ("_lines", "end", "raw")

    def __init__(self, block: bytes) -> None:
        self.raw = block
        self._lines: list[list[bytes]] | None = None
        self.end = TERMINATOR

    @property
    def lines(self) -> list[list[bytes]]:
        if self._lines is None:
            self._lines = [list(_split_line(line)) for line in self.raw.split(b"\r\n")]
        return self._lines

    def copy(self) -> _Message:
        m = _Message(self.raw)
        if self._lines is not None:
            m._lines = [list(line) for line in self._lines]
        m.end = self.end
        return m

    def to_bytes(self) -> bytes:
        if self._lines is None:
            return self.raw + self.end
        return b"\r\n".join(k + s + v for k, s, v in self._lines) + self.end

    def find(self, key: bytes) -> list[bytes] | None:
        for line in self.lines:
            if line[0] == key:
                return line
        return None


def _split_line(line: bytes) -> tuple[bytes, bytes, bytes]:
    key, sep, value = line.partition(b": ")
    return key, sep, value


def _shifted(value: bytes, fdp: Any) -> bytes:
    try:
        ts = float(value)
    except ValueError:
        ts = 1.7e9
    shift = _pick(fdp, TIME_SHIFTS)
    return f"{ts - shift if fdp.ConsumeBool() else ts + shift:.6f}".encode()


def _mutate(msgs: list[_Message], fdp: Any, corpus: Corpus) -> None:
    """One mutation of the window (see the module's doc)."""
    if not msgs:
        return
    kind = fdp.ConsumeIntInRange(0, 16)
    i = fdp.ConsumeIntInRange(0, len(msgs) - 1)
    m = msgs[i]
    line = m.lines[fdp.ConsumeIntInRange(0, len(m.lines) - 1)] if m.lines else None
    if kind == 0 and line is not None:  # a value of the same key from another message of the window
        other = msgs[fdp.ConsumeIntInRange(0, len(msgs) - 1)].find(line[0])
        if other is not None:
            line[2] = other[2]
    elif kind == 1 and line is not None:  # a value of the same key from any capture
        seen = corpus.values.get(line[0])
        if seen:
            line[2] = _pick(fdp, seen)
    elif kind == 2:  # the timestamp: odd, or shifted (a jump, or one the clock guard lets through)
        ts = m.find(b"Timestamp")
        if ts is not None:
            ts[2] = _pick(fdp, ODD_TIMESTAMPS) if fdp.ConsumeBool() else _shifted(ts[2], fdp)
    elif kind == 3 and line is not None:  # an id or channel of another key: calls merged, channels moved
        donor = msgs[fdp.ConsumeIntInRange(0, len(msgs) - 1)]
        if donor.lines:
            line[2] = donor.lines[fdp.ConsumeIntInRange(0, len(donor.lines) - 1)][2]
    elif kind == 4 and line is not None:  # a repeated header
        value = line[2] if fdp.ConsumeBool() else _pick(fdp, ODD_VALUES)
        m.lines.insert(fdp.ConsumeIntInRange(0, len(m.lines)), [line[0], b": ", value])
    elif kind == 5 and line is not None and len(m.lines) > 1:  # a header missing
        m.lines.remove(line)
    elif kind == 6:  # another event name
        ev = m.find(b"Event")
        if ev is not None:
            ev[2] = _pick(fdp, corpus.events) if fdp.ConsumeBool() else _pick(fdp, OTHER_EVENTS)
    elif kind == 7:  # the message sent again (byte for byte), now or later
        msgs.insert(fdp.ConsumeIntInRange(i, len(msgs)), m.copy())
    elif kind == 8 and len(msgs) > 1:  # the message lost
        del msgs[i]
    elif kind == 9:  # the message moved
        msgs.insert(fdp.ConsumeIntInRange(0, len(msgs) - 1), msgs.pop(i))
    elif kind == 10:  # a message from elsewhere: one the tracker skips, or one of another capture
        pool = corpus.skipped if fdp.ConsumeBool() else corpus.kept[fdp.ConsumeIntInRange(0, len(corpus.kept) - 1)]
        if pool:
            msgs.insert(fdp.ConsumeIntInRange(0, len(msgs)), _Message(_pick(fdp, pool)))
    elif kind == 11 and line is not None:  # odd bytes inside a key or a value
        part = 0 if fdp.ConsumeIntInRange(0, 3) == 0 else 2
        at = fdp.ConsumeIntInRange(0, len(line[part]))
        line[part] = line[part][:at] + _pick(fdp, ODD_BYTES) + line[part][at:]
    elif kind == 12 and line is not None:  # another separator (none: a line without a colon)
        line[1] = _pick(fdp, SEPARATORS)
    elif kind == 13:  # another ending: two messages run together, blank lines, a bare LF
        m.end = _pick(fdp, ENDINGS)
    elif kind == 14 and line is not None:  # a value of the fuzzer's own bytes or text
        n = fdp.ConsumeIntInRange(0, 40)
        line[2] = fdp.ConsumeBytes(n) if fdp.ConsumeBool() else fdp.ConsumeUnicode(n).encode("utf-8", "surrogatepass")
    elif kind == 15 and line is not None:  # a value of another kind (unknown, empty, a queue status...)
        line[2] = _pick(fdp, ODD_VALUES)
    elif kind == 16:  # a header the tracker reads, with a value seen for it or one of another header's
        key = _pick(fdp, TRACKER_KEYS)
        seen = corpus.values.get(key)
        donor = msgs[fdp.ConsumeIntInRange(0, len(msgs) - 1)].lines
        value = _pick(fdp, seen) if seen and fdp.ConsumeBool() else donor[fdp.ConsumeIntInRange(0, len(donor) - 1)][2]
        m.lines.insert(fdp.ConsumeIntInRange(1, max(1, len(m.lines))), [key, b": ", value])


def parse_structured(data: bytes, corpus: Corpus) -> Case:
    head = data[1:6].ljust(5, b"\0")
    capture = head[0] % len(corpus.names)
    flags = head[4]
    source = corpus.every[capture] if flags & 1 else corpus.kept[capture]
    length = (1 + head[3] % MAX_WINDOW) * (ALL_WINDOW // MAX_WINDOW if flags & 1 else 1)
    start = int.from_bytes(head[1:3], "big") % max(1, len(source) - length + 1)
    msgs = [_Message(b) for b in source[start : start + length]]
    fdp = atheris.FuzzedDataProvider(data[6:])
    for _ in range(fdp.ConsumeIntInRange(0, MAX_MUTATIONS)):
        _mutate(msgs, fdp, corpus)
    stream = b"".join(m.to_bytes() for m in msgs)
    if flags & 2:
        stream = BANNER + stream
    if flags & 4:  # cut short: the stream ends inside a message
        stream = stream[: fdp.ConsumeIntInRange(0, len(stream))]
    # the second pass's chunks: random boundaries, or a fixed step (down to one byte at a time)
    if fdp.ConsumeBool():
        step = max(fdp.ConsumeIntInRange(1, 4096), len(stream) // MAX_CUTS + 1)
        cuts = list(range(step, len(stream), step))
    else:
        cuts = sorted({fdp.ConsumeIntInRange(0, len(stream)) for _ in range(fdp.ConsumeIntInRange(0, 16))})
    case = Case(stream, cuts)
    if flags & 8:  # live: every event arrives at one time on the PBX's clock (near its timestamps, or not)
        first = msgs[0].find(b"Timestamp") if msgs else None
        try:
            base = float(first[2]) if first is not None else 1.7e9
        except ValueError:
            base = 1.7e9
        arrival = base + _pick(fdp, (0.0, 1.0, 100.0, 3600.0, -3600.0, 1e9))
        case.arrival = arrival if 0.0 < arrival < MAX_TIMESTAMP else 1.7e9  # a time the daemon could pass
    for _ in range(fdp.ConsumeIntInRange(0, MAX_TICKS)):
        after = fdp.ConsumeIntInRange(0, len(msgs))
        shift = _pick(fdp, TICK_SHIFTS) if fdp.ConsumeBool() else fdp.ConsumeRegularFloat()
        case.ticks.setdefault(after, []).append(shift)
    case.end_shift = _pick(fdp, TICK_SHIFTS)
    if flags & 16:
        case.small_limit = _pick(fdp, SMALL_LIMITS)
    return case


# ---- running and checking ------------------------------------------------------------------------------
@dataclass
class Pass:
    """What one run of a stream gave: every update (as comparable text) and the framer's counts."""

    updates: list[str] = field(default_factory=list)
    counts: tuple[int, ...] = ()


def _chunks(stream: bytes, cuts: Sequence[int]) -> Iterator[bytes]:
    at = 0
    for cut in cuts:
        if cut > at:
            yield stream[at:cut]
            at = cut
    if at < len(stream):
        yield stream[at:]


def _strings(value: object) -> list[str]:
    """Every string in a JSON value (keys too)."""
    out: list[str] = []
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            out.extend(v)
            stack.extend(v.values())
        elif isinstance(v, list | tuple):
            stack.extend(v)
    return out


def check_record(record: CallRecord, where: str) -> str:
    """Invariant 2 for one record; returns its JSON text."""
    d = record.to_json()
    try:
        text = json.dumps(d, allow_nan=False, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise InvariantError(f"{where}: record of call {record.call_id!r} is not JSON: {exc}: {d!r}") from None
    if d["outcome"] not in OUTCOMES:
        raise InvariantError(f"{where}: call {record.call_id!r}: outcome {d['outcome']!r} is not a documented word")
    strings = _strings(d)
    if _CONTROL.search("".join(strings)):
        bad = next(s for s in strings if _CONTROL.search(s))
        raise InvariantError(f"{where}: call {record.call_id!r}: control character in {bad!r}")
    if d["wait_seconds"] < 0 or d["talk_seconds"] < 0:
        raise InvariantError(f"{where}: call {record.call_id!r}: negative wait or talk: {text}")
    if any(v["wait_seconds"] < 0 for v in d["queues"] + d["consultations"]) or \
            any(leg["talk_seconds"] < 0 for leg in d["legs"]):
        raise InvariantError(f"{where}: call {record.call_id!r}: negative wait or talk in a visit or leg: {text}")
    return text


def check_updates(updates: list[Update], out: list[str], where: str) -> None:
    for u in updates:
        if isinstance(u, Recovered):
            try:
                out.append("recovered " + json.dumps(dataclasses.asdict(u), allow_nan=False, sort_keys=True))
            except (TypeError, ValueError) as exc:
                raise InvariantError(f"{where}: recovery is not JSON: {exc}: {u!r}") from None
            continue
        if not isinstance(u, JourneyUpdate):
            raise InvariantError(f"{where}: not an update: {u!r}")
        text = check_record(u.record, where)
        try:
            detail = json.dumps(u.detail, allow_nan=False, sort_keys=True)
            at = json.dumps(u.at, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvariantError(f"{where}: {u.kind} update of {u.record.call_id!r}: not JSON: {exc}") from None
        out.append(f"{u.kind} {at} {detail} {text}")


def _check_bounds(tracker: JourneyTracker, ids: set[str], where: str) -> None:
    """Invariant 5: a live call or channel is one of the ids the tracker was fed, and so is a watched call."""
    n = len(ids)
    if len(tracker.calls) > n or len(tracker.index.channels) > n or tracker.watched() > n:
        raise InvariantError(f"{where}: {len(tracker.calls)} live calls, {len(tracker.index.channels)} channels, "
                             f"{tracker.watched()} watched after {tracker.events} events naming {n} ids")


def run(case: Case, flt: EventFilter | None, cuts: Sequence[int], ticks: bool = True,
        max_message_bytes: int | None = None) -> Pass:
    """Drive a fresh framer and tracker through the stream as the daemon does; check invariants 1, 2 and 5."""
    where = f"{'filtered' if flt is not None else 'unfiltered'} framer, {len(cuts) + 1} chunk(s)"
    framer = (AmiFramer(event_filter=flt) if max_message_bytes is None
              else AmiFramer(max_message_bytes, event_filter=flt))
    tracker = JourneyTracker(policy(), pbx="fuzz")
    wants = tracker.interest().wants
    out: list[str] = []
    ids: set[str] = set()  # every channel or call id of the events the tracker reads (Uniqueid, DestLinkedid...)
    n = 0  # messages the tracker reads (the ticks' places: the same with the event filter and without)

    def tick(shift: float) -> None:
        # the daemon's clock: the local time plus the PBX's offset (learnt from timestamps below MAX_TIMESTAMP)
        now = (tracker.clock.reference or case.arrival) + math.fmod(shift, MAX_TIMESTAMP)
        check_updates(tracker.tick(now), out, f"{where}, tick({now!r})")

    if ticks:
        for shift in case.ticks.get(0, ()):
            tick(shift)
    check_every = len(cuts) // 32 + 1  # the bounds after every chunk, or (one byte at a time) 32 times in all
    for i, chunk in enumerate(_chunks(case.stream, cuts)):
        for msg in framer.iter_feed(chunk):
            check_updates(tracker.feed(msg, case.arrival), out, f"{where}, message {framer.messages}")
            if not wants(msg):  # changes no call (the time aside)
                continue
            for k, v in msg.headers.items():
                if k.endswith(_ID_KEYS):
                    ids.add(v)
            n += 1
            if ticks and n in case.ticks:
                for shift in case.ticks[n]:
                    tick(shift)
        if framer.pending_bytes > framer.max_message_bytes:
            raise InvariantError(f"{where}: {framer.pending_bytes} bytes pending, past {framer.max_message_bytes}")
        if i % check_every == 0:
            _check_bounds(tracker, ids, where)
    framer.finish()
    check_updates(tracker.flush(), out, f"{where}, flush")
    if tracker.clock.holding:
        raise InvariantError(f"{where}: {tracker.clock.holding} events still held after flush")
    tick(case.end_shift)
    for record in tracker.live():
        out.append("live " + check_record(record, f"{where}, live"))
    _check_bounds(tracker, ids, where)
    at = tracker.clock.reference or case.arrival
    check_updates(tracker.close_all(at, "link_lost"), out, f"{where}, close_all({at!r})")
    if tracker.calls:
        raise InvariantError(f"{where}: {len(tracker.calls)} calls still live after close_all")
    if tracker.errors:
        raise InvariantError(f"{where}: {tracker.errors} event handler(s) failed, last: {tracker.last_error}")
    counts = (framer.messages - framer.skipped, framer.duplicates, framer.bad_messages, framer.bad_lines)
    return Pass(out, counts)


def time_in_order(stream: bytes, flt: EventFilter) -> bool:
    """May the event filter be held to exactly the same updates (invariant 4)?  Yes when every message is plain (lines
    end in CRLF, no control character) with one ``Timestamp`` (or none on a message the filter never skips), those
    times are finite and never go back, and the stream does not end on timestamped messages the filter skips.  The
    events the framer skips tell the tracker the time through the last of them before each event it reads
    (``AmiMessage.before``), where fed one by one each tells it: with times missing or out of order, or with no event
    read after them, the two ways may confirm an answer by a Local channel one event apart (or only at the end)."""
    if stream.translate(None, _PLAIN_BYTES).replace(b"\r\n", b""):
        return False
    last = -math.inf
    told = True  # the last timestamped message is one the tracker reads, or one read after it is
    for block in stream.split(TERMINATOR)[:-1]:  # what follows the last terminator is no message
        if not block.strip():
            continue
        stamps = block.count(b"\r\nTimestamp:")
        if stamps > 1 or block.startswith(b"Timestamp:"):
            return False
        if stamps == 0:
            if not flt.wanted(block):
                return False
            told = True
            continue
        ts = block_timestamp(block)
        if ts is None or ts < last:
            return False
        last = ts
        told = False
    return told or flt.wanted(next(b for b in reversed(stream.split(TERMINATOR)[:-1]) if b.strip()))


def _first_difference(a: list[str], b: list[str]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"update {i}:\n  {x}\n  {y}"
    return f"{len(a)} updates against {len(b)}"


class Harness:
    """The fuzz target: ``harness(data)`` checks one input (raises :class:`InvariantError` on a violation)."""

    def __init__(self, corpus: Corpus | None = None) -> None:
        self.corpus = corpus or Corpus.load()
        self.filter = event_filter()
        self.inputs = 0

    def case(self, data: bytes) -> Case:
        if data[:1] and data[0] & 1:
            return parse_structured(data, self.corpus)
        return parse_raw(data)

    def __call__(self, data: bytes) -> None:
        self.inputs += 1
        case = self.case(data)
        whole = run(case, self.filter, ())
        cut = run(case, self.filter, case.cuts)
        if cut.updates != whole.updates or cut.counts != whole.counts:
            raise InvariantError(f"chunking changed the result (cuts {case.cuts[:20]}): counts {whole.counts} "
                                 f"against {cut.counts}; {_first_difference(whole.updates, cut.updates)}")
        unfiltered = run(case, None, case.cuts)
        if unfiltered.updates != whole.updates and time_in_order(case.stream, self.filter):
            raise InvariantError("the event filter changed the result: "
                                 + _first_difference(whole.updates, unfiltered.updates))
        if case.small_limit is not None:
            run(case, self.filter, case.cuts, max_message_bytes=case.small_limit)


def seeds(corpus: Corpus) -> Iterator[tuple[str, bytes]]:
    """The seed inputs: every capture's messages in windows (structured, unmutated), and each capture's first
    messages as raw bytes (whole, and cut in the middle of a message)."""
    for c, name in enumerate(corpus.names):
        kept = corpus.kept[c]
        for start in range(0, max(1, len(kept)), MAX_WINDOW // 2):
            yield f"{name}-kept-{start}", structured_input(c, start, MAX_WINDOW - 1)
        for start in range(0, max(1, len(corpus.every[c])), ALL_WINDOW // 2):
            yield f"{name}-all-{start}", structured_input(c, start, MAX_WINDOW - 1, flags=1 | (2 if start == 0 else 0))
        head = BANNER + b"".join(b + TERMINATOR for b in corpus.every[c][:12])
        yield f"{name}-raw", raw_input(head)
        yield f"{name}-raw-cut", raw_input(head, (len(head) // 3, len(head) // 2 + 1))

