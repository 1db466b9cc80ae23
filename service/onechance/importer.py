"""Calls from Asterisk's ``queue_log``: the history a site had before onechance (``onechance import-queue-log``).

Pure: no database, no clock.  :func:`read_file` turns a queue_log file (plain or gzip) into
:class:`QueueLogLine` s, :func:`line_of_row` does the same for a row of a realtime ``queue_log`` table, and
:class:`QueueLogBuilder` turns lines, in time order, into :class:`~onechance.journey.CallRecord` s of the same shape
as the live daemon's, judged by the same :class:`~onechance.journey.CallPolicy` (``record_of``).  Writing them
(and never over a call recorded live) is ``onechance.store.queue_log``'s job.  ``docs/import.md`` is the guide.

How lines become calls:

* a call is the lines of one ``callid`` (the waiting channel's Uniqueid), from its first ``ENTERQUEUE``; a
  blind transfer into another queue is a new ``ENTERQUEUE`` with the same callid: one call, two visits.  A
  callid seen again after its caller hung up (``ABANDON``, ``COMPLETECALLER``) starts a new call;
* its id is ``ql:<callid>`` (``ql:<callid>@<epoch>`` for a later call of a callid used again in the same
  input): stable across imports, never a live call's (a ``Linkedid`` has no ``ql:``);
* waits are Asterisk's own whole seconds (``CONNECT``'s holdtime, ``ABANDON``'s waittime...): a visit leaves
  at ``joined + wait``, so the service level (whole-second rule) is Asterisk's;
* what queue_log cannot know stays empty: the caller's name unless ``log-caller-id-name`` wrote it, the
  operator's interface, the target of an attended transfer, talk after a transfer to an extension, phone
  (SIP REFER) transfers, pickups (queue_log credits the member who was rung), callers a queue refused (no
  line at all);
* a call whose lines stop before it ends: still open at the end of the input, it is not imported (a later
  import with more lines brings it); silent for longer than ``max_call_age`` while the input goes on, it is
  closed ``uncertain`` with ``closed_reason`` ``no_end_in_queue_log``, as the daemon closes over-age calls;
* a lost caller answered later (calling in again, within ``recovery_window``) is recovered (``inbound``), as
  live; callbacks by operators are not in queue_log, so a lost caller reached that way stays not recovered.
"""

from __future__ import annotations

import dataclasses
import gzip
import heapq
import math
import zlib
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from typing import Any

from .journey import (
    CallPolicy,
    CallRecord,
    Direction,
    EndedBy,
    LegKind,
    Outcome,
    TrackerSettings,
    TransferKind,
    VisitResult,
    record_of,
)
from .journey.model import CALLER_GROUP, Journey, OperatorLeg, QueueVisit, Transfer
from .journey.numbers import number_key
from .replay import unreadable

__all__ = [
    "ID_PREFIX",
    "SOURCE",
    "BuildStats",
    "ImportedCall",
    "QueueLogBuilder",
    "QueueLogFileError",
    "QueueLogLine",
    "check_file",
    "line_of_row",
    "merge_lines",
    "parse_line",
    "read_file",
]

#: the ``source`` of an imported record, and the prefix of its call id
SOURCE = "queue_log"
ID_PREFIX = "ql:"
#: bad lines listed by name (the others are only counted)
MAX_BAD_SHOWN = 10
#: closed_reason of a call that went silent without an end
NO_END = "no_end_in_queue_log"

ENTERQUEUE = "ENTERQUEUE"
#: the events of a caller's stay in a queue (section 8 of the AMI notes); every other event (members,
#: pauses, reloads, custom QueueLog() lines) is not about a call
CALL_EVENTS = frozenset({
    ENTERQUEUE, "CONNECT", "COMPLETECALLER", "COMPLETEAGENT", "ABANDON", "EXITWITHTIMEOUT", "EXITEMPTY",
    "EXITWITHKEY", "WITHDRAW", "RINGNOANSWER", "RINGCANCELED", "BLINDTRANSFER", "ATTENDEDTRANSFER", "TRANSFER",
    "AGENTDUMP", "SYSCOMPAT",
})
#: callids of lines that are not about a call
NOT_A_CALL = frozenset({"", "NONE", "MANAGER", "CLI", "REALTIME", "NULL"})
#: how a visit ends without an operator: event -> (result, QUEUESTATUS, index of the wait in the data)
_LEAVES: dict[str, tuple[VisitResult, str | None, int]] = {
    "ABANDON": (VisitResult.ABANDONED, None, 2),
    "EXITWITHTIMEOUT": (VisitResult.TIMEOUT, "TIMEOUT", 2),
    "EXITEMPTY": (VisitResult.TIMEOUT, "LEAVEEMPTY", 2),
    "WITHDRAW": (VisitResult.TIMEOUT, "WITHDRAW", 2),
    "EXITWITHKEY": (VisitResult.EXITED, None, 3),
}
_NOBODY = frozenset({"", "NONE", "<unknown>", "<Unknown>", "unknown"})


class QueueLogFileError(Exception):
    """A queue_log file that cannot be read (missing, not a queue_log, a broken gzip).  One line."""


@dataclass(frozen=True, slots=True)
class QueueLogLine:
    """One queue_log line: ``time|callid|queue|agent|EVENT|data...`` (trailing empty data fields dropped)."""

    time: float
    callid: str
    queue: str
    agent: str
    event: str
    data: tuple[str, ...]
    where: str = ""  # FILE:LINE or TABLE#id, for messages


# ---- parsing -------------------------------------------------------------------------------------------
def parse_line(text: str, where: str = "") -> QueueLogLine:
    """A line of a queue_log file; ``ValueError`` (with the reason) when it is not one."""
    parts = text.rstrip("\r\n").split("|")
    if len(parts) < 5:
        raise ValueError("not a queue_log line (epoch|callid|queue|agent|EVENT|data...)")
    try:
        ts = float(parts[0])
    except ValueError:
        raise ValueError(f"bad time {parts[0][:20]!r} (epoch seconds expected)") from None
    if not math.isfinite(ts) or ts < 0:
        raise ValueError(f"bad time {parts[0][:20]!r} (epoch seconds expected)")
    event = parts[4].strip()
    if not event or not event.replace("_", "").isalnum():
        raise ValueError(f"bad event {event[:20]!r}")
    return QueueLogLine(ts, parts[1].strip(), parts[2], parts[3], event, _data(parts[5:]), where)


def _data(fields: Iterable[str]) -> tuple[str, ...]:
    out = list(fields)
    while out and out[-1] == "":
        out.pop()
    return tuple(out)


def _open(path: str) -> Any:
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
        return gzip.open(path, "rb") if magic == b"\x1f\x8b" else open(path, "rb")
    except OSError as exc:
        raise QueueLogFileError(unreadable(path, exc)) from None


def _raw_lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of every non-blank line; :class:`QueueLogFileError` on a broken file."""
    fh = _open(path)
    number = 0
    try:
        with fh:
            for raw in fh:
                number += 1
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if text.strip():
                    yield number, text
    except EOFError:
        raise QueueLogFileError(f"{path}: truncated gzip file (it ends after line {number})") from None
    except (gzip.BadGzipFile, zlib.error) as exc:
        raise QueueLogFileError(f"{path}: corrupt gzip data after line {number} ({exc})") from None
    except OSError as exc:
        raise QueueLogFileError(f"{path}: cannot read: {exc.strerror or exc}") from None


def check_file(path: str) -> int:
    """Read a file through once (a broken gzip is found before anything is imported); returns its lines.
    :class:`QueueLogFileError` for a file that cannot be read or holds no queue_log line at all."""
    lines = good = 0
    for _, text in _raw_lines(path):
        lines += 1
        if not good:
            try:
                parse_line(text)
                good += 1
            except ValueError:
                pass
    if lines and not good:
        raise QueueLogFileError(f"{path}: not a queue_log file (no line of the form epoch|callid|queue|agent|EVENT)")
    return lines


def read_file(path: str, stats: BuildStats) -> Iterator[QueueLogLine]:
    """The lines of a queue_log file (plain or gzip), in file order; bad lines are counted in ``stats``."""
    for number, text in _raw_lines(path):
        stats.lines += 1
        try:
            yield parse_line(text, f"{path}:{number}")
        except ValueError as exc:
            stats.bad(f"{path}:{number}", str(exc))


def merge_lines(streams: Iterable[Iterator[QueueLogLine]]) -> Iterator[QueueLogLine]:
    """Several files' lines in time order (each file is in time order, as Asterisk writes it; rotated files
    may be given in any order)."""
    return heapq.merge(*streams, key=lambda line: line.time)


def _epoch(value: Any, tz: tzinfo | None) -> float:
    if isinstance(value, datetime):  # naive and tz None: local time (datetime.timestamp does that)
        return (value if value.tzinfo is not None or tz is None else value.replace(tzinfo=tz)).timestamp()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        return float(text)
    except ValueError:
        pass
    parsed = datetime.fromisoformat(text)  # "2026-11-22 10:30:09.123456", Asterisk's "%F %T.%6q"
    return (parsed if parsed.tzinfo is not None or tz is None else parsed.replace(tzinfo=tz)).timestamp()


def line_of_row(row: Any, tz: tzinfo | None, where: str = "") -> QueueLogLine:
    """A row of a realtime ``queue_log`` table (``time, callid, queuename, agent, event, data1..data5``, or a
    single ``data`` column when ``queue_adaptive_realtime`` is off).  Times without a zone are in ``tz``, None
    for this machine's local time (Asterisk writes local time unless ``queue_log_realtime_use_gmt``).
    ``ValueError`` for a bad row."""
    m = row._mapping if hasattr(row, "_mapping") else row
    try:
        ts = _epoch(m["time"], tz)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"bad time {str(m['time'])[:32]!r}") from None
    if not math.isfinite(ts) or ts < 0:
        raise ValueError(f"bad time {str(m['time'])[:32]!r}")
    event = str(m["event"] or "").strip()
    if not event or not event.replace("_", "").isalnum():
        raise ValueError(f"bad event {event[:20]!r}")
    fields = [str(m.get(f"data{i}") or "") for i in range(1, 6)]
    # data5 keeps what did not fit (ATTENDEDTRANSFER LINK has six fields); "data" without queue_adaptive_realtime
    joined = str(m["data"]) if not any(fields) and m.get("data") else "|".join(fields)
    return QueueLogLine(ts, str(m["callid"] or "").strip(), str(m["queuename"] or ""), str(m["agent"] or ""), event,
                        _data(joined.split("|")), where)


# ---- building calls ------------------------------------------------------------------------------------
@dataclass
class BuildStats:
    """What an import read and made."""

    lines: int = 0  # non-blank lines (rows) read
    bad_lines: int = 0
    bad_shown: list[str] = field(default_factory=list)  # the first MAX_BAD_SHOWN, "WHERE: reason"
    call_lines: int = 0  # lines of a caller's stay in a queue
    other_lines: int = 0  # members, pauses, reloads...: not about a call
    orphan_lines: int = 0  # a call's line whose ENTERQUEUE is not in the input
    unmatched_lines: int = 0  # a line of a known call that fits none of its visits or talks (e.g. a second CONNECT)
    calls: int = 0  # calls built
    unfinished: int = 0  # still open at the end of the input: not imported
    closed: int = 0  # went silent without an end: imported uncertain
    recovered: int = 0  # lost calls whose caller was answered later

    def bad(self, where: str, reason: str) -> None:
        self.bad_lines += 1
        if len(self.bad_shown) < MAX_BAD_SHOWN:
            self.bad_shown.append(f"{where}: {reason}")


@dataclass(frozen=True, slots=True)
class ImportedCall:
    """A call built from queue_log, ready to store."""

    record: CallRecord
    callids: tuple[str, ...]  # the queue_log callids of its visits (to find the same call recorded live)
    recovered_by_callid: str | None = None  # the callid of the call that recovered it

    @property
    def key(self) -> tuple[str, str]:
        return self.record.key


@dataclass(slots=True)
class _Open:
    """A call being built."""

    journey: Journey
    callid: str
    last: float
    visit: QueueVisit | None = None  # the visit waiting now
    legs: list[OperatorLeg] = field(default_factory=list)  # operators talking now
    caller_gone: bool = False  # the caller hung up (ABANDON, COMPLETECALLER)


@dataclass(slots=True)
class _Held:
    """A lost call kept back until its caller is answered again or its recovery window is over."""

    call: ImportedCall
    ended_at: float
    expires: float


def _int(data: tuple[str, ...], index: int) -> int | None:
    try:
        value = int(data[index])
    except (IndexError, ValueError):
        return None
    return value if value >= 0 else None


def _name(value: str) -> str | None:
    value = value.strip()
    return None if value in _NOBODY else value


class QueueLogBuilder:
    """Lines in, call records out (:meth:`feed` each line in time order, then :meth:`finish`).  Memory holds
    only the calls still open (at most ``max_call_age`` of input), the lost calls waiting for their caller
    (``recovery_window``) and the answers of the last ``max_call_age``."""

    def __init__(self, policy: CallPolicy, *, pbx: str, settings: TrackerSettings | None = None) -> None:
        self.policy = policy
        self.pbx = pbx
        self.settings = settings or TrackerSettings()
        self.stats = BuildStats()
        self.now = 0.0  # the newest line time seen
        self._open: OrderedDict[str, _Open] = OrderedDict()  # callid -> call, least recently touched first
        self._seen: set[str] = set()  # callids that started a call
        self._held: dict[str, dict[int, _Held]] = {}  # caller key -> lost calls waiting
        self._expiry: list[tuple[float, int, str]] = []  # (expires, seq, key) heap
        self._seq = 0
        # answers of the recent past, by caller key: (answered at, call id, callid), and all of them in order
        self._answers: dict[str, deque[tuple[float, str, str]]] = {}
        self._answer_order: deque[tuple[float, str]] = deque()
        self._ready: list[ImportedCall] = []  # finished, to hand out

    # ---- input -------------------------------------------------------------------------------------------
    def feed(self, line: QueueLogLine) -> list[ImportedCall]:
        """Apply one line; returns the calls finished by it (or by the time it tells)."""
        self.now = max(self.now, line.time)
        if line.event in CALL_EVENTS and line.callid not in NOT_A_CALL:
            self.stats.call_lines += 1
            self._apply(line)
        else:
            self.stats.other_lines += 1
        self._expire()
        return self._take()

    def finish(self) -> list[ImportedCall]:
        """The end of the input: the calls that ended, and the lost calls still waiting for their caller."""
        while self._open:
            _, call = self._open.popitem(last=False)
            self._close(call, at_end=True)
        for entries in self._held.values():
            self._ready.extend(h.call for h in entries.values())
        self._held.clear()
        self._expiry.clear()
        return self._take()

    def _take(self) -> list[ImportedCall]:
        out, self._ready = self._ready, []
        return out

    # ---- lines -------------------------------------------------------------------------------------------
    def _apply(self, line: QueueLogLine) -> None:
        call = self._open.get(line.callid)
        if line.event == ENTERQUEUE:
            if call is not None and call.caller_gone:  # the callid is used again: another call
                del self._open[line.callid]
                self._close(call, at_end=False)
                call = None
            if call is None:
                call = self._start(line)
            elif call.visit is not None:  # the previous visit's end is not in the log
                call.visit.result = VisitResult.UNKNOWN
                call.journey.uncertain = True
            j = call.journey
            visit = QueueVisit(queue=line.queue, channel=line.callid, joined_at=line.time)
            j.visits.append(visit)
            call.visit = visit
            if not j.caller:
                self._learn_caller(j, line.data)
        elif call is None:
            self.stats.orphan_lines += 1
            return
        elif not self._event(call, line):
            self.stats.unmatched_lines += 1
            return
        call.last = max(call.last, line.time)
        self._open.move_to_end(line.callid)

    def _start(self, line: QueueLogLine) -> _Open:
        callid = line.callid
        call_id = f"{ID_PREFIX}{callid}" if callid not in self._seen else f"{ID_PREFIX}{callid}@{int(line.time)}"
        self._seen.add(callid)
        j = Journey(call_id=call_id, started_at=line.time, pbx=self.pbx, updated_at=line.time)
        self._learn_caller(j, line.data)
        call = _Open(j, callid, line.time)
        self._open[callid] = call
        return call

    def _learn_caller(self, j: Journey, data: tuple[str, ...]) -> None:
        number = _name(data[1]) if len(data) > 1 else None
        if number:
            j.caller = number
            j.caller_key = number_key(number, self.settings.default_region)
            j.direction = Direction.INTERNAL if self.settings.is_extension(number) else Direction.INBOUND
        name = _name(data[3]) if len(data) > 3 else None  # log-caller-id-name = yes
        if name:
            j.caller_name = name

    def _event(self, call: _Open, line: QueueLogLine) -> bool:
        """Apply a line to its call; False when it fits none of its visits or legs."""
        event, data, ts = line.event, line.data, line.time
        visit = call.visit if call.visit is not None and call.visit.queue == line.queue else None
        if event == "CONNECT":
            if visit is None:
                return False
            hold = _int(data, 0)
            visit.left_at = visit.joined_at + hold if hold is not None else ts
            visit.hold_time = hold
            visit.result = VisitResult.ANSWERED
            agent = _name(line.agent)
            visit.operator = visit.member = agent
            ring = _int(data, 2)
            start = visit.left_at
            leg = OperatorLeg(operator=agent or "?", kind=LegKind.QUEUE, channel=data[1] if len(data) > 1 else "",
                              queue=line.queue, interface=None, group=CALLER_GROUP,
                              rang_at=start - ring if ring is not None else start, started_at=start)
            call.journey.legs.append(leg)
            call.legs.append(leg)
            call.visit = None
            self._answered(call, start)
            return True
        if event in _LEAVES:
            if visit is None:
                return False
            result, status, at = _LEAVES[event]
            wait = _int(data, at)
            visit.left_at = visit.joined_at + wait if wait is not None else ts
            visit.hold_time = wait
            visit.result = result
            visit.exit_status = status
            if result == VisitResult.EXITED:
                visit.exit_key = data[0] if data else None
            if result == VisitResult.ABANDONED:
                visit.caller_hung_up = True
                call.caller_gone = True
            call.visit = None
            return True
        if event in ("COMPLETECALLER", "COMPLETEAGENT", "BLINDTRANSFER", "ATTENDEDTRANSFER", "TRANSFER"):
            talking = self._talking(call, line)
            if talking is None:
                return False
            leg = talking
            if event in ("COMPLETECALLER", "COMPLETEAGENT"):
                talk = _int(data, 1)
            elif event == "ATTENDEDTRANSFER":
                talk = _int(data, len(data) - 2) if len(data) >= 2 else None
            else:  # BLINDTRANSFER (and Asterisk 1.x TRANSFER): exten|context|holdtime|calltime|origpos
                talk = _int(data, 3)
            start = leg.started_at if leg.started_at is not None else ts
            leg.ended_at = start + talk if talk is not None else ts
            call.legs.remove(leg)
            if event == "COMPLETECALLER":
                leg.ended_by = EndedBy.CALLER
                call.caller_gone = True
            elif event == "COMPLETEAGENT":
                leg.ended_by = EndedBy.OPERATOR
            else:
                leg.ended_by = EndedBy.TRANSFER
                kind = TransferKind.ATTENDED if event == "ATTENDEDTRANSFER" else TransferKind.BLIND
                # an attended transfer's target is a bridge, not a number: unknown
                to = (data[0] if data else "") if kind == TransferKind.BLIND else ""
                j = call.journey
                j.transfers.append(Transfer(kind, leg.operator, to, leg.ended_at))
                if not j.bounced and self.policy.bounce_reached(j.first_queue, len(j.transfers)):
                    j.bounced = True
            return True
        # RINGNOANSWER, RINGCANCELED, AGENTDUMP, SYSCOMPAT: a member rang or dropped out; nothing changes
        return True

    @staticmethod
    def _talking(call: _Open, line: QueueLogLine) -> OperatorLeg | None:
        agent = _name(line.agent) or "?"
        same_queue = [leg for leg in call.legs if leg.queue == line.queue]
        for leg in same_queue:
            if leg.operator == agent:
                return leg
        return same_queue[0] if same_queue else None

    # ---- ending --------------------------------------------------------------------------------------------
    def _expire(self) -> None:
        limit = self.now - self.settings.max_call_age
        while self._open:
            callid, call = next(iter(self._open.items()))
            if call.last >= limit:
                break
            del self._open[callid]
            self._close(call, at_end=False)
        while self._expiry and self._expiry[0][0] < self.now:
            _, seq, key = heapq.heappop(self._expiry)
            entries = self._held.get(key)
            held = entries.pop(seq, None) if entries is not None else None
            if held is not None:
                self._ready.append(held.call)
            if entries is not None and not entries:
                del self._held[key]
        horizon = self.now - self.settings.max_call_age - 60.0
        order = self._answer_order
        while order and order[0][0] < horizon:
            _, key = order.popleft()
            answers = self._answers.get(key)
            if answers:
                answers.popleft()
                if not answers:
                    del self._answers[key]

    def _close(self, call: _Open, *, at_end: bool) -> None:
        j = call.journey
        open_visits = [v for v in j.visits if v.result == VisitResult.WAITING]
        if open_visits or call.legs:
            if at_end:  # maybe still in progress when the log was taken: a later import brings it whole
                self.stats.unfinished += 1
                return
            for v in open_visits:  # as the daemon closes an over-age call: the end was not seen
                v.result = VisitResult.UNKNOWN
            j.uncertain = True
            j.closed_reason = NO_END
            self.stats.closed += 1
        ends = [call.last]
        ends += [v.left_at for v in j.visits if v.left_at is not None]
        ends += [leg.ended_at for leg in j.legs if leg.ended_at is not None]
        j.ended_at = j.updated_at = max(ends)
        j.hangup_by = _hangup_by(j, self.policy.outcome(j))
        record = dataclasses.replace(record_of(j, self.policy), source=SOURCE)
        callids = tuple(dict.fromkeys(v.callid for v in (*record.queues, *record.consultations)))
        done = ImportedCall(record, callids)
        self.stats.calls += 1
        if record.lost and record.caller_key is not None:
            self._hold(done)
        else:
            self._ready.append(done)

    # ---- recovery (as the tracker does it: a lost caller answered later, within the recovery window) ------
    def _answered(self, call: _Open, at: float) -> None:
        key = call.journey.caller_key
        if key is None:
            return
        call_id = call.journey.call_id
        entries = self._held.get(key)
        if entries:
            for seq, held in list(entries.items()):
                if self._recovers(held, call_id, at):
                    del entries[seq]
                    self._recover(held, call_id, call.callid, at)
            if not entries:
                del self._held[key]
        self._answers.setdefault(key, deque()).append((at, call_id, call.callid))
        self._answer_order.append((self.now, key))

    def _recovers(self, held: _Held, call_id: str, at: float) -> bool:
        return held.call.record.call_id != call_id and held.ended_at < at <= held.ended_at + \
            self.settings.recovery_window

    def _recover(self, held: _Held, call_id: str, callid: str, at: float) -> None:
        self.stats.recovered += 1
        record = held.call.record.with_recovery(call_id, at, "inbound")
        self._ready.append(ImportedCall(record, held.call.callids, callid))

    def _hold(self, done: ImportedCall) -> None:
        record = done.record
        ended = record.ended_at if record.ended_at is not None else record.started_at
        key = record.caller_key or ""
        held = _Held(done, ended, ended + self.settings.recovery_window)
        for at, call_id, callid in self._answers.get(key, ()):
            if self._recovers(held, call_id, at):  # answered between its end and now
                self.stats.recovered += 1
                self._ready.append(ImportedCall(record.with_recovery(call_id, at, "inbound"), done.callids, callid))
                return
        self._seq += 1
        self._held.setdefault(key, {})[self._seq] = held
        heapq.heappush(self._expiry, (held.expires, self._seq, key))


def _hangup_by(j: Journey, outcome: Outcome) -> EndedBy | None:
    """The tracker's rule (abandoned: the caller; the queue gave up: the queue; else whoever ended the last
    talk), except that after a transfer the end is not in queue_log: unknown."""
    if outcome == Outcome.ABANDONED:
        return EndedBy.CALLER
    if outcome in (Outcome.TIMEOUT, Outcome.REJECTED):
        return EndedBy.QUEUE
    legs = j.caller_legs()
    last = legs[-1].ended_by if legs else None
    return last if last in (EndedBy.CALLER, EndedBy.OPERATOR) else None
