"""The call scenarios: one generator per kind of call, driving the PBX style's event blocks.

* :func:`inbound_call`: an outside caller dials a queue's number; then queue visits
  (:func:`queue_visit`: refused, or waiting and ringing until answered, abandoned, timed out or left by
  key) alternate with conversations (the style's ``conversation``: the call ends, or is transferred to
  another queue, blind or attended, which starts the next visit);
* :func:`direct_call`: an outside caller dials an operator's extension;
* :func:`outbound_call`: an operator calls a number back through the trunk (sip style).

The queue mechanics follow app_queue: a ring round rings the members the queue picks (see
:mod:`.queues`) for the member timeout, or less when the ``Queue()`` timeout comes first (the
``AgentRingNoAnswer`` then carries the shortened time); the first member to answer wins, the others get
``CANCEL``; after a round nobody answered the caller waits ``retry`` seconds.  The caller hangs up when
their patience runs out, at any point.  Which events each step emits is the style's business
(:mod:`.local`, :mod:`.sip`, with what both write alike in :mod:`.common`): the sequences there are
transcribed from the shared captures.

Generators yield seconds to sleep (see :mod:`.kernel`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .channels import Bridge, Chan, Pbx
from .kernel import US
from .queues import Entry, OperatorRt, QueueRt, wake_waiting
from .truth import CallTruth

if TYPE_CHECKING:
    from .centre import Centre

__all__ = ["Call", "Plan", "Ring", "Talk", "direct_call", "inbound_call", "outbound_call", "queue_visit"]

ANSWER_PAUSE = 0.5  # Answer() in the dialplan: the next priority runs half a second later
ANSWER_OVERHEAD = 0.003  # from the end of the ring wait to the answer events
RING_OVERHEAD = 5000  # µs app_queue takes past the member timeout before giving up on a ring
RETRY_OVERHEAD = 1500  # µs past the retry pause before the next ring round
QUEUE_VARS_EMPTY = (("ANSWEREDTIME", ""), ("ANSWEREDTIME_MS", ""), ("DIALEDTIME", ""), ("DIALEDTIME_MS", ""),
                    ("QUEUEWAIT", ""), ("QUEUEWAIT_MS", ""))


@dataclass
class Plan:
    """How the next answered part of a call ends: ``operator`` hangs up, ``caller`` hangs up, or
    ``transfer`` (``kind`` blind/attended, ``method`` phone/ami/feature, to ``target``)."""

    end: str
    kind: str = ""
    method: str = ""
    target: QueueRt | None = None
    talk: float | None = None  # scripted: seconds from the answer to the end (or to the transfer)
    consult_talk: float | None = None
    hold: float | None = None


@dataclass
class Ring:
    """One member rung for a caller: its channels and what the operator will do."""

    op: OperatorRt
    m1: Chan
    m2: Chan
    started: int  # µs
    answer_after: float | None  # seconds; None: lets it ring
    talk: int = 600  # local style: TALK shown by the fake agent's dialplan
    phone: Chan | None = None  # sip style: the phone channel
    picker: OperatorRt | None = None  # sip style: another phone picks the call up
    pick_after: float = 0.0
    bridge: Bridge | None = None  # sip style: Local ;2 <-> phone
    extra: dict[str, Any] = field(default_factory=dict)

    def answer_at(self) -> int | None:
        if self.picker is not None:
            return self.started + int(self.pick_after * US)
        if self.answer_after is None:
            return None
        return self.started + int((self.answer_after + ANSWER_OVERHEAD) * US)


@dataclass
class Talk:
    """A caller talking to a queue member."""

    ring: Ring
    queue: QueueRt
    bridge: Bridge  # the queue bridge (caller side <-> member ;1)
    joined: int  # µs, when the caller joined the queue
    connected: int  # µs
    operator: str  # who talks (member name; ``ext:NNN`` after a pickup)
    talker: OperatorRt  # the operator who talks (the picker after a pickup)


@dataclass
class Call:
    """One inbound call: the caller, the channels, the behaviour and the truth."""

    number: str
    name: str
    truth: CallTruth
    patience: float
    dnid: str = ""
    c1: Chan | None = None  # local: the [caller] half; sip: the trunk channel
    c2: Chan | None = None  # local: the dialplan half; sip: the trunk channel too
    exten: str = ""  # local: the extension originated (Local/<exten>@inbound)
    created: int = 0  # µs, when the caller's dialplan channel was created
    key_at: float | None = None  # seconds after joining: press the exit key
    transfers: int = 0
    attended: bool = False  # the caller's chain went through an attended transfer
    chain: list[Any] = field(default_factory=list)  # style-specific: the channels/bridges of the call
    person: int = -1
    script: Any = None  # a ScriptedCall, when the call is scripted
    part: int = 0  # scripted: index of the next Part
    pickup_done: bool = False
    qtimeout: str = ""  # local style: the inherited __QTIMEOUT of the originate


def secs_between(a_us: int, b_us: int) -> int:
    """Whole seconds between two times as Asterisk counts them (difference of truncated epochs)."""
    return b_us // US - a_us // US


# ---- queue primitives --------------------------------------------------------------------------------------
def queue_app_start(pbx: Pbx, qc: Chan, queue: QueueRt, prio: int = 3) -> None:
    """The caller's dialplan reaches ``Queue()``: the Newexten and the variables app_queue clears."""
    pbx.newexten(qc, prio, "Queue", f"{queue.name},tT,,,{queue.spec.max_wait}")
    pbx.varsets(qc, QUEUE_VARS_EMPTY)


def queue_join(sim: Centre, qc: Chan, queue: QueueRt, entry: Entry) -> None:
    pbx = sim.pbx
    if not queue.entries:
        pbx.devstate(f"Queue:{queue.name}", "RINGING")
    queue.entries.append(entry)
    entry.orig_pos = len(queue.entries)
    pbx.queue_caller("QueueCallerJoin", qc, queue.name,
                     f"Position: {entry.orig_pos}\r\nCount: {len(queue.entries)}\r\n")


def queue_leave(sim: Centre, qc: Chan, queue: QueueRt, entry: Entry) -> int:
    """``DeviceStateChange Queue:<q>`` when it was the last caller, then ``QueueCallerLeave``; the
    callers behind are woken.  Returns the position ``entry`` had."""
    pbx = sim.pbx
    pos = queue.position(entry)
    queue.entries.remove(entry)
    if not queue.entries:
        pbx.devstate(f"Queue:{queue.name}", "NOT_INUSE")
    pbx.queue_caller("QueueCallerLeave", qc, queue.name, f"Position: {pos}\r\nCount: {len(queue.entries)}\r\n")
    wake_waiting(sim.kernel, [queue])
    return pos


def queue_abandon_event(pbx: Pbx, qc: Chan, queue: QueueRt, entry: Entry, wait: int) -> int:
    pos = queue.position(entry)
    pbx.queue_caller("QueueCallerAbandon", qc, queue.name,
                     f"Position: {pos}\r\nOriginalPosition: {entry.orig_pos}\r\nHoldTime: {wait}\r\n")
    return pos


def member_cid(qc: Chan, dnid: str) -> tuple[str, str | None]:
    """The caller id app_queue gives a member channel: the caller's connected line, else the number
    dialled, else the caller's extension."""
    if qc.cl_num:
        return qc.cl_num, qc.cl_name
    if dnid:
        return dnid, None
    return qc.exten, None


def connect(sim: Centre, call: Call, qc: Chan, queue: QueueRt, entry: Entry, ring: Ring) -> Talk:
    """QueueCallerLeave, the QUEUE* variables and AgentConnect (the queue bridge is the style's)."""
    pbx = sim.pbx
    now = pbx.t
    pos = queue_leave(sim, qc, queue, entry)
    wait = secs_between(entry.joined, now)
    pbx.varset(qc, "QUEUEPOSITION", str(pos))
    pbx.varset(qc, "QUEUEWAIT", str(wait))
    pbx.varset(qc, "QUEUEWAIT_MS", str(wait * 1000))
    op = ring.op
    pbx.agent_event("AgentConnect", qc, ring.m1, queue.name, op.interface, op.name,
                    f"HoldTime: {wait}\r\nRingTime: {secs_between(ring.started, now)}\r\n")
    talker = ring.picker or op
    label = f"ext:{talker.ext}" if ring.picker is not None else op.name
    return Talk(ring, queue, Bridge(""), entry.joined, now, label, talker)


# ---- the queue visit ---------------------------------------------------------------------------------------
def queue_visit(sim: Centre, call: Call, qc: Chan, queue: QueueRt, plan: Plan, *,
                consult: bool = False, truth: CallTruth | None = None,
                reserved: list[OperatorRt] | None = None) -> Any:
    """One visit of ``qc`` to ``queue``.  Returns the :class:`Talk` when a member answers, None when the
    call ended here (refused, abandoned, timed out, left by key).  A ``consult`` visit (the operator's
    consultation call of an attended transfer) has no patience: it waits until answered."""
    pbx, style = sim.pbx, sim.style
    t = truth or call.truth
    spec = queue.spec
    queue_app_start(pbx, qc, queue)
    if (not spec.joinempty and not queue.members) or (spec.maxlen and len(queue.entries) >= spec.maxlen):
        status = "FULL" if queue.members else "JOINEMPTY"
        t.queues.append(queue.name)
        t.waits.append(0.0)
        t.outcome = "rejected"
        t.kind("rejected")
        t.kind("rejected_full" if status == "FULL" else "rejected_empty")
        style.refused(call, qc, queue, status)
        sim.end_call(call)
        return None
    entry = Entry(call, qc, queue, pbx.t, sim.kernel.current)  # type: ignore[arg-type]
    queue_join(sim, qc, queue, entry)
    style.joined(call, qc, queue)
    t.queues.append(queue.name)
    joined = pbx.t
    never = joined + 10 ** 15
    patience_at = never if consult else joined + int(call.patience * US)
    timeout_at = joined + spec.max_wait * US
    key_at = (joined + int(call.key_at * US)) \
        if (call.key_at is not None and spec.exit_key and not consult and qc is call.c1) else never
    rounds = 0
    while True:
        now = sim.kernel.now
        if now >= timeout_at:
            _gone(sim, call, t, "timeout", entry)
            style.timeout(call, qc, queue, entry, [], 0)
            return sim.end_call(call)
        if now >= patience_at:
            _gone(sim, call, t, "abandoned", entry)
            style.abandon(call, qc, queue, entry, [])
            return sim.end_call(call)
        if now >= key_at:
            _gone(sim, call, t, "exited", entry)
            yield from style.key_exit(call, qc, queue, entry, [])
            return None
        if reserved:  # a consultation call rings the members held for it
            members, reserved = reserved, None
        else:
            members = queue.pick(entry)
        if not members:
            yield (min(timeout_at, patience_at, key_at) - now) / US
            continue
        rounds += 1
        entry.ringing = True
        ring_len = min(spec.timeout * US, timeout_at - now)
        ring_ms = spec.timeout * 1000 if ring_len >= spec.timeout * US else max(1, round(ring_len / US)) * 1000
        rings = []
        for op in members:
            sim.set_busy(op, True)
        for op in members:
            answer_after, shown_talk = sim.decide_ring(call, op, queue, plan, consult)
            if answer_after is not None and (answer_after + ANSWER_OVERHEAD) * US >= ring_len:
                answer_after = None
            rings.append(style.ring(call, qc, queue, op, answer_after, shown_talk))
        style.rung(call, qc, rings)
        if not consult:
            sim.maybe_pickup(call, rings, ring_len)
        answer_times = [(r.answer_at(), i) for i, r in enumerate(rings) if r.answer_at() is not None]
        t_answer = min(answer_times)[0] if answer_times else never
        t_end = now + ring_len + (RING_OVERHEAD if ring_len >= spec.timeout * US else 0)
        nxt = min(t_answer, t_end, patience_at, key_at)
        yield (nxt - now) / US
        now = sim.kernel.now
        if nxt == t_answer and t_answer < min(patience_at, key_at):
            winner = rings[min(answer_times)[1]]
            losers = [r for r in rings if r is not winner]
            entry.ringing = False
            if rounds > 1 or (losers and any(r.answer_at() is None for r in rings)):
                t.kind("ring_no_answer")
            talk = style.answered(call, qc, queue, entry, winner, losers)
            t.waits.append((now - joined) / US)
            t.operators.append(talk.operator)
            t.outcome = "answered"
            t.kind("answered")
            if winner.picker is not None:
                t.kind("pickup")
            if not consult:
                sim.caller_answered(call)
            return talk
        entry.ringing = False
        if nxt == patience_at and patience_at <= key_at:
            _gone(sim, call, t, "abandoned", entry)
            style.abandon(call, qc, queue, entry, rings)
            return sim.end_call(call)
        if nxt == key_at:
            _gone(sim, call, t, "exited", entry)
            yield from style.key_exit(call, qc, queue, entry, rings)
            return None
        if now >= timeout_at:
            _gone(sim, call, t, "timeout", entry)
            style.timeout(call, qc, queue, entry, rings, ring_ms)
            return sim.end_call(call)
        for r in rings:
            style.ring_no_answer(call, qc, queue, r, ring_ms)
        t.kind("ring_no_answer")
        retry_end = now + spec.retry * US + RETRY_OVERHEAD
        nxt = min(retry_end, patience_at, timeout_at, key_at)
        if nxt > now:
            yield (nxt - now) / US


def _gone(sim: Centre, call: Call, t: CallTruth, outcome: str, entry: Entry) -> None:
    wait = (sim.pbx.t - entry.joined) / US
    t.waits.append(wait)
    t.last_wait = wait
    t.outcome = outcome
    if outcome == "abandoned":
        t.kind("short_abandon" if wait < 5.0 else "abandoned")
    elif outcome == "exited":
        t.exit_key = "1"
        t.kind("key_exit")
    else:
        t.kind(outcome)
    return None


# ---- the calls ---------------------------------------------------------------------------------------------
def inbound_call(sim: Centre, call: Call, queue: QueueRt) -> Any:
    """An outside caller dialling ``queue``'s number, then visits and conversations until the end."""
    qc = yield from sim.style.arrive_queue(call, queue)
    while True:
        plan = sim.plan(call, queue)
        talk = yield from queue_visit(sim, call, qc, queue, plan)
        if talk is None:
            return
        nxt = yield from sim.style.conversation(call, qc, talk, plan)
        if nxt is None:
            return
        qc, queue = nxt


def direct_call(sim: Centre, call: Call, op: OperatorRt) -> Any:
    """An outside caller dialling an operator's extension (no queue)."""
    yield from sim.style.direct_call(call, op)


def outbound_call(sim: Centre, op: OperatorRt, number: str, answered: bool, truth: CallTruth,
                  script: Any = None) -> Any:
    """An operator calling ``number`` through the trunk (a callback of a lost caller)."""
    yield from sim.style.outbound_call(op, number, answered, truth, script)
