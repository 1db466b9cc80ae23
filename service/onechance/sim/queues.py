"""Live state of app_queue in the simulation: queues, their waiting callers, and the operators.

An operator talks to one caller at a time: while rung, talking, or calling out, the operator's device
is in use and no queue rings them (``ringinuse = no``).  A queue rings free members for the callers at
the head of the line (autofill): a caller may ring when the callers ahead of it that are not ringing
already are fewer than the free members.  ``ringall`` rings every free member, ``rrmemory`` the next free
member after the one rung last.  When an operator becomes free or a caller leaves, the callers still
waiting are woken to look again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .channels import Chan, Pbx
from .model import OperatorSpec, QueueSpec

if TYPE_CHECKING:
    from .kernel import Kernel, Proc

__all__ = ["Entry", "OperatorRt", "QueueRt"]


class OperatorRt:
    __slots__ = ("busy", "calls_taken", "device", "ext", "interface", "last_call", "login_time", "name", "queues",
                 "spec", "state_interface")

    def __init__(self, spec: OperatorSpec, style: str, login_time: int) -> None:
        self.spec = spec
        self.ext = spec.ext
        self.name = spec.name
        self.interface = f"Local/{spec.ext}@agents/n"
        self.state_interface = f"PJSIP/{spec.ext}" if style == "sip" else self.interface
        # the device in use while the operator is on a call: the phone (sip) or the member's Local pair
        self.device = f"PJSIP/{spec.ext}" if style == "sip" else f"Local/{spec.ext}@agents"
        self.queues: list[QueueRt] = []
        self.busy = False
        self.calls_taken: dict[str, int] = {}
        self.last_call = 0
        self.login_time = login_time

    def calls_taken_in(self, t_us: int, queue: QueueRt | None = None) -> None:
        """A call with this member ended (CallsTaken/LastCall of QueueMemberStatus)."""
        if queue is not None:
            self.calls_taken[queue.name] = self.calls_taken.get(queue.name, 0) + 1
        self.last_call = t_us // 1_000_000

    def __repr__(self) -> str:
        return f"OperatorRt({self.ext}, busy={self.busy})"


class Entry:
    """A caller waiting in a queue."""

    __slots__ = ("call", "joined", "orig_pos", "proc", "qc", "queue", "ringing")

    def __init__(self, call: object, qc: Chan, queue: QueueRt, joined: int, proc: Proc) -> None:
        self.call = call
        self.qc = qc
        self.queue = queue
        self.joined = joined
        self.proc = proc
        self.orig_pos = 0
        self.ringing = False


class QueueRt:
    __slots__ = ("avail", "entries", "members", "name", "rr", "spec")

    def __init__(self, spec: QueueSpec) -> None:
        self.spec = spec
        self.name = spec.name
        self.members: list[OperatorRt] = []
        self.entries: list[Entry] = []
        self.rr = -1
        self.avail: bool | None = None  # unknown until a member's state first changes

    def position(self, entry: Entry) -> int:
        return self.entries.index(entry) + 1

    def free_members(self) -> list[OperatorRt]:
        return [m for m in self.members if not m.busy]

    def pick(self, entry: Entry) -> list[OperatorRt]:
        """The members ``entry`` rings now (none when it is not its turn or nobody is free)."""
        free = self.free_members()
        if not free:
            return []
        ahead = 0
        for e in self.entries:
            if e is entry:
                break
            if not e.ringing:
                ahead += 1
        if ahead >= len(free):
            return []
        if self.spec.strategy == "ringall":
            return free
        n = len(self.members)
        for k in range(1, n + 1):
            i = (self.rr + k) % n
            m = self.members[i]
            if not m.busy:
                self.rr = i
                return [m]
        return []


def emit_member_status(pbx: Pbx, op: OperatorRt, status: int) -> None:
    """QueueMemberStatus for every queue ``op`` is a member of (app_queue sends one per queue)."""
    for q in op.queues:
        pbx.emit("QueueMemberStatus",
                 f"Queue: {q.name}\r\nMemberName: {op.name}\r\nInterface: {op.interface}\r\n"
                 f"StateInterface: {op.state_interface}\r\nMembership: static\r\nPenalty: 0\r\n"
                 f"CallsTaken: {op.calls_taken.get(q.name, 0)}\r\nLastCall: {op.last_call}\r\nLastPause: 0\r\n"
                 f"LoginTime: {op.login_time}\r\nInCall: 0\r\nStatus: {status}\r\nPaused: 0\r\nPausedReason: \r\n"
                 f"Ringinuse: 0\r\nWrapuptime: 0\r\n")


def update_avail(pbx: Pbx, op: OperatorRt) -> None:
    """``Queue:<name>_avail`` device state changes of the queues of ``op`` (INUSE: nobody free)."""
    for q in op.queues:
        now = any(not m.busy for m in q.members)
        if now != q.avail:
            q.avail = now
            pbx.devstate(f"Queue:{q.name}_avail", "NOT_INUSE" if now else "INUSE")


def wake_waiting(kernel: Kernel, queues: list[QueueRt], skip: Entry | None = None) -> None:
    """Let the callers waiting (not ringing) in ``queues`` look for a free member again: as many, from the
    head of the line, as there are free members (the others could not ring anyway, see :meth:`QueueRt.pick`)."""
    for q in queues:
        free = 0
        for m in q.members:
            if not m.busy:
                free += 1
        if not free:
            continue
        for e in q.entries:
            if e.ringing:
                continue
            if free == 0:
                break
            free -= 1
            if e is not skip:
                kernel.wake(e.proc, "look")
