"""The ``local`` PBX style: the test PBX of ``ami-captures/pbx/``.

The outside caller is a Local channel pair a driver originates (``Local/support@inbound-…;1`` parked in
``[caller] phone`` running ``Wait(600)``, ``;2`` running ``[inbound]``); a caller hangs up when the driver
hangs up the ``;1`` half.  Queue members are ``Local/EXT@agents/n`` whose ``;2`` half fakes the operator's
phone: it reads MODE/RING/TALK from AstDB (shown as ``VarSet DB_RESULT``), rings, answers after RING
seconds and hangs up after TALK seconds (``TALK=600`` when the caller or a transfer ends the call).
Blind transfers are the AMI ``BlindTransfer`` action on the member channel; attended transfers the
``*2`` feature code dialled by the member, consulting a queue number (``7003``) through a
``Local/7003@inbound`` channel (a new queue visit with the caller's Linkedid and another Uniqueid).

Each method emits one step, in the order of the captures named in its docstring.
"""

from __future__ import annotations

from typing import Any

from .channels import Bridge, Chan
from .common import Style, count_transfer, dial_times
from .kernel import US
from .queues import Entry, OperatorRt, QueueRt, emit_member_status, update_avail
from .scenarios import ANSWER_PAUSE, Call, Plan, Ring, Talk, connect, queue_leave, queue_visit

__all__ = ["LocalStyle"]


class LocalStyle(Style):
    name = "local"

    # ---- arrival (answered.ami, queue_timeout.ami, direct_call.ami) ------------------------------------
    def _originate(self, call: Call, exten: str, qtimeout: int | None) -> tuple[Chan, Chan]:
        pbx = self.pbx
        c1, c2 = pbx.local_pair(f"Local/{exten}@inbound", "inbound", exten)
        call.c1, call.c2, call.exten, call.created = c1, c2, exten, pbx.t
        call.truth.call_id = c1.uid
        call.truth.started_at = pbx.now
        pbx.newchannel(c1)
        pbx.newchannel(c2)
        pbx.newexten(c1, 1, "AppDial2", "(Outgoing Line)")
        if qtimeout is not None:
            pbx.varset(c1, "__QTIMEOUT", str(qtimeout))
        c1.set(cid_num=call.number, cid_name=call.name)
        pbx.newcallerid(c1)
        c1.set(cl_num=call.number, cl_name=call.name)
        pbx.newconnectedline(c1)
        if qtimeout is not None:
            pbx.varset(c2, "__QTIMEOUT", str(qtimeout))
        c2.set(cid_num=call.number, cid_name=call.name, cl_num=call.number, cl_name=call.name)
        pbx.newcallerid(c2)
        pbx.newconnectedline(c2)
        pbx.local_bridge(c1, c2, "inbound", exten)
        pbx.dial_begin(None, c1, f"{exten}@inbound/n")
        return c1, c2

    def _originate_answered(self, call: Call) -> None:
        pbx = self.pbx
        c1 = call.c1
        assert c1 is not None
        pbx.dial_end(None, c1, "ANSWER")
        pbx.newexten(c1, 1, "Answer", "", context="caller", exten="phone")
        self.sim.drv += 1
        pbx.emit("OriginateResponse", f"ActionID: drv-{self.sim.drv}\r\nResponse: Success\r\nChannel: {c1.name}\r\n"
                                      f"Context: caller\r\nExten: phone\r\nReason: 4\r\nUniqueid: {c1.uid}\r\n"
                                      f"CallerIDNum: {call.number}\r\nCallerIDName: {call.name}\r\n")
        pbx.newexten(c1, 2, "Wait", "600")

    def arrive_queue(self, call: Call, queue: QueueRt) -> Any:
        pbx = self.pbx
        qtimeout = queue.spec.max_wait if queue.spec.max_wait != 120 else None
        c1, c2 = self._originate(call, queue.name, qtimeout)
        call.qtimeout = str(qtimeout) if qtimeout is not None else ""
        pbx.newexten(c2, 1, "NoOp", f"inbound call for queue {queue.name}")
        pbx.newexten(c2, 2, "Answer", "")
        pbx.newstate(c2, 6)
        pbx.newstate(c1, 6)
        self._originate_answered(call)
        dev = f"Local/{queue.name}@inbound"
        self.pbx.devstate(dev)
        self.pbx.devstate(dev)
        yield ANSWER_PAUSE
        return c2

    def joined(self, call: Call, qc: Chan, queue: QueueRt) -> None:
        pass

    # ---- ringing (answered.ami, abandoned.ami) ----------------------------------------------------------
    def ring(self, call: Call, qc: Chan, queue: QueueRt, op: OperatorRt, answer_after: float | None,
             talk: int) -> Ring:
        pbx = self.pbx
        # the originate's __QTIMEOUT is the only variable the caller's channel passes on
        inherit = (("__QTIMEOUT", call.qtimeout),) if call.qtimeout and qc is call.c2 else ()
        ring = self._ring_member(call, qc, queue, op, answer_after, talk, inherit)
        m1 = ring.m1
        self._fake_agent(ring)
        m1.set(state=5, exten=qc.exten, cl_num=qc.cid_num, cl_name=qc.cid_name)
        pbx.emit("Newstate", m1.block())
        pbx.newexten(m1, 1, "AppQueue", "(Outgoing Line)")
        pbx.newconnectedline(m1)
        self._fake_agent_wait(ring)
        self.pbx.devstate(f"Local/{op.ext}@agents")
        emit_member_status(pbx, op, 2)
        pbx.dial_state(qc, m1)
        update_avail(pbx, op)
        return ring

    def rung(self, call: Call, qc: Chan, rings: list[Ring]) -> None:
        pass

    def _fake_agent(self, ring: Ring, *, mode_read: bool = False) -> None:
        """[agents] priorities 1-5: MODE, RING, TALK from AstDB, then Ringing() (``mode_read``: the first
        read of MODE was shown already)."""
        pbx, m2, ext = self.pbx, ring.m2, ring.op.ext
        mode, ring_s, talk_s = _agent_db(ring)
        if not mode_read:
            pbx.varset(m2, "DB_RESULT", mode)
        pbx.newexten(m2, 1, "NoOp", f"agent {ext} mode {mode}")
        pbx.varset(m2, "DB_RESULT", mode)
        pbx.newexten(m2, 2, "Set", f"MODE={mode}")
        pbx.varset(m2, "MODE", mode)
        pbx.varset(m2, "DB_RESULT", ring_s)
        pbx.newexten(m2, 3, "Set", f"RING={ring_s}")
        pbx.varset(m2, "RING", ring_s)
        pbx.varset(m2, "DB_RESULT", talk_s)
        pbx.newexten(m2, 4, "Set", f"TALK={talk_s}")
        pbx.varset(m2, "TALK", talk_s)
        pbx.newexten(m2, 5, "Ringing", "")

    def _fake_agent_wait(self, ring: Ring) -> None:
        """[agents] priority 6: GotoIf, then Wait(RING) or the noans branch's Wait(600)."""
        pbx, m2 = self.pbx, ring.m2
        if ring.answer_after is not None:
            pbx.newexten(m2, 6, "GotoIf", "0?noans")
            pbx.newexten(m2, 7, "Wait", str(int(ring.answer_after)))
        else:
            pbx.newexten(m2, 6, "GotoIf", "1?noans")
            pbx.newexten(m2, 11, "Wait", "600")

    def ring_no_answer(self, call: Call, qc: Chan, queue: QueueRt, ring: Ring, ring_ms: int) -> None:
        """abandoned.ami: the member timeout."""
        pbx = self.pbx
        m2, op = ring.m2, ring.op
        self._ring_ends(qc, queue, ring, ring_ms)
        pbx.soft_hangup_request(m2, 16)
        dev = f"Local/{op.ext}@agents"
        self.pbx.devstate(dev)
        pbx.hangup(m2, 0)
        self._member_free(op)
        pbx.devstate(dev)

    def _ring_ends(self, qc: Chan, queue: QueueRt, ring: Ring, ring_ms: int) -> None:
        """A ring round ends unanswered: AgentRingNoAnswer, DialEnd NOANSWER and CANCEL, the member's ;1 goes."""
        pbx = self.pbx
        self._ring_no_answer_event(qc, queue, ring, ring_ms)
        pbx.dial_end(qc, ring.m1, "NOANSWER")
        pbx.dial_end(qc, ring.m1, "CANCEL")
        pbx.hangup_request(ring.m2, 0)
        pbx.hangup(ring.m1, 0)

    # ---- answer (answered.ami, bounced.ami, attended_transfer.ami) --------------------------------------
    def answered(self, call: Call, qc: Chan, queue: QueueRt, entry: Entry, ring: Ring, losers: list[Ring]) -> Talk:
        pbx = self.pbx
        m1, m2, op = ring.m1, ring.m2, ring.op
        pbx.newexten(m2, 8, "Answer", "")
        pbx.newstate(m2, 6)
        pbx.newstate(m1, 6)
        pbx.dial_end(qc, m1, "ANSWER")
        for lo in losers:
            pbx.dial_end(qc, lo.m1, "CANCEL")
            pbx.dial_end(qc, lo.m1, "CANCEL")
            self._pair_goes(lo.m1, lo.m2, 26)
        dev = f"Local/{op.ext}@agents"
        self.pbx.devstate(dev)
        pbx.devstate(dev)
        for lo in losers:
            ldev = f"Local/{lo.op.ext}@agents"
            self.pbx.devstate(ldev)
            pbx.devstate(ldev)
        talk = connect(self.sim, call, qc, queue, entry, ring)
        for lo in losers:
            self._member_free(lo.op)
        b = pbx.bridge()
        talk.bridge = b
        pbx.bridge_create(b)
        pbx.bridge_enter(b, m1)
        pbx.bridge_enter(b, qc)
        if qc is not call.c2:
            pbx.varset(qc, "ATTENDEDTRANSFER", "")
        elif call.transfers:
            pbx.varset(qc, "BLINDTRANSFER", "")
        pbx.varset(m1, "BRIDGEPEER", qc.name)
        pbx.varset(qc, "BRIDGEPEER", m1.name)
        return talk

    # ---- a Local channel pair hanging up ------------------------------------------------------------------
    def _half_hangs_up(self, half: Chan, other: Chan) -> None:
        """A Local half is asked to hang up (its dialplan ran Hangup(), or its bridge broke up) and goes: the
        other half of the pair is asked to go."""
        pbx = self.pbx
        pbx.soft_hangup_request(half, 16)
        pbx.hangup_request(other, 16)
        pbx.hangup(half, 16)

    def _pair_goes(self, first: Chan, other: Chan, cause: int = 16) -> None:
        """A Local pair goes, ``first`` half first: the other half is asked to go, and goes."""
        pbx = self.pbx
        pbx.hangup_request(other, cause)
        pbx.hangup(first, cause)
        pbx.soft_hangup_request(other, 16)
        pbx.hangup(other, cause)

    # ---- the caller leaves the queue --------------------------------------------------------------------
    def _driver_hangs_up(self, call: Call) -> None:
        """The driver hangs up the caller's [caller] half: c1 goes, c2 is asked to."""
        pbx = self.pbx
        c1, c2 = call.c1, call.c2
        assert c1 is not None and c2 is not None
        pbx.soft_hangup_request(c1, 16)
        pbx.hangup_request(c2, 0)
        pbx.hangup(c1, 0)

    def abandon(self, call: Call, qc: Chan, queue: QueueRt, entry: Entry, rings: list[Ring]) -> None:
        """abandoned.ami, short_abandon.ami, load_a.ami: the caller hangs up while waiting."""
        pbx = self.pbx
        now = pbx.t
        dev_in = f"Local/{call.exten}@inbound"
        self._driver_hangs_up(call)
        for i, r in enumerate(rings):
            pbx.dial_end(qc, r.m1, "CANCEL")
            if i == 0:
                self.pbx.devstate(dev_in)
            pbx.dial_end(qc, r.m1, "CANCEL")
            pbx.hangup_request(r.m2, 0)
            pbx.hangup(r.m1, 0)
        self._abandon_queue(qc, queue, entry, now)
        if not rings:
            self.pbx.devstate(dev_in)
        pbx.hangup(qc, 16 if call.transfers else 0)
        for r in rings:
            pbx.soft_hangup_request(r.m2, 16)
            pbx.hangup(r.m2, 0)
        for i, r in enumerate(rings):
            dev = f"Local/{r.op.ext}@agents"
            pbx.devstate(dev)
            if i == 0:
                pbx.devstate(dev_in)
            pbx.devstate(dev)
            self._member_free(r.op)
        if not rings:
            pbx.devstate(dev_in)

    def timeout(self, call: Call, qc: Chan, queue: QueueRt, entry: Entry, rings: list[Ring], ring_ms: int) -> None:
        """queue_timeout.ami: Queue() gives up; the caller carries on in the dialplan and hangs up."""
        pbx = self.pbx
        now = pbx.t
        for r in rings:
            self._ring_ends(qc, queue, r, ring_ms)
        pos = self._queue_timed_out(qc, queue, entry, now)
        for r in rings:
            pbx.soft_hangup_request(r.m2, 16)
            pbx.hangup(r.m2, 0)
        queue_leave(self.sim, qc, queue, entry)
        pbx.varset(qc, "QUEUEPOSITION", str(pos))
        # the dialplan's queue result, with the members' device states in between (_queue_result's steps)
        pbx.varset(qc, "QUEUESTATUS", "TIMEOUT")
        for r in rings:
            self.pbx.devstate(f"Local/{r.op.ext}@agents")
            self._member_free(r.op)
        pbx.newexten(qc, 4, "NoOp", "queue result TIMEOUT")
        for r in rings:
            pbx.devstate(f"Local/{r.op.ext}@agents")
        pbx.newexten(qc, 5, "Hangup", "")
        self._dialplan_hangup(call, qc)

    def _dialplan_hangup(self, call: Call, qc: Chan) -> None:
        """The caller's ;2 half runs Hangup(): both halves go."""
        pbx = self.pbx
        c1, c2 = call.c1, call.c2
        assert c1 is not None and c2 is not None
        dev = f"Local/{call.exten}@inbound"
        self._half_hangs_up(c2, c1)
        pbx.soft_hangup_request(c1, 16)
        self.pbx.devstate(dev)
        pbx.hangup(c1, 16)
        self.pbx.devstate(dev)

    def key_exit(self, call: Call, qc: Chan, queue: QueueRt, entry: Entry, rings: list[Ring]) -> Any:
        raise NotImplementedError("the local PBX has no exit key")  # validated away by SimConfig
        yield 0.0

    # ---- the conversation -------------------------------------------------------------------------------
    def conversation(self, call: Call, qc: Chan, talk: Talk, plan: Plan) -> Any:
        sim, pbx = self.sim, self.pbx
        ring = talk.ring
        sim.part_done(call)
        yield ANSWER_PAUSE
        pbx.newexten(ring.m2, 9, "Wait", str(ring.talk))
        if plan.end == "operator":
            yield float(ring.talk)
            self._agent_hangs_up(call, qc, talk)
            return None
        if plan.end == "caller":
            yield max(0.5, sim.talk_time(plan, talk.talker) - ANSWER_PAUSE)
            self._caller_hangs_up(call, qc, talk)
            return None
        if plan.end == "ami":
            yield max(0.5, sim.talk_time(plan, talk.talker) - ANSWER_PAUSE)
            self._ami_hangup(call, qc, talk)
            return None
        yield max(1.0, sim.talk_time(plan, talk.talker) - ANSWER_PAUSE)
        target = plan.target
        assert target is not None
        if plan.kind == "attended" and qc is call.c2:
            reserved = sim.reserve_consult(target)
            if reserved:
                return (yield from self._attended(call, qc, talk, target, plan, reserved))
        return self._blind_ami(call, qc, talk, target)

    def _agent_complete(self, qc: Chan | None, talk: Talk, reason: str, *, dest: bool = True) -> None:
        """AgentComplete (without the member's block once its ;1 is gone: ``dest`` False)."""
        self._agent_complete_event(qc, talk, reason, talk.ring.m1 if dest else None)

    def _agent_hangs_up(self, call: Call, qc: Chan, talk: Talk) -> None:
        """answered.ami / ring_no_answer.ami: the fake agent's Hangup() after Wait(TALK)."""
        call.truth.kind("operator_hung_up")
        pbx, sim = self.pbx, self.sim
        ring = talk.ring
        m1, m2, op = ring.m1, ring.m2, ring.op
        early = sim.rng.random() < 0.6  # AgentComplete before or after the member's ;1 hangs up
        pbx.newexten(m2, 10, "Hangup", "")
        self._half_hangs_up(m2, m1)
        if early:
            self._agent_complete(qc, talk, "agent")
        self._clear_peers(m1, qc)
        pbx.bridge_leave(talk.bridge, m1)
        pbx.hangup(m1, 16)
        if not early:
            self._agent_complete(qc, talk, "agent", dest=False)
        dev = f"Local/{op.ext}@agents"
        self.pbx.devstate(dev)
        self.pbx.devstate(dev)
        self._member_done(talk)
        pbx.bridge_leave(talk.bridge, qc)
        pbx.varsets(qc, dial_times(pbx.t, qc, talk.connected))
        self._caller_side_ends(call, qc, talk.bridge)

    def _ami_hangup(self, call: Call, qc: Chan, talk: Talk) -> None:
        """bounced.ami's end: an AMI Hangup of the member's ;1 (a supervisor or CRM ends the call)."""
        call.truth.kind("ami_hangup")
        pbx = self.pbx
        ring = talk.ring
        m1, m2, op = ring.m1, ring.m2, ring.op
        c1 = call.c1
        assert c1 is not None and qc is call.c2
        self._clear_peers(m1, qc)
        pbx.bridge_leave(talk.bridge, m1)
        pbx.hangup_request(m2, 16)
        pbx.bridge_leave(talk.bridge, qc)
        pbx.varsets(qc, dial_times(pbx.t, qc, talk.connected))
        pbx.bridge_destroy(talk.bridge)
        pbx.soft_hangup_request(qc, 16)
        self._agent_complete(qc, talk, "caller")
        self._pair_goes(qc, c1)
        dev_in = f"Local/{call.exten}@inbound"
        pbx.devstate(dev_in)
        pbx.hangup(m1, 16)
        pbx.devstate(dev_in)
        self._member_done(talk)
        dev = f"Local/{op.ext}@agents"
        pbx.devstate(dev)
        pbx.soft_hangup_request(m2, 16)
        pbx.hangup(m2, 16)
        pbx.devstate(dev)
        self.sim.end_call(call)

    def _caller_side_ends(self, call: Call, qc: Chan, bridge: Bridge) -> None:
        """The caller's Queue() returns after its peer hung up: the caller's channels go (through the
        consultation channels after an attended transfer)."""
        pbx = self.pbx
        c2 = call.c2
        assert c2 is not None
        if qc is c2:
            self._caller_pair_goes(call, bridge)
            return
        # after an attended transfer: qc is the consultation's ;2 (x2); x1 sits with c2 in the old bridge
        x1, b0 = call.chain[0], call.chain[1]
        self._half_hangs_up(qc, x1)
        pbx.bridge_destroy(bridge)
        dev_x = f"Local/{x1.exten}@inbound"
        self.pbx.devstate(dev_x)
        self._clear_peers(c2, x1)
        self._bridge_left(b0, x1, c2, dev_x)
        pbx.varsets(c2, dial_times(pbx.t, c2, call.chain[2]))
        self._caller_pair_goes(call, None)

    def _caller_pair_goes(self, call: Call, bridge: Bridge | None) -> None:
        """The caller's ;2 leaves Queue() and hangs up (the queue ``bridge`` destroyed, if still there), then
        the caller's ;1: the call ends."""
        pbx = self.pbx
        c1, c2 = call.c1, call.c2
        assert c1 is not None and c2 is not None
        self._half_hangs_up(c2, c1)
        if bridge is not None:
            pbx.bridge_destroy(bridge)
        pbx.devstate(f"Local/{call.exten}@inbound")
        pbx.soft_hangup_request(c1, 16)
        pbx.hangup(c1, 16)
        pbx.devstate(f"Local/{call.exten}@inbound")
        self.sim.end_call(call)

    def _caller_hangs_up(self, call: Call, qc: Chan, talk: Talk) -> None:
        """caller_hangs_up_in_talk.ami (and attended_transfer.ami's end after the transfer)."""
        call.truth.kind("caller_hung_up")
        pbx = self.pbx
        ring = talk.ring
        m1, m2, op = ring.m1, ring.m2, ring.op
        c1, c2 = call.c1, call.c2
        assert c1 is not None and c2 is not None
        if qc is c2:
            self._driver_hangs_up(call)
            self._clear_peers(c2, m1)
            pbx.bridge_leave(talk.bridge, c2)
            pbx.varsets(c2, dial_times(pbx.t, c2, talk.connected))
            pbx.bridge_leave(talk.bridge, m1)
            pbx.bridge_destroy(talk.bridge)
            self._pair_goes(m1, m2)
            pbx.soft_hangup_request(c2, 16)
            self._agent_complete(c2, talk, "caller")
            self.pbx.devstate(f"Local/{call.exten}@inbound")
            pbx.hangup(c2, 16)
            self._member_done(talk)
            dev = f"Local/{op.ext}@agents"
            self.pbx.devstate(dev)
            self.pbx.devstate(dev)
            self.pbx.devstate(f"Local/{call.exten}@inbound")
            self.sim.end_call(call)
            return
        # after an attended transfer (attended_transfer.ami, the end)
        x1, b0 = call.chain[0], call.chain[1]
        x2 = qc
        pbx.soft_hangup_request(c1, 16)
        pbx.hangup_request(c2, 0)
        self._clear_peers(c2, x1)
        pbx.bridge_leave(b0, c2)
        pbx.varsets(c2, dial_times(pbx.t, c2, call.chain[2]))
        c1.set(cid_num=None, cid_name=None)
        pbx.hangup(c1, 0)
        pbx.newcallerid(c1, "67 (Number Unavailable)")
        pbx.soft_hangup_request(c2, 16)
        pbx.hangup(c2, 16)
        pbx.bridge_leave(b0, x1)
        pbx.bridge_destroy(b0)
        pbx.hangup_request(x2, 16)
        pbx.hangup(x1, 16)
        self._clear_peer(x2, m1)
        self.pbx.devstate(f"Local/{call.exten}@inbound")
        self.pbx.devstate(f"Local/{call.exten}@inbound")
        dev_x = f"Local/{x1.exten}@inbound"
        self.pbx.devstate(dev_x)
        self._agent_complete(x2, talk, "caller")
        self._clear_peer(m1, x2)
        pbx.bridge_leave(talk.bridge, x2)
        t = dial_times(pbx.t, x2, talk.connected)
        pbx.varset(x2, *t[0])
        pbx.bridge_leave(talk.bridge, m1)
        pbx.varsets(x2, t[1:])
        pbx.soft_hangup_request(x2, 16)
        pbx.hangup(x2, 16)
        pbx.bridge_destroy(talk.bridge)
        pbx.hangup_request(m2, 16)
        self.pbx.devstate(dev_x)
        pbx.hangup(m1, 16)
        pbx.soft_hangup_request(m2, 16)
        pbx.hangup(m2, 16)
        dev = f"Local/{op.ext}@agents"
        self.pbx.devstate(dev)
        self.pbx.devstate(dev)
        self._member_done(talk)
        self.sim.end_call(call)

    # ---- transfers --------------------------------------------------------------------------------------
    def _blind_ami(self, call: Call, qc: Chan, talk: Talk, target: QueueRt) -> tuple[Chan, QueueRt]:
        """blind_transfer.ami, bounced.ami: the AMI BlindTransfer action on the member's ;1."""
        pbx = self.pbx
        m2 = talk.ring.m2
        self._blind_ami_action(qc, talk, target)
        self._member_done(talk)
        dev = f"Local/{talk.ring.op.ext}@agents"
        pbx.devstate(dev)
        self._blind_ami_requeue(qc, talk, target)
        pbx.soft_hangup_request(m2, 16)
        pbx.bridge_destroy(talk.bridge)
        pbx.hangup(m2, 16)
        self.pbx.devstate(dev)
        count_transfer(call, "blind", "ami_blind")
        return qc, target

    def _attended(self, call: Call, qc: Chan, talk: Talk, target: QueueRt, plan: Plan,
                  reserved: list[OperatorRt]) -> Any:
        """attended_transfer.ami: the member dials *2 and the target queue's number; the consultation
        (a Local/70xx@inbound pair with the caller's Linkedid) queues; when it is answered the member
        hangs up and the bridges merge."""
        pbx, sim = self.pbx, self.sim
        ring = talk.ring
        m1, m2, op = ring.m1, ring.m2, ring.op
        c1, c2 = call.c1, call.c2
        assert c1 is not None and c2 is not None
        number = target.spec.did or target.name
        pbx.varset(m1, "TRANSFER_CONTEXT", "inbound")
        for i, digit in enumerate("*2" + number):
            if i:
                yield 0.4
            pbx.dtmf(m1, digit, "begin")
            yield 0.12
            pbx.dtmf(m1, digit, "end")
            if i == 1:
                pbx.hold(m1, None)
        yield 3.0  # transferdigittimeout
        x1, x2 = pbx.local_pair(f"Local/{number}@inbound", "inbound", number, c2.lid)
        b1 = pbx.bridge()
        pbx.newchannel(x1)
        pbx.newchannel(x2)
        pbx.varset(x1, "TRANSFERERNAME", m1.name)
        pbx.varset(x1, "ATTENDEDTRANSFER", m1.name)
        pbx.bridge_create(b1)
        pbx.varset(x2, "ATTENDEDTRANSFER", m1.name)
        pbx.varset(x2, "TRANSFERERNAME", m1.name)
        x2.set(cid_num=m1.cid_num, cid_name=m1.cid_name)
        pbx.newcallerid(x2)
        pbx.local_bridge(x1, x2, "inbound", number, "Yes")
        x1.set(cl_num=m1.cid_num, cl_name=m1.cid_name)
        pbx.newconnectedline(x1)
        pbx.bridge_enter(b1, x1)
        pbx.varset(x1, "ATTENDEDTRANSFER", "")
        pbx.bridge_leave(talk.bridge, m1)
        if number != target.name:
            pbx.newexten(x2, 1, "Goto", f"inbound,{target.name},1")
        pbx.bridge_enter(b1, m1)
        pbx.varset(x1, "BRIDGEPEER", m1.name)
        pbx.newexten(x2, 1, "NoOp", f"inbound call for queue {target.name}", context="inbound", exten=target.name)
        pbx.varset(m1, "BRIDGEPEER", x1.name)
        pbx.newexten(x2, 2, "Answer", "")
        m1.set(cl_num=None, cl_name=None)
        pbx.newconnectedline(m1)
        pbx.newstate(x2, 6)
        pbx.newstate(x1, 6)
        pbx.dial_end(None, x1, "ANSWER")
        pbx.varset(x1, "BRIDGEPEER", m1.name)
        pbx.varset(m1, "BRIDGEPEER", x1.name)
        dev_x = f"Local/{number}@inbound"
        self.pbx.devstate(dev_x)
        self.pbx.devstate(dev_x)
        yield ANSWER_PAUSE
        consult_plan = sim.plan(call, target, after_attended=True)
        sim.part_done(call)
        new = yield from queue_visit(sim, call, x2, target, consult_plan, consult=True, reserved=reserved)
        assert new is not None, "a consultation call is answered by a member held for it"
        yield ANSWER_PAUSE
        pbx.newexten(new.ring.m2, 9, "Wait", str(new.ring.talk))
        yield max(0.1, sim.consult_talk(plan) - ANSWER_PAUSE)
        # the transferring member hangs up: the bridges merge
        self._clear_peer(m1, x1)
        pbx.bridge_leave(b1, m1)
        pbx.hangup_request(m2, 16)
        pbx.emit("BridgeMerge", f"{talk.bridge.block('To')}{b1.block('From')}")
        pbx.soft_hangup_request(m2, 16)
        m2.set(cid_num=None, cid_name=None)  # a Local half's caller id follows its partner's connected line
        pbx.hangup(m2, 16)
        pbx.newcallerid(m2, "67 (Number Unavailable)")
        pbx.bridge_leave(b1, x1)
        dev = f"Local/{op.ext}@agents"
        self.pbx.devstate(dev)
        self._member_done(talk)
        pbx.bridge_enter(talk.bridge, x1)
        pbx.varset(c2, "BRIDGEPEER", x1.name)
        pbx.varset(x1, "BRIDGEPEER", c2.name)
        c2.set(cl_num=None, cl_name=None)
        pbx.newconnectedline(c2)
        b1.members.clear()
        pbx.emit("AttendedTransfer",
                 f"Result: Success\r\n{m1.block('OrigTransferer')}{talk.bridge.block('Orig', 2)}"
                 f"{m1.block('SecondTransferer')}{b1.block('Second', 0)}{c2.block('Transferee')}"
                 f"{x1.block('TransferTarget')}IsExternal: No\r\nDestType: Bridge\r\n"
                 f"DestBridgeUniqueid: {talk.bridge.id}\r\n")
        pbx.bridge_destroy(b1)
        self._agent_complete(c2, talk, "transfer")
        pbx.hangup(m1, 16)
        self.pbx.devstate(dev)
        call.chain = [x1, talk.bridge, talk.connected]
        count_transfer(call, "attended", "feature_attended")
        # the caller now talks with the consultation's member; that part ends as planned
        return (yield from self._after_attended(call, x2, new, consult_plan))

    def _after_attended(self, call: Call, x2: Chan, talk: Talk, plan: Plan) -> Any:
        sim = self.sim
        ring = talk.ring
        if plan.end == "operator":
            done = (sim.kernel.now - talk.connected) / US
            yield max(0.5, ANSWER_PAUSE + ring.talk - done)
            self._agent_hangs_up(call, x2, talk)
        else:
            yield max(0.5, sim.talk_time(plan, talk.talker) - (sim.kernel.now - talk.connected) / US)
            self._caller_hangs_up(call, x2, talk)
        return None

    # ---- a direct call (direct_call.ami) --------------------------------------------------------------------
    def direct_call(self, call: Call, op: OperatorRt) -> Any:
        pbx, sim = self.pbx, self.sim
        ext = op.ext
        c1, c2 = self._originate(call, ext, None)
        d1, d2 = self._direct_dial(call, c2, ext)
        answer_after, talk_s = sim.decide_direct(call, op)
        ring = Ring(op, d1, d2, pbx.t, answer_after, talk_s)
        pbx.varset(d2, "DB_RESULT", _agent_db(ring)[0])  # the first AstDB read shows before DialBegin here
        pbx.dial_begin(c2, d1, f"{ext}@agents/n")
        self._fake_agent(ring, mode_read=True)
        pbx.newstate(d1, 5)
        self._fake_agent_wait(ring)
        sim.set_busy(op, True)
        dev = f"Local/{ext}@agents"
        self.pbx.devstate(dev)
        emit_member_status(pbx, op, 2)
        pbx.newstate(c1, 5)
        pbx.varsets(c2, (("RINGTIME", "0"), ("RINGTIME_MS", "0")))
        pbx.dial_state(c2, d1)
        dev_in = f"Local/{ext}@inbound"
        self.pbx.devstate(dev_in)
        pbx.dial_state(None, c1)
        wait, gave_up = self._direct_ring(answer_after, call.patience)
        yield wait
        if gave_up is not None:
            self._direct_unanswered(call, ring, gave_up)
            return None
        pbx.newexten(d2, 8, "Answer", "")
        pbx.newstate(d2, 6)
        pbx.newstate(d1, 6)
        self._dial_answered(c2, d1, f"{ext}@agents/n")
        pbx.newstate(c2, 6)
        b = pbx.bridge()
        pbx.bridge_create(b)
        pbx.newexten(d1, 1, "AppDial", "(Outgoing Line)")
        pbx.bridge_enter(b, d1)
        self.pbx.devstate(dev)
        pbx.devstate(dev)
        self.pbx.devstate(dev_in)
        pbx.newstate(c1, 6)
        self._originate_answered(call)
        pbx.devstate(dev_in)
        pbx.bridge_enter(b, c2)
        pbx.varset(d1, "BRIDGEPEER", c2.name)
        pbx.varset(c2, "BRIDGEPEER", d1.name)
        connected = pbx.t
        plan = self._direct_answered(call, ext)
        yield ANSWER_PAUSE
        pbx.newexten(d2, 9, "Wait", str(talk_s))
        if plan.end == "operator":
            yield float(talk_s)
            call.truth.kind("operator_hung_up")
            pbx.newexten(d2, 10, "Hangup", "")
            self._half_hangs_up(d2, d1)
            self._clear_peers(d1, c2)
            self._bridge_left(b, d1, c2, dev)
            self._dial_ended(c2, connected)
            self._dialled_two_ends(c1, c2)
            pbx.soft_hangup_request(c1, 16)
            pbx.hangup(c1, 16)
        else:
            yield max(0.5, sim.talk_time(plan, op) - ANSWER_PAUSE)
            call.truth.kind("caller_hung_up")
            self._driver_hangs_up(call)
            self._bridge_ends(b, c2, d1)
            pbx.varsets(c2, (*dial_times(pbx.t, c2, connected), ("DIALSTATUS", "ANSWER")))
            self._pair_goes(d1, d2)
            self.pbx.devstate(dev)
            pbx.soft_hangup_request(c2, 16)
            pbx.hangup(c2, 16)
        op.last_call = pbx.t // US
        sim.set_busy(op, False)
        emit_member_status(pbx, op, 1)
        self.pbx.devstate(dev)
        self.pbx.devstate(dev_in)
        self.pbx.devstate(dev_in)
        sim.end_call(call)
        return None

    def _direct_unanswered(self, call: Call, ring: Ring, gave_up: bool) -> None:
        """Nobody answers a direct call: Dial() times out after 20 s, or the caller hangs up first."""
        pbx, sim = self.pbx, self.sim
        c1, c2 = call.c1, call.c2
        assert c1 is not None and c2 is not None
        d1, d2, op = ring.m1, ring.m2, ring.op
        if gave_up:
            self._driver_hangs_up(call)
            pbx.dial_end(c2, d1, "CANCEL")
            pbx.hangup_request(d2, 0)
            pbx.hangup(d1, 0)
            pbx.varsets(c2, (("DIALSTATUS", "CANCEL"), *dial_times(pbx.t, c2, pbx.t)[2:]))
            pbx.soft_hangup_request(c2, 16)
            pbx.hangup(c2, 0)
        else:
            pbx.dial_end(c2, d1, "NOANSWER")
            pbx.hangup_request(d2, 0)
            pbx.hangup(d1, 0)
            pbx.varsets(c2, (("DIALSTATUS", "NOANSWER"), *dial_times(pbx.t, c2, pbx.t)[2:]))
            pbx.newexten(c2, 3, "Hangup", "")
            self._half_hangs_up(c2, c1)
            pbx.dial_end(None, c1, "CANCEL")
            pbx.soft_hangup_request(c1, 16)
            pbx.hangup(c1, 16)
        pbx.soft_hangup_request(d2, 16)
        pbx.hangup(d2, 0)
        self.pbx.devstate(f"Local/{op.ext}@agents")
        sim.set_busy(op, False)
        emit_member_status(pbx, op, 1)
        self.pbx.devstate(f"Local/{call.exten}@inbound")
        self.pbx.devstate(f"Local/{call.exten}@inbound")
        self._direct_unanswered_end(call)

    def outbound_call(self, op: OperatorRt, number: str, answered: bool, truth: Any) -> Any:
        raise NotImplementedError("the local PBX has no trunk")  # the centre never asks
        yield 0.0


def _agent_db(ring: Ring) -> tuple[str, str, str]:
    """MODE, RING and TALK the fake agent of ``ring`` reads from AstDB."""
    if ring.answer_after is None:
        return "noanswer", "1", "600"
    return "answer", str(int(ring.answer_after)), str(ring.talk)
