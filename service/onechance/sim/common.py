"""What the two PBX styles (:mod:`.local`, :mod:`.sip`) do alike.

Both styles are the same app_queue on an Asterisk 22 with queue members ``Local/EXT@agents/n``: a member
is rung the same way up to its ``DialBegin``; a caller leaves a queue (hanging up, timed out, refused)
with the same variables and queue events; the AMI ``BlindTransfer`` action, a direct call's ``Dial()``
of ``Local/EXT@agents/n``, a bridge breaking up, an answered ``Dial()`` returning, ``AgentComplete``,
a freed member and a transfer's truth are the same.  :class:`Style` holds these steps once; each style
subclasses it, calls them where its captures put them and writes out itself what differs (the caller's
channels, the operator's phone or the faked agent, RTP statistics, the order of device states).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from .channels import Bridge, Chan
from .queues import Entry, OperatorRt, QueueRt, emit_member_status, update_avail
from .scenarios import (
    ANSWER_OVERHEAD,
    Call,
    Plan,
    Ring,
    Talk,
    member_cid,
    queue_abandon_event,
    queue_leave,
    secs_between,
)

if TYPE_CHECKING:
    from .centre import Centre

__all__ = ["DIAL_VARS_EMPTY", "DIRECT_TIMEOUT", "Style", "count_transfer", "dial_times", "queue_wait"]

#: the variables ``Dial()`` clears when it starts
DIAL_VARS_EMPTY = (("DIALSTATUS", ""), ("DIALEDPEERNUMBER", ""), ("DIALEDPEERNAME", ""), ("ANSWEREDTIME", ""),
                   ("ANSWEREDTIME_MS", ""), ("DIALEDTIME", ""), ("DIALEDTIME_MS", ""), ("RINGTIME", ""),
                   ("RINGTIME_MS", ""), ("PROGRESSTIME", ""), ("PROGRESSTIME_MS", ""))
DIRECT_TIMEOUT = 20  # seconds: [inbound] _X. Dial(Local/EXT@agents/n,20,tT)


def dial_times(t: int, ch: Chan, since: int) -> tuple[tuple[str, str], ...]:
    """ANSWEREDTIME(_MS) since ``since`` and DIALEDTIME(_MS) since ``ch`` was created, at ``t`` (µs)."""
    a = max(0, (t - since) // 1000)
    d = max(0, (t - ch.born) // 1000)
    return (("ANSWEREDTIME", str(a // 1000)), ("ANSWEREDTIME_MS", str(a)),
            ("DIALEDTIME", str(d // 1000)), ("DIALEDTIME_MS", str(d)))


def queue_wait(qc: Chan, entry: Entry, now: int) -> tuple[int, tuple[tuple[str, str], ...]]:
    """The seconds ``qc`` waited in the queue, and the variables app_queue sets when a caller leaves it
    unanswered (QUEUEWAIT, DIALEDTIME, ANSWEREDTIME 0)."""
    wait = secs_between(entry.joined, now)
    d = (now - qc.born) // 1000
    return wait, (("QUEUEWAIT", str(wait)), ("QUEUEWAIT_MS", str(wait * 1000)),
                  ("DIALEDTIME", str(d // 1000)), ("DIALEDTIME_MS", str(d)),
                  ("ANSWEREDTIME", "0"), ("ANSWEREDTIME_MS", "0"))


def count_transfer(call: Call, kind: str, method: str) -> None:
    """A transfer of ``call`` and its truth: ``kind`` blind/attended, ``method`` the tag of how it was done;
    a second (third...) transfer bounces the call."""
    call.transfers += 1
    if kind == "attended":
        call.attended = True  # the caller's chain went through an attended transfer
    call.truth.transfers.append(kind)
    call.truth.kind(f"{kind}_transfer")
    call.truth.kind(method)
    if call.transfers >= 2:
        call.truth.kind("bounced")


class Style:
    """The steps both PBX styles take alike.  A style subclasses it and writes the rest of the interface
    :mod:`.scenarios` drives (``arrive_queue``, ``ring``, ``answered``, ``abandon``, ``conversation``...)."""

    name = ""

    def __init__(self, sim: Centre) -> None:
        self.sim = sim
        self.pbx = sim.pbx

    # ---- bridges and dials ending -------------------------------------------------------------------------
    def _clear_peer(self, ch: Chan, peer: Chan) -> None:
        """``ch`` is no longer bridged to ``peer``: BRIDGEPEER emptied (and BRIDGEPVTCALLID, set on a channel
        whose peer is a SIP channel)."""
        self.pbx.varset(ch, "BRIDGEPEER", "")
        if peer.tech == "PJSIP":
            self.pbx.varset(ch, "BRIDGEPVTCALLID", "")

    def _clear_peers(self, first: Chan, second: Chan) -> None:
        self._clear_peer(first, second)
        self._clear_peer(second, first)

    def _bridge_ends(self, bridge: Bridge, first: Chan, second: Chan, *, pvt: bool = True) -> None:
        """A two-party bridge breaks up, ``first`` (the side that goes) first: the peer variables emptied,
        both leave, the bridge is destroyed.  ``pvt`` False: BRIDGEPEER only."""
        pbx = self.pbx
        if pvt:
            self._clear_peers(first, second)
        else:
            pbx.varset(first, "BRIDGEPEER", "")
            pbx.varset(second, "BRIDGEPEER", "")
        pbx.bridge_leave(bridge, first)
        pbx.bridge_leave(bridge, second)
        pbx.bridge_destroy(bridge)

    def _bridge_left(self, bridge: Bridge, going: Chan, other: Chan, dev: str | None = None) -> None:
        """``going`` (asked to go by its Local partner) leaves ``bridge`` and hangs up (then ``dev``'s state is
        told), ``other`` leaves, the bridge is destroyed."""
        pbx = self.pbx
        pbx.bridge_leave(bridge, going)
        if going.up:
            pbx.hangup(going, 16)
        if dev is not None:
            pbx.devstate(dev)
        pbx.bridge_leave(bridge, other)
        pbx.bridge_destroy(bridge)

    def _dial_answered(self, ch: Chan, dialled: Chan, number: str) -> None:
        """``dialled`` answers ``ch``'s ``Dial()`` of ``number``: DIALSTATUS, DIALEDPEERNAME/NUMBER and
        DialEnd ANSWER (where the dialled channel's extension is emptied)."""
        pbx = self.pbx
        pbx.varsets(ch, (("DIALSTATUS", "ANSWER"), ("DIALEDPEERNAME", dialled.name), ("DIALEDPEERNUMBER", number)))
        pbx.dial_end(ch, dialled, "ANSWER", dialled.render("Dest", exten=""))
        dialled.set(exten="")

    def _dial_ended(self, ch: Chan, since: int) -> None:
        """``ch``'s answered ``Dial()`` returns (its peer is gone): the times and DIALSTATUS, and ``ch`` is
        asked to hang up."""
        self.pbx.varsets(ch, (*dial_times(self.pbx.t, ch, since), ("DIALSTATUS", "ANSWER")))
        self.pbx.soft_hangup_request(ch, 16)

    def _dialled_two_ends(self, one: Chan, two: Chan) -> None:
        """A Local pair's ``;2`` half (``two``) whose ``Dial()`` was answered hangs up (asked already): ``;1`` is
        told (CHANLOCALSTATUS) and asked to go."""
        pbx = self.pbx
        pbx.varset(one, "CHANLOCALSTATUS", "ANSWER")
        pbx.hangup_request(one, 16)
        pbx.hangup(two, 16)

    # ---- ringing ------------------------------------------------------------------------------------------
    def _ring_member(self, call: Call, qc: Chan, queue: QueueRt, op: OperatorRt, answer_after: float | None,
                     talk: int, inherit: Sequence[tuple[str, str]]) -> Ring:
        """app_queue rings ``op`` for ``qc``: the member's Local pair with the caller id app_queue gives it
        and the ``__`` variables it inherits from the caller (``inherit``), ``AgentCalled``, ``DialBegin``."""
        pbx = self.pbx
        ext = op.ext
        m1, m2 = pbx.local_pair(f"Local/{ext}@agents", "agents", ext, qc.lid)
        ring = Ring(op, m1, m2, pbx.t, answer_after, talk)
        pbx.newchannel(m1)
        pbx.newchannel(m2)
        num, name = member_cid(qc, call.dnid if qc is call.c1 else "")
        m1.set(cid_num=num, cid_name=name)
        pbx.newexten(m1, 1, "AppQueue", "(Outgoing Line)")
        pbx.newcallerid(m1)
        pbx.varsets(m1, inherit)
        pbx.varset(m1, "DIALEDPEERNUMBER", f"{ext}@agents/n")
        pbx.varset(m2, "DIALEDPEERNUMBER", f"{ext}@agents/n")
        pbx.varsets(m2, inherit)
        m2.set(cid_num=qc.cid_num, cid_name=qc.cid_name, cl_num=num, cl_name=name)
        pbx.newcallerid(m2)
        pbx.newconnectedline(m2)
        pbx.local_bridge(m1, m2, "agents", ext)
        pbx.agent_event("AgentCalled", qc, None, queue.name, op.interface, op.name,
                        dest_block=m1.render("Dest", cl_num=qc.cid_num, cl_name=qc.cid_name, exten=qc.exten))
        pbx.dial_begin(qc, m1, f"Local/{ext}@agents/n")
        return ring

    def _ring_no_answer_event(self, qc: Chan, queue: QueueRt, ring: Ring, ring_ms: int) -> None:
        op = ring.op
        self.pbx.agent_event("AgentRingNoAnswer", qc, ring.m1, queue.name, op.interface, op.name,
                             f"RingTime: {ring_ms}\r\n")

    # ---- the caller leaves the queue unanswered -----------------------------------------------------------
    def _abandon_queue(self, qc: Chan, queue: QueueRt, entry: Entry, now: int) -> None:
        """The caller hung up while waiting: app_queue's variables, ``QueueCallerAbandon``, ``QueueCallerLeave``,
        then the caller's channel is asked to go."""
        pbx = self.pbx
        wait, times = queue_wait(qc, entry, now)
        pbx.varsets(qc, (*times, ("ABANDONED", "TRUE")))
        pos = queue_abandon_event(pbx, qc, queue, entry, wait)
        queue_leave(self.sim, qc, queue, entry)
        pbx.varset(qc, "QUEUEPOSITION", str(pos))
        pbx.soft_hangup_request(qc, 16)

    def _queue_timed_out(self, qc: Chan, queue: QueueRt, entry: Entry, now: int) -> int:
        """``Queue()``'s timeout: ABANDONED, ``QueueCallerAbandon`` and app_queue's variables (in this order,
        unlike a caller hanging up).  Returns the caller's position."""
        pbx = self.pbx
        wait, times = queue_wait(qc, entry, now)
        pbx.varset(qc, "ABANDONED", "TRUE")
        pos = queue_abandon_event(pbx, qc, queue, entry, wait)
        pbx.varsets(qc, times)
        return pos

    def _queue_result(self, qc: Chan, status: str) -> None:
        """The caller's dialplan after ``Queue()`` returned: QUEUESTATUS, ``NoOp(queue result …)``, ``Hangup()``."""
        pbx = self.pbx
        pbx.varset(qc, "QUEUESTATUS", status)
        pbx.newexten(qc, 4, "NoOp", f"queue result {status}")
        pbx.newexten(qc, 5, "Hangup", "")

    def refused(self, call: Call, qc: Chan, queue: QueueRt, status: str) -> None:
        """join_empty.ami: only VarSet QUEUESTATUS, then the dialplan goes on and hangs up."""
        self._queue_result(qc, status)
        self._dialplan_hangup(call, qc)

    def _dialplan_hangup(self, call: Call, qc: Chan) -> None:
        """The caller's dialplan ran ``Hangup()``: the caller's channels go (the style's)."""
        raise NotImplementedError

    # ---- the AMI BlindTransfer action (blind_transfer.ami, bounced.ami) --------------------------------------
    def _blind_ami_action(self, qc: Chan, talk: Talk, target: QueueRt) -> None:
        """``BlindTransfer`` of the member's ;1 to ``target``: the event, AgentComplete, and the member's ;1
        leaves the queue bridge and hangs up."""
        pbx = self.pbx
        m1 = talk.ring.m1
        pbx.unhold(m1)
        pbx.varset(m1, "BLINDTRANSFER", qc.name)
        pbx.varset(qc, "BLINDTRANSFER", m1.name)
        pbx.varset(m1, "BRIDGEPEER", "")
        pbx.emit("BlindTransfer", f"Result: Success\r\n{m1.block('Transferer')}{qc.block('Transferee')}"
                                  f"{talk.bridge.block()}IsExternal: Yes\r\nContext: inbound\r\n"
                                  f"Extension: {target.name}\r\n")
        self._agent_complete(qc, talk, "transfer")
        pbx.bridge_leave(talk.bridge, m1)
        pbx.hangup_request(talk.ring.m2, 16)
        pbx.hangup(m1, 16)
        pbx.varset(qc, "BRIDGEPEER", "")

    def _blind_ami_requeue(self, qc: Chan, talk: Talk, target: QueueRt) -> None:
        """After ``BlindTransfer``: the caller's channel leaves the queue bridge for ``target``'s dialplan."""
        pbx = self.pbx
        old = talk.queue
        pbx.newexten(qc, 1, "Queue", f"{old.name},tT,,,{old.spec.max_wait}", context="inbound", exten=target.name)
        pbx.bridge_leave(talk.bridge, qc)
        t = dial_times(pbx.t, qc, talk.connected)
        pbx.varsets(qc, (t[2], t[3], ("ANSWEREDTIME", "0"), ("ANSWEREDTIME_MS", "0")))
        pbx.newexten(qc, 2, "Answer", "")

    def _agent_complete(self, qc: Chan, talk: Talk, reason: str) -> None:
        """AgentComplete for ``talk`` ending by ``reason`` (the style's: what else goes with it)."""
        raise NotImplementedError

    # ---- a direct call to an operator's extension (direct_call.ami) ----------------------------------------
    def _direct_dial(self, call: Call, caller: Chan, ext: str) -> tuple[Chan, Chan]:
        """``caller``'s dialplan ([inbound] ``_X.``) dials ``Local/EXT@agents/n``: the Local pair, up to its
        LocalBridge.  Returns its halves."""
        pbx = self.pbx
        pbx.newexten(caller, 1, "NoOp", f"direct call to {ext}")
        pbx.newexten(caller, 2, "Dial", f"Local/{ext}@agents/n,{DIRECT_TIMEOUT},tT")
        pbx.varsets(caller, DIAL_VARS_EMPTY)
        d1, d2 = pbx.local_pair(f"Local/{ext}@agents", "agents", ext, caller.lid)
        pbx.newchannel(d1)
        pbx.newchannel(d2)
        pbx.varset(d1, "DIALEDPEERNUMBER", f"{ext}@agents/n")
        d1.set(cid_num=ext, cid_name=call.name, cl_num=call.number, cl_name=call.name)
        pbx.newexten(d1, 1, "AppDial", "(Outgoing Line)")
        pbx.newcallerid(d1)
        pbx.newconnectedline(d1)
        pbx.varset(d2, "DIALEDPEERNUMBER", f"{ext}@agents/n")
        d2.set(cid_num=call.number, cid_name=call.name, cl_num=ext, cl_name=call.name)
        pbx.newcallerid(d2)
        pbx.newconnectedline(d2)
        pbx.local_bridge(d1, d2, "agents", ext)
        return d1, d2

    @staticmethod
    def _direct_ring(answer_after: float | None, patience: float) -> tuple[float, bool | None]:
        """How long a direct call rings, and how that ends: None, the operator answers; else whether the
        caller gave up before ``Dial()``'s timeout."""
        limit = float(DIRECT_TIMEOUT)
        if answer_after is None or answer_after >= min(limit, patience):
            return min(limit, patience), patience < limit
        return answer_after + ANSWER_OVERHEAD, None

    def _direct_answered(self, call: Call, ext: str) -> Plan:
        """The truth of an answered direct call; returns how it ends."""
        call.truth.operators.append(f"ext:{ext}")
        call.truth.outcome = "answered"
        call.truth.kind("direct")
        call.truth.kind("answered")
        self.sim.caller_answered(call)
        return self.sim.plan(call, None)

    def _direct_unanswered_end(self, call: Call) -> None:
        call.truth.outcome = "unanswered"
        call.truth.kind("direct")
        call.truth.kind("unanswered")
        self.sim.end_call(call)

    # ---- the member's part ends ---------------------------------------------------------------------------
    def _agent_complete_event(self, qc: Chan | None, talk: Talk, reason: str, member: Chan | None) -> None:
        ring = talk.ring
        op = ring.op
        self.pbx.agent_event("AgentComplete", qc, member, talk.queue.name, op.interface, op.name,
                             f"HoldTime: {secs_between(talk.joined, talk.connected)}\r\n"
                             f"TalkTime: {secs_between(talk.connected, self.pbx.t)}\r\nReason: {reason}\r\n")

    def _member_free(self, op: OperatorRt) -> None:
        """``op`` is free again: ``QueueMemberStatus`` (not in use) and the queues' availability."""
        self.sim.set_busy(op, False)
        emit_member_status(self.pbx, op, 1)
        update_avail(self.pbx, op)

    def _member_done(self, talk: Talk, *, count: bool | None = None) -> None:
        """The talking operator's part of the call ended (told once): the call counts in the queue's
        CallsTaken when ``count`` (by default when the talker is the member the queue rang, not a phone
        that picked the call up), and the operator is free again."""
        ring = talk.ring
        if ring.extra.get("freed"):
            return
        ring.extra["freed"] = True
        op = talk.talker
        if count is None:
            count = op is ring.op
        op.calls_taken_in(self.pbx.t, talk.queue if count else None)
        self._member_free(op)
