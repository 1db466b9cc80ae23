"""The call record: one immutable, typed snapshot of a call per update, shared by every sink.

The tracker builds a :class:`CallRecord` once for each update it reports (:func:`record_of`, with the
:class:`~onechance.journey.policy.CallPolicy` deciding outcome, short abandon, loss and alerts); the store,
the metrics, the recent calls, the alerts and the worklist all read that same object and never the
tracker's working state.  :meth:`CallRecord.to_json` gives the JSON shape of ``onechance replay --json``,
the HTTP API and the store's ``calls.journey`` column, described by the :class:`CallJson` typed dict.

A recovery (a lost caller reached again) does not change a record: it is a separate fact,
:class:`~onechance.journey.updates.Recovered`; :meth:`CallRecord.with_recovery` gives the record with it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypedDict

from .model import (
    CALLER_GROUP,
    Direction,
    EndedBy,
    Journey,
    LegKind,
    OperatorLeg,
    Outcome,
    QueueVisit,
    Transfer,
    TransferKind,
    VisitResult,
)
from .policy import AlertKind, CallPolicy

__all__ = [
    "CallJson",
    "CallRecord",
    "LegJson",
    "LegRecord",
    "TransferJson",
    "TransferRecord",
    "VisitJson",
    "VisitRecord",
    "record_of",
]


# ---- the JSON shape ------------------------------------------------------------------------------------
class VisitJson(TypedDict):
    queue: str
    wait_seconds: float
    result: str
    operator: str | None
    member: str | None
    joined_at: float
    left_at: float | None
    callid: str  # the waiting channel's Uniqueid: queue_log's callid column
    consultation: bool
    exit_status: str | None
    exit_key: str | None


class LegJson(TypedDict):
    operator: str
    kind: str
    queue: str | None
    interface: str | None
    answered_at: float | None
    talk_from: float | None
    ended_at: float | None
    talk_seconds: float
    ended_by: str | None


TransferJson = TypedDict(
    "TransferJson",
    {"kind": str, "from": "str | None", "to": str, "at": float, "to_queue": "str | None"},
)


class CallJson(TypedDict):
    call_id: str
    pbx: str
    caller: str
    caller_name: str
    caller_key: str | None
    started_at: float
    ended_at: float | None
    outcome: str
    short_abandon: bool
    lost: bool
    queues: list[VisitJson]
    consultations: list[VisitJson]
    operators: list[str]
    legs: list[LegJson]
    transfers: list[TransferJson]
    wait_seconds: float
    talk_seconds: float
    bounced: bool
    alerts: list[str]
    recovered: bool
    recovered_by: str | None
    recovered_at: float | None
    recovered_how: str | None
    uncertain: bool
    hangup_by: str | None
    closed_reason: str | None
    direction: str
    callee: str | None
    dialled_by: str | None
    exit_key: str | None
    updated_at: float
    source: str  # "ami" (recorded live) or "queue_log" (imported from Asterisk's queue_log, docs/import.md)


# ---- the record ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class VisitRecord:
    queue: str
    joined_at: float
    left_at: float | None
    wait_seconds: float
    result: VisitResult
    operator: str | None
    member: str | None
    callid: str
    consultation: bool
    exit_status: str | None
    exit_key: str | None

    def to_json(self) -> VisitJson:
        return {
            "queue": self.queue,
            "wait_seconds": self.wait_seconds,
            "result": str(self.result),
            "operator": self.operator,
            "member": self.member,
            "joined_at": self.joined_at,
            "left_at": self.left_at,
            "callid": self.callid,
            "consultation": self.consultation,
            "exit_status": self.exit_status,
            "exit_key": self.exit_key,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> VisitRecord:
        return cls(
            queue=str(d.get("queue") or ""),
            joined_at=float(d.get("joined_at") or 0.0),
            left_at=_opt_float(d.get("left_at")),
            wait_seconds=float(d.get("wait_seconds") or 0.0),
            result=_enum(VisitResult, d.get("result"), VisitResult.UNKNOWN),
            operator=d.get("operator"),
            member=d.get("member"),
            callid=str(d.get("callid") or ""),
            consultation=bool(d.get("consultation")),
            exit_status=d.get("exit_status"),
            exit_key=d.get("exit_key"),
        )


@dataclass(frozen=True, slots=True)
class LegRecord:
    operator: str
    kind: LegKind
    queue: str | None
    interface: str | None
    answered_at: float | None
    talk_from: float | None
    ended_at: float | None
    talk_seconds: float
    ended_by: EndedBy | None

    def to_json(self) -> LegJson:
        return {
            "operator": self.operator,
            "kind": str(self.kind),
            "queue": self.queue,
            "interface": self.interface,
            "answered_at": self.answered_at,
            "talk_from": self.talk_from,
            "ended_at": self.ended_at,
            "talk_seconds": self.talk_seconds,
            "ended_by": str(self.ended_by) if self.ended_by is not None else None,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> LegRecord:
        ended_by = d.get("ended_by")
        return cls(
            operator=str(d.get("operator") or "?"),
            kind=_enum(LegKind, d.get("kind"), LegKind.QUEUE),
            queue=d.get("queue"),
            interface=d.get("interface"),
            answered_at=_opt_float(d.get("answered_at")),
            talk_from=_opt_float(d.get("talk_from")),
            ended_at=_opt_float(d.get("ended_at")),
            talk_seconds=float(d.get("talk_seconds") or 0.0),
            ended_by=_enum(EndedBy, ended_by, None) if ended_by is not None else None,
        )


@dataclass(frozen=True, slots=True)
class TransferRecord:
    kind: TransferKind
    from_: str | None
    to: str
    at: float
    to_queue: str | None

    def to_json(self) -> TransferJson:
        return {"kind": str(self.kind), "from": self.from_, "to": self.to, "at": self.at, "to_queue": self.to_queue}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> TransferRecord:
        return cls(kind=_enum(TransferKind, d.get("kind"), TransferKind.BLIND), from_=d.get("from"),
                   to=str(d.get("to") or ""), at=float(d.get("at") or 0.0), to_queue=d.get("to_queue"))


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call as known at one update.  Never changes; :meth:`to_json` is computed once."""

    call_id: str
    pbx: str
    caller: str
    caller_name: str
    caller_key: str | None
    started_at: float
    ended_at: float | None
    outcome: Outcome
    short_abandon: bool
    lost: bool
    queues: tuple[VisitRecord, ...]
    consultations: tuple[VisitRecord, ...]
    legs: tuple[LegRecord, ...]
    transfers: tuple[TransferRecord, ...]
    bounced: bool
    alerts: tuple[AlertKind, ...]
    uncertain: bool
    hangup_by: EndedBy | None
    closed_reason: str | None
    direction: Direction
    callee: str | None
    dialled_by: str | None
    exit_key: str | None
    updated_at: float
    recovered: bool = False
    recovered_by: str | None = None
    recovered_at: float | None = None
    recovered_how: str | None = None
    source: str = "ami"  # where the record comes from: "ami" (live) or "queue_log" (onechance import-queue-log)
    _json: CallJson | None = field(default=None, init=False, repr=False, compare=False)

    # ---- derived -------------------------------------------------------------------------------------------
    @property
    def key(self) -> tuple[str, str]:
        return self.pbx, self.call_id

    @property
    def ended(self) -> bool:
        return self.ended_at is not None

    @property
    def operators(self) -> list[str]:
        return [leg.operator for leg in self.legs]

    @property
    def wait_seconds(self) -> float:
        return round(sum(v.wait_seconds for v in self.queues), 3)

    @property
    def talk_seconds(self) -> float:
        return round(sum(leg.talk_seconds for leg in self.legs), 3)

    @property
    def first_queue(self) -> str:
        return self.queues[0].queue if self.queues else ""

    @property
    def last_queue(self) -> str:
        return self.queues[-1].queue if self.queues else ""

    def transfer_queue(self, t: TransferRecord) -> str | None:
        """The queue a transfer is counted in (the one rule, for the metrics and the store): the queue through
        which the transferring operator answered the caller; None when that operator answered directly (no
        queue).  When the transferring operator is unknown, the queue the caller last joined before it."""
        best: LegRecord | None = None
        if t.from_ is not None:
            for leg in self.legs:
                start = leg.talk_from if leg.talk_from is not None else leg.answered_at
                if start is not None and start <= t.at + 1e-6 and leg.operator == t.from_:
                    best = leg
            if best is not None:
                return best.queue if best.kind == LegKind.QUEUE else None
        before = [v for v in self.queues if v.joined_at <= t.at and not v.consultation]
        return before[-1].queue if before else None

    def with_recovery(self, by: str, at: float, how: str | None = None) -> CallRecord:
        """This record with the recovery of its (lost) caller."""
        return dataclasses.replace(self, recovered=True, recovered_by=by, recovered_at=at, recovered_how=how,
                                   updated_at=max(self.updated_at, at))

    # ---- JSON ----------------------------------------------------------------------------------------------
    def to_json(self) -> CallJson:
        cached = self._json
        if cached is not None:
            return cached
        out: CallJson = {
            "call_id": self.call_id,
            "pbx": self.pbx,
            "caller": self.caller,
            "caller_name": self.caller_name,
            "caller_key": self.caller_key,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "outcome": str(self.outcome),
            "short_abandon": self.short_abandon,
            "lost": self.lost,
            "queues": [v.to_json() for v in self.queues],
            # consultation calls that never reached the caller (the transfer was not completed)
            "consultations": [v.to_json() for v in self.consultations],
            "operators": self.operators,
            "legs": [leg.to_json() for leg in self.legs],
            "transfers": [t.to_json() for t in self.transfers],
            "wait_seconds": self.wait_seconds,
            "talk_seconds": self.talk_seconds,
            "bounced": self.bounced,
            "alerts": [str(a) for a in self.alerts],
            "recovered": self.recovered,
            "recovered_by": self.recovered_by,
            "recovered_at": self.recovered_at,
            "recovered_how": self.recovered_how,
            "uncertain": self.uncertain,
            "hangup_by": str(self.hangup_by) if self.hangup_by is not None else None,
            "closed_reason": self.closed_reason,
            "direction": str(self.direction),
            "callee": self.callee,
            "dialled_by": self.dialled_by,
            "exit_key": self.exit_key,
            "updated_at": self.updated_at,
            "source": self.source,
        }
        object.__setattr__(self, "_json", out)
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CallRecord:
        """A record from its JSON (as stored; older rows may lack newer fields, which take their defaults).
        Raises ``ValueError``/``TypeError``/``KeyError`` for JSON that is not a call."""
        hangup_by = d.get("hangup_by")
        return cls(
            call_id=str(d["call_id"]),
            pbx=str(d.get("pbx") or ""),
            caller=str(d.get("caller") or ""),
            caller_name=str(d.get("caller_name") or ""),
            caller_key=d.get("caller_key"),
            started_at=float(d["started_at"]),
            ended_at=_opt_float(d.get("ended_at")),
            outcome=_enum(Outcome, d.get("outcome"), Outcome.UNANSWERED),
            short_abandon=bool(d.get("short_abandon")),
            lost=bool(d.get("lost")),
            queues=tuple(VisitRecord.from_json(v) for v in d.get("queues") or ()),
            consultations=tuple(VisitRecord.from_json(v) for v in d.get("consultations") or ()),
            legs=tuple(LegRecord.from_json(leg) for leg in d.get("legs") or ()),
            transfers=tuple(TransferRecord.from_json(t) for t in d.get("transfers") or ()),
            bounced=bool(d.get("bounced")),
            alerts=tuple(AlertKind(a) for a in d.get("alerts") or () if a in AlertKind._value2member_map_),
            uncertain=bool(d.get("uncertain")),
            hangup_by=_enum(EndedBy, hangup_by, None) if hangup_by is not None else None,
            closed_reason=d.get("closed_reason"),
            direction=_enum(Direction, d.get("direction"), Direction.INBOUND),
            callee=d.get("callee"),
            dialled_by=d.get("dialled_by"),
            exit_key=d.get("exit_key"),
            updated_at=float(d.get("updated_at") or 0.0),
            recovered=bool(d.get("recovered")),
            recovered_by=d.get("recovered_by"),
            recovered_at=_opt_float(d.get("recovered_at")),
            recovered_how=d.get("recovered_how"),
            source=str(d.get("source") or "ami"),
        )


def _opt_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _enum(kind: Any, value: Any, default: Any) -> Any:
    try:
        return kind(value)
    except ValueError:
        return default


# ---- building ------------------------------------------------------------------------------------------
def _constructor(cls: type[Any]) -> Callable[..., Any]:
    """A positional constructor for a frozen, slotted dataclass that fills the slots directly.

    The dataclass's own ``__init__`` goes through ``object.__setattr__`` for every field (frozen): 5-7 times
    slower, and the tracker builds records on every update.  Same fields, same order, same defaults; the
    instance is as immutable as ever afterwards."""
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    ns: dict[str, Any] = {"_new": object.__new__, "_cls": cls}
    params = []
    for f in fields:
        ns[f"_set_{f.name}"] = getattr(cls, f.name).__set__
        if f.default is not dataclasses.MISSING:
            ns[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        else:
            params.append(f.name)
    body = "\n".join([f"    _set_{n}(o, {n})" for n in names])
    source = f"def make({', '.join(params)}):\n    o = _new(_cls)\n{body}\n    return o\n"
    exec(source, ns)  # the way dataclasses build their own __init__
    make: Callable[..., Any] = ns["make"]
    return make


_new_visit: Callable[..., VisitRecord] = _constructor(VisitRecord)
_new_leg: Callable[..., LegRecord] = _constructor(LegRecord)
_new_transfer: Callable[..., TransferRecord] = _constructor(TransferRecord)
_new_call: Callable[..., CallRecord] = _constructor(CallRecord)


def _visit(v: QueueVisit) -> VisitRecord:
    return _new_visit(v.queue, v.joined_at, v.left_at, v.wait_seconds, v.result, v.operator, v.member,
                      v.channel, v.consultation, v.exit_status, v.exit_key)


def _leg(leg: OperatorLeg) -> LegRecord:
    return _new_leg(leg.operator, leg.kind, leg.queue, leg.interface, leg.started_at, leg.caller_talk_start,
                    leg.ended_at, round(leg.talk_seconds(), 3), leg.ended_by)


def _transfer(t: Transfer) -> TransferRecord:
    return _new_transfer(t.kind, t.from_, t.to, t.at, t.to_queue)


def record_of(journey: Journey, policy: CallPolicy) -> CallRecord:
    """The record of a journey now, judged by ``policy``."""
    verdict = policy.verdict(journey)
    queues: list[VisitRecord] = []
    consultations: list[VisitRecord] = []
    for v in journey.visits:
        (queues if v.group == CALLER_GROUP else consultations).append(_visit(v))
    exit_key = None
    if verdict.outcome == Outcome.EXITED and queues:
        exit_key = queues[-1].exit_key
    return _new_call(
        journey.call_id,
        journey.pbx,
        journey.caller,
        journey.caller_name,
        journey.caller_key,
        journey.started_at,
        journey.ended_at,
        verdict.outcome,
        verdict.short_abandon,
        verdict.lost,
        tuple(queues),
        tuple(consultations),
        tuple(_leg(leg) for leg in journey.caller_legs()),
        tuple(_transfer(t) for t in journey.transfers),
        journey.bounced,
        verdict.alerts,
        journey.uncertain,
        journey.hangup_by,
        journey.closed_reason,
        journey.direction,
        journey.callee,
        journey.dialled_by,
        exit_key,
        journey.updated_at,
    )
