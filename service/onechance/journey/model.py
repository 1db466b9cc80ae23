"""What a call's journey is: the data the tracker builds and every sink reads.

A :class:`Journey` is one call as the outside caller lived it, keyed by the Asterisk ``Linkedid`` of its
first channel.  :meth:`Journey.to_dict` gives the JSON shape shared by ``onechance replay --json``, the
HTTP API and the store (see ``docs/journey.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Outcome(StrEnum):
    ANSWERED = "answered"
    ABANDONED = "abandoned"
    TIMEOUT = "timeout"
    REJECTED = "rejected"
    UNANSWERED = "unanswered"
    IN_PROGRESS = "in_progress"


class VisitResult(StrEnum):
    WAITING = "waiting"  # still in the queue
    ANSWERED = "answered"
    ABANDONED = "abandoned"  # the caller hung up while waiting
    TIMEOUT = "timeout"  # the queue gave up (timeout, leave-when-empty, withdrawn)
    REJECTED = "rejected"  # the queue refused the caller (full, join-empty, join-unavailable)
    LEFT = "left"  # left the queue without being answered and without hanging up (exit key)
    UNKNOWN = "unknown"  # the end of the visit was not seen (lost events, daemon reconnect)


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
    ENDED = "ended"
    RECOVERED = "recovered"


#: outcomes that make a call "lost" (a one-chance caller to call back), short abandons excepted
LOST_OUTCOMES = frozenset({Outcome.ABANDONED, Outcome.TIMEOUT, Outcome.REJECTED})
#: alert kinds, in the order they are listed
ALERT_KINDS = ("abandoned", "timeout", "rejected", "bounced")


@dataclass(slots=True)
class QueueVisit:
    """One stay of the call in a queue (the consultation call of an attended transfer counts too)."""

    queue: str
    channel: str  # Uniqueid of the channel that waited in the queue
    joined_at: float
    left_at: float | None = None
    result: VisitResult = VisitResult.WAITING
    operator: str | None = None
    consultation: bool = False  # entered by an operator's consultation call
    adopted_at: float | None = None  # consultation handed over to the caller (attended transfer done)
    group: str = "caller"  # "caller" or the consultation group it belongs to
    hold_time: int | None = None  # Asterisk's own HoldTime (whole seconds), when given
    exit_status: str | None = None  # QUEUESTATUS as Asterisk set it
    rings: int = 0  # members rung (AgentCalled)
    caller_hung_up: bool = False

    @property
    def wait_seconds(self) -> float:
        if self.left_at is None:
            return 0.0
        return max(0.0, round(self.left_at - self.joined_at, 3))

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "queue": self.queue,
            "wait_seconds": self.wait_seconds,
            "result": str(self.result),
            "operator": self.operator,
            "joined_at": self.joined_at,
            "left_at": self.left_at,
            "callid": self.channel,  # the waiting channel's Uniqueid: queue_log's callid column
        }
        if self.consultation:
            d["consultation"] = True
        if self.exit_status:
            d["exit_status"] = self.exit_status
        return d


@dataclass(slots=True)
class OperatorLeg:
    """An operator talking on the call (a queue member or a dialled extension)."""

    operator: str
    kind: str  # "queue" or "dial"
    channel: str  # Uniqueid of the operator's channel
    queue: str | None
    interface: str | None
    group: str  # "caller" or a consultation group
    rang_at: float
    started_at: float | None = None  # answered
    ended_at: float | None = None
    adopted_at: float | None = None  # when a consultation leg was handed to the caller
    ended_by: str | None = None  # "caller", "operator", "transfer"

    @property
    def caller_talk_start(self) -> float | None:
        if self.started_at is None:
            return None
        if self.group != "caller":
            return None
        if self.adopted_at is not None:
            return max(self.started_at, self.adopted_at)
        return self.started_at

    def to_dict(self) -> dict[str, Any]:
        return {
            "operator": self.operator,
            "kind": self.kind,
            "queue": self.queue,
            "interface": self.interface,
            "answered_at": self.started_at,
            "talk_from": self.caller_talk_start,
            "ended_at": self.ended_at,
            "talk_seconds": round(self.talk_seconds(), 3),
            "ended_by": self.ended_by,
        }

    def talk_seconds(self) -> float:
        start = self.caller_talk_start
        if start is None or self.ended_at is None:
            return 0.0
        return max(0.0, self.ended_at - start)


@dataclass(slots=True)
class Transfer:
    kind: str  # "blind" or "attended"
    from_: str | None
    to: str
    at: float
    to_queue: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "from": self.from_, "to": self.to, "at": self.at}
        if self.to_queue:
            d["to_queue"] = self.to_queue
        return d


@dataclass(slots=True)
class Journey:
    """One call (one Linkedid) as the caller lived it."""

    call_id: str
    started_at: float
    pbx: str = ""
    caller: str = ""
    caller_name: str = ""
    ended_at: float | None = None
    visits: list[QueueVisit] = field(default_factory=list)
    legs: list[OperatorLeg] = field(default_factory=list)
    transfers: list[Transfer] = field(default_factory=list)
    bounced: bool = False
    recovered: bool = False
    recovered_by: str | None = None
    recovered_at: float | None = None
    uncertain: bool = False
    hangup_by: str | None = None
    closed_reason: str | None = None  # why the tracker closed it when no Hangup closed it
    short_abandon_seconds: float = 5.0
    short_abandon_by_queue: dict[str, float] | None = None
    updated_at: float = 0.0

    # ---- derived views -------------------------------------------------------------------------------
    def caller_visits(self) -> list[QueueVisit]:
        return [v for v in self.visits if v.group == "caller"]

    def caller_legs(self) -> list[OperatorLeg]:
        legs = [leg for leg in self.legs if leg.caller_talk_start is not None]
        legs.sort(key=lambda leg: leg.caller_talk_start or 0.0)
        return legs

    def provisional_outcome(self) -> Outcome:
        """The outcome the call has if it ended now."""
        visits = self.caller_visits()
        legs = self.caller_legs()
        last = visits[-1] if visits else None
        if (
            last is not None
            and last.result in (VisitResult.ABANDONED, VisitResult.TIMEOUT, VisitResult.REJECTED)
            and not any((leg.caller_talk_start or 0.0) >= last.joined_at for leg in legs)
        ):
            return Outcome(str(last.result))
        if legs:
            return Outcome.ANSWERED
        if visits and visits[-1].result == VisitResult.WAITING:
            return Outcome.ABANDONED
        return Outcome.UNANSWERED

    @property
    def outcome(self) -> Outcome:
        if self.ended_at is None:
            return Outcome.IN_PROGRESS
        return self.provisional_outcome()

    def _threshold(self, queue: str) -> float:
        if self.short_abandon_by_queue and queue in self.short_abandon_by_queue:
            return self.short_abandon_by_queue[queue]
        return self.short_abandon_seconds

    @property
    def short_abandon(self) -> bool:
        if self.provisional_outcome() != Outcome.ABANDONED:
            return False
        visits = self.caller_visits()
        if not visits:
            return False
        last = visits[-1]
        if last.left_at is None:
            return False
        return last.wait_seconds < self._threshold(last.queue)

    @property
    def lost(self) -> bool:
        """A one-chance caller lost: abandoned (not short), timed out or rejected."""
        out = self.provisional_outcome()
        return out in LOST_OUTCOMES and not (out == Outcome.ABANDONED and self.short_abandon)

    @property
    def alerts(self) -> list[str]:
        out: list[str] = []
        if self.lost:
            out.append(str(self.provisional_outcome()))
        if self.bounced:
            out.append("bounced")
        return out

    @property
    def operators(self) -> list[str]:
        return [leg.operator for leg in self.caller_legs()]

    @property
    def wait_seconds(self) -> float:
        return round(sum(v.wait_seconds for v in self.caller_visits()), 3)

    @property
    def talk_seconds(self) -> float:
        return round(sum(leg.talk_seconds() for leg in self.caller_legs()), 3)

    @property
    def first_queue(self) -> str:
        visits = self.caller_visits()
        return visits[0].queue if visits else ""

    def to_dict(self) -> dict[str, Any]:
        visits = self.caller_visits()
        return {
            "call_id": self.call_id,
            "pbx": self.pbx,
            "caller": self.caller,
            "caller_name": self.caller_name,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "outcome": str(self.outcome),
            "short_abandon": self.short_abandon,
            "queues": [v.to_dict() for v in visits],
            # consultation calls that never reached the caller (the transfer was not completed)
            "consultations": [v.to_dict() for v in self.visits if v.group != "caller"],
            "operators": self.operators,
            "legs": [leg.to_dict() for leg in self.caller_legs()],
            "transfers": [t.to_dict() for t in self.transfers],
            "wait_seconds": self.wait_seconds,
            "talk_seconds": self.talk_seconds,
            "bounced": self.bounced,
            "alerts": self.alerts,
            "recovered": self.recovered,
            "recovered_by": self.recovered_by,
            "uncertain": self.uncertain,
            "hangup_by": self.hangup_by,
            "closed_reason": self.closed_reason,
            "updated_at": self.updated_at,
        }


@dataclass(slots=True, frozen=True)
class JourneyUpdate:
    """Something meaningful happened to a call.  ``journey`` is the live object: sinks that keep it
    past the current event must copy it (``journey.to_dict()``)."""

    kind: UpdateKind
    journey: Journey
    at: float
    detail: dict[str, Any] | None = None
