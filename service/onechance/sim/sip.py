"""The ``sip`` PBX style: the PBX of ``ami-captures/pbx-sip/``.

Outside callers come in on the PJSIP trunk ``carrier`` (``PJSIP/carrier-0000001b``, context ``inbound``,
the dialled number as extension, ``Goto`` to the queue).  Queue members are ``Local/EXT@agents/n`` whose
``;2`` half runs ``Dial(PJSIP/EXT)``: the operator's SIP phone (``PJSIP/101-00000020``).  Phones do what
a desk phone does: answer, hang up, hold, blind transfer with REFER (the Local ``;2`` half becomes the
queue caller of the next visit), attended transfer with REFER/Replaces (the consultation is an ordinary
call from the phone with its own Linkedid, tied to the caller only by ``AttendedTransfer``), pick up a
colleague's ringing call (``*8``: ``AgentConnect`` still names the rung member), and call a lost caller
back through the trunk (the trunk channel's CallerIDNum is the dialled number).  A waiting caller may
leave by pressing 1 (queue ``context=<queue>-exit``: only ``QueueCallerLeave``, then voicemail).

A call is a chain of hops from the caller's trunk channel to the talking phone: queue bridges (``Queue()``
caller <-> member ``;1``), Local pairs (``;1`` <-> ``;2``), dial bridges (``Dial()`` caller <-> dialled
channel) and plain bridges (a consultation's queue bridge once a transfer replaced its caller).  A
hang-up at either end walks the chain hop by hop with the sequences of the captures
(``sip_blind_refer.ami`` and ``sip_attended_refer.ami`` from the phone's end, ``outbound_callback.ami``
for a trunk hanging up in a bridge).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .channels import Bridge, Chan
from .common import DIAL_VARS_EMPTY, Style, count_transfer, dial_times, queue_wait
from .kernel import US
from .queues import Entry, OperatorRt, QueueRt, emit_member_status, update_avail
from .scenarios import (
    ANSWER_PAUSE,
    Call,
    Plan,
    Ring,
    Talk,
    connect,
    queue_leave,
    queue_visit,
)

if TYPE_CHECKING:
    from .centre import Centre

__all__ = ["SipStyle"]

QOS = ("RTPAUDIOQOS", "RTPAUDIOQOSJITTER", "RTPAUDIOQOSLOSS", "RTPAUDIOQOSRTT", "RTPAUDIOQOSMES")
TRUNK_IP = "127.0.0.1"


@dataclass
class Hop:
    """A link between two neighbouring channels of a call's chain (``a`` on the caller's side)."""

    kind: str  # "queue", "local", "dial", "plain"
    a: Chan
    b: Chan
    bridge: Bridge | None = None
    talk: Talk | None = None
    since: int = 0  # µs, when the bridge was made (ANSWEREDTIME of ``a``)


class SipStyle(Style):
    name = "sip"

    def __init__(self, sim: Centre) -> None:
        super().__init__(sim)
        self.voicemails = 0
        self.sipp_calls = 0

    # ---- small helpers ----------------------------------------------------------------------------------
    def _callid(self, ch: Chan) -> str:
        """The SIP Call-ID of a PJSIP channel (BRIDGEPVTCALLID): SIPp style for the trunk, UUIDs for phones."""
        if ch.vars is None:
            ch.vars = {}
        cid = ch.vars.get("callid")
        if cid is None:
            if ch.dev == "PJSIP/carrier":
                self.sipp_calls += 1
                cid = f"{self.sipp_calls}-{21000 + self.sim.cfg.seed % 9000}@{TRUNK_IP}"
            else:
                cid = str(uuid.UUID(int=self.sim.rng.getrandbits(128), version=4))
            ch.vars["callid"] = cid
        return cid

    def _peer_vars(self, ch: Chan, peer: Chan) -> None:
        """BRIDGEPEER (and BRIDGEPVTCALLID when the peer is a SIP channel) of ``ch`` in a bridge."""
        pbx = self.pbx
        pbx.varset(ch, "BRIDGEPEER", peer.name)
        if peer.tech == "PJSIP":
            pbx.varset(ch, "BRIDGEPVTCALLID", self._callid(peer))

    def _qos(self, ch: Chan, peer: Chan | None = None) -> None:
        """The RTP statistics of a SIP channel that goes (with the ``…BRIDGED`` copies on its peer)."""
        pbx, rng = self.pbx, self.sim.rng
        rx = rng.randint(100, 3000)
        values = (f"ssrc={rng.getrandbits(31)};themssrc={rng.getrandbits(31)};lp=0;rxjitter=0.000000;"
                  f"rxcount={rx};txjitter=0.000250;txcount={rx + rng.randint(0, 40)};rlp=0;rtt=0.000000;"
                  f"rxmes=88.087887;txmes=88.087887",
                  "minrxjitter=000.000000;maxrxjitter=000.000375;avgrxjitter=000.000231;stdevrxjitter=000.000055;"
                  "mintxjitter=000.000000;maxtxjitter=000.000000;avgtxjitter=000.000000;stdevtxjitter=000.000000;",
                  "  minrxlost=000.000000;  maxrxlost=000.000000;  avgrxlost=000.000000;  stdevrxlost=000.000000;"
                  "  mintxlost=000.000000;  maxtxlost=000.000000;  avgtxlost=000.000000;  stdevtxlost=000.000000;",
                  "     minrtt=000.000000;     maxrtt=000.000000;     avgrtt=000.000000;     stdevrtt=000.000000;",
                  "   minrxmes=088.087887;   maxrxmes=088.087887;   avgrxmes=088.087887;   stdevrxmes=000.000000;"
                  "   mintxmes=088.087887;   maxtxmes=088.087887;   avgtxmes=088.087887;   stdevtxmes=000.000000;")
        for var, value in zip(QOS, values):
            pbx.varset(ch, var, value)
            if peer is not None:
                pbx.varset(peer, var + "BRIDGED", value)

    @staticmethod
    def _rtcp_rr_zero(port: int) -> str:
        return (f"To: {TRUNK_IP}:{port}\r\nFrom: {TRUNK_IP}:30221\r\nRTT: 0.0000\r\nMES: 88.1\r\n"
                f"SSRC: 0x00000000\r\nPT: 201(RR)\r\nReportCount: 1\r\nReport0SourceSSRC: 0x00000000\r\n"
                f"Report0FractionLost: 0\r\nReport0CumulativeLost: 0\r\nReport0HighestSequence: 0\r\n"
                f"Report0SequenceNumberCycles: 0\r\nReport0IAJitter: 0\r\nReport0LSR: 0\r\nReport0DLSR: 0.0000\r\n")

    def _auth(self, ext: str) -> None:
        """A phone's INVITE: the digest challenge, then the successful authentication."""
        pbx, rng = self.pbx, self.sim.rng
        tv = _tv(pbx.t)
        sess = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        port = 5100 + int(ext[-2:]) if ext[-2:].isdigit() else 5100
        pbx.emit("ChallengeSent", f"EventTV: {tv}\r\nSeverity: Informational\r\nService: PJSIP\r\nEventVersion: 1\r\n"
                                  f"AccountID: {ext}\r\nSessionID: {sess}\r\nLocalAddress: IPV4/UDP/127.0.0.1/5060\r\n"
                                  f"RemoteAddress: IPV4/UDP/127.0.0.1/{port}\r\nChallenge: \r\n")
        pbx.emit("SuccessfulAuth", f"EventTV: {_tv(pbx.t)}\r\nSeverity: Informational\r\nService: PJSIP\r\n"
                                   f"EventVersion: 1\r\nAccountID: {ext}\r\nSessionID: {sess}\r\n"
                                   f"LocalAddress: IPV4/UDP/127.0.0.1/5060\r\n"
                                   f"RemoteAddress: IPV4/UDP/127.0.0.1/{port}\r\nUsingPassword: 1\r\n")

    def _media(self, ch: Chan, *, sender: bool) -> None:
        """RTCP every five seconds while ``ch`` lives (the trunk sends SR; phones send RR)."""
        if self.sim.cfg.rtcp:
            self.sim.kernel.spawn(self._rtcp(ch, sender), 5.0 + self.sim.rng.uniform(0.0, 0.5), name=f"rtcp {ch.name}")

    def _rtcp(self, ch: Chan, sender: bool) -> Any:
        pbx, rng = self.pbx, self.sim.rng
        emit = pbx.emit
        ssrc = rng.getrandbits(32)
        packets = 0
        base = rng.getrandbits(28)
        port = 20000 + rng.randrange(0, 9000, 2)
        # the constant parts of this stream's reports, built once
        sr_a = f"To: {TRUNK_IP}:40011\r\nFrom: {TRUNK_IP}:{port}\r\nMES: 87."
        sr_b = f"\r\nSSRC: 0x{ssrc:08x}\r\nPT: 200(SR)\r\nReportCount: 0\r\nSentNTP: "
        rr_first = self._rtcp_rr_zero(port)
        rr_a = (f"To: {TRUNK_IP}:{port}\r\nFrom: {TRUNK_IP}:30221\r\nRTT: 0.0000\r\nMES: 88.1\r\n"
                f"SSRC: 0x{(ssrc ^ 0x5A5A5A5A):08x}\r\nPT: 200(SR)\r\nReportCount: 1\r\nSentNTP: ")
        rr_b = ("Report0SourceSSRC: 0x00000000\r\nReport0FractionLost: 0\r\nReport0CumulativeLost: 0\r\n"
                "Report0HighestSequence: 0\r\nReport0SequenceNumberCycles: 0\r\nReport0IAJitter: 0\r\n"
                "Report0LSR: 0\r\nReport0DLSR: 0.0000\r\n")
        rs_a = (f"To: {TRUNK_IP}:30221\r\nFrom: {TRUNK_IP}:{port}\r\nMES: 88.1\r\n"
                f"SSRC: 0x{ssrc:08x}\r\nPT: 201(RR)\r\nReportCount: 1\r\n"
                f"Report0SourceSSRC: 0x{(ssrc ^ 0x5A5A5A5A):08x}\r\nReport0FractionLost: 0\r\n"
                f"Report0CumulativeLost: 0\r\nReport0HighestSequence: ")
        rs_b = "\r\nReport0SequenceNumberCycles: 0\r\nReport0IAJitter: 2\r\nReport0LSR: 0\r\nReport0DLSR: 0.0000\r\n"
        while ch.up:
            packets += 250
            t = pbx.t
            if sender:
                emit("RTCPSent", f"{ch.block()}{sr_a}{2 + int(rng.random() * 8)}{sr_b}{t // US}.{t % US:06d}\r\n"
                                 f"SentRTP: {base + packets * 160}\r\nSentPackets: {packets}\r\n"
                                 f"SentOctets: {packets * 160}\r\n")
            else:
                b = ch.block()
                emit("RTCPReceived", f"{b}{rr_first}" if packets == 250 else
                     f"{b}{rr_a}{t // US}.{t % US:06d}\r\nSentRTP: {base + packets * 160}\r\n"
                     f"SentPackets: {packets}\r\nSentOctets: {packets * 160}\r\n{rr_b}")
                emit("RTCPSent", f"{b}{rs_a}{packets + 3266}{rs_b}")
            yield 5.0

    # ---- arrival (sip_blind_refer.ami) --------------------------------------------------------------------
    def _trunk_in(self, call: Call, exten: str) -> Chan:
        pbx = self.pbx
        ch = pbx.pjsip("carrier", "inbound", exten, state=4, cid_num=call.number, cid_name=call.name)
        _mark_dialled_in(ch)
        call.c1 = call.c2 = ch
        call.created = pbx.t
        call.dnid = exten
        call.truth.call_id = ch.uid
        call.truth.started_at = pbx.now
        pbx.newchannel(ch)
        pbx.varset(ch, "SIPDOMAIN", TRUNK_IP)
        return ch

    def arrive_queue(self, call: Call, queue: QueueRt) -> Any:
        pbx = self.pbx
        spec = queue.spec
        did = spec.did or queue.name
        ch = self._trunk_in(call, did)
        if spec.did:
            prio = 1
            if spec.max_wait != 120:
                pbx.newexten(ch, 1, "Set", f"QTIMEOUT={spec.max_wait}")
                pbx.varset(ch, "QTIMEOUT", str(spec.max_wait))
                prio = 2
            pbx.newexten(ch, prio, "Goto", f"inbound,{queue.name},1")
        pbx.newexten(ch, 1, "NoOp", f"inbound call for queue {queue.name}", context="inbound", exten=queue.name)
        pbx.newexten(ch, 2, "Answer", "")
        pbx.newstate(ch, 6)
        pbx.devstate("PJSIP/carrier")
        self._media(ch, sender=True)
        yield ANSWER_PAUSE
        return ch

    def joined(self, call: Call, qc: Chan, queue: QueueRt) -> None:
        self.pbx.moh_start(qc)

    # ---- ringing (sip_blind_refer.ami, exit_with_key.ami) -------------------------------------------------
    def ring(self, call: Call, qc: Chan, queue: QueueRt, op: OperatorRt, answer_after: float | None,
             talk: int) -> Ring:
        inherit = _inherited(qc)
        ring = self._ring_member(call, qc, queue, op, answer_after, talk, inherit)
        m1, m2 = ring.m1, ring.m2
        for name, value in inherit:
            _inherit(m1, name, value)
            _inherit(m2, name, value)
        m1.set(cl_num=qc.cid_num, cl_name=qc.cid_name, exten=qc.exten)
        self._dial_phone(m2, op.ext)
        return ring

    def _dial_phone(self, two: Chan, ext: str) -> None:
        """[agents] on this PBX: a member's ;2 half dials the operator's phone."""
        pbx = self.pbx
        pbx.newexten(two, 1, "NoOp", f"operator {ext}")
        pbx.newexten(two, 2, "Dial", f"PJSIP/{ext},,")
        pbx.varsets(two, DIAL_VARS_EMPTY)

    def rung(self, call: Call, qc: Chan, rings: list[Ring]) -> None:
        """The members' Dial() reaches their phones (after app_queue rang every member)."""
        pbx = self.pbx
        for r in rings:
            r.phone = self._phone_rung(r.m2, r.op)
        for r in rings:
            op, m1, m2 = r.op, r.m1, r.m2
            assert r.phone is not None
            pbx.dial_begin(m2, r.phone, op.ext)
            m2.set(cl_num=op.ext, cl_name=op.name)
            m1.set(cid_num=op.ext, cid_name=op.name)  # a Local half's caller id follows its partner's connected line
            pbx.newconnectedline(m2)
        if len(rings) == 1:  # app_queue passes connected-line updates on only while one member rings
            op = rings[0].op
            qc.set(cl_num=op.ext, cl_name=op.name)
            pbx.newconnectedline(qc)

    def _phone_rung(self, dialer: Chan, op: OperatorRt) -> Chan:
        pbx = self.pbx
        phone = pbx.pjsip(op.ext, "phones", "s", lid=dialer.lid, cid_num=op.ext, cid_name=op.name)
        pbx.newchannel(phone)
        pbx.varset(phone, "DIALEDPEERNUMBER", op.ext)
        pbx.varsets(phone, _inherited(dialer))
        phone.set(cl_num=dialer.cid_num, cl_name=dialer.cid_name, exten=op.ext)
        pbx.newexten(phone, 1, "AppDial", "(Outgoing Line)")
        pbx.newconnectedline(phone)
        return phone

    def _drop_ring(self, qc: Chan, ring: Ring, statuses: tuple[str, ...], cause: int) -> None:
        """A rung member given up: DialEnd(s) to ;1, the Local pair and the phone hung up."""
        pbx = self.pbx
        m1, m2, phone = ring.m1, ring.m2, ring.phone
        assert phone is not None
        for status in statuses:
            pbx.dial_end(qc, m1, status)
        pbx.hangup_request(m2, cause)
        pbx.dial_end(m2, phone, "CANCEL")
        pbx.varset(m2, "DIALSTATUS", "CANCEL")
        pbx.hangup(m1, cause)
        pbx.newcallerid(m1)
        pbx.newconnectedline(m1)
        pbx.soft_hangup_request(m2, 16)
        pbx.hangup(m2, cause)
        dev = f"Local/{ring.op.ext}@agents"
        pbx.devstate(dev)
        pbx.devstate(dev)
        pbx.hangup(phone, 16 if cause != 26 else 26)
        if ring.picker is not None:
            self._release(ring.picker)
        self._release(ring.op)

    def _release(self, op: OperatorRt) -> None:
        self.sim.set_busy(op, False)
        update_avail(self.pbx, op)

    def ring_no_answer(self, call: Call, qc: Chan, queue: QueueRt, ring: Ring, ring_ms: int) -> None:
        self._ring_no_answer_event(qc, queue, ring, ring_ms)
        self._drop_ring(qc, ring, ("NOANSWER", "CANCEL"), 0)

    # ---- answer (sip_blind_refer.ami, call_pickup.ami) ----------------------------------------------------
    def answered(self, call: Call, qc: Chan, queue: QueueRt, entry: Entry, ring: Ring, losers: list[Ring]) -> Talk:
        pbx = self.pbx
        m1, m2, op = ring.m1, ring.m2, ring.op
        phone = ring.phone
        assert phone is not None
        if ring.picker is not None:
            phone = self._pickup(ring)
        talker = ring.picker or op
        pbx.newstate(phone, 6) if ring.picker is None else None
        if ring.picker is None:
            pbx.devstate(phone.dev)
            emit_member_status(pbx, op, 2)
            update_avail(pbx, op)
            self._dial_answered(m2, phone, op.ext)
        if ring.picker is not None:
            pbx.devstate(f"Local/{op.ext}@agents")
            qc.set(cl_num=talker.ext, cl_name=talker.name)
            pbx.newconnectedline(qc)
        m1.set(state=6)
        pbx.emit("Newstate", m1.block())
        pbx.newexten(m1, 1, "AppQueue", "(Outgoing Line)")
        pbx.newcallerid(m1)
        pbx.newconnectedline(m1)
        pbx.dial_end(qc, m1, "ANSWER")
        pbx.devstate(f"Local/{op.ext}@agents")
        for i, lo in enumerate(losers):
            pbx.dial_end(qc, lo.m1, "CANCEL")
            if i == 0 and qc.cl_num != talker.ext:
                qc.set(cl_num=talker.ext, cl_name=talker.name)
                pbx.newconnectedline(qc)
            pbx.dial_end(qc, lo.m1, "CANCEL")
            self._cancel_loser(lo)
        if qc.cl_num != talker.ext:
            qc.set(cl_num=talker.ext, cl_name=talker.name)
            pbx.newconnectedline(qc)
        if call.chain and qc is not call.c1:
            # a transferred leg is answered: the update travels back through its Local pair to the caller
            up = call.chain[-2].a if len(call.chain) >= 2 else call.c1
            assert up is not None
            up.set(cl_num=talker.ext, cl_name=talker.name)
            pbx.newconnectedline(up)
        pbx.moh_stop(qc)
        talk = connect(self.sim, call, qc, queue, entry, ring)
        if ring.picker is None:
            pbx.newstate(m2, 6)
        pb = ring.bridge or pbx.bridge()
        if ring.bridge is None:
            pbx.bridge_create(pb)
            pbx.devstate(f"Local/{op.ext}@agents")
        qb = pbx.bridge()
        pbx.bridge_create(qb)
        if ring.picker is None:
            pbx.newexten(phone, 1, "AppDial", "(Outgoing Line)")
            pbx.bridge_enter(qb, m1)
            pbx.bridge_enter(qb, qc)
            self._peer_vars(m1, qc)
            pbx.varset(qc, "BRIDGEPEER", m1.name)
            pbx.bridge_enter(pb, phone)
            pbx.bridge_enter(pb, m2)
            pbx.varset(phone, "BRIDGEPEER", m2.name)
            self._peer_vars(m2, phone)
        else:  # call_pickup.ami: the rung phone goes, the picking phone joins the caller's Local half
            assert ring.phone is not None
            pbx.hangup(ring.phone, 16)
            self.sim.set_busy(op, False)  # the rung operator is free again
            pbx.bridge_enter(pb, m2)
            for _ in range(2):
                pbx.varset(phone, "BRIDGEPEER", m2.name)
                self._peer_vars(m2, phone)
            pbx.bridge_enter(qb, m1)
            pbx.bridge_enter(qb, qc)
            self._peer_vars(m1, qc)
            pbx.varset(qc, "BRIDGEPEER", m1.name)
        if call.transfers and qc is not call.c2:
            pbx.varset(qc, "BLINDTRANSFER", "")
        ring.bridge = pb
        ring.phone = phone
        talk.bridge = qb
        now = pbx.t
        call.chain.extend([Hop("queue", qc, m1, qb, talk, now), Hop("local", m1, m2),
                           Hop("dial", m2, phone, pb, None, now)])
        if ring.picker is None:
            self._media(phone, sender=False)
        return talk

    def _cancel_loser(self, lo: Ring) -> None:
        pbx = self.pbx
        assert lo.phone is not None
        pbx.hangup_request(lo.m2, 26)
        pbx.hangup(lo.m1, 26)
        pbx.newcallerid(lo.m1)
        pbx.newconnectedline(lo.m1)
        pbx.dial_end(lo.m2, lo.phone, "CANCEL")
        pbx.hangup(lo.phone, 26)
        pbx.varset(lo.m2, "DIALSTATUS", "CANCEL")
        pbx.soft_hangup_request(lo.m2, 16)
        pbx.hangup(lo.m2, 26)
        pbx.devstate(f"Local/{lo.op.ext}@agents")
        if lo.picker is not None:
            self._release(lo.picker)
        self._release(lo.op)

    def _pickup(self, ring: Ring) -> Chan:
        """call_pickup.ami: another phone dials *8; the dial is moved from the rung phone to it."""
        pbx = self.pbx
        picker = ring.picker
        assert picker is not None and ring.phone is not None
        m2, rung = ring.m2, ring.phone
        self._auth(picker.ext)
        pb = pbx.pjsip(picker.ext, "phones", "*8", state=4, cid_num=picker.ext, cid_name=picker.name)
        _mark_dialled_in(pb)
        pbx.newchannel(pb)
        pbx.varset(pb, "SIPDOMAIN", TRUNK_IP)
        pb.set(cl_num=rung.cl_num, cl_name=rung.cl_name)
        pbx.newconnectedline(pb)
        pbx.newstate(pb, 6)
        pbx.devstate(pb.dev)
        emit_member_status(pbx, picker, 2)
        pbx.dial_end(m2, rung, "CANCEL", rung.render("Dest", cid_num=picker.ext, cid_name=picker.name, exten="*8"))
        pbx.dial_begin(m2, pb, ring.op.ext)
        pbx.newexten(pb, 1, "AppDial", "(Outgoing Line)", context="phones", exten=ring.op.ext)
        pbx.emit("Pickup", f"{pb.render(exten='*8')}{rung.render('Target')}")
        rung.set(exten="*8")  # the picked channel is swapped with the picking one
        m2.set(cl_num=picker.ext, cl_name=picker.name)
        ring.m1.set(cid_num=picker.ext, cid_name=picker.name)
        pbx.newconnectedline(m2)
        self._dial_answered(m2, pb, ring.op.ext)
        pbx.newstate(m2, 6)
        bridge = pbx.bridge()
        pbx.bridge_create(bridge)
        pbx.newexten(pb, 1, "AppDial", "(Outgoing Line)")
        pbx.bridge_enter(bridge, pb)
        ring.bridge = bridge
        pb.set(lid=m2.lid)  # entering the caller's bridge re-homes the picker's Linkedid
        ring.extra["picked"] = True
        self._media(pb, sender=False)
        return pb

    # ---- the caller leaves the queue ----------------------------------------------------------------------
    def _caller_bye(self, qc: Chan, peer: Chan | None = None) -> None:
        """A SIP BYE: RTP statistics, then the hang-up request (with a cause only on channels Asterisk
        dialled; a channel the far end created gets none)."""
        self._qos(qc, peer)
        self.pbx.hangup_request(qc, None if _dialled_in(qc) else 16)

    def abandon(self, call: Call, qc: Chan, queue: QueueRt, entry: Entry, rings: list[Ring]) -> None:
        """outbound_callback.ami (its first call): the caller hangs up while waiting."""
        pbx = self.pbx
        now = pbx.t
        trunk = call.c1
        assert trunk is not None
        if qc is trunk:
            self._caller_bye(qc)
        else:
            self._far_caller_gone(call)
        pbx.moh_stop(qc)
        for r in rings:
            self._drop_ring(qc, r, ("CANCEL", "CANCEL"), 0)
        self._abandon_queue(qc, queue, entry, now)
        if qc is trunk:
            pbx.hangup(qc, 0)
            pbx.devstate("PJSIP/carrier")
        else:
            self._transferee_gone(call, qc)

    def timeout(self, call: Call, qc: Chan, queue: QueueRt, entry: Entry, rings: list[Ring], ring_ms: int) -> None:
        """queue_timeout.ami's sequence with the trunk caller: Queue() gives up, the dialplan hangs up."""
        pbx = self.pbx
        now = pbx.t
        for r in rings:
            self.ring_no_answer(call, qc, queue, r, ring_ms)
        pos = self._queue_timed_out(qc, queue, entry, now)
        pbx.moh_stop(qc)
        queue_leave(self.sim, qc, queue, entry)
        pbx.varset(qc, "QUEUEPOSITION", str(pos))
        self._queue_result(qc, "TIMEOUT")
        self._dialplan_hangup(call, qc)

    def _dialplan_hangup(self, call: Call, qc: Chan) -> None:
        pbx = self.pbx
        pbx.soft_hangup_request(qc, 16)
        if qc is call.c1:
            self._qos(qc)
            pbx.hangup(qc, 16)
            pbx.devstate("PJSIP/carrier")
            self.sim.end_call(call)
        else:
            self._transferee_gone(call, qc)

    def key_exit(self, call: Call, qc: Chan, queue: QueueRt, entry: Entry, rings: list[Ring]) -> Any:
        """exit_with_key.ami: the caller presses 1: only QueueCallerLeave; voicemail; hang-up."""
        pbx, sim = self.pbx, self.sim
        pbx.dtmf(qc, "1", "begin")
        yield 0.139
        pbx.dtmf(qc, "1", "end", 280)
        old = {"context": qc.context, "exten": qc.exten, "prio": qc.prio}
        qc.set(context=f"{queue.name}-exit", exten="1", prio=0)
        for r in rings:
            self._drop_ring(qc, r, ("CANCEL", "CANCEL"), 0)
        stale = qc.render(**old)
        for var, value in queue_wait(qc, entry, pbx.t)[1]:
            pbx.emit("VarSet", f"{stale}Variable: {var}\r\nValue: {value}\r\n")
        pbx.newexten(qc, 0, "Queue", f"{queue.name},tT,,,{queue.spec.max_wait}")
        pbx.moh_stop(qc)
        queue_leave(sim, qc, queue, entry)
        t = call.truth
        t.waits[-1] = t.last_wait = (pbx.t - entry.joined) / US  # the visit ends with QueueCallerLeave
        pbx.varset(qc, "QUEUEPOSITION", str(entry.orig_pos))
        pbx.newexten(qc, 1, "NoOp", f"caller left queue {queue.name} to voicemail")
        pbx.newexten(qc, 2, "VoiceMail", "100@default,s")
        yield call.script.voicemail if call.script is not None else sim.rng.uniform(6.0, 30.0)
        self._qos(qc)
        pbx.hangup_request(qc)
        msg = self.voicemails
        self.voicemails += 1
        pbx.varset(qc, "VM_MESSAGEFILE", f"/var/spool/asterisk/voicemail/default/100/INBOX/msg{msg:04d}")
        pbx.emit("MessageWaiting", f"{qc.block()}Mailbox: 100@default\r\nWaiting: 1\r\nNew: {msg + 1}\r\nOld: 0\r\n")
        pbx.devstate("MWI:100@default", "INUSE")
        pbx.varset(qc, "VMSTATUS", "SUCCESS")
        pbx.soft_hangup_request(qc, 16)
        pbx.hangup(qc, 0)
        pbx.devstate("PJSIP/carrier")
        sim.end_call(call)

    # ---- the conversation ---------------------------------------------------------------------------------
    def conversation(self, call: Call, qc: Chan, talk: Talk, plan: Plan) -> Any:
        sim = self.sim
        sim.part_done(call)
        if plan.end == "transfer":
            yield max(1.0, sim.talk_time(plan, talk.talker))
            target = plan.target
            assert target is not None
            reserved = sim.reserve_consult(target) if plan.kind == "attended" and not call.attended else []
            if reserved:
                return (yield from self._refer_attended(call, talk, target, plan, reserved))
            if plan.method == "ami":
                return self._blind_ami(call, qc, talk, target)
            return self._refer_blind(call, talk, target)
        return (yield from self._talk_ends(call, plan, talk.talker))

    def _talk_ends(self, call: Call, plan: Plan, talker: OperatorRt) -> Any:
        """The talk goes on to its planned end: the caller's BYE, or the phone's."""
        yield max(0.5, self.sim.talk_time(plan, talker))
        if plan.end == "caller":
            self._caller_hangs_up(call)
        else:
            self._phone_hangs_up(call)
        return None

    # ---- hang-ups: the chain, hop by hop ------------------------------------------------------------------
    def _phone_hangs_up(self, call: Call) -> None:
        """sip_blind_refer.ami / sip_attended_refer.ami / call_pickup.ami: the talking phone's BYE."""
        call.truth.kind("operator_hung_up")
        pbx = self.pbx
        last = call.chain[-1]
        phone, peer = last.b, last.a
        self._qos(phone, peer)
        self._late_callerid(peer)
        pbx.hangup_request(phone, None if _dialled_in(phone) else 16)
        self._up(call, len(call.chain) - 1)

    def _up(self, call: Call, i: int) -> None:
        """Hop ``i``'s operator side (``b``) is going: take its caller side down and go on upwards."""
        pbx = self.pbx
        hop = call.chain[i]
        a, b = hop.a, hop.b
        if hop.kind == "dial":
            assert hop.bridge is not None
            self._bridge_ends(hop.bridge, b, a)
            self._dial_ended(a, hop.since)
            if b.up:
                pbx.hangup(b, 16)
                pbx.devstate(b.dev) if b.tech == "PJSIP" else None
            self._up_from(call, i)
        elif hop.kind == "plain":
            assert hop.bridge is not None
            self._clear_peers(b, a)
            self._bridge_left(hop.bridge, b, a)
            self._dial_ended(a, hop.since)
            self._up_from(call, i)
        elif hop.kind == "queue":
            talk = hop.talk
            assert hop.bridge is not None and talk is not None
            if not talk.ring.extra.get("completed"):
                self._agent_complete(a, talk, "agent")
            self._clear_peer(b, a)
            self._late_callerid(b)
            self._clear_peer(a, b)
            pbx.bridge_leave(hop.bridge, b)
            pbx.bridge_leave(hop.bridge, a)
            pbx.bridge_destroy(hop.bridge)
            pbx.varsets(a, dial_times(pbx.t, a, hop.since))
            pbx.soft_hangup_request(a, 16)
            if b.up:
                pbx.hangup(b, 16)
            pbx.devstate(f"Local/{talk.ring.op.ext}@agents")
            self._up_from(call, i)

    def _up_from(self, call: Call, i: int) -> None:
        """Hop ``i``'s caller side was asked to go: its Local partner, or the trunk channel."""
        pbx = self.pbx
        a = call.chain[i].a
        if i == 0:
            if a.up:
                self._qos(a)
                pbx.hangup(a, 16)
                pbx.devstate(a.dev)
            self._chain_done(call)
            return
        prev = call.chain[i - 1]
        if prev.kind == "local":  # a is the ;2 of prev: its ;1 is asked to go
            self._dialled_two_ends(prev.a, a)
            pbx.devstate(a.dev)
            self._up(call, i - 2)
        else:
            self._up(call, i - 1)

    def _caller_hangs_up(self, call: Call) -> None:
        """The trunk caller's BYE during the talk: the chain goes down towards the phone."""
        call.truth.kind("caller_hung_up")
        first = call.chain[0]
        self._caller_bye(first.a, first.b)
        self._down(call, 0)

    def _down(self, call: Call, i: int) -> None:
        """Hop ``i``'s caller side (``a``) is going: take its operator side down, and on downwards."""
        pbx = self.pbx
        if i >= len(call.chain):
            self._chain_done(call)
            return
        hop = call.chain[i]
        a, b = hop.a, hop.b
        if hop.kind in ("queue", "plain"):
            self._bridged_caller_goes(hop)
            self._down_from(call, i)
        elif hop.kind == "dial":
            assert hop.bridge is not None
            self._bridge_ends(hop.bridge, a, b)
            self._dial_ended(a, hop.since)
            if a.up:
                pbx.hangup(a, 16)
            if b.up:
                self._qos(b)
                pbx.hangup(b, 16)
                pbx.devstate(b.dev)
            self._chain_done(call)

    def _bridged_caller_goes(self, hop: Hop, *, pvt: bool = True) -> None:
        """A queue or plain hop's caller side (``a``) goes: the bridge breaks up (``pvt``: see
        :meth:`_bridge_ends`), AgentComplete on a queue bridge (unless told already), ``a`` hangs up."""
        pbx = self.pbx
        a = hop.a
        assert hop.bridge is not None
        self._bridge_ends(hop.bridge, a, hop.b, pvt=pvt)
        if hop.kind == "queue":
            pbx.varsets(a, dial_times(pbx.t, a, hop.since))
        pbx.soft_hangup_request(a, 16)
        if hop.kind == "queue" and hop.talk is not None and not hop.talk.ring.extra.get("completed"):
            self._agent_complete(a, hop.talk, "caller")
        if a.up:
            pbx.hangup(a, 16)
            if a.tech == "PJSIP":
                pbx.devstate(a.dev)

    def _down_from(self, call: Call, i: int) -> None:
        """Hop ``i``'s operator side (a Local ;1) is hung up by its bridge: its ;2 is asked to go."""
        pbx = self.pbx
        b = call.chain[i].b
        nxt = call.chain[i + 1] if i + 1 < len(call.chain) else None
        if nxt is not None and nxt.kind == "local":
            two = nxt.b
            pbx.hangup_request(two, 16)
            if b.up:
                pbx.hangup(b, 16)
            pbx.devstate(b.dev)
            talk = call.chain[i].talk
            if talk is not None:
                self._member_done(talk)
            self._down(call, i + 2)
        else:
            if b.up:
                pbx.hangup(b, 16)
            self._chain_done(call)

    def _agent_complete(self, qc: Chan, talk: Talk, reason: str, *, free: bool = True) -> None:
        """AgentComplete (told once), and the talking operator is free again unless ``free`` is False."""
        talk.ring.extra["completed"] = True
        self._agent_complete_event(qc, talk, reason, talk.ring.m1)
        if free:
            self._member_done(talk)

    def _chain_done(self, call: Call) -> None:
        for hop in call.chain:
            if hop.talk is not None:
                self._member_done(hop.talk)
        call.chain = []
        self.sim.end_call(call)

    def _far_caller_gone(self, call: Call) -> None:
        """The trunk caller hangs up while a transferred leg (a Local ;2) waits in a queue: the chain down
        to that leg goes first."""
        first = call.chain[0]
        self._caller_bye(first.a, first.b)
        pbx = self.pbx
        i = 0
        while i < len(call.chain):
            hop = call.chain[i]
            if hop.kind in ("queue", "plain"):
                # as in _down, but BRIDGEPVTCALLID is not emptied on the member's ;1 (as ever; no capture
                # shows this case)
                self._bridged_caller_goes(hop, pvt=False)
                b = hop.b
                pbx.hangup_request(call.chain[i + 1].b, 16)
                pbx.hangup(b, 16)
                pbx.devstate(b.dev)
                i += 2
            else:
                i += 1
        call.chain = []

    def _transferee_gone(self, call: Call, qc: Chan) -> None:
        """The transferred leg (a Local ;2 waiting in a queue) hangs up.  After the caller's BYE (the chain
        is already gone) only the leg remains; after the dialplan's Hangup() (a timeout) the chain goes
        up from the leg to the caller's trunk channel."""
        pbx = self.pbx
        if not call.chain:
            pbx.hangup(qc, 16)
            pbx.devstate(qc.dev)
            self.sim.end_call(call)
            return
        self._dialled_two_ends(call.chain[-1].a, qc)
        pbx.devstate(qc.dev)
        self._up(call, len(call.chain) - 2)

    def _late_callerid(self, ch: Chan) -> None:
        """A Local half shows its partner's connected line as caller id (late, as Asterisk does)."""
        if ch.pair is not None and ch.cid_num != ch.pair.cl_num:
            ch.set(cid_num=ch.pair.cl_num, cid_name=ch.pair.cl_name)
            self.pbx.newcallerid(ch)

    # ---- transfers ------------------------------------------------------------------------------------------
    def _target_exten(self, target: QueueRt) -> str:
        return target.spec.did or target.name

    def _refer_blind(self, call: Call, talk: Talk, target: QueueRt) -> tuple[Chan, QueueRt]:
        """sip_blind_refer.ami: the phone REFERs its peer (the Local ;2 half) to the target's number; that
        half runs the dialplan into the next queue.  The first visit stays open until the call ends."""
        pbx = self.pbx
        ring = talk.ring
        m2 = ring.m2
        phone = ring.phone
        pb = ring.bridge
        assert phone is not None and pb is not None
        op = talk.talker
        exten = self._target_exten(target)
        pbx.unhold(phone)
        pbx.varset(phone, "BLINDTRANSFER", m2.name)
        pbx.varset(m2, "BLINDTRANSFER", phone.name)
        pbx.varset(m2, "SIPTRANSFER", "yes")
        pbx.varset(phone, "BRIDGEPEER", m2.name)
        self._peer_vars(m2, phone)
        pbx.varset(m2, "SIPREFERRINGCONTEXT", "phones")
        pbx.varset(m2, "__SIPREFERREDBYHDR", f"<sip:{op.ext}@{TRUNK_IP};ob>")
        _inherit(m2, "__SIPREFERREDBYHDR", f"<sip:{op.ext}@{TRUNK_IP};ob>")
        pbx.varset(m2, "SIPREFERTOHDR", f"sip:{exten}@{TRUNK_IP}:5060")
        pbx.varset(phone, "BRIDGEPEER", "")
        pbx.emit("BlindTransfer", f"Result: Success\r\n{phone.block('Transferer')}{m2.block('Transferee')}"
                                  f"{pb.block()}IsExternal: Yes\r\nContext: phones\r\nExtension: {exten}\r\n")
        pbx.bridge_leave(pb, phone)
        self._clear_peer(m2, phone)
        pbx.newexten(m2, 1, "Dial", f"PJSIP/{ring.op.ext},,", context="phones", exten=exten)
        pbx.bridge_leave(pb, m2)
        self._qos(phone)
        pbx.bridge_destroy(pb)
        pbx.varset(m2, "DIALSTATUS", "ANSWER")
        pbx.newexten(m2, 1, "NoOp", f"inbound call for queue {target.name}", context="inbound", exten=target.name)
        pbx.newexten(m2, 2, "Answer", "")
        call.chain.pop()  # the dial hop to the phone is gone; the Local pair now leads into the next queue
        talk.ring.extra["transferred"] = True
        count_transfer(call, "blind", "refer_blind")
        self.sim.kernel.spawn(self._after_refer(phone, talk), 0.0, name="refer-end")
        return m2, target

    def _after_refer(self, phone: Chan, talk: Talk) -> Any:
        """Right after the next queue took the transferred leg: the transferring phone hangs up and its
        operator is free (done already when the leg went at once, e.g. refused, and took the chain down)."""
        yield 0.0
        pbx = self.pbx
        if phone.up:
            pbx.hangup(phone, 16)
            pbx.devstate(phone.dev)
        self._member_done(talk, count=True)

    def _blind_ami(self, call: Call, qc: Chan, talk: Talk, target: QueueRt) -> tuple[Chan, QueueRt]:
        """The AMI BlindTransfer action on the member's ;1 (as in blind_transfer.ami), with the trunk caller:
        the caller goes to the target queue, the member's Local pair and phone go."""
        pbx = self.pbx
        ring = talk.ring
        m2, phone, pb = ring.m2, ring.phone, ring.bridge
        assert phone is not None and pb is not None
        self._blind_ami_action(qc, talk, target)  # AgentComplete frees the operator
        pbx.devstate(f"Local/{talk.talker.ext}@agents")
        self._blind_ami_requeue(qc, talk, target)
        pbx.bridge_destroy(talk.bridge)
        # the member's ;2 leaves the phone's bridge and hangs up, then the phone
        self._clear_peers(phone, m2)
        pbx.bridge_leave(pb, m2)
        pbx.bridge_leave(pb, phone)
        pbx.bridge_destroy(pb)
        self._dial_ended(m2, talk.connected)
        pbx.hangup(m2, 16)
        self._qos(phone)
        pbx.hangup(phone, 16)
        pbx.devstate(phone.dev)
        del call.chain[-3:]  # the queue hop, the member's Local pair and its phone
        count_transfer(call, "blind", "ami_blind")
        return qc, target

    def _refer_attended(self, call: Call, talk: Talk, target: QueueRt, plan: Plan,
                        reserved: list[OperatorRt]) -> Any:
        """sip_attended_refer.ami: hold, a consultation call from the phone (its own Linkedid) into the
        target queue, then REFER with Replaces: the caller's leg takes the consultation's place."""
        pbx, sim = self.pbx, self.sim
        ring = talk.ring
        m2, phone_a, b0 = ring.m2, ring.phone, ring.bridge
        assert phone_a is not None and b0 is not None
        op = talk.talker
        pbx.hold(phone_a)
        for _ in range(2):
            pbx.varset(phone_a, "BRIDGEPEER", m2.name)
            self._peer_vars(m2, phone_a)
            if _ == 0:
                pbx.moh_start(m2)
        yield plan.hold if plan.hold is not None else sim.rng.uniform(1.5, 3.0)
        exten = self._target_exten(target)
        self._auth(op.ext)
        phone_b = pbx.pjsip(op.ext, "phones", exten, state=4, cid_num=op.ext, cid_name=op.name)
        _mark_dialled_in(phone_b)
        pbx.newchannel(phone_b)
        pbx.varset(phone_b, "SIPDOMAIN", TRUNK_IP)
        if exten != target.name:
            pbx.newexten(phone_b, 1, "Goto", f"inbound,{target.name},1")
        pbx.newexten(phone_b, 1, "NoOp", f"inbound call for queue {target.name}", context="inbound", exten=target.name)
        pbx.newexten(phone_b, 2, "Answer", "")
        pbx.newstate(phone_b, 6)
        self._media(phone_b, sender=False)
        consult = Call(op.ext, op.name, call.truth, 10_000.0, dnid=exten, c1=phone_b, c2=phone_b, created=pbx.t,
                       script=call.script)
        consult_plan = sim.plan(call, target, after_attended=True)
        sim.part_done(call)
        new = yield from queue_visit(sim, consult, phone_b, target, consult_plan, consult=True, truth=call.truth,
                                     reserved=reserved)
        assert new is not None, "a consultation call is answered by a member held for it"
        x1, x2 = new.ring.m1, new.ring.m2
        b3 = new.bridge
        yield sim.consult_talk(plan)
        # REFER with Replaces: the caller's leg (m2) takes the consultation's place in its queue bridge
        transferee = m2.render("Transferee")
        target_old = x1.render("TransferTarget")
        pbx.unhold(phone_a)
        pbx.unhold(phone_b)
        pbx.varset(m2, "ATTENDEDTRANSFER", phone_a.name)
        pbx.varset(phone_a, "ATTENDEDTRANSFER", m2.name)
        pbx.bridge_leave(b0, m2)
        pbx.varset(phone_b, "BRIDGEPEER", "")
        pbx.bridge_leave(b3, phone_b)
        pbx.moh_stop(m2)
        pbx.bridge_enter(b3, m2, swap=phone_b)
        pbx.varset(m2, "ATTENDEDTRANSFER", "")
        x1.set(lid=m2.lid)  # in the caller's bridge now: the target's ;1 takes the caller's Linkedid
        pbx.varset(x1, "BRIDGEPEER", m2.name)
        pbx.varset(x1, "BRIDGEPVTCALLID", "")
        pbx.varset(m2, "BRIDGEPEER", x1.name)
        pbx.varset(m2, "BRIDGEPVTCALLID", "")
        pbx.varset(phone_a, "BRIDGEPEER", "")
        x1.set(cl_num=call.number, cl_name=call.name)
        pbx.newconnectedline(x1)
        pbx.varsets(phone_b, dial_times(pbx.t, phone_b, new.connected))
        pbx.soft_hangup_request(phone_b, 16)
        m2.set(cl_num=new.talker.ext, cl_name=new.talker.name)
        pbx.newconnectedline(m2)
        # the consultation's member goes on talking, with the caller now: not free (no QueueMemberStatus)
        self._agent_complete(phone_b, new, "caller", free=False)
        pbx.soft_hangup_request(phone_b, 1)
        pbx.bridge_leave(b0, phone_a)
        pbx.emit("AttendedTransfer",
                 f"Result: Success\r\n{phone_a.block('OrigTransferer')}{b0.block('Orig', 2)}"
                 f"{phone_b.block('SecondTransferer')}{b3.block('Second', 2)}{transferee}"
                 f"{target_old}IsExternal: No\r\nDestType: Bridge\r\nDestBridgeUniqueid: {b3.id}\r\n")
        self._qos(phone_b)
        pbx.bridge_destroy(b0)
        trunk = call.c1
        assert trunk is not None
        trunk.set(cl_num=new.talker.ext, cl_name=new.talker.name)
        pbx.newconnectedline(trunk)
        self._qos(phone_a)
        pbx.hangup(phone_a, 16)
        xphone = new.ring.phone
        assert xphone is not None
        xphone.set(cl_num=call.number, cl_name=call.name)
        pbx.newconnectedline(xphone)
        pbx.hangup(phone_b, 16)
        pbx.devstate(phone_a.dev)
        self._member_done(talk, count=True)
        # the chain: trunk -Q- m1 = m2 -plain(b3)- x1 = x2 -dial- phone of the new operator
        call.chain[-1:] = [Hop("plain", m2, x1, b3, new, call.chain[-1].since), Hop("local", x1, x2),
                           Hop("dial", x2, xphone, new.ring.bridge, None, new.connected)]
        count_transfer(call, "attended", "refer_attended")
        return (yield from self._talk_ends(call, consult_plan, new.talker))

    # ---- a direct call to an extension ----------------------------------------------------------------------
    def direct_call(self, call: Call, op: OperatorRt) -> Any:
        """The trunk dials an operator's extension: [inbound] _X. Dial(Local/EXT@agents/n,20,tT)."""
        pbx, sim = self.pbx, self.sim
        ext = op.ext
        trunk = self._trunk_in(call, ext)
        d1, d2 = self._direct_dial(call, trunk, ext)
        pbx.dial_begin(trunk, d1, f"{ext}@agents/n")
        self._dial_phone(d2, ext)
        sim.set_busy(op, True)
        update_avail(pbx, op)
        phone = self._phone_rung(d2, op)
        pbx.dial_begin(d2, phone, ext)
        d2.set(cl_num=ext, cl_name=op.name)
        pbx.newconnectedline(d2)
        answer_after, _talk = sim.decide_direct(call, op)
        wait, gave_up = self._direct_ring(answer_after, call.patience)
        yield wait
        if gave_up is not None:
            self._direct_unanswered(call, trunk, d1, d2, phone, op, gave_up)
            return None
        pbx.newstate(phone, 6)
        pbx.devstate(phone.dev)
        emit_member_status(pbx, op, 2)
        self._dial_answered(d2, phone, ext)
        pbx.newstate(d2, 6)
        pbx.newstate(d1, 6)
        self._dial_answered(trunk, d1, f"{ext}@agents/n")
        pbx.newstate(trunk, 6)
        pbx.devstate(trunk.dev)
        b1 = pbx.bridge()
        pbx.bridge_create(b1)
        pbx.bridge_enter(b1, d1)
        pbx.bridge_enter(b1, trunk)
        pbx.varset(d1, "BRIDGEPEER", trunk.name)
        pbx.varset(d1, "BRIDGEPVTCALLID", self._callid(trunk))
        pbx.varset(trunk, "BRIDGEPEER", d1.name)
        b2 = pbx.bridge()
        pbx.bridge_create(b2)
        pbx.newexten(phone, 1, "AppDial", "(Outgoing Line)")
        pbx.bridge_enter(b2, phone)
        pbx.bridge_enter(b2, d2)
        pbx.varset(phone, "BRIDGEPEER", d2.name)
        self._peer_vars(d2, phone)
        self._media(trunk, sender=True)
        self._media(phone, sender=False)
        now = pbx.t
        call.chain = [Hop("dialq", trunk, d1, b1, None, now), Hop("local", d1, d2),
                      Hop("dial", d2, phone, b2, None, now)]
        plan = self._direct_answered(call, ext)
        sim.part_done(call)
        yield max(0.5, sim.talk_time(plan, op))
        # either end: the chain's first hop is a dial bridge (the trunk ran Dial())
        call.chain[0].kind = "dial1"
        if plan.end == "caller":
            self._direct_down(call, trunk, d1, d2, phone, b1, b2, now)
        else:
            self._qos(phone, d2)
            pbx.hangup_request(phone, 16)
            self._direct_up(call, trunk, d1, d2, phone, b1, b2, now)
        self._free(op)
        sim.end_call(call)
        return None

    def _free(self, op: OperatorRt) -> None:
        """``op``'s own call (no queue's) ended: LastCall, and free again."""
        op.calls_taken_in(self.pbx.t)
        self._member_free(op)

    def _direct_up(self, call: Call, trunk: Chan, d1: Chan, d2: Chan, phone: Chan, b1: Bridge, b2: Bridge,
                   since: int) -> None:
        call.truth.kind("operator_hung_up")
        pbx = self.pbx
        self._bridge_ends(b2, phone, d2)
        self._dial_ended(d2, since)
        pbx.hangup(phone, 16)
        self._dialled_two_ends(d1, d2)
        pbx.devstate(phone.dev)
        self._bridge_ends(b1, d1, trunk)
        pbx.hangup(d1, 16)
        pbx.devstate(d1.dev)
        self._dial_ended(trunk, since)
        self._qos(trunk)
        pbx.hangup(trunk, 16)
        pbx.devstate(trunk.dev)

    def _direct_down(self, call: Call, trunk: Chan, d1: Chan, d2: Chan, phone: Chan, b1: Bridge, b2: Bridge,
                     since: int) -> None:
        call.truth.kind("caller_hung_up")
        pbx = self.pbx
        self._caller_bye(trunk, d1)
        self._bridge_ends(b1, trunk, d1)
        self._dial_ended(trunk, since)
        pbx.hangup(trunk, 16)
        pbx.devstate(trunk.dev)
        pbx.hangup_request(d2, 16)
        pbx.hangup(d1, 16)
        pbx.devstate(d1.dev)
        self._bridge_ends(b2, d2, phone)
        self._dial_ended(d2, since)
        pbx.hangup(d2, 16)
        self._qos(phone)
        pbx.hangup(phone, 16)
        pbx.devstate(phone.dev)

    def _direct_unanswered(self, call: Call, trunk: Chan, d1: Chan, d2: Chan, phone: Chan, op: OperatorRt,
                           gave_up: bool) -> None:
        pbx = self.pbx
        if gave_up:
            self._caller_bye(trunk)
            pbx.dial_end(trunk, d1, "CANCEL")
        else:
            pbx.dial_end(trunk, d1, "NOANSWER")
        pbx.hangup_request(d2, 0)
        pbx.dial_end(d2, phone, "CANCEL")
        pbx.varset(d2, "DIALSTATUS", "CANCEL")
        pbx.hangup(d1, 0)
        pbx.soft_hangup_request(d2, 16)
        pbx.hangup(d2, 0)
        pbx.devstate(d1.dev)
        pbx.hangup(phone, 16)
        status = "CANCEL" if gave_up else "NOANSWER"
        pbx.varsets(trunk, (("DIALSTATUS", status), *dial_times(pbx.t, trunk, pbx.t)[2:]))
        if not gave_up:
            pbx.newexten(trunk, 3, "Hangup", "")
        pbx.soft_hangup_request(trunk, 16)
        if not gave_up:
            self._qos(trunk)
        pbx.hangup(trunk, 0 if gave_up else 16)
        pbx.devstate(trunk.dev)
        self.sim.set_busy(op, False)
        update_avail(pbx, op)
        self._direct_unanswered_end(call)

    # ---- an operator calling out (outbound_callback.ami, outbound_callback_unanswered.ami) --------------------
    def outbound_call(self, op: OperatorRt, number: str, answered: bool, truth: Any, script: Any = None) -> Any:
        pbx, sim = self.pbx, self.sim
        self._auth(op.ext)
        phone = pbx.pjsip(op.ext, "phones", number, state=4, cid_num=op.ext, cid_name=op.name)
        _mark_dialled_in(phone)
        truth.call_id = phone.uid
        truth.started_at = pbx.now
        truth.dialled_by = op.name
        truth.kind("outbound")
        pbx.newchannel(phone)
        pbx.varset(phone, "SIPDOMAIN", TRUNK_IP)
        pbx.newexten(phone, 1, "NoOp", f"outbound call from {op.ext} to {number}")
        pbx.newexten(phone, 2, "Dial", f"PJSIP/{number}@carrier,40")
        pbx.varsets(phone, DIAL_VARS_EMPTY)
        trunk = pbx.pjsip("carrier", "inbound", "s", lid=phone.lid)
        pbx.newchannel(trunk)
        pbx.varset(trunk, "DIALEDPEERNUMBER", f"{number}@carrier")
        trunk.set(cid_num=number, cl_num=op.ext, cl_name=op.name, exten=number)
        pbx.newexten(trunk, 1, "AppDial", "(Outgoing Line)")
        pbx.newcallerid(trunk)
        pbx.newconnectedline(trunk)
        pbx.dial_begin(phone, trunk, f"{number}@carrier")
        phone.set(cl_num=number)
        pbx.newconnectedline(phone)
        pbx.newstate(trunk, 5)
        pbx.varsets(phone, (("RINGTIME", "0"), ("RINGTIME_MS", "2")))
        pbx.dial_state(phone, trunk)
        pbx.devstate("PJSIP/carrier", "INUSE" if pbx.devices.get("PJSIP/carrier") else "RINGING")
        emit_member_status(pbx, op, 2)
        pbx.devstate(phone.dev, "INUSE")
        if script is not None:
            ring_for = script.callback[2]
            talk_for = script.parts[0].talk if script.parts else 5.0
        else:
            ring_for = sim.rng.uniform(3.0, 12.0) if answered else sim.rng.uniform(15.0, 30.0)
            talk_for = sim.operator_talk(op)
        yield ring_for
        if not answered:
            pbx.hangup_request(phone, 127, 487)
            pbx.dial_end(phone, trunk, "CANCEL")
            pbx.varset(phone, "DIALSTATUS", "CANCEL")
            pbx.soft_hangup_request(phone, 16, 487)
            pbx.hangup(trunk, 127, 500)
            pbx.devstate("PJSIP/carrier")
            pbx.hangup(phone, 127, 487)
            self._free(op)
            truth.outcome = "unanswered"
            truth.kind("unanswered")
            sim.book.end(truth, pbx.now)
            return None
        pbx.newstate(trunk, 6)
        self._dial_answered(phone, trunk, f"{number}@carrier")
        pbx.newstate(phone, 6)
        pbx.devstate("PJSIP/carrier")
        b = pbx.bridge()
        pbx.bridge_create(b)
        pbx.newexten(trunk, 1, "AppDial", "(Outgoing Line)")
        pbx.bridge_enter(b, trunk)
        pbx.bridge_enter(b, phone)
        for _ in range(2):
            self._peer_vars(trunk, phone)
            self._peer_vars(phone, trunk)
        since = pbx.t
        truth.outcome = "answered"
        truth.operators.append(op.name)
        truth.kind("answered")
        sim.book.answered(number, pbx.now, "call_back")
        self._media(trunk, sender=True)
        self._media(phone, sender=False)
        yield max(1.0, talk_for)
        # the callee hangs up
        self._qos(trunk, phone)
        pbx.hangup_request(trunk, 16)
        self._clear_peers(trunk, phone)
        pbx.bridge_leave(b, trunk)
        pbx.bridge_leave(b, phone)
        self._dial_ended(phone, since)  # the bridge is destroyed only once the phone is gone
        self._qos(phone)
        pbx.hangup(phone, 16)
        pbx.bridge_destroy(b)
        pbx.devstate(phone.dev)
        self._free(op)
        pbx.hangup(trunk, 16)
        pbx.devstate("PJSIP/carrier")
        sim.book.end(truth, pbx.now)
        return None


def _mark_dialled_in(ch: Chan) -> None:
    """``ch`` was created by an INVITE from outside (not dialled by Asterisk)."""
    if ch.vars is None:
        ch.vars = {}
    ch.vars["in"] = "1"


def _dialled_in(ch: Chan) -> bool:
    return bool(ch.vars and ch.vars.get("in"))


def _inherited(ch: Chan) -> list[tuple[str, str]]:
    """The ``__`` variables a channel passes on to the channels it dials."""
    if not ch.vars:
        return []
    out: list[tuple[str, str]] = ch.vars.get("inherit", [])
    return out


def _inherit(ch: Chan, name: str, value: str) -> None:
    if ch.vars is None:
        ch.vars = {}
    ch.vars.setdefault("inherit", []).append((name, value))


def _tv(t: int) -> str:
    import datetime as _dt
    d = _dt.datetime.fromtimestamp(t / US, tz=_dt.UTC)
    return d.strftime("%Y-%m-%dT%H:%M:%S.") + f"{(t // 1000) % 1000:03d}+0000"
