"""The journey tracker: a pure, synchronous state machine from AMI events to call journeys.

No asyncio, no I/O, no clock reads: time comes from each event's ``Timestamp`` header, or from the
arrival time the caller passes in.  Feed it events with :meth:`JourneyTracker.feed`; it returns the
:class:`~onechance.journey.model.JourneyUpdate` objects the event caused.

How a call is followed (see ``docs/journey.md`` for the reasoning and the AMI traps behind each rule):

* calls are keyed by the ``Linkedid`` of their first channel; an index ``Uniqueid -> channel`` keeps
  channels attached to their call even when Asterisk re-homes linkedids;
* each channel has a *side*: ``caller`` (the outside caller and its Local ``;1/;2`` halves),
  ``operator`` (a queue member or a dialled extension, with everything it dials), or ``consult`` (the
  consultation call an operator places during an attended transfer);
* a queue visit belongs to the caller unless its channel is a consultation channel; a consultation
  visit joins the caller's journey when the attended transfer completes;
* ``QueueCallerAbandon`` is an abandon only when the caller's side asked for a hang-up first, otherwise
  the queue gave up (timeout); ``VarSet QUEUESTATUS`` overrides when it is present;
* a refused caller raises no queue event at all, only ``QUEUESTATUS`` (FULL, JOINEMPTY, JOINUNAVAIL);
* a call ends when its last channel hangs up, or is closed after ``max_call_age`` seconds.
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ..ami.parser import AmiMessage
from .model import (
    Journey,
    JourneyUpdate,
    OperatorLeg,
    Outcome,
    QueueVisit,
    Transfer,
    UpdateKind,
    VisitResult,
)

__all__ = ["JourneyTracker", "QueueRules", "TrackerSettings"]

UNKNOWN_VALUES = frozenset({"", "<unknown>", "<Unknown>", "unknown"})
REFUSED_STATUSES = frozenset({"FULL", "JOINEMPTY", "JOINUNAVAIL"})
GAVE_UP_STATUSES = frozenset({"TIMEOUT", "LEAVEEMPTY", "LEAVEUNAVAIL", "WITHDRAW"})
NO_CALLER_NUMBER = frozenset({"", "anonymous", "Anonymous", "restricted", "unavailable"})
#: SoftHangupRequest cause flag for an async goto (a redirect, not a hang-up)
SOFTHANGUP_ASYNCGOTO = "2"
LOCAL_HALF = re.compile(r"^(Local/.+);([12])$")
#: seconds after a Local channel answered a dial before it counts as an operator answering (see _on_dialend)
LOCAL_ANSWER_CONFIRM = 1.0
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "?": "?", "a": "\a",
            "b": "\b", "f": "\f", "v": "\v"}
_ESCAPE_RE = re.compile(r"\\(.)")


def unescape(value: str) -> str:
    """Undo Asterisk's C escaping of caller-id names (``\\"`` -> ``"``)."""
    if "\\" not in value:
        return value
    return _ESCAPE_RE.sub(lambda m: _ESCAPES.get(m.group(1), m.group(1)), value)


def clean(value: str | None) -> str:
    if value is None or value in UNKNOWN_VALUES:
        return ""
    return unescape(value)


@dataclass(slots=True, frozen=True)
class QueueRules:
    """Per-queue thresholds (None: use the tracker-wide default)."""

    short_abandon_seconds: float | None = None
    service_level_seconds: float | None = None
    bounce_transfers: int | None = None


@dataclass(slots=True)
class TrackerSettings:
    short_abandon_seconds: float = 5.0
    bounce_transfers: int = 2
    max_call_age: float = 6 * 3600.0
    recovery_window: float = 7 * 86400.0
    recent_ids: int = 20000  # ended channel ids remembered, so late events do not revive a call
    queues: dict[str, QueueRules] = field(default_factory=dict)

    def short_abandon_for(self, queue: str) -> float:
        rules = self.queues.get(queue)
        if rules and rules.short_abandon_seconds is not None:
            return rules.short_abandon_seconds
        return self.short_abandon_seconds

    def bounce_for(self, queue: str) -> int:
        rules = self.queues.get(queue)
        if rules and rules.bounce_transfers is not None:
            return rules.bounce_transfers
        return self.bounce_transfers


class Channel:
    """What the tracker knows of one Asterisk channel."""

    __slots__ = ("alive", "app_queue", "bridge", "call", "group", "hangup_requested", "leg", "name",
                 "partner", "side", "uid")

    def __init__(self, uid: str, name: str, call: CallState) -> None:
        self.uid = uid
        self.name = name
        self.call = call
        self.partner: str | None = None  # the other half of a Local pair
        self.side: str | None = None  # "caller", "operator", "consult"
        self.group: str = ""  # consultation group id (for "consult")
        self.leg: OperatorLeg | None = None  # operator leg this channel carries
        self.alive = True
        self.hangup_requested = False
        self.bridge: str | None = None
        self.app_queue: str | None = None  # queue named by the last Queue() the channel ran


class CallState:
    """A live call: its journey plus the channels behind it."""

    __slots__ = ("channels", "journey", "originator", "started_emitted")

    def __init__(self, journey: Journey, originator: str) -> None:
        self.journey = journey
        self.originator = originator
        self.channels: dict[str, Channel] = {}
        self.started_emitted = False


Handler = Callable[[AmiMessage, float], None]


class JourneyTracker:
    """Follows every call of one PBX.  Not thread-safe; feed it from one place, in stream order."""

    def __init__(self, settings: TrackerSettings | None = None, pbx: str = "") -> None:
        self.settings = settings or TrackerSettings()
        # per-queue short-abandon thresholds, shared (read-only) by every journey
        self._short_by_queue = {
            q: r.short_abandon_seconds for q, r in self.settings.queues.items() if r.short_abandon_seconds is not None
        } or None
        self.pbx = pbx
        self.calls: dict[str, CallState] = {}  # call_id -> live call
        self.channels: dict[str, Channel] = {}  # Uniqueid -> channel of a live call
        self.by_name: dict[str, str] = {}  # channel name -> Uniqueid (live channels)
        self.bridges: dict[str, set[str]] = {}  # bridge id -> Uniqueids in it
        self.members: dict[str, str] = {}  # interface -> member name, learnt from queue events
        self.open_queue_legs: dict[tuple[str, str], OperatorLeg] = {}  # (queue, interface) -> leg
        self.lost: dict[str, list[Journey]] = {}  # caller number -> lost calls not yet recovered
        self._recent: OrderedDict[str, None] = OrderedDict()
        self._updates: list[JourneyUpdate] = []
        # dial legs answered by a Local channel, confirmed as a real answer a moment later (see _on_dialend)
        self._unconfirmed: deque[tuple[float, CallState, OperatorLeg]] = deque()
        self._last_sweep = 0.0
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
            "HangupRequest": self._on_hangup_request,
            "SoftHangupRequest": self._on_hangup_request,
            "Hangup": self._on_hangup,
            "Rename": self._on_rename,
            "QueueMemberStatus": self._on_member,
            "QueueMemberAdded": self._on_member,
            "QueueMember": self._on_member,
        }

    # ---- public API ------------------------------------------------------------------------------------
    def feed(self, msg: AmiMessage, arrival: float = 0.0) -> list[JourneyUpdate]:
        """Apply one AMI message; return the journey updates it caused (often none)."""
        name = msg.headers.get("Event")
        if name is None:
            return []
        self.events += 1
        handler = self._handlers.get(name)
        ts_text = msg.headers.get("Timestamp")
        if ts_text:
            try:
                ts = float(ts_text)
            except ValueError:
                ts = arrival
        else:
            ts = arrival
        if handler is not None:
            try:
                handler(msg, ts)
            except Exception as exc:  # one odd event must never stop the tracker
                self.errors += 1
                self.last_error = f"{name}: {type(exc).__name__}: {exc}"
        while self._unconfirmed and self._unconfirmed[0][0] <= ts:
            _, call, leg = self._unconfirmed.popleft()
            self._confirm_answer(call, leg)
        if ts - self._last_sweep >= 60.0:
            self._last_sweep = ts
            self._sweep(ts)
        if not self._updates:
            return []
        out, self._updates = self._updates, []
        return out

    def tick(self, now: float) -> list[JourneyUpdate]:
        """Close calls older than ``max_call_age`` (call it now and then when no events arrive)."""
        self._sweep(now)
        out, self._updates = self._updates, []
        return out

    def close_all(self, at: float, reason: str = "link_lost") -> list[JourneyUpdate]:
        """Finish every live call as ``uncertain`` (the event stream was interrupted)."""
        for call in list(self.calls.values()):
            self._finish(call, at, reason=reason)
        self.bridges.clear()
        out, self._updates = self._updates, []
        return out

    def live(self) -> list[Journey]:
        return [c.journey for c in self.calls.values()]

    def waiting_by_queue(self) -> dict[str, list[float]]:
        """Queue -> join times of the callers waiting there now (consultations included)."""
        out: dict[str, list[float]] = {}
        for call in self.calls.values():
            for v in call.journey.visits:
                if v.result == VisitResult.WAITING and v.left_at is None:
                    out.setdefault(v.queue, []).append(v.joined_at)
        return out

    def is_ended(self, uid: str) -> bool:
        """True for a channel or call id of a call this tracker already finished (late events for it
        are ignored)."""
        return uid in self._recent

    def forget_ended(self, uid: str) -> None:
        """Let a finished channel or call id be followed again (a resync found it alive)."""
        self._recent.pop(uid, None)

    def remember_lost(self, journey: Journey) -> None:
        """Put a lost call (e.g. loaded from the store after a restart) on the recovery watch list."""
        if journey.caller in NO_CALLER_NUMBER or journey.recovered:
            return
        self.lost.setdefault(journey.caller, []).append(journey)

    # ---- helpers ---------------------------------------------------------------------------------------
    def _emit(self, kind: UpdateKind, call: CallState, ts: float, **detail: object) -> None:
        j = call.journey
        j.updated_at = max(j.updated_at, ts)
        self._updates.append(JourneyUpdate(kind, j, ts, detail or None))

    def _call_for(self, uid: str | None, linkedid: str | None) -> CallState | None:
        if uid:
            ch = self.channels.get(uid)
            if ch is not None:
                return ch.call
        if linkedid:
            call = self.calls.get(linkedid)
            if call is not None:
                return call
            ch = self.channels.get(linkedid)
            if ch is not None:
                return ch.call
        return None

    def _channel(self, msg: AmiMessage, ts: float, prefix: str = "", create: bool = True) -> Channel | None:
        """The channel an event's (prefixed) channel block describes, created when new."""
        h = msg.headers
        uid = h.get(prefix + "Uniqueid")
        if not uid or uid == "none":
            return None
        ch = self.channels.get(uid)
        if ch is not None:
            return ch
        if not create or uid in self._recent:
            return None
        linkedid = h.get(prefix + "Linkedid") or uid
        if linkedid in self._recent and linkedid not in self.calls:
            return None
        call = self._call_for(None, linkedid)
        if call is None:
            journey = Journey(
                call_id=linkedid,
                started_at=ts,
                pbx=self.pbx,
                short_abandon_seconds=self.settings.short_abandon_seconds,
                short_abandon_by_queue=self._short_by_queue,
                updated_at=ts,
            )
            call = CallState(journey, originator=linkedid)
            self.calls[linkedid] = call
            if uid != linkedid or msg.headers.get("Event") != "Newchannel":
                # A call starts with the Newchannel of its first channel (Uniqueid == Linkedid); anything
                # else means we joined in the middle of it: the channel we see first stands for the caller
                # and the start is not known.
                call.originator = uid
                journey.uncertain = True
        return self._add_channel(call, uid, h.get(prefix + "Channel") or "", msg, prefix, ts)

    def _add_channel(self, call: CallState, uid: str, name: str, msg: AmiMessage, prefix: str,
                     ts: float) -> Channel:
        ch = Channel(uid, name, call)
        call.channels[uid] = ch
        self.channels[uid] = ch
        if name:
            self.by_name[name] = uid
            m = LOCAL_HALF.match(name)
            if m:
                other = self.by_name.get(f"{m.group(1)};{'1' if m.group(2) == '2' else '2'}")
                if other is not None and other in self.channels:
                    self._pair(uid, other)
        if uid == call.originator:
            ch.side = "caller"
            self._learn_caller(call, msg, prefix)
            if not call.started_emitted:
                call.started_emitted = True
                self._emit(UpdateKind.STARTED, call, ts)
        elif ch.partner is not None:
            partner = self.channels[ch.partner]
            if partner.side is not None:
                self._set_side(ch, partner.side, partner.group, partner.leg)
        return ch

    def _pair(self, a: str, b: str) -> None:
        ca, cb = self.channels.get(a), self.channels.get(b)
        if ca is None or cb is None:
            return
        ca.partner, cb.partner = b, a
        if ca.side is None and cb.side is not None:
            self._set_side(ca, cb.side, cb.group, cb.leg)
        elif cb.side is None and ca.side is not None:
            self._set_side(cb, ca.side, ca.group, ca.leg)

    def _set_side(self, ch: Channel, side: str, group: str = "", leg: OperatorLeg | None = None,
                  follow_partner: bool = True) -> None:
        ch.side = side
        ch.group = group
        ch.leg = leg if side == "operator" else None
        if follow_partner and ch.partner is not None:
            p = self.channels.get(ch.partner)
            if p is not None and (p.side != side or p.group != group):
                self._set_side(p, side, group, leg, follow_partner=False)

    def _learn_caller(self, call: CallState, msg: AmiMessage, prefix: str = "") -> None:
        h = msg.headers
        num = clean(h.get(prefix + "CallerIDNum"))
        if num:
            call.journey.caller = num
        name = clean(h.get(prefix + "CallerIDName"))
        if name:
            call.journey.caller_name = name

    def _member_label(self, interface: str | None, member: str | None) -> str:
        name = clean(member)
        if name and name != interface:
            return name
        if interface:
            known = self.members.get(interface)
            if known:
                return known
            return extension_of(interface)
        return name or "?"

    def _remember_ended(self, uid: str) -> None:
        self._recent[uid] = None
        if len(self._recent) > self.settings.recent_ids:
            self._recent.popitem(last=False)

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
            self._pair(one.uid, two.uid)

    def _on_rename(self, msg: AmiMessage, ts: float) -> None:
        uid = msg.headers.get("Uniqueid")
        new = msg.headers.get("Newname")
        ch = self.channels.get(uid or "")
        if ch is None or not new:
            return
        self.by_name.pop(ch.name, None)
        ch.name = new
        self.by_name[new] = ch.uid

    def _on_newexten(self, msg: AmiMessage, ts: float) -> None:
        if msg.headers.get("Application") != "Queue":
            return
        ch = self._channel(msg, ts)
        if ch is not None:
            ch.app_queue = (msg.headers.get("AppData") or "").split(",", 1)[0].strip()

    def _on_varset(self, msg: AmiMessage, ts: float) -> None:
        var = msg.headers.get("Variable")
        if var == "QUEUESTATUS":
            self._on_queuestatus(msg, ts)
        elif var == "ATTENDEDTRANSFER":
            value = msg.headers.get("Value") or ""
            if not value:
                return
            ch = self._channel(msg, ts)
            transferer = self.by_name.get(value)
            if ch is not None and ch.side != "caller":
                self._set_side(ch, "consult", transferer or value)

    def _on_queuestatus(self, msg: AmiMessage, ts: float) -> None:
        status = (msg.headers.get("Value") or "").upper()
        ch = self._channel(msg, ts)
        if ch is None or not status:
            return
        call = ch.call
        if status in REFUSED_STATUSES:
            queue = ch.app_queue or ""
            consult = ch.side == "consult"
            if not consult and ch.side != "caller":
                self._set_side(ch, "caller")
            visit = QueueVisit(
                queue=queue,
                channel=ch.uid,
                joined_at=ts,
                left_at=ts,
                result=VisitResult.REJECTED,
                consultation=consult,
                group=ch.group if consult else "caller",
                exit_status=status,
            )
            call.journey.visits.append(visit)
            self._emit(UpdateKind.REJECTED, call, ts, queue=queue, status=status)
            return
        visit = self._last_visit(call, ch.uid)
        if visit is None:
            return
        visit.exit_status = status
        if status in GAVE_UP_STATUSES and visit.result in (VisitResult.ABANDONED, VisitResult.LEFT,
                                                          VisitResult.WAITING):
            changed = visit.result != VisitResult.TIMEOUT
            visit.result = VisitResult.TIMEOUT
            if visit.left_at is None:
                visit.left_at = ts
            if changed:
                self._emit(UpdateKind.TIMED_OUT, call, ts, queue=visit.queue, status=status)

    # ---- queues ----------------------------------------------------------------------------------------
    def _last_visit(self, call: CallState, uid: str) -> QueueVisit | None:
        for v in reversed(call.journey.visits):
            if v.channel == uid:
                return v
        return None

    def _open_visit(self, call: CallState, uid: str, queue: str | None = None) -> QueueVisit | None:
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
        queue = msg.headers.get("Queue") or ""
        consult = ch.side == "consult"
        if not consult and ch.side != "caller":
            if ch.side == "operator" and ch.leg is not None and ch.leg.kind == "dial":
                # a Local channel that only proxied the caller into the queue: not an operator
                self._drop_leg(call, ch.leg)
            self._set_side(ch, "caller")
        if ch.side == "caller":
            self._learn_caller(call, msg)
        visit = QueueVisit(
            queue=queue,
            channel=ch.uid,
            joined_at=ts,
            consultation=consult,
            group=ch.group if consult else "caller",
        )
        call.journey.visits.append(visit)
        self._emit(UpdateKind.QUEUED, call, ts, queue=queue, consultation=consult)

    def _on_queue_leave(self, msg: AmiMessage, ts: float) -> None:
        ch = self._channel(msg, ts, create=False)
        if ch is None:
            return
        visit = self._open_visit(ch.call, ch.uid, msg.headers.get("Queue"))
        if visit is not None and visit.left_at is None:
            visit.left_at = ts

    def _on_queue_abandon(self, msg: AmiMessage, ts: float) -> None:
        ch = self._channel(msg, ts, create=False)
        if ch is None:
            return
        call = ch.call
        visit = self._open_visit(call, ch.uid, msg.headers.get("Queue"))
        if visit is None:
            return
        visit.left_at = ts
        visit.hold_time = _int_or_none(msg.headers.get("HoldTime"))
        partner = self.channels.get(ch.partner) if ch.partner else None
        hung_up = ch.hangup_requested or (partner is not None and partner.hangup_requested)
        visit.caller_hung_up = hung_up
        if visit.exit_status in GAVE_UP_STATUSES:
            return
        if hung_up:
            visit.result = VisitResult.ABANDONED
            short = visit.wait_seconds < self.settings.short_abandon_for(visit.queue)
            self._emit(UpdateKind.ABANDONED, call, ts, queue=visit.queue, short=short,
                       consultation=visit.consultation)
        else:
            visit.result = VisitResult.TIMEOUT
            self._emit(UpdateKind.TIMED_OUT, call, ts, queue=visit.queue, consultation=visit.consultation)

    def _on_agent_called(self, msg: AmiMessage, ts: float) -> None:
        caller = self._channel(msg, ts, create=False)
        if caller is None:
            return
        call = caller.call
        dest = self._channel(msg, ts, "Dest")
        queue = msg.headers.get("Queue") or ""
        interface = msg.headers.get("Interface")
        member = msg.headers.get("MemberName")
        if interface and member:
            self.members[interface] = clean(member)
        visit = self._open_visit(call, caller.uid, queue)
        if visit is not None:
            visit.rings += 1
        if dest is not None and dest.call is call:
            leg = OperatorLeg(
                operator=self._member_label(interface, member),
                kind="queue",
                channel=dest.uid,
                queue=queue,
                interface=interface,
                group=visit.group if visit is not None else "caller",
                rang_at=ts,
            )
            self._set_side(dest, "operator", leg=leg)
        if visit is not None and visit.rings == 1:
            self._emit(UpdateKind.RINGING, call, ts, queue=queue)

    def _on_agent_ring_no_answer(self, msg: AmiMessage, ts: float) -> None:
        dest = self.channels.get(msg.headers.get("DestUniqueid") or "")
        if dest is not None and dest.leg is not None and dest.leg.started_at is None:
            dest.leg.ended_at = ts
            dest.leg.ended_by = "no_answer"

    def _on_agent_connect(self, msg: AmiMessage, ts: float) -> None:
        caller = self._channel(msg, ts, create=False)
        if caller is None:
            return
        call = caller.call
        queue = msg.headers.get("Queue") or ""
        interface = msg.headers.get("Interface")
        member = msg.headers.get("MemberName")
        visit = self._open_visit(call, caller.uid, queue) or self._last_visit(call, caller.uid)
        label = self._member_label(interface, member)
        dest = self._channel(msg, ts, "Dest")
        group = visit.group if visit is not None else ("caller" if caller.side == "caller" else caller.group)
        leg = dest.leg if dest is not None and dest.leg is not None else None
        if leg is None:
            leg = OperatorLeg(operator=label, kind="queue", channel=dest.uid if dest else "",
                              queue=queue, interface=interface, group=group, rang_at=ts)
            if dest is not None:
                self._set_side(dest, "operator", leg=leg)
        leg.operator = label
        leg.group = group
        leg.started_at = ts
        leg.ended_at = None
        leg.ended_by = None
        call.journey.legs.append(leg)
        if interface:
            self.open_queue_legs[(queue, interface)] = leg
        if visit is not None:
            if visit.left_at is None:
                visit.left_at = ts
            visit.result = VisitResult.ANSWERED
            visit.operator = label
            visit.hold_time = _int_or_none(msg.headers.get("HoldTime"))
        if group == "caller":
            self._answered(call, ts, label, queue)

    def _answered(self, call: CallState, ts: float, operator: str, queue: str | None) -> None:
        self._emit(UpdateKind.ANSWERED, call, ts, operator=operator, queue=queue)
        self._recover(call, ts)

    def _recover(self, call: CallState, ts: float) -> None:
        number = call.journey.caller
        if number in NO_CALLER_NUMBER:
            return
        lost = self.lost.pop(number, None)
        if not lost:
            return
        for j in lost:
            if j.recovered or j.call_id == call.journey.call_id:
                continue
            j.recovered = True
            j.recovered_by = call.journey.call_id
            j.recovered_at = ts
            j.updated_at = max(j.updated_at, ts)
            self._updates.append(JourneyUpdate(UpdateKind.RECOVERED, j, ts,
                                               {"by": call.journey.call_id}))

    def _on_agent_complete(self, msg: AmiMessage, ts: float) -> None:
        h = msg.headers
        queue = h.get("Queue") or ""
        interface = h.get("Interface") or ""
        leg = self.open_queue_legs.pop((queue, interface), None)
        dest = self.channels.get(h.get("DestUniqueid") or "")
        if dest is not None and dest.leg is not None:
            leg = dest.leg
        if leg is None or leg.started_at is None:
            return
        reason = h.get("Reason") or ""
        if leg.ended_at is None:
            leg.ended_at = ts
        if reason in ("caller", "agent", "transfer"):
            leg.ended_by = {"agent": "operator"}.get(reason, reason)

    def _on_agent_dump(self, msg: AmiMessage, ts: float) -> None:
        dest = self.channels.get(msg.headers.get("DestUniqueid") or "")
        if dest is not None and dest.leg is not None and dest.leg.ended_at is None:
            dest.leg.ended_at = ts
            dest.leg.ended_by = "operator"

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
        if src.side == "operator":
            # an operator's channel dialling onwards (a Local member reaching the real phone)
            self._set_side(dest, "operator", leg=src.leg)
            return
        if src.side not in ("caller", "consult"):
            return
        if src.side == "caller" and self._open_visit(call, src.uid) is not None:
            return  # app_queue ringing a member: AgentCalled/AgentConnect tell the story
        dial_string = msg.headers.get("DialString") or ""
        interface = interface_of(dest.name, dial_string)
        label = self.members.get(interface) or extension_of(interface) or dial_string
        leg = OperatorLeg(operator=label, kind="dial", channel=dest.uid, queue=None, interface=interface,
                          group="caller" if src.side == "caller" else src.group, rang_at=ts)
        self._set_side(dest, "operator", leg=leg)

    def _on_dialend(self, msg: AmiMessage, ts: float) -> None:
        if msg.headers.get("DialStatus") != "ANSWER":
            return
        dest = self.channels.get(msg.headers.get("DestUniqueid") or "")
        src = self.channels.get(msg.headers.get("Uniqueid") or "")
        if dest is None or src is None or dest.leg is None or dest.leg.kind != "dial":
            return
        leg = dest.leg
        if leg.started_at is not None or leg.channel != dest.uid:
            return
        leg.started_at = ts
        call = dest.call
        call.journey.legs.append(leg)
        if leg.group != "caller":
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
        if leg in call.journey.legs and leg.group == "caller" and leg.started_at is not None:
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
        members = self.bridges.setdefault(bid, set())
        ch.bridge = bid
        others = [self.channels[u] for u in members if u in self.channels]
        members.add(ch.uid)
        # An operator moving into a bridge with channels of nobody's side: a consultation call.
        if ch.side == "operator":
            for o in others:
                if o.side is None and o.call is ch.call:
                    self._set_side(o, "consult", ch.uid)
        elif ch.side is None:
            for o in others:
                if o.side == "operator" and o.call is ch.call:
                    self._set_side(ch, "consult", o.uid)
                    break

    def _on_bridge_leave(self, msg: AmiMessage, ts: float) -> None:
        bid = msg.headers.get("BridgeUniqueid")
        uid = msg.headers.get("Uniqueid")
        if not bid or not uid:
            return
        members = self.bridges.get(bid)
        if members is not None:
            members.discard(uid)
            if not members:
                del self.bridges[bid]
        ch = self.channels.get(uid)
        if ch is not None and ch.bridge == bid:
            ch.bridge = None

    def _leg_of(self, uid: str | None) -> OperatorLeg | None:
        ch = self.channels.get(uid or "")
        if ch is None:
            return None
        if ch.leg is not None:
            return ch.leg
        if ch.partner:
            p = self.channels.get(ch.partner)
            if p is not None:
                return p.leg
        return None

    def _transferred(self, call: CallState, transfer: Transfer, ts: float) -> None:
        j = call.journey
        j.transfers.append(transfer)
        self._emit(UpdateKind.TRANSFERRED, call, ts, transfer=transfer.kind, to=transfer.to)
        if not j.bounced and len(j.transfers) >= self.settings.bounce_for(j.first_queue):
            j.bounced = True
            self._emit(UpdateKind.BOUNCED, call, ts, transfers=len(j.transfers))

    def _on_blind_transfer(self, msg: AmiMessage, ts: float) -> None:
        h = msg.headers
        if h.get("Result") != "Success":
            return
        transferee = self._channel(msg, ts, "Transferee", create=False)
        transferer = self._channel(msg, ts, "Transferer", create=False)
        if transferee is None and transferer is None:
            return
        call = (transferee or transferer).call  # type: ignore[union-attr]
        leg = self._leg_of(transferer.uid if transferer else None)
        if leg is not None and leg.ended_at is None:
            leg.ended_at = ts
            leg.ended_by = "transfer"
        if transferee is not None and transferee.side == "operator":
            # the operator's own Local half carries the caller onwards
            self._set_side(transferee, "caller", follow_partner=False)
        if leg is not None and leg.group != "caller":
            return  # a consultation being passed on, not the caller
        to = clean(h.get("Extension"))
        self._transferred(call, Transfer("blind", leg.operator if leg else None, to, ts), ts)

    def _on_attended_transfer(self, msg: AmiMessage, ts: float) -> None:
        h = msg.headers
        if h.get("Result") != "Success":
            return
        transferee = self._channel(msg, ts, "Transferee", create=False)
        target = self._channel(msg, ts, "TransferTarget", create=False)
        orig = self._channel(msg, ts, "OrigTransferer", create=False)
        anchor = transferee or target or orig
        if anchor is None:
            return
        call = anchor.call
        if not self._caller_present(call):
            # the caller hung up while the operator was consulting: nothing was transferred (Asterisk's
            # queue_log too says COMPLETECALLER, not ATTENDEDTRANSFER)
            return
        from_leg = self._leg_of(orig.uid if orig else None)
        if from_leg is not None:
            if from_leg.ended_at is None:
                from_leg.ended_at = ts
            from_leg.ended_by = "transfer"  # even when the operator's hang-up completed it
        if from_leg is not None and from_leg.group != "caller":
            return
        to_queue = None
        group = ""
        if target is not None and target.side == "consult":
            group = target.group
        elif target is None:
            # Asterisk leaves the target block out when its channel is already gone: the
            # consultation is the one the transferer placed.
            for t in (orig, self._channel(msg, ts, "SecondTransferer", create=False)):
                if t is not None and any(c.group == t.uid for c in call.channels.values()):
                    group = t.uid
                    break
        if group:
            to_queue = self._adopt(call, group, ts)
        elif target is not None and target.side is None:
            self._set_side(target, "caller")
        to = clean(h.get("TransferTargetExten")) or (to_queue or "")
        self._transferred(call, Transfer("attended", from_leg.operator if from_leg else None, to, ts,
                                         to_queue), ts)

    @staticmethod
    def _caller_present(call: CallState) -> bool:
        return any(ch.side == "caller" and ch.alive and not ch.hangup_requested
                   for ch in call.channels.values())

    def _adopt(self, call: CallState, group: str, ts: float) -> str | None:
        """An attended transfer completed: the consultation group now carries the caller."""
        for ch in call.channels.values():
            if ch.side == "consult" and ch.group == group:
                ch.side = "caller"
                ch.group = ""
        to_queue = None
        for v in call.journey.visits:
            if v.group == group:
                v.group = "caller"
                v.adopted_at = ts
                to_queue = to_queue or v.queue
        talking = []
        for leg in call.journey.legs:
            if leg.group == group:
                leg.group = "caller"
                leg.adopted_at = ts
                if leg.started_at is not None and leg.ended_at is None:
                    talking.append(leg)
        call.journey.legs.sort(key=lambda leg: leg.caller_talk_start or leg.rang_at)
        for leg in talking:
            self._answered(call, ts, leg.operator, leg.queue)
        return to_queue

    # ---- hang-ups --------------------------------------------------------------------------------------
    def _on_hangup_request(self, msg: AmiMessage, ts: float) -> None:
        if msg.headers.get("Event") == "SoftHangupRequest" and msg.headers.get("Cause") == SOFTHANGUP_ASYNCGOTO:
            return
        ch = self._channel(msg, ts, create=False)
        if ch is None or ch.hangup_requested:
            return
        ch.hangup_requested = True
        self._note_hangup_side(ch, ts)

    def _note_hangup_side(self, ch: Channel, ts: float) -> None:
        """Close the caller's open talk on the first hang-up from either side and say who ended it."""
        call = ch.call
        if ch.side == "caller":
            for leg in call.journey.legs:
                if leg.group == "caller" and leg.started_at is not None and leg.ended_at is None:
                    leg.ended_at = ts
                    leg.ended_by = leg.ended_by or "caller"
        elif ch.side == "operator" and ch.leg is not None:
            leg = ch.leg
            if leg.started_at is not None and leg.ended_at is None:
                leg.ended_at = ts
                leg.ended_by = "operator"

    def _on_hangup(self, msg: AmiMessage, ts: float) -> None:
        uid = msg.headers.get("Uniqueid")
        ch = self.channels.get(uid or "")
        if ch is None:
            return
        if not ch.hangup_requested:
            ch.hangup_requested = True
            self._note_hangup_side(ch, ts)
        ch.alive = False
        call = ch.call
        # The journey is the caller's: it is over when the caller's last channel is gone, even if
        # an orphaned consultation or operator channel lingers.
        if ch.side == "caller":
            over = not any(c.alive and c.side == "caller" for c in call.channels.values())
        else:
            over = not any(c.alive for c in call.channels.values())
        if over:
            self._finish(call, ts)

    # ---- ending ----------------------------------------------------------------------------------------
    def _finish(self, call: CallState, ts: float, reason: str | None = None) -> None:
        j = call.journey
        if j.call_id not in self.calls:
            return
        del self.calls[j.call_id]
        for uid, ch in call.channels.items():
            self.channels.pop(uid, None)
            if self.by_name.get(ch.name) == uid:
                del self.by_name[ch.name]
            if ch.bridge is not None:
                members = self.bridges.get(ch.bridge)
                if members is not None:
                    members.discard(uid)
                    if not members:
                        del self.bridges[ch.bridge]
            self._remember_ended(uid)
        self._remember_ended(j.call_id)
        for key in [k for k, leg in self.open_queue_legs.items() if leg in j.legs]:
            del self.open_queue_legs[key]
        for v in j.visits:
            if v.result == VisitResult.WAITING:
                if v.group != "caller":
                    # an orphaned consultation: the caller is gone and we stop following it
                    v.result = VisitResult.UNKNOWN
                elif v.left_at is None and reason is None:
                    v.left_at = ts
                    v.result = VisitResult.ABANDONED
                elif v.left_at is not None:
                    v.result = VisitResult.LEFT
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
        j.ended_at = ts
        j.hangup_by = self._hangup_by(j)
        if j.lost and j.caller not in NO_CALLER_NUMBER:
            self.lost.setdefault(j.caller, []).append(j)
        self._emit(UpdateKind.ENDED, call, ts, outcome=str(j.outcome))

    @staticmethod
    def _hangup_by(j: Journey) -> str | None:
        out = j.provisional_outcome()
        if out == Outcome.ABANDONED:
            return "caller"
        if out in (Outcome.TIMEOUT, Outcome.REJECTED):
            return "queue"
        legs = j.caller_legs()
        if legs:
            return legs[-1].ended_by
        return None

    def _sweep(self, now: float) -> None:
        limit = now - self.settings.max_call_age
        for call in [c for c in self.calls.values() if c.journey.started_at < limit]:
            self._finish(call, now, reason="max_age")
        horizon = now - self.settings.recovery_window
        for number, journeys in list(self.lost.items()):
            kept = [j for j in journeys if (j.ended_at or 0) >= horizon]
            if not kept:
                del self.lost[number]
            elif len(kept) < len(journeys):
                self.lost[number] = kept


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value or "")
    except ValueError:
        return None


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
