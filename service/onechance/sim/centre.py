"""The simulated call centre: arrivals, callers, operators and the stream of AMI messages.

:class:`Centre` wires a :class:`~.model.SimConfig` into a running simulation: one :class:`~.channels.Pbx`
(ids, clock, output), the discrete-event :class:`~.kernel.Kernel`, the queues and operators
(:mod:`.queues`), the PBX style (:mod:`.local` or :mod:`.sip`) and the :class:`~.truth.TruthBook`.
Calls arrive by a non-homogeneous Poisson process following the configured rate profile (thinning);
each call draws its caller (from the caller pool), its patience and its behaviour; everything random
comes from one ``random.Random(seed)``, so the same seed and start time give the same bytes.

Use :meth:`Centre.messages` for an endless stream (an iterator of ``bytes``, one AMI message each, with
its terminating blank line), or :meth:`Centre.run` for a bounded run.  :attr:`Centre.truths` holds every
call's :class:`~.truth.CallTruth` in start order (``recovered`` may still turn true after a call ended,
when the caller is answered later).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any

from .channels import Pbx
from .kernel import US, Kernel
from .model import SimConfig, make_person
from .queues import OperatorRt, QueueRt, emit_member_status, update_avail, wake_waiting
from .scenarios import Call, Plan, Ring, direct_call, inbound_call, outbound_call
from .script import ScriptedCall
from .truth import CallTruth, TruthBook

__all__ = ["BANNER", "Centre"]

BANNER = b"Asterisk Call Manager/11.0.0\r\n"


class Centre:
    """One simulated PBX and its callers."""

    def __init__(self, config: SimConfig, pbx_name: str = "", script: list[ScriptedCall] | None = None, *,
                 keep_truths: bool = True) -> None:
        self.cfg = config.validate()
        self.rng = random.Random(config.seed)
        self.pbx = Pbx(random.Random(config.seed * 7919 + 1), config.start, config.system_name)
        self.kernel = Kernel(self.pbx.t, self.pbx.at)
        self._idle_wait: dict[str, OperatorRt] = {}  # device -> operator freed once it is idle
        self.pbx.on_idle = self._device_idle
        self.book = TruthBook(pbx_name)
        self.truths: list[CallTruth] = []  # every call's truth, in start order (unless keep_truths is False)
        self.keep_truths = keep_truths
        self.drv = 22  # the driver's ActionID counter (local style OriginateResponse)
        login = int(config.start - config.uptime)
        self.ops: dict[str, OperatorRt] = {o.ext: OperatorRt(o, config.style, login) for o in config.operators}
        self.queues: dict[str, QueueRt] = {}
        for spec in config.queues:
            q = QueueRt(spec)
            for ext in spec.members:
                op = self.ops[ext]
                q.members.append(op)
                op.queues.append(q)
            # Queue:<name>_avail changes are told from the known state (unknown on a fresh PBX)
            q.avail = None if config.fresh else bool(q.members)
            self.queues[spec.name] = q
        self._qnames = [q.name for q in config.queues if q.weight > 0 and (q.members or not q.joinempty)]
        self._qweights = [self.queues[n].spec.weight for n in self._qnames]
        self._refusing = [q.name for q in config.queues if not q.joinempty and not q.members]
        self._people: dict[int, tuple[str, str]] = {}
        self._busy_people: set[int] = set()
        self.calls_started = 0
        self.max_calls: int | None = None
        if config.style == "sip":
            from .sip import SipStyle
            self.style: Any = SipStyle(self)
        else:
            from .local import LocalStyle
            self.style = LocalStyle(self)
        if script is None:
            self.kernel.spawn(self._arrivals(), name="arrivals")
        else:
            self.kernel.spawn(self._script(sorted(script, key=lambda s: s.at)), name="script")

    @property
    def live_calls(self) -> int:
        """Calls in progress now (inbound and outbound)."""
        return self.book.live

    def _keep(self, truth: CallTruth) -> None:
        if self.keep_truths:
            self.truths.append(truth)

    # ---- the stream --------------------------------------------------------------------------------------
    def messages(self) -> Iterator[bytes]:
        """Every AMI message, endlessly, in time order (each with its ``\\r\\n\\r\\n``)."""
        step = self.kernel.step
        take = self.pbx.take
        while step():
            yield from take()

    def chunks(self) -> Iterator[bytes]:
        """The stream in chunks of whole messages (faster than :meth:`messages`)."""
        step = self.kernel.step
        pbx = self.pbx
        while True:
            for _ in range(64):
                if not step():
                    break
            if pbx.out:
                yield b"".join(pbx.take())
            elif self.kernel.next_time is None:
                return

    def run(self, calls: int | None = None, seconds: float | None = None) -> bytes:
        """A bounded run: ``calls`` calls arrive (or arrivals stop after ``seconds``), then every call is
        played to its end.  Returns the stream (no banner)."""
        if calls is None and seconds is None:
            raise ValueError("run() needs calls or seconds")
        self.max_calls = calls
        end = self.kernel.now + int(seconds * US) if seconds is not None else None
        out: list[bytes] = []
        step = self.kernel.step
        pbx = self.pbx
        while True:
            if end is not None and self.kernel.next_time is not None and self.kernel.next_time > end:
                self.max_calls = self.calls_started
            if not step():
                break
            if pbx.out:
                out.extend(pbx.take())
        return b"".join(out)

    # ---- arrivals ---------------------------------------------------------------------------------------
    def _arrivals(self) -> Any:
        rate = self.cfg.rate
        peak = rate.peak
        rng = self.rng
        while True:
            if self.max_calls is not None and self.calls_started >= self.max_calls:
                return
            yield rng.expovariate(peak)
            if self.max_calls is not None and self.calls_started >= self.max_calls:
                return
            if rng.random() * peak > rate.rate_at(self.kernel.now / US):
                continue
            self.start_call()

    def _script(self, script: list[ScriptedCall]) -> Any:
        start = self.kernel.now
        for sc in script:
            due = start + int(sc.at * US)
            if due > self.kernel.now:
                yield (due - self.kernel.now) / US
            self.start_scripted(sc)

    def start_scripted(self, sc: ScriptedCall) -> None:
        for qname, ext in sc.rr_after.items():
            q = self.queues[qname]
            q.rr = [m.ext for m in q.members].index(ext)
        self.calls_started += 1
        if sc.callback is not None:
            op = self.ops[sc.callback[0]]
            self.set_busy(op, True)
            truth = self.book.new("", op.ext, op.name, self.kernel.now / US, direction="outbound", callee=sc.number)
            self._keep(truth)
            self.kernel.spawn(outbound_call(self, op, sc.number, sc.callback[1], truth, script=sc), name="outbound")
            return
        truth = self.book.new("", sc.number, sc.name, self.kernel.now / US)
        self._keep(truth)
        call = Call(sc.number, sc.name, truth, sc.patience, key_at=sc.key_at, script=sc)
        if sc.direct:
            self.kernel.spawn(direct_call(self, call, self.ops[sc.direct]), name="direct")
        else:
            self.kernel.spawn(inbound_call(self, call, self.queues[sc.queue]), name="inbound")

    def _person(self) -> tuple[int, str, str]:
        pool = self.cfg.callers
        for _ in range(20):
            i = self.rng.randrange(pool.size)
            if i not in self._busy_people:
                break
        if i not in self._people:
            self._people[i] = make_person(random.Random(self.cfg.seed * 1_000_003 + i), pool, i)
        number, name = self._people[i]
        return i, number, name

    def start_call(self, person: int | None = None, queue: str | None = None, *, kind: str | None = None) -> None:
        """A new inbound call (from the pool, or ``person`` again), now."""
        beh = self.cfg.behaviour
        rng = self.rng
        if person is None:
            person, number, name = self._person()
        else:
            number, name = self._people[person]
        self._busy_people.add(person)
        self.calls_started += 1
        truth = self.book.new("", number, name, self.kernel.now / US)
        self._keep(truth)
        if kind:
            truth.kind(kind)
        call = Call(number, name, truth, beh.draw_patience(rng), person=person)
        free_ops = [o for o in self.ops.values() if not o.busy]
        r = rng.random()
        if queue is None and r < beh.direct and free_ops:
            op = free_ops[rng.randrange(len(free_ops))]
            self.kernel.spawn(direct_call(self, call, op), name="direct")
            return
        if queue is None and r < beh.direct + beh.refused and self._refusing:
            queue = self._refusing[rng.randrange(len(self._refusing))]
        if queue is None:
            queue = rng.choices(self._qnames, self._qweights)[0]
        q = self.queues[queue]
        if q.spec.exit_key and rng.random() < beh.key_exit:
            call.key_at = rng.uniform(4.0, 45.0)
        self.kernel.spawn(inbound_call(self, call, q), name="inbound")

    # ---- decisions ----------------------------------------------------------------------------------------
    def plan(self, call: Call, queue: QueueRt | None, *, after_attended: bool = False) -> Plan:
        """How the next answered part of ``call`` ends."""
        if call.script is not None:
            parts = call.script.parts
            part = parts[call.part] if call.part < len(parts) else None
            if part is None:
                return Plan("operator", talk=10.0)
            target = self.queues[part.target] if part.target else None
            return Plan(part.end, part.kind, part.method, target, part.talk, part.consult_talk, part.hold)
        beh, rng = self.cfg.behaviour, self.rng
        p = beh.second_transfer if call.transfers else beh.transfer
        if queue is not None and not after_attended and not call.attended and call.transfers < 3 \
                and rng.random() < p:
            targets = [n for n in self._qnames if n != queue.name and self.queues[n].members]
            if targets:
                target = self.queues[rng.choice(targets)]
                attended = rng.random() < beh.attended_share
                if self.cfg.style == "local":
                    return Plan("transfer", "attended" if attended else "blind", "feature" if attended else "ami",
                                target)
                method = rng.choices(list(beh.transfer_methods), list(beh.transfer_methods.values()))[0]
                if attended:
                    method = "phone"
                return Plan("transfer", "attended" if attended else "blind", method, target)
        return Plan("caller" if rng.random() < beh.caller_ends else "operator")

    def decide_ring(self, call: Call, op: OperatorRt, queue: QueueRt, plan: Plan,
                    consult: bool) -> tuple[float | None, int]:
        """(seconds before ``op`` answers, or None: lets it ring; TALK the fake agent shows)."""
        rng = self.rng
        talk = 600
        if plan.end == "operator":
            talk = int(plan.talk - 0.5) if plan.talk is not None else max(3, int(self.operator_talk(op)))
        if call.script is not None:
            answers = call.script.rings.get(op.ext)
            return (answers.pop(0) if answers else None), talk
        if consult:
            return float(rng.randint(1, 3)), talk
        if rng.random() < op.spec.no_answer:
            return None, talk
        lo, hi = op.spec.answer_after
        return float(rng.randint(lo, hi)), talk

    def decide_direct(self, call: Call, op: OperatorRt) -> tuple[float | None, int]:
        rng = self.rng
        if call.script is not None:
            answers = call.script.rings.get(op.ext)
            parts = call.script.parts
            talk = int(parts[0].talk - 0.5) if parts else 10
            return (answers.pop(0) if answers else None), talk
        talk = max(3, int(self.operator_talk(op)))
        if rng.random() < op.spec.no_answer:
            return None, talk
        lo, hi = op.spec.answer_after
        return float(rng.randint(lo, hi)), talk

    def maybe_pickup(self, call: Call, rings: list[Ring], ring_len: int) -> None:
        """sip style: another free operator's phone picks one ringing phone up (``*8``)."""
        if call.script is not None:
            if call.script.pickup is not None and not call.pickup_done and rings:
                call.pickup_done = True
                picker = self.ops[call.script.pickup[0]]
                self.set_busy(picker, True)
                rings[0].picker = picker
                rings[0].pick_after = call.script.pickup[1]
            return
        if self.cfg.style != "sip" or not rings or self.rng.random() >= self.cfg.behaviour.pickup:
            return
        ring_s = ring_len / US
        target = rings[0]
        latest = min(ring_s, target.answer_after if target.answer_after is not None else ring_s) - 0.6
        if latest < 1.6:
            return
        rung = {r.op.ext for r in rings}
        free = [o for o in self.ops.values() if not o.busy and o.ext not in rung]
        if not free:
            return
        picker = free[self.rng.randrange(len(free))]
        self.set_busy(picker, True)
        target.picker = picker
        target.pick_after = round(self.rng.uniform(1.5, latest), 3)

    def operator_talk(self, op: OperatorRt) -> float:
        return max(3.0, self.rng.lognormvariate(math.log(op.spec.talk), op.spec.talk_spread))

    def talk_time(self, plan: Plan, op: OperatorRt) -> float:
        """Seconds from the answer until the caller hangs up or the operator transfers."""
        if plan.talk is not None:
            return plan.talk
        if plan.end == "transfer":
            return self.rng.uniform(5.0, 45.0)
        return self.operator_talk(op)

    def consult_talk(self, plan: Plan) -> float:
        if plan.consult_talk is not None:
            return plan.consult_talk
        return self.rng.uniform(2.0, 8.0)

    def part_done(self, call: Call) -> None:
        call.part += 1

    def reserve_consult(self, target: QueueRt) -> list[OperatorRt]:
        """The members an attended transfer's consultation call into ``target`` will ring, held for it from
        the operator's decision on (so that it is answered, as the captures' are); empty when nobody in
        ``target`` is free or callers wait there, or ``target`` has a length limit that a caller arriving
        meanwhile could fill (the operator then transfers blind)."""
        if target.entries or target.spec.maxlen:
            return []
        free = target.free_members()
        if not free:
            return []
        if target.spec.strategy != "ringall":
            n = len(target.members)
            for k in range(1, n + 1):
                i = (target.rr + k) % n
                if not target.members[i].busy:
                    target.rr = i
                    free = [target.members[i]]
                    break
        for op in free:
            self.set_busy(op, True)
        return free

    # ---- state --------------------------------------------------------------------------------------------
    def set_busy(self, op: OperatorRt, busy: bool) -> None:
        """``op`` is taken (rung, talking, calling out) or free again.  Free only once the operator's device
        is idle: while a channel of theirs still lives (a phone that hangs up a moment later), no queue
        rings them (``ringinuse = no``); they are freed when it hangs up."""
        if busy:
            op.busy = True
            self._idle_wait.pop(op.device, None)
            return
        if self.pbx.devices.get(op.device):
            self._idle_wait[op.device] = op
            return
        op.busy = False
        wake_waiting(self.kernel, op.queues)

    def _device_idle(self, device: str) -> None:
        op = self._idle_wait.pop(device, None)
        if op is not None:
            op.busy = False
            update_avail(self.pbx, op)
            wake_waiting(self.kernel, op.queues)

    def member_status(self, op: OperatorRt, status: int) -> None:
        emit_member_status(self.pbx, op, status)

    def caller_answered(self, call: Call) -> None:
        self.book.answered(call.number, self.pbx.now)

    def end_call(self, call: Call) -> None:
        t = call.truth
        if t.ended_at is not None:
            return
        self.book.end(t, self.pbx.now)
        self._busy_people.discard(call.person)
        if t.lost and call.person >= 0:
            beh, rng = self.cfg.behaviour, self.rng
            if rng.random() < beh.ring_back:
                self.kernel.spawn(self._ring_back(call.person, t.queues[-1] if t.queues else None),
                                  rng.uniform(*beh.ring_back_after), name="ring-back")
            elif (self.cfg.style == "sip" and call.number.startswith("+") and rng.random() < beh.call_back
                  and t.queues):
                self.kernel.spawn(self._call_back(call.number, t.queues[-1]), rng.uniform(*beh.call_back_after),
                                  name="call-back")

    def _ring_back(self, person: int, queue: str | None) -> Any:
        if person in self._busy_people:
            return
        q = queue if queue in self._qnames else None
        self.start_call(person, q, kind="ring_back")
        yield 0.0

    def _call_back(self, number: str, queue: str) -> Any:
        """An operator of ``queue`` calls a lost caller back when free (a few tries)."""
        q = self.queues.get(queue)
        members = q.members if q is not None and q.members else list(self.ops.values())
        for _ in range(6):
            free = [m for m in members if not m.busy]
            if free:
                op = free[self.rng.randrange(len(free))]
                self.set_busy(op, True)
                answered = self.rng.random() < self.cfg.behaviour.call_back_answered
                truth = self.book.new("", op.ext, op.name, self.kernel.now / US, direction="outbound", callee=number)
                self._keep(truth)
                yield from outbound_call(self, op, number, answered, truth)
                return
            yield 30.0
