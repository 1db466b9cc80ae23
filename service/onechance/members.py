"""Queue members (operators) and their state, per PBX: available, in call, ringing, paused, unavailable.

Fed by ``QueueMemberStatus``/``QueueMemberAdded``/``QueueMemberRemoved``/``QueueMemberPause`` events and, after
each (re)connect, replaced by the ``QueueMember`` items of the ``QueueStatus`` snapshot (which also lists every
queue in its ``QueueParams``).  Pure: no I/O, no clock.

Asterisk's member ``Status`` (``app_queue.c``, ``ast_devstate``): 0 unknown, 1 not in use, 2 in use, 3 busy,
4 invalid, 5 unavailable, 6 ringing, 7 ringing while in use, 8 on hold.  A paused member is ``paused`` whatever
its device says.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from .ami.parser import AmiMessage

__all__ = ["MemberState", "QueueMembers", "state_of"]


class MemberState(StrEnum):
    AVAILABLE = "available"
    IN_CALL = "in_call"
    RINGING = "ringing"
    PAUSED = "paused"
    UNAVAILABLE = "unavailable"


_BY_STATUS = {
    "1": MemberState.AVAILABLE,
    "2": MemberState.IN_CALL,
    "3": MemberState.IN_CALL,
    "8": MemberState.IN_CALL,
    "6": MemberState.RINGING,
    "7": MemberState.RINGING,
}


def state_of(status: str | None, paused: str | None) -> MemberState:
    if (paused or "0").strip() in ("1", "true", "yes"):
        return MemberState.PAUSED
    return _BY_STATUS.get((status or "").strip(), MemberState.UNAVAILABLE)


@dataclass(slots=True)
class Member:
    queue: str
    interface: str
    name: str
    state: MemberState
    paused_reason: str = ""


class QueueMembers:
    """The members of every queue of one PBX, as last reported."""

    EVENTS = frozenset({"QueueMemberStatus", "QueueMemberAdded", "QueueMemberRemoved", "QueueMemberPause",
                        "QueueMemberPenalty", "QueueMemberRinginuse"})

    def __init__(self) -> None:
        self._members: dict[tuple[str, str], Member] = {}

    def feed(self, msg: AmiMessage) -> None:
        h = msg.headers
        event = h.get("Event")
        queue = h.get("Queue") or ""
        interface = h.get("Interface") or h.get("Location") or ""
        if not queue or not interface:
            return
        key = (queue, interface)
        if event == "QueueMemberRemoved":
            self._members.pop(key, None)
            return
        # every member event carries the member's whole state (queue_member_blob_create), so does QueueMember
        name = h.get("MemberName") or h.get("Name") or interface
        self._members[key] = Member(queue, interface, name, state_of(h.get("Status"), h.get("Paused")),
                                    h.get("PausedReason") or "")

    def replace(self, items: Iterable[AmiMessage]) -> None:
        """A snapshot's ``QueueMember`` items: the whole truth (members removed meanwhile are gone)."""
        self._members.clear()
        for m in items:
            if m.headers.get("Event") == "QueueMember":
                self.feed(m)

    def members(self) -> Iterable[Member]:
        return self._members.values()

    def counts(self) -> dict[tuple[str, MemberState], int]:
        out: dict[tuple[str, MemberState], int] = {}
        for m in self._members.values():
            out[(m.queue, m.state)] = out.get((m.queue, m.state), 0) + 1
        return out
