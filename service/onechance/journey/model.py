"""The tracker's working state of a call: mutable, private to the tracker.

A :class:`Journey` is one call as the outside caller lives it, keyed by the Asterisk ``Linkedid`` of its
first channel.  Only the tracker changes it; every sink sees immutable :class:`~onechance.journey.record.CallRecord`
snapshots of it instead.  What a call's outcome is, whether it is a short abandon, lost, or raises an alert is
decided by the :class:`~onechance.journey.policy.CallPolicy`, never here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

__all__ = [
    "Direction",
    "EndedBy",
    "Journey",
    "LegKind",
    "OperatorLeg",
    "Outcome",
    "QueueVisit",
    "Side",
    "Transfer",
    "TransferKind",
    "UpdateKind",
    "VisitResult",
]


class Outcome(StrEnum):
    ANSWERED = "answered"
    ABANDONED = "abandoned"
    TIMEOUT = "timeout"
    REJECTED = "rejected"
    EXITED = "exited"  # left the queue by pressing a key (e.g. to voicemail), never talked to an operator
    UNANSWERED = "unanswered"
    IN_PROGRESS = "in_progress"


class VisitResult(StrEnum):
    WAITING = "waiting"  # still in the queue
    ANSWERED = "answered"
    ABANDONED = "abandoned"  # the caller hung up while waiting
    TIMEOUT = "timeout"  # the queue gave up (timeout, leave-when-empty, withdrawn)
    REJECTED = "rejected"  # the queue refused the caller (full, join-empty, join-unavailable)
    EXITED = "exited"  # the caller left the queue with a key (queue ``context=``)
    LEFT = "left"  # left the queue without being answered, without hanging up and without a key
    UNKNOWN = "unknown"  # the end of the visit was not seen (lost events, daemon reconnect)


#: visit results that end a caller's chance in that queue without an operator
UNANSWERED_RESULTS = frozenset({VisitResult.ABANDONED, VisitResult.TIMEOUT, VisitResult.REJECTED,
                                VisitResult.EXITED})


class UpdateKind(StrEnum):
    STARTED = "started"
    QUEUED = "queued"
    RINGING = "ringing"
    ANSWERED = "answered"
    TRANSFERRED = "transferred"
    BOUNCED = "bounced"
    ABANDONED = "abandoned"
    TIMED_OUT = "timed_out"
    REJECTED = "rejected"
    EXITED = "exited"
    LONG_WAIT = "long_wait"  # still waiting past the queue's long-wait threshold (raised by tick, once per visit)
    MERGED = "merged"  # this call became part of another one (a phone's consultation call, after the transfer)
    ENDED = "ended"


class Side(StrEnum):
    """Whose channel it is, in the caller's journey."""

    CALLER = "caller"  # the outside caller and its Local halves
    OPERATOR = "operator"  # a queue member or a dialled extension, with everything it dials
    CONSULT = "consult"  # the consultation call an operator places during an attended transfer


class LegKind(StrEnum):
    QUEUE = "queue"  # answered as a queue member
    DIAL = "dial"  # a dialled extension (direct call, transfer to an extension)


class EndedBy(StrEnum):
    CALLER = "caller"
    OPERATOR = "operator"
    TRANSFER = "transfer"
    NO_ANSWER = "no_answer"
    QUEUE = "queue"  # the queue gave up or refused the caller


class TransferKind(StrEnum):
    BLIND = "blind"
    ATTENDED = "attended"


class Direction(StrEnum):
    INBOUND = "inbound"  # from outside
    OUTBOUND = "outbound"  # an operator or extension dialling an outside number
    INTERNAL = "internal"  # between extensions (a phone's consultation call, for one)


#: the group of a visit or leg that is on the caller's path (others belong to a consultation)
CALLER_GROUP = "caller"


@dataclass(slots=True)
class QueueVisit:
    """One stay of the call in a queue (the consultation call of an attended transfer counts too)."""

    queue: str
    channel: str  # Uniqueid of the channel that waited in the queue
    joined_at: float
    left_at: float | None = None
    result: VisitResult = VisitResult.WAITING
    operator: str | None = None  # who answered and talked (after a pickup: the phone that picked up)
    member: str | None = None  # the queue member Asterisk credits (AgentConnect's MemberName; queue_log's agent)
    consultation: bool = False  # entered by an operator's consultation call
    adopted_at: float | None = None  # consultation handed over to the caller (attended transfer done)
    group: str = CALLER_GROUP  # CALLER_GROUP or the consultation group it belongs to
    hold_time: int | None = None  # Asterisk's own HoldTime (whole seconds), when given
    exit_status: str | None = None  # QUEUESTATUS as Asterisk set it
    exit_key: str | None = None  # the key pressed to leave the queue
    rings: int = 0  # members rung (AgentCalled)
    caller_hung_up: bool = False
    long_wait_raised: bool = False

    @property
    def wait_seconds(self) -> float:
        if self.left_at is None:
            return 0.0
        return max(0.0, round(self.left_at - self.joined_at, 3))

    @property
    def on_caller_path(self) -> bool:
        return self.group == CALLER_GROUP


@dataclass(slots=True)
class OperatorLeg:
    """An operator talking on the call (a queue member or a dialled extension)."""

    operator: str
    kind: LegKind
    channel: str  # Uniqueid of the operator's channel
    queue: str | None
    interface: str | None
    group: str  # CALLER_GROUP or a consultation group
    rang_at: float
    started_at: float | None = None  # answered
    ended_at: float | None = None
    adopted_at: float | None = None  # when a consultation leg was handed to the caller
    ended_by: EndedBy | None = None
    picked_up: bool = False  # another phone picked the call up: ``operator`` is that phone's person

    @property
    def caller_talk_start(self) -> float | None:
        if self.started_at is None or self.group != CALLER_GROUP:
            return None
        if self.adopted_at is not None:
            return max(self.started_at, self.adopted_at)
        return self.started_at

    def talk_seconds(self) -> float:
        start = self.caller_talk_start
        if start is None or self.ended_at is None:
            return 0.0
        return max(0.0, self.ended_at - start)


@dataclass(slots=True)
class Transfer:
    kind: TransferKind
    from_: str | None
    to: str
    at: float
    to_queue: str | None = None


@dataclass(slots=True)
class Journey:
    """One call (one Linkedid) as the caller lived it: the tracker's working state."""

    call_id: str
    started_at: float
    pbx: str = ""
    caller: str = ""
    caller_name: str = ""
    caller_key: str | None = None  # the caller's number normalised (see numbers.py): one key per person
    ended_at: float | None = None
    visits: list[QueueVisit] = field(default_factory=list)
    legs: list[OperatorLeg] = field(default_factory=list)
    transfers: list[Transfer] = field(default_factory=list)
    bounced: bool = False
    uncertain: bool = False
    hangup_by: EndedBy | None = None
    closed_reason: str | None = None  # why the tracker closed it when no Hangup closed it
    direction: Direction = Direction.INBOUND
    callee: str | None = None  # outbound: the outside number dialled
    dialled_by: str | None = None  # outbound: who dialled (operator label)
    updated_at: float = 0.0

    # ---- structural views (no policy in here) -----------------------------------------------------------
    def caller_visits(self) -> list[QueueVisit]:
        return [v for v in self.visits if v.group == CALLER_GROUP]

    def caller_legs(self) -> list[OperatorLeg]:
        legs = [leg for leg in self.legs if leg.caller_talk_start is not None]
        legs.sort(key=lambda leg: leg.caller_talk_start or 0.0)
        return legs

    @property
    def first_queue(self) -> str:
        for v in self.visits:
            if v.group == CALLER_GROUP:
                return v.queue
        return ""
