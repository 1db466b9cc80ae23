"""The journey tracker: a pure, synchronous state machine from AMI events to call records.

No asyncio, no I/O, no clock reads: time comes from each event's ``Timestamp`` header, or from the
arrival time the caller passes in.  Feed it events with :meth:`JourneyTracker.feed`; it returns the updates
the event caused: :class:`~onechance.journey.updates.JourneyUpdate` (each with an immutable
:class:`~onechance.journey.record.CallRecord` of the call right after the event) and
:class:`~onechance.journey.updates.Recovered` (a lost caller reached again).

How a call is followed (see ``docs/journey.md`` for the reasoning and the AMI traps behind each rule):

* calls are keyed by the ``Linkedid`` of their first channel; the :class:`~onechance.journey.index.ChannelIndex`
  keeps channels attached to their call even when Asterisk re-homes linkedids;
* each channel has a :class:`~onechance.journey.model.Side`: the caller (the outside caller and its Local
  ``;1/;2`` halves), an operator (a queue member or a dialled extension, with everything it dials), or a
  consultation (the call an operator places during an attended transfer);
* a queue visit belongs to the caller unless its channel is a consultation channel; a consultation
  visit joins the caller's journey when the attended transfer completes -- also a phone's consultation call
  that has a Linkedid of its own (REFER with Replaces);
* ``QueueCallerAbandon`` is an abandon only when the caller's side asked for a hang-up first, otherwise
  the queue gave up (timeout); ``VarSet QUEUESTATUS`` overrides when it is present;
* a refused caller raises no queue event at all, only ``QUEUESTATUS`` (FULL, JOINEMPTY, JOINUNAVAIL);
* a caller who presses a key while waiting and then leaves the queue without an abandon, carrying on in the
  dialplan at that key, exited the queue (``exited``);
* after a pickup the operator is the phone that picked the call up, not the member who was rung;
* a phone dialling an outside number through a trunk is an outbound call (``direction: outbound``, ``callee``);
* a call ends when its last channel hangs up, or is closed after ``max_call_age`` seconds;
* outcome, short abandon, loss and alerts are the :class:`~onechance.journey.policy.CallPolicy`'s to decide.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from sys import intern

from ..ami.parser import AmiMessage, block_timestamp
from .clock import DEFAULT_MAX_JUMP, ClockGuard
from .index import LOCAL_HALF, CallState, Channel, ChannelIndex
from .model import (
    CALLER_GROUP,
    Direction,
    EndedBy,
    Journey,
    LegKind,
    OperatorLeg,
    Outcome,
    QueueVisit,
    Side,
    Transfer,
    TransferKind,
    UpdateKind,
    VisitResult,
)
from .numbers import number_key
from .policy import CallPolicy
from .record import CallRecord, record_of
from .updates import JourneyUpdate, LostCall, Recovered, Update

__all__ = ["Interest", "JourneyTracker", "TrackerSettings", "clean", "extension_of", "interface_of"]

UNKNOWN_VALUES = frozenset({"", "<unknown>", "<Unknown>", "unknown"})
REFUSED_STATUSES = frozenset({"FULL", "JOINEMPTY", "JOINUNAVAIL"})
GAVE_UP_STATUSES = frozenset({"TIMEOUT", "LEAVEEMPTY", "LEAVEUNAVAIL", "WITHDRAW"})
#: SoftHangupRequest cause flag for an async goto (a redirect, not a hang-up)
SOFTHANGUP_ASYNCGOTO = "2"
#: seconds after a Local channel answered a dial before it counts as an operator answering (see _on_dialend)
LOCAL_ANSWER_CONFIRM = 1.0
#: how often (PBX seconds) over-age calls are closed and expired lost calls leave the watch list
SWEEP_INTERVAL = 60.0
#: the ``VarSet`` variables the tracker reads (every other VarSet is of no use to it)
VARSET_VARIABLES = frozenset({"QUEUESTATUS", "ATTENDEDTRANSFER"})
#: the ``Newexten`` applications the tracker reads (the queue a caller is about to enter)
NEWEXTEN_APPLICATIONS = frozenset({"Queue"})
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "?": "?", "a": "\a",
            "b": "\b", "f": "\f", "v": "\v"}
_ESCAPE_RE = re.compile(r"\\(.)")
#: control characters: never in a record (JSON, PostgreSQL, the callback page); a line break or tab is a space
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")

def _interned(text: str | None) -> str | None:
    """Names that come back in every call (queues, interfaces, contexts, operators) are held once, not once per
    call: memory per live call (issue 11)."""
    return intern(text) if text is not None else None


def unescape(value: str) -> str:
    """Undo Asterisk's C escaping of caller-id names (``\\"`` -> ``"``)."""
    if "\\" not in value:
        return value
    return _ESCAPE_RE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), value)


def _no_control(m: re.Match[str]) -> str:
    return " " if m.group() in "\t\n\r" else ""


def clean(value: str | None) -> str:
    """A caller-id field as a person reads it: unknown values empty, C escapes undone, no control character."""
    if value is None or value in UNKNOWN_VALUES:
        return ""
    value = unescape(value)
    if not value.isprintable():
        value = _CONTROL_RE.sub(_no_control, value)
    return value


@dataclass(frozen=True, slots=True)
class TrackerSettings:
    """How the tracker keeps its state (what it decides about calls is the policy's)."""

    max_call_age: float = 6 * 3600.0
    recovery_window: float = 7 * 86400.0
    recent_ids: int = 20000  # ended channel ids remembered, so late events do not revive a call
    default_region: str | None = None  # phone number region for caller numbers without a country code
    extension_digits: int = 6  # a number of at most this many digits (no '+') is an internal extension
    max_clock_jump: float = DEFAULT_MAX_JUMP  # seconds an event's Timestamp may jump before it is doubted

    def is_extension(self, number: str) -> bool:
        """An internal extension (``101``, ``7003``), not an outside number."""
        return bool(number) and not number.startswith("+") and number.isdigit() and \
            len(number) <= self.extension_digits


@dataclass(frozen=True, slots=True)
class Interest:
    """The AMI events a reader uses: ``events`` by name, and ``conditions``: events it uses only when one header
    has one of some values (``{"VarSet": ("Variable", {"QUEUESTATUS", ...})}``).  Every other event changes
    nothing for it: the framer may count it and skip it unread
    (:class:`~onechance.ami.parser.EventFilter`)."""

    events: frozenset[str]
    conditions: dict[str, tuple[str, frozenset[str]]]

    def wants(self, msg: AmiMessage) -> bool:
        """Does this message matter to the reader?"""
        name = msg.headers.get("Event")
        if name is None or name not in self.events:
            return False
        condition = self.conditions.get(name)
        return condition is None or msg.headers.get(condition[0]) in condition[1]


Handler = Callable[[AmiMessage, float], None]
ErrorHook = Callable[[str, BaseException], None]
#: an update to report: its record is built when it is taken (or already built: an update taken early)
_Pending = tuple[UpdateKind, CallState, float, "dict[str, object] | None"] | Recovered | JourneyUpdate


class JourneyTracker:
    """Follows every call of one PBX.  Not thread-safe; feed it from one place, in stream order."""

    def __init__(self, policy: CallPolicy | None = None, settings: TrackerSettings | None = None, *,
                 pbx: str = "", on_error: ErrorHook | None = None) -> None:
        self.policy = policy or CallPolicy()
        self.settings = settings or TrackerSettings()
        self.pbx = pbx
        self.index = ChannelIndex(self.settings.recent_ids)
        self.members: dict[str, str] = {}  # interface -> member name, learnt from queue events
        self._queue_legs: dict[tuple[str, str], OperatorLeg] = {}  # (queue, interface) -> answered leg
        self._watch: dict[str, dict[str, LostCall]] = {}  # caller key -> call id -> lost call
        self._watch_order: deque[tuple[float, str, str]] = deque()  # (ended_at, key, call_id), oldest first
        #: visits that were waiting when last seen, by id (see waiting_by_queue)
        self._waiting: dict[int, tuple[QueueVisit, Journey]] = {}
        self._pending: list[_Pending] = []
        # dial legs answered by a Local channel, confirmed as a real answer a moment later (see _on_dialend)
        self._unconfirmed: deque[tuple[float, CallState, OperatorLeg]] = deque()
        self._key_exits: dict[str, QueueVisit] = {}  # caller Uniqueid -> visit left after a key press
        # call id -> when its caller hung up, for calls kept open while a consultation still waits in a queue
        self._lingering: dict[str, float] = {}
        self._last_sweep = 0.0
        self.clock: ClockGuard[AmiMessage] = ClockGuard(self.settings.max_clock_jump)
        self.on_error = on_error
        self.events = 0
        self.errors = 0
        self.last_error: str | None = None
        self._handlers: dict[str, Handler] = {
            "Newchannel": self._on_newchannel,
            "NewCallerid": self._on_callerid,
            "LocalBridge": self._on_localbridge,
            "VarSet": self._on_varset,
            "Newexten": self._on_newexten,
            "DialBegin": self._on_dialbegin,
            "DialEnd": self._on_dialend,
            "DTMFEnd": self._on_dtmf,
            "QueueCallerJoin": self._on_queue_join,
            "QueueCallerLeave": self._on_queue_leave,
            "QueueCallerAbandon": self._on_queue_abandon,
            "AgentCalled": self._on_agent_called,
            "AgentRingNoAnswer": self._on_agent_ring_no_answer,
            "AgentConnect": self._on_agent_connect,
            "AgentComplete": self._on_agent_complete,
            "AgentDump": self._on_agent_dump,
            "BridgeEnter": self._on_bridge_enter,
            "BridgeLeave": self._on_bridge_leave,
            "BlindTransfer": self._on_blind_transfer,
            "AttendedTransfer": self._on_attended_transfer,
            "Pickup": self._on_pickup,
            "HangupRequest": self._on_hangup_request,
            "SoftHangupRequest": self._on_hangup_request,
            "Hangup": self._on_hangup,
            "Rename": self._on_rename,
            "QueueMemberStatus": self._on_member,
            "QueueMemberAdded": self._on_member,
            "QueueMember": self._on_member,
        }
        #: events handled only for some values of one header (the rest change nothing: see interest())
        self._conditions: dict[str, tuple[str, frozenset[str]]] = {
            "VarSet": ("Variable", VARSET_VARIABLES),
            "Newexten": ("Application", NEWEXTEN_APPLICATIONS),
        }
        # event name -> (handler, header of its condition or None, the values it is handled for)
        self._routes: dict[str, tuple[Handler, str | None, frozenset[str]]] = {
            name: (handler, *self._conditions.get(name, (None, frozenset())))
            for name, handler in self._handlers.items()
        }

    # ---- public API ------------------------------------------------------------------------------------
    def handled_events(self) -> frozenset[str]:
        """The AMI event names the tracker reads (every other event is counted and skipped)."""
        return frozenset(self._handlers)

    def interest(self) -> Interest:
        """What the tracker reads, for the framer to skip the rest unread: the one source of truth (an event it
        does not want is ignored by :meth:`feed` too, so skipping it changes nothing)."""
        return Interest(self.handled_events(), dict(self._conditions))

    @property
    def calls(self) -> dict[str, CallState]:
        """Live calls by call id (read-only use)."""
        return self.index.calls

    def feed(self, msg: AmiMessage, arrival: float = 0.0) -> list[Update]:
        """Apply one AMI message; return the updates it caused (often none).

        ``arrival``: when the event arrived, on the PBX's clock (live: the local time plus the offset learnt
        from trusted timestamps), or 0 (a replay).  It dates an event without a timestamp and vouches for a
        timestamp after a quiet spell (see :mod:`~onechance.journey.clock`).  An event whose timestamp jumps is
        held until the stream says whether to believe it: its updates then come with a later call."""
        headers = msg.headers
        name = headers.get("Event")
        if name is None:
            return []
        self.events += 1
        if self._unconfirmed and msg.before is not None:
            # the PBX's time went on over events nobody reads: a Local answer may be confirmed by now, and reported
            # with its call as it was then (before this event), as when the skipped event itself is fed
            self._time_passed(block_timestamp(msg.before))
            if self._pending:
                taken = self.take_updates()
                self._pending.extend(taken)
        route = self._routes.get(name)
        if route is None or (route[1] is not None and headers.get(route[1]) not in route[2]):
            if self._unconfirmed:
                self._time_passed(msg.ts)
            return self.take_updates() if self._pending else []
        clock = self.clock
        ts = msg.ts
        ref = clock.reference
        jump = clock.max_jump
        if clock.held or (ts is not None and ref is not None
                          and (ts < ref - jump or ts > (arrival if arrival > ref else ref) + jump)):
            for m, t, arr in clock.admit(msg, ts, arrival):
                self._apply(m, self._routes[m.headers["Event"]][0], t if t is not None else self._time_of(arr))
        else:
            if ts is None:
                ts = self._time_of(arrival)
            elif ref is None or ts > ref:
                clock.reference = ts
            try:
                route[0](msg, ts)
            except Exception as exc:  # one odd event must never stop the tracker
                self._handler_failed(name, msg, exc)
            if (self._key_exits or self._unconfirmed or self._lingering
                    or ts - self._last_sweep >= SWEEP_INTERVAL):
                self._after(msg, ts)
        if not self._pending:
            return []
        return self.take_updates()

    def flush(self) -> list[Update]:
        """Apply the events held while a timestamp jump is judged, taking it for an outlier (the end of a replay,
        a link loss, a resync, the daemon's tick); returns the updates."""
        self._release_held()
        return self.take_updates() if self._pending else []

    def _release_held(self) -> None:
        for m, t, arr in self.clock.flush():
            self._apply(m, self._routes[m.headers["Event"]][0], t if t is not None else self._time_of(arr))

    def _time_passed(self, ts: float | None) -> None:
        """An event of no use to the tracker still tells the time: confirm the Local answers due by then."""
        if ts is None or self.clock.held or not self.clock.fits(ts):
            return
        while self._unconfirmed and self._unconfirmed[0][0] <= ts:
            _, call, leg = self._unconfirmed.popleft()
            self._confirm_answer(call, leg)

    def _time_of(self, arrival: float) -> float:
        """The time of an event without a (usable) timestamp."""
        return arrival or self.clock.reference or 0.0

    def _apply(self, msg: AmiMessage, handler: Handler, ts: float) -> None:
        try:
            handler(msg, ts)
        except Exception as exc:  # one odd event must never stop the tracker
            self._handler_failed(msg.headers.get("Event") or "?", msg, exc)
        self._after(msg, ts)

    def _after(self, msg: AmiMessage, ts: float) -> None:
        """What the passing of time does after each event: key exits, Local answers, lingering calls, sweeps."""
        if self._key_exits:
            self._check_key_exit(msg, ts)
        while self._unconfirmed and self._unconfirmed[0][0] <= ts:
            _, call, leg = self._unconfirmed.popleft()
            self._confirm_answer(call, leg)
        if self._lingering:
            self._finish_lingering(ts)
        if ts - self._last_sweep >= SWEEP_INTERVAL:
            self._last_sweep = ts
            self._sweep(ts)

    def tick(self, now: float) -> list[Update]:
        """The passing of time (``now``: the PBX's clock): raise long waits, and now and then close over-age
        calls.  The daemon calls it every ``alerts.tick_interval``; the tracker never reads a clock."""
        if self.clock.holding:
            self._release_held()
        if self.policy.watches_long_waits:
            for call in self.index.calls.values():
                for visit in call.journey.visits:
                    if visit.result == VisitResult.WAITING and self.policy.long_wait_due(visit, now):
                        visit.long_wait_raised = True
                        self.report(UpdateKind.LONG_WAIT, call, now, queue=visit.queue,
                                    waited=round(now - visit.joined_at, 3), consultation=visit.consultation)
        if now - self._last_sweep >= SWEEP_INTERVAL:
            self._last_sweep = now
            self._sweep(now)
        return self.take_updates()

    def close_all(self, at: float, reason: str = "link_lost") -> list[Update]:
        """Finish every live call as ``uncertain`` (the event stream was interrupted)."""
        if self.clock.holding:
            self._release_held()
        for call in list(self.index.calls.values()):
            self._finish(call, at, reason=reason)
        self.index.clear_bridges()
        return self.take_updates()

    def close_call(self, call: CallState, at: float, reason: str | None) -> None:
        """Finish one call (for the resync): ``uncertain`` with ``reason`` when its end could not be seen."""
        self._finish(call, at, reason=reason)

    def live(self) -> list[CallRecord]:
        """A record of every call in progress."""
        return [record_of(c.journey, self.policy) for c in self.index.calls.values()]

    def live_journey(self, call_id: str) -> CallRecord | None:
        call = self.index.calls.get(call_id)
        return record_of(call.journey, self.policy) if call is not None else None

    def waiting_by_queue(self) -> dict[str, list[float]]:
        """Queue -> join times of the callers waiting there now (consultations included): the visits still
        waiting in a live call.  Read from :attr:`_waiting` (every visit that was waiting when it was made or
        taken up again), not from every live call: a scrape at 10,000 calls in progress costs what the callers
        waiting cost.  What no longer waits is dropped from it here."""
        out: dict[str, list[float]] = {}
        calls = self.index.calls
        gone: list[int] = []
        for key, (v, journey) in self._waiting.items():
            call = calls.get(journey.call_id)
            if v.result is VisitResult.WAITING and v.left_at is None and call is not None and call.journey is journey:
                out.setdefault(v.queue, []).append(v.joined_at)
            else:
                gone.append(key)
        for key in gone:
            del self._waiting[key]
        return out

    def track_waiting(self, journey: Journey) -> None:
        """The visits of ``journey`` waiting now count in :meth:`waiting_by_queue` (called wherever a visit
        starts or starts waiting again, or moves to another journey)."""
        for v in journey.visits:
            if v.result is VisitResult.WAITING and v.left_at is None:
                self._waiting[id(v)] = (v, journey)

    def remember_lost(self, lost: LostCall) -> None:
        """Watch for a lost call's caller (e.g. loaded from the store after a restart)."""
        key = number_key(lost.caller, self.settings.default_region)
        if key is None:
            return
        self._watch.setdefault(key, {})[lost.call_id] = lost
        self._watch_order.append((lost.ended_at, key, lost.call_id))

    def unwatch(self, call_id: str, caller: str) -> None:
        """Stop watching a call (it was taken up again after a resync: not lost after all, or not yet)."""
        key = number_key(caller, self.settings.default_region)
        if key is None:
            return
        entries = self._watch.get(key)
        if entries is not None:
            entries.pop(call_id, None)
            if not entries:
                del self._watch[key]

    def watched(self) -> int:
        """Lost calls on the watch list."""
        return sum(len(v) for v in self._watch.values())

    def take_updates(self) -> list[Update]:
        """The updates reported since the last call, each with the record of its call as it is now."""
        pending, self._pending = self._pending, []
        out: list[Update] = []
        records: dict[int, CallRecord] = {}
        for item in pending:
            if not isinstance(item, tuple):  # a recovery, or an update whose record was built already
                out.append(item)
                continue
            kind, call, ts, detail = item
            record = records.get(id(call))
            if record is None:
                record = records[id(call)] = record_of(call.journey, self.policy)
            out.append(JourneyUpdate(kind, record, ts, detail))
        return out

    # ---- for the resync (resync.py) ----------------------------------------------------------------------
    def new_journey(self, call_id: str, started_at: float, *, uncertain: bool = False) -> Journey:
        return Journey(call_id=call_id, started_at=started_at, pbx=self.pbx, updated_at=started_at,
                       uncertain=uncertain)

    def report(self, kind: UpdateKind, call: CallState, ts: float, **detail: object) -> None:
        """Report an update of a live call (its record is built by :meth:`take_updates`)."""
        j = call.journey
        j.updated_at = max(j.updated_at, ts)
        self._pending.append((kind, call, ts, detail or None))

    def report_gone(self, kind: UpdateKind, journey: Journey, ts: float, **detail: object) -> None:
        """Report an update of a call that is not live (one closed at a link gap, merged at the resync)."""
        journey.updated_at = max(journey.updated_at, ts)
        self._pending.append(JourneyUpdate(kind, record_of(journey, self.policy), ts, detail or None))

    def track_queue_leg(self, leg: OperatorLeg) -> None:
        """An answered queue leg, to be found by ``AgentComplete`` (which may lack its channel blocks)."""
        if leg.kind == LegKind.QUEUE and leg.queue and leg.interface and leg.ended_at is None:
            self._queue_legs[(leg.queue, leg.interface)] = leg

    # ---- errors ------------------------------------------------------------------------------------------
    def _handler_failed(self, name: str, msg: AmiMessage, exc: Exception) -> None:
        self.errors += 1
        self.last_error = f"{name}: {type(exc).__name__}: {exc}"
        h = msg.headers
        # what the event was about can no longer be trusted: say so on the call
        for prefix in ("", "Dest", "Transferee", "Transferer", "OrigTransferer", "LocalOne"):
            call = self.index.call_for(h.get(prefix + "Uniqueid"), h.get(prefix + "Linkedid"))
            if call is not None:
                call.journey.uncertain = True
                break
        if self.on_error is not None:
            self.on_error(name, exc)

    # ---- helpers ---------------------------------------------------------------------------------------
    def _channel(self, msg: AmiMessage, ts: float, prefix: str = "", create: bool = True) -> Channel | None:
        """The channel an event's (prefixed) channel block describes, created when new."""
        h = msg.headers
        uid = h.get(prefix + "Uniqueid")
        if not uid or uid == "none":
            return None
        index = self.index
        # ChannelIndex.get, inlined on this per-event path: a channel of a call a link gap closed, seen again
        # before the resync, is taken up by the gap
        ch = index.channels.get(uid)
        if ch is None and index.closed is not None:
            ch = index.closed.channel(uid)
        if ch is not None:
            return ch
        if not create or index.is_ended(uid):
            return None
        linkedid = h.get(prefix + "Linkedid") or uid
        if index.is_ended(linkedid) and linkedid not in index.calls and (
                index.closed is None or index.closed.call(linkedid) is None):
            return None
        call = index.call_for(None, linkedid)
        if call is None:
            call = index.new_call(self.new_journey(linkedid, ts), originator=linkedid)
            if uid != linkedid or h.get("Event") != "Newchannel":
                # A call starts with the Newchannel of its first channel (Uniqueid == Linkedid); anything
                # else means we joined in the middle of it: the channel we see first stands for the caller
                # and the start is not known.
                call.originator = uid
                call.journey.uncertain = True
        ch = index.add_channel(call, uid, h.get(prefix + "Channel") or "")
        if uid == call.originator:
            index.set_side(ch, Side.CALLER)
            self._learn_caller(call, msg, prefix)
            if not call.started_emitted:
                call.started_emitted = True
                self.report(UpdateKind.STARTED, call, ts)
        return ch

    def _learn_caller(self, call: CallState, msg: AmiMessage, prefix: str = "") -> None:
        h = msg.headers
        j = call.journey
        num = clean(h.get(prefix + "CallerIDNum"))
        if num:
            j.caller = num
            j.caller_key = number_key(num, self.settings.default_region)
            if j.direction != Direction.OUTBOUND:
                j.direction = Direction.INTERNAL if self.settings.is_extension(num) else Direction.INBOUND
        name = clean(h.get(prefix + "CallerIDName"))
        if name:
            j.caller_name = name

    def _member_label(self, interface: str | None, member: str | None) -> str:
        name = clean(member)
        if name and name != interface:
            return intern(name)  # a few operators, named again in every call: held once
        if interface:
            known = self.members.get(interface)
            if known:
                return known
            return extension_of(interface)
        return name or "?"

    # ---- channels --------------------------------------------------------------------------------------
    def _on_newchannel(self, msg: AmiMessage, ts: float) -> None:
        self._channel(msg, ts)

    def _on_callerid(self, msg: AmiMessage, ts: float) -> None:
        ch = self._channel(msg, ts)
        if ch is not None and ch.uid == ch.call.originator:
            self._learn_caller(ch.call, msg)

    def _on_localbridge(self, msg: AmiMessage, ts: float) -> None:
        one = self._channel(msg, ts, "LocalOne")
        two = self._channel(msg, ts, "LocalTwo")
        if one is not None and two is not None and one.call is two.call:
            self.index.pair(one, two)

    def _on_rename(self, msg: AmiMessage, ts: float) -> None:
        ch = self.index.get(msg.headers.get("Uniqueid"))
        new = msg.headers.get("Newname")
        if ch is not None and new:
            self.index.rename(ch, new)

    def _on_newexten(self, msg: AmiMessage, ts: float) -> None:
        if msg.headers.get("Application") not in NEWEXTEN_APPLICATIONS:
            return
        ch = self._channel(msg, ts)
        if ch is not None:
            ch.app_queue = intern((msg.headers.get("AppData") or "").split(",", 1)[0].strip())

    def _on_varset(self, msg: AmiMessage, ts: float) -> None:
        var = msg.headers.get("Variable")
        if var == "QUEUESTATUS":
            self._on_queuestatus(msg, ts)
        elif var == "ATTENDEDTRANSFER":
            value = msg.headers.get("Value") or ""
            if not value:
                return
            ch = self._channel(msg, ts)
            transferer = self.index.by_name(value)
            # a channel the transferring operator just created is the consultation; on a phone's REFER
            # Asterisk also sets it on the channels being swapped (already the caller's or an operator's)
            if ch is not None and ch.side is None:
                self.index.set_side(ch, Side.CONSULT, transferer.uid if transferer is not None else value)

    def _on_queuestatus(self, msg: AmiMessage, ts: float) -> None:
        status = (msg.headers.get("Value") or "").upper()
        ch = self._channel(msg, ts)
        if ch is None or not status:
            return
        call = ch.call
        if status in REFUSED_STATUSES:
            queue = ch.app_queue or ""
            consult = ch.side == Side.CONSULT
            if not consult and ch.side != Side.CALLER:
                self.index.set_side(ch, Side.CALLER)
            visit = QueueVisit(
                queue=queue,
                channel=ch.uid,
                joined_at=ts,
                left_at=ts,
                result=VisitResult.REJECTED,
                consultation=consult,
                group=ch.group if consult else CALLER_GROUP,
                exit_status=status,
            )
            call.journey.visits.append(visit)
            self.report(UpdateKind.REJECTED, call, ts, queue=queue, status=status)
            return
        last = self._last_visit(call, ch.uid)
        if last is None:
            return
        last.exit_status = status
        if status in GAVE_UP_STATUSES and last.result in (VisitResult.ABANDONED, VisitResult.LEFT,
                                                         VisitResult.WAITING, VisitResult.EXITED):
            last.result = VisitResult.TIMEOUT
            last.exit_key = None
            self._key_exits.pop(last.channel, None)
            if last.left_at is None:
                last.left_at = ts
            self.report(UpdateKind.TIMED_OUT, call, ts, queue=last.queue, status=status)

    # ---- queues ----------------------------------------------------------------------------------------
    @staticmethod
    def _last_visit(call: CallState, uid: str) -> QueueVisit | None:
        for v in reversed(call.journey.visits):
            if v.channel == uid:
                return v
        return None

    @staticmethod
    def _open_visit(call: CallState, uid: str, queue: str | None = None) -> QueueVisit | None:
        for v in reversed(call.journey.visits):
            if v.channel == uid and (queue is None or v.queue == queue):
                if v.result in (VisitResult.WAITING, VisitResult.LEFT) or v.left_at is None:
                    return v
                return None
        return None

    def _on_queue_join(self, msg: AmiMessage, ts: float) -> None:
        ch = self._channel(msg, ts)
        if ch is None:
            return
        call = ch.call
        queue = intern(msg.headers.get("Queue") or "")
        consult = ch.side == Side.CONSULT
        if not consult and ch.side != Side.CALLER:
            if ch.side == Side.OPERATOR and ch.leg is not None and ch.leg.kind == LegKind.DIAL:
                # a Local channel that only proxied the caller into the queue: not an operator
                self._drop_leg(call, ch.leg)
            self.index.set_side(ch, Side.CALLER)
        if ch.side == Side.CALLER:
            self._learn_caller(call, msg)
        context = msg.headers.get("Context")
        ch.context = intern(context) if context is not None else None
        ch.dtmf = None
        visit = QueueVisit(
            queue=queue,
            channel=ch.uid,
            joined_at=ts,
            consultation=consult,
            group=ch.group if consult else CALLER_GROUP,
        )
        call.journey.visits.append(visit)
        self.track_waiting(call.journey)
        self.report(UpdateKind.QUEUED, call, ts, queue=queue, consultation=consult)

    def _on_dtmf(self, msg: AmiMessage, ts: float) -> None:
        h = msg.headers
        if h.get("Direction", "Received") != "Received":
            return
        ch = self.index.get(h.get("Uniqueid"))
        if ch is not None and self._open_visit(ch.call, ch.uid) is not None:
            ch.dtmf = h.get("Digit") or None

    def _on_queue_leave(self, msg: AmiMessage, ts: float) -> None:
        ch = self._channel(msg, ts, create=False)
        if ch is None:
            return
        visit = self._open_visit(ch.call, ch.uid, msg.headers.get("Queue"))
        if visit is None or visit.left_at is not None:
            return
        visit.left_at = ts
        if ch.dtmf and visit.result == VisitResult.WAITING:
            # left with no abandon right after a key: a key exit if the dialplan now runs at that key
            visit.exit_key = ch.dtmf
            self._key_exits[ch.uid] = visit
        ch.dtmf = None

    def _check_key_exit(self, msg: AmiMessage, ts: float) -> None:
        """A caller who left a queue after a key press and whose channel now runs the exit context at that
        key (``Exten`` = the key, another ``Context``) exited the queue by that key."""
        h = msg.headers
        uid = h.get("Uniqueid")
        visit = self._key_exits.get(uid) if uid else None
        if visit is None or h.get("Event") in ("QueueCallerLeave", "DTMFEnd", "DTMFBegin"):
            return
        ch = self.index.get(uid)
        if ch is None or visit.result != VisitResult.WAITING:
            del self._key_exits[uid]  # type: ignore[arg-type]
            return
        if h.get("Exten") == visit.exit_key and h.get("Context") not in (None, ch.context):
            del self._key_exits[uid]  # type: ignore[arg-type]
            visit.result = VisitResult.EXITED
            self.report(UpdateKind.EXITED, ch.call, ts, queue=visit.queue, key=visit.exit_key)

    def _on_queue_abandon(self, msg: AmiMessage, ts: float) -> None:
        ch = self._channel(msg, ts, create=False)
        if ch is None:
            return
        call = ch.call
        visit = self._open_visit(call, ch.uid, msg.headers.get("Queue"))
        if visit is None:
            return
        visit.left_at = ts
        visit.exit_key = None
        self._key_exits.pop(ch.uid, None)
        visit.hold_time = _int_or_none(msg.headers.get("HoldTime"))
        partner = self.index.partner(ch)
        hung_up = ch.hangup_requested or (partner is not None and partner.hangup_requested)
        visit.caller_hung_up = hung_up
        if visit.exit_status in GAVE_UP_STATUSES:
            return
        if hung_up:
            visit.result = VisitResult.ABANDONED
            short = self.policy.is_short_abandon(visit.queue, visit.wait_seconds)
            self.report(UpdateKind.ABANDONED, call, ts, queue=visit.queue, short=short,
                        consultation=visit.consultation)
        else:
            visit.result = VisitResult.TIMEOUT
            self.report(UpdateKind.TIMED_OUT, call, ts, queue=visit.queue, consultation=visit.consultation)

    def _on_agent_called(self, msg: AmiMessage, ts: float) -> None:
        caller = self._channel(msg, ts, create=False)
        if caller is None:
            return
        call = caller.call
        dest = self._channel(msg, ts, "Dest")
        queue = intern(msg.headers.get("Queue") or "")
        interface = _interned(msg.headers.get("Interface"))
        member = msg.headers.get("MemberName")
        if interface and member:
            self.members[interface] = clean(member)
        visit = self._open_visit(call, caller.uid, queue)
        if visit is not None:
            visit.rings += 1
        if dest is not None and dest.call is call:
            leg = OperatorLeg(
                operator=self._member_label(interface, member),
                kind=LegKind.QUEUE,
                channel=dest.uid,
                queue=queue,
                interface=interface,
                group=visit.group if visit is not None else CALLER_GROUP,
                rang_at=ts,
            )
            self.index.set_side(dest, Side.OPERATOR, leg=leg)
        if visit is not None and visit.rings == 1:
            self.report(UpdateKind.RINGING, call, ts, queue=queue)

    def _on_agent_ring_no_answer(self, msg: AmiMessage, ts: float) -> None:
        dest = self.index.get(msg.headers.get("DestUniqueid"))
        if dest is not None and dest.leg is not None and dest.leg.started_at is None:
            dest.leg.ended_at = ts
            dest.leg.ended_by = EndedBy.NO_ANSWER

    def _on_agent_connect(self, msg: AmiMessage, ts: float) -> None:
        caller = self._channel(msg, ts, create=False)
        if caller is None:
            return
        call = caller.call
        h = msg.headers
        queue = intern(h.get("Queue") or "")
        interface = _interned(h.get("Interface"))
        member = h.get("MemberName")
        visit = self._open_visit(call, caller.uid, queue) or self._last_visit(call, caller.uid)
        dest = self._channel(msg, ts, "Dest")
        group = visit.group if visit is not None else (CALLER_GROUP if caller.side == Side.CALLER else caller.group)
        leg = dest.leg if dest is not None and dest.leg is not None else None
        if leg is not None and leg.started_at is not None and any(x is leg for x in call.journey.legs):
            return  # the same answer told twice: the operator talks once
        if leg is None:
            leg = OperatorLeg(operator=self._member_label(interface, member), kind=LegKind.QUEUE,
                              channel=dest.uid if dest else "", queue=queue, interface=interface, group=group,
                              rang_at=ts)
            if dest is not None:
                self.index.set_side(dest, Side.OPERATOR, leg=leg)
        if not leg.picked_up:  # after a pickup AgentConnect still names the member who was rung
            leg.operator = self._member_label(interface, member)
        label = leg.operator
        leg.group = group
        leg.started_at = ts
        leg.ended_at = None
        leg.ended_by = None
        call.journey.legs.append(leg)
        if interface:
            self._queue_legs[(queue, interface)] = leg
        if visit is not None:
            if visit.left_at is None:
                visit.left_at = ts
            visit.result = VisitResult.ANSWERED
            visit.exit_key = None
            self._key_exits.pop(visit.channel, None)
            visit.operator = label
            visit.member = self._member_label(interface, member)
            visit.hold_time = _int_or_none(h.get("HoldTime"))
        if group == CALLER_GROUP:
            self._answered(call, ts, label, queue)

    def _answered(self, call: CallState, ts: float, operator: str, queue: str | None) -> None:
        self.report(UpdateKind.ANSWERED, call, ts, operator=operator, queue=queue)
        j = call.journey
        if j.direction == Direction.OUTBOUND:
            self._recover(j.callee or "", j.call_id, ts, "outbound")
        else:
            self._recover(j.caller, j.call_id, ts, "inbound")

    def _recover(self, number: str, by: str, ts: float, how: str) -> None:
        key = number_key(number, self.settings.default_region) if number else None
        if key is None:
            return
        lost = self._watch.pop(key, None)
        if not lost:
            return
        for entry in lost.values():
            if entry.call_id == by:
                continue
            self._pending.append(Recovered(entry.pbx, entry.call_id, entry.caller, entry.queue, by, ts, how))

    def _on_agent_complete(self, msg: AmiMessage, ts: float) -> None:
        h = msg.headers
        queue = intern(h.get("Queue") or "")
        interface = _interned(h.get("Interface")) or ""
        leg = self._queue_legs.pop((queue, interface), None)
        dest = self.index.get(h.get("DestUniqueid"))
        if dest is not None and dest.leg is not None:
            leg = dest.leg
        if leg is None or leg.started_at is None:
            return
        reason = h.get("Reason") or ""
        if leg.ended_at is None:
            leg.ended_at = ts
        if reason == "agent":
            leg.ended_by = EndedBy.OPERATOR
        elif reason == "caller":
            leg.ended_by = EndedBy.CALLER
        elif reason == "transfer":
            leg.ended_by = EndedBy.TRANSFER

    def _on_agent_dump(self, msg: AmiMessage, ts: float) -> None:
        dest = self.index.get(msg.headers.get("DestUniqueid"))
        if dest is not None and dest.leg is not None and dest.leg.ended_at is None:
            dest.leg.ended_at = ts
            dest.leg.ended_by = EndedBy.OPERATOR

    def _on_member(self, msg: AmiMessage, ts: float) -> None:
        h = msg.headers
        interface = h.get("Interface") or h.get("Location")
        name = h.get("MemberName") or h.get("Name")
        if interface and name:
            self.members[interface] = clean(name)
            state = h.get("StateInterface")
            if state and state != interface:
                self.members.setdefault(state, clean(name))

    # ---- direct dials ----------------------------------------------------------------------------------
    def _on_dialbegin(self, msg: AmiMessage, ts: float) -> None:
        src = self._channel(msg, ts, create=False)
        dest = self._channel(msg, ts, "Dest")
        if src is None or dest is None or dest.side is not None or src.call is not dest.call:
            return
        call = src.call
        if src.side == Side.OPERATOR:
            # an operator's channel dialling onwards (a Local member reaching the real phone)
            self.index.set_side(dest, Side.OPERATOR, leg=src.leg)
            return
        if src.side not in (Side.CALLER, Side.CONSULT):
            return
        if src.side == Side.CALLER and self._open_visit(call, src.uid) is not None:
            return  # app_queue ringing a member: AgentCalled/AgentConnect tell the story
        dial_string = msg.headers.get("DialString") or ""
        interface = interface_of(dest.name, dial_string)
        j = call.journey
        if src.side == Side.CALLER and j.direction == Direction.INTERNAL and not j.visits:
            number = dialled_number(dial_string) or clean(msg.headers.get("Exten"))
            if number and not self.settings.is_extension(number):
                # an extension dialling an outside number: an outbound call; its operator is who dialled
                j.direction = Direction.OUTBOUND
                j.callee = number
                src_iface = interface_of(src.name, "")
                j.dialled_by = (self.members.get(src_iface) or self._label_for_extension(j.caller) or j.caller_name
                               or j.caller)
                leg = OperatorLeg(operator=j.dialled_by, kind=LegKind.DIAL, channel=dest.uid, queue=None,
                                  interface=src_iface, group=CALLER_GROUP, rang_at=ts)
                self.index.set_side(dest, Side.OPERATOR, leg=leg)
                return
        label = self.members.get(interface) or extension_of(interface) or dial_string
        leg = OperatorLeg(operator=label, kind=LegKind.DIAL, channel=dest.uid, queue=None, interface=interface,
                          group=CALLER_GROUP if src.side == Side.CALLER else src.group, rang_at=ts)
        self.index.set_side(dest, Side.OPERATOR, leg=leg)

    def _on_dialend(self, msg: AmiMessage, ts: float) -> None:
        if msg.headers.get("DialStatus") != "ANSWER":
            return
        dest = self.index.get(msg.headers.get("DestUniqueid"))
        src = self.index.get(msg.headers.get("Uniqueid"))
        if dest is None or src is None or dest.leg is None or dest.leg.kind != LegKind.DIAL:
            return
        leg = dest.leg
        if leg.started_at is not None or leg.channel != dest.uid:
            return
        leg.started_at = ts
        call = dest.call
        call.journey.legs.append(leg)
        if leg.group != CALLER_GROUP:
            return
        if LOCAL_HALF.match(dest.name):
            # A Local channel answers as soon as its other half runs Answer(): that may be an operator's
            # phone, or an IVR that only carries the caller into a queue (its QueueCallerJoin follows
            # within a second and drops this leg).  Announce the answer (and recover lost calls) only
            # once that moment has passed.
            self._unconfirmed.append((ts + LOCAL_ANSWER_CONFIRM, call, leg))
        else:
            self._answered(call, ts, leg.operator, None)

    def _confirm_answer(self, call: CallState, leg: OperatorLeg) -> None:
        if leg in call.journey.legs and leg.group == CALLER_GROUP and leg.started_at is not None:
            self._answered(call, leg.started_at, leg.operator, None)

    def _drop_leg(self, call: CallState, leg: OperatorLeg) -> None:
        if leg in call.journey.legs:
            call.journey.legs.remove(leg)
        for ch in call.channels.values():
            if ch.leg is leg:
                ch.leg = None
                ch.side = None

    # ---- bridges and transfers -------------------------------------------------------------------------
    def _on_bridge_enter(self, msg: AmiMessage, ts: float) -> None:
        bid = msg.headers.get("BridgeUniqueid")
        ch = self._channel(msg, ts, create=False)
        if not bid or ch is None:
            return
        others = self.index.enter_bridge(ch, bid)
        # An operator moving into a bridge with channels of nobody's side: a consultation call.
        if ch.side == Side.OPERATOR:
            for o in others:
                if o.side is None and o.call is ch.call:
                    self.index.set_side(o, Side.CONSULT, ch.uid)
        elif ch.side is None:
            for o in others:
                if o.side == Side.OPERATOR and o.call is ch.call:
                    self.index.set_side(ch, Side.CONSULT, o.uid)
                    break

    def _on_bridge_leave(self, msg: AmiMessage, ts: float) -> None:
        bid = msg.headers.get("BridgeUniqueid")
        uid = msg.headers.get("Uniqueid")
        if bid and uid:
            self.index.leave_bridge(uid, bid)

    def _leg_of(self, ch: Channel | None) -> OperatorLeg | None:
        if ch is None:
            return None
        if ch.leg is not None:
            return ch.leg
        p = self.index.partner(ch)
        return p.leg if p is not None else None

    def _transferred(self, call: CallState, transfer: Transfer, ts: float) -> None:
        j = call.journey
        j.transfers.append(transfer)
        self.report(UpdateKind.TRANSFERRED, call, ts, transfer=str(transfer.kind), to=transfer.to)
        if not j.bounced and self.policy.bounce_reached(j.first_queue, len(j.transfers)):
            j.bounced = True
            self.report(UpdateKind.BOUNCED, call, ts, transfers=len(j.transfers))

    def _on_blind_transfer(self, msg: AmiMessage, ts: float) -> None:
        h = msg.headers
        if h.get("Result") != "Success":
            return
        transferee = self._channel(msg, ts, "Transferee", create=False)
        transferer = self._channel(msg, ts, "Transferer", create=False)
        anchor = transferee or transferer
        if anchor is None:
            return
        call = anchor.call
        leg = self._leg_of(transferer)
        if leg is not None and leg.ended_at is None:
            leg.ended_at = ts
            leg.ended_by = EndedBy.TRANSFER
        if transferee is not None and transferee.side == Side.OPERATOR:
            # the operator's own Local half carries the caller onwards
            self.index.set_side(transferee, Side.CALLER, follow_partner=False)
        if leg is not None and leg.group != CALLER_GROUP:
            return  # a consultation being passed on, not the caller
        to = clean(h.get("Extension"))
        self._transferred(call, Transfer(TransferKind.BLIND, leg.operator if leg else None, to, ts), ts)

    def _on_attended_transfer(self, msg: AmiMessage, ts: float) -> None:
        h = msg.headers
        if h.get("Result") != "Success":
            return
        transferee = self._channel(msg, ts, "Transferee", create=False)
        target = self._channel(msg, ts, "TransferTarget", create=False)
        orig = self._channel(msg, ts, "OrigTransferer", create=False)
        second = self._channel(msg, ts, "SecondTransferer", create=False)
        anchor = transferee or orig or target
        if anchor is None:
            return
        call = anchor.call
        if not call.caller_present():
            # the caller hung up while the operator was consulting: nothing was transferred (Asterisk's
            # queue_log too says COMPLETECALLER, not ATTENDEDTRANSFER)
            return
        from_leg = self._leg_of(orig)
        if from_leg is not None:
            if from_leg.ended_at is None:
                from_leg.ended_at = ts
            from_leg.ended_by = EndedBy.TRANSFER  # even when the operator's hang-up completed it
        if from_leg is not None and from_leg.group != CALLER_GROUP:
            return
        group = ""
        other = second.call if second is not None else (target.call if target is not None else None)
        if other is not None and other is not call:
            # a phone's consultation: an ordinary call of its own (its own Linkedid), now the caller's
            group = self._merge_consultation(call, other, second, ts)
        elif target is not None and target.side == Side.CONSULT:
            group = target.group
        elif target is None:
            # Asterisk leaves the target block out when its channel is already gone: the
            # consultation is the one the transferer placed.
            for t in (orig, second):
                if t is not None and any(c.group == t.uid for c in call.channels.values()):
                    group = t.uid
                    break
        to_queue = None
        if group:
            to_queue = self._adopt(call, group, ts)
        elif target is not None and target.side is None:
            self.index.set_side(target, Side.CALLER)
        to = clean(h.get("TransferTargetExten")) or clean(h.get("SecondTransfererExten")) or (to_queue or "")
        self._transferred(call, Transfer(TransferKind.ATTENDED, from_leg.operator if from_leg else None, to, ts,
                                         to_queue), ts)

    def _merge_consultation(self, call: CallState, other: CallState, second: Channel | None, ts: float) -> str:
        """Make a phone's consultation call (``other``, its own Linkedid) a consultation group of ``call``;
        returns the group.  Its channels, visits and legs move over; the call itself is gone."""
        group = second.uid if second is not None else other.journey.call_id
        j, oj = call.journey, other.journey
        for ch in list(other.channels.values()):
            self.index.move_channel(ch, call)
            if ch.side == Side.CALLER and ch.uid == other.originator:
                # the transferring phone's consultation leg: the operator who is handing over
                self.index.set_side(ch, Side.CONSULT, group)
            elif ch.side in (Side.CALLER, None):
                self.index.set_side(ch, Side.CONSULT, group, follow_partner=False)
            elif ch.side == Side.CONSULT:
                ch.group = group
            elif ch.side == Side.OPERATOR and ch.leg is not None:
                ch.leg.group = group if ch.leg.group == CALLER_GROUP else ch.leg.group
        for v in oj.visits:
            if v.group == CALLER_GROUP:
                v.group = group
                v.consultation = True
        for leg in oj.legs:
            if leg.group == CALLER_GROUP:
                leg.group = group
            operator = self.index.get(leg.channel)
            if leg.started_at is not None and operator is not None and operator.alive:
                # the transferring phone left the consultation just before this event (its hang-up request and
                # app_queue's AgentComplete came first): the operator it reached talks on, with the caller
                leg.ended_at = None
                leg.ended_by = None
        j.visits.extend(oj.visits)
        j.visits.sort(key=lambda v: v.joined_at)
        self.track_waiting(j)
        j.legs.extend(oj.legs)
        self.unwatch(oj.call_id, oj.caller)
        self.index.drop(other)
        self.report(UpdateKind.MERGED, other, ts, into=j.call_id)
        return group

    def _adopt(self, call: CallState, group: str, ts: float) -> str | None:
        """An attended transfer completed: the consultation group now carries the caller."""
        for ch in call.channels.values():
            if ch.side == Side.CONSULT and ch.group == group:
                ch.side = Side.CALLER
                ch.group = ""
        to_queue = None
        for v in call.journey.visits:
            if v.group == group:
                v.group = CALLER_GROUP
                v.adopted_at = ts
                to_queue = to_queue or v.queue
        talking = []
        for leg in call.journey.legs:
            if leg.group == group:
                leg.group = CALLER_GROUP
                leg.adopted_at = ts
                if leg.started_at is not None and leg.ended_at is None:
                    talking.append(leg)
        call.journey.legs.sort(key=lambda leg: leg.caller_talk_start or leg.rang_at)
        for leg in talking:
            self._answered(call, ts, leg.operator, leg.queue)
        return to_queue

    def _on_pickup(self, msg: AmiMessage, ts: float) -> None:
        """Another phone picked up a ringing call: that phone's person talks, not the member who was rung."""
        h = msg.headers
        target = self.index.get(h.get("TargetUniqueid"))
        if target is None or (target.leg is None and target.side not in (Side.OPERATOR, None)):
            return
        picker = clean(h.get("CallerIDNum")) or extension_of(h.get("Channel") or "")
        interface = (h.get("Channel") or "").rsplit("-", 1)[0] or None
        label = self.members.get(interface or "") or self._label_for_extension(picker) or picker
        leg = target.leg
        if leg is None:
            # a phone ringing for the caller whose ring a link gap hid (the resync found the channel, not the
            # AgentCalled or DialBegin that made its leg): the picking phone's leg starts here
            visit = next((v for v in reversed(target.call.journey.caller_visits())
                          if v.result is VisitResult.WAITING), None)
            leg = OperatorLeg(operator=label, kind=LegKind.QUEUE if visit is not None else LegKind.DIAL,
                              channel=target.uid, queue=visit.queue if visit is not None else None,
                              interface=interface, group=CALLER_GROUP, rang_at=ts)
            target.call.journey.legs.append(leg)
        leg.operator = label
        leg.interface = interface
        leg.picked_up = True
        # the phone that rang and was picked from no longer carries the talk (its hang-up ends nothing)
        self.index.set_side(target, Side.OPERATOR, leg=None, follow_partner=False)
        # the picking phone's channel is a new channel of its own call; it joins this one
        picking = self.index.get(h.get("Uniqueid"))
        if picking is not None and picking.call is not target.call:
            self._absorb(target.call, picking.call, leg, ts)

    def _label_for_extension(self, ext: str) -> str | None:
        if not ext:
            return None
        for iface, name in self.members.items():
            if extension_of(iface) == ext:
                return name
        return None

    def _absorb(self, call: CallState, other: CallState, leg: OperatorLeg, ts: float) -> None:
        """Channels of another call (the picking phone's) that now serve ``call`` as its operator."""
        for ch in list(other.channels.values()):
            self.index.move_channel(ch, call)
            self.index.set_side(ch, Side.OPERATOR, leg=leg, follow_partner=False)
        self.index.drop(other)
        self.report(UpdateKind.MERGED, other, ts, into=call.journey.call_id)

    # ---- hang-ups --------------------------------------------------------------------------------------
    def _on_hangup_request(self, msg: AmiMessage, ts: float) -> None:
        if msg.headers.get("Event") == "SoftHangupRequest" and msg.headers.get("Cause") == SOFTHANGUP_ASYNCGOTO:
            return
        ch = self._channel(msg, ts, create=False)
        if ch is None or ch.hangup_requested:
            return
        ch.hangup_requested = True
        self._note_hangup_side(ch, ts)

    @staticmethod
    def _note_hangup_side(ch: Channel, ts: float) -> None:
        """Close the caller's open talk on the first hang-up from either side and say who ended it."""
        call = ch.call
        if ch.side == Side.CALLER:
            for leg in call.journey.legs:
                if leg.group == CALLER_GROUP and leg.started_at is not None and leg.ended_at is None:
                    leg.ended_at = ts
                    leg.ended_by = leg.ended_by or EndedBy.CALLER
        elif ch.side == Side.OPERATOR and ch.leg is not None:
            leg = ch.leg
            if leg.started_at is not None and leg.ended_at is None:
                leg.ended_at = ts
                leg.ended_by = EndedBy.OPERATOR

    def _on_hangup(self, msg: AmiMessage, ts: float) -> None:
        ch = self.index.get(msg.headers.get("Uniqueid"))
        if ch is None:
            return
        if not ch.hangup_requested:
            ch.hangup_requested = True
            self._note_hangup_side(ch, ts)
        ch.alive = False
        call = ch.call
        # The journey is the caller's: it is over when the caller's last channel is gone, even if
        # an orphaned consultation or operator channel lingers -- but a consultation still waiting in a queue is
        # followed until Asterisk says how that visit ends (CONNECT, ABANDON...: queue_log counts it), and the
        # journey then ends at the caller's hang-up (see _finish_lingering).
        if ch.side == Side.CALLER:
            over = not any(c.alive and c.side == Side.CALLER for c in call.channels.values())
            if over and self._consultation_waiting(call):
                self._lingering.setdefault(call.journey.call_id, ts)
                return
        else:
            over = not any(c.alive for c in call.channels.values())
        if over:
            closed = self.index.closed
            if closed is not None and closed.keeps(call, ts):
                return  # taken up after a gap, with channels still up: the resync says what they are part of
            self._finish(call, ts)

    # ---- ending ----------------------------------------------------------------------------------------
    def _consultation_waiting(self, call: CallState) -> bool:
        """A consultation visit of the call still waits in a queue, its channel up."""
        for v in call.journey.visits:
            if v.group != CALLER_GROUP and v.result == VisitResult.WAITING:
                ch = self.index.get(v.channel)
                if ch is not None and ch.alive:
                    return True
        return False

    def _finish_lingering(self, now: float) -> None:
        """Finish the calls whose caller is gone once no consultation of theirs waits in a queue any more."""
        for call_id in list(self._lingering):
            call = self.index.calls.get(call_id)
            if call is None:
                del self._lingering[call_id]
            elif not self._consultation_waiting(call):
                self._finish(call, now)

    def _finish(self, call: CallState, ts: float, reason: str | None = None) -> None:
        j = call.journey
        # a call kept open for a consultation's queue visit ended when its caller hung up
        end = self._lingering.pop(j.call_id, ts)
        if not self.index.finish(call):
            return
        for key in [k for k, leg in self._queue_legs.items() if leg in j.legs]:
            del self._queue_legs[key]
        for uid in call.channels:
            self._key_exits.pop(uid, None)
        for v in j.visits:
            if v.result == VisitResult.WAITING:
                if v.group != CALLER_GROUP:
                    # an orphaned consultation: the caller is gone and we stop following it
                    v.result = VisitResult.UNKNOWN
                elif v.left_at is None and reason is None:
                    v.left_at = end
                    v.result = VisitResult.ABANDONED
                elif v.left_at is not None:
                    v.result = VisitResult.EXITED if v.exit_key else VisitResult.LEFT
                else:
                    v.result = VisitResult.UNKNOWN
        for leg in j.legs:
            if leg.started_at is not None and leg.ended_at is None:
                leg.ended_at = ts
        if reason is not None:
            j.uncertain = True
            j.closed_reason = reason
        if self._unconfirmed:
            mine = [p for p in self._unconfirmed if p[1] is call]
            for p in mine:
                self._unconfirmed.remove(p)
                self._confirm_answer(call, p[2])
        j.ended_at = end
        verdict = self.policy.verdict(j)
        j.hangup_by = self._hangup_by(j, verdict.outcome)
        if verdict.lost and j.direction != Direction.OUTBOUND:
            self.remember_lost(LostCall(self.pbx, j.call_id, j.caller, j.first_queue, end))
        self.report(UpdateKind.ENDED, call, ts, outcome=str(verdict.outcome))

    @staticmethod
    def _hangup_by(j: Journey, outcome: Outcome) -> EndedBy | None:
        if outcome == Outcome.ABANDONED:
            return EndedBy.CALLER
        if outcome in (Outcome.TIMEOUT, Outcome.REJECTED):
            return EndedBy.QUEUE
        legs = j.caller_legs()
        if legs:
            return legs[-1].ended_by
        return None

    def _sweep(self, now: float) -> None:
        self.waiting_by_queue()  # drops the visits that no longer wait (read or not)
        limit = now - self.settings.max_call_age
        for call in [c for c in self.index.calls.values() if c.journey.started_at < limit]:
            self._finish(call, now, reason="max_age")
        horizon = now - self.settings.recovery_window
        order = self._watch_order
        while order and order[0][0] < horizon:
            _, key, call_id = order.popleft()
            entries = self._watch.get(key)
            if entries is not None and call_id in entries and entries[call_id].ended_at < horizon:
                del entries[call_id]
                if not entries:
                    del self._watch[key]


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value or "")
    except ValueError:
        return None


def dialled_number(dial_string: str) -> str:
    """The number in a dial string: ``+3725550244@carrier`` -> ``+3725550244``, ``PJSIP/carrier/sip:5550107@host``
    -> ``5550107``, ``DAHDI/g0/5550107`` -> ``5550107`` ('' when it holds none)."""
    resource = dial_string.split("&", 1)[0].split(",", 1)[0]
    resource = resource.rsplit("/", 1)[-1]
    if resource.startswith("sip:"):
        resource = resource[4:]
    resource = resource.split("@", 1)[0]
    digits = resource.lstrip("+")
    return resource if digits.isdigit() else ""


def interface_of(channel_name: str, dial_string: str) -> str:
    """The dialled interface (``Local/201@agents/n``, ``PJSIP/201``) from the channel and dial string."""
    tech = channel_name.split("/", 1)[0] if "/" in channel_name else ""
    if not dial_string:
        return channel_name.rsplit("-", 1)[0] if tech and tech != "Local" else channel_name
    if tech and not dial_string.startswith(tech + "/"):
        return f"{tech}/{dial_string}"
    return dial_string


def extension_of(interface: str) -> str:
    """``Local/201@agents/n`` -> ``201``; ``PJSIP/201`` -> ``201``; ``PJSIP/555@trunk`` -> ``555``."""
    resource = interface.split("/", 1)[1] if "/" in interface else interface
    resource = resource.split("@", 1)[0]
    if "/" in resource:
        resource = resource.rsplit("/", 1)[-1]
    return resource.split(";", 1)[0]


def lost_calls_of(records: Iterable[CallRecord]) -> list[LostCall]:
    """Watch-list entries for lost, unrecovered call records (e.g. from the store after a restart)."""
    return [LostCall(r.pbx, r.call_id, r.caller, r.first_queue, r.ended_at or r.started_at)
            for r in records if r.lost and not r.recovered and r.ended_at is not None]
