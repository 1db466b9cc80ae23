"""Rows of the alert outbox and the callback worklist, as the writer stores them.

The alert and worklist components keep their state in memory and hand the writer a snapshot of what changed
(one of these frozen rows); the writer stores it (or spools it while the database is down) with the journeys,
newest version first (``updated_at``).  None of them is ever touched by a journey upsert.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["AlertRow", "CallbackAttempt", "CallbackCall", "CallbackRow", "DeliveryRow", "Fact", "fact_from_line",
           "fact_to_line"]


@dataclass(frozen=True, slots=True)
class AlertRow:
    """An alert raised (``alerts``): inserted once per ``(pbx, call_id, kind)``; later versions change its
    state (resolved)."""

    id: str
    pbx: str
    call_id: str
    kind: str
    queue: str
    caller: str
    decided_at: float
    created_at: float
    state: str  # open, resolved
    resolved_at: float | None
    payload: dict[str, Any]
    updated_at: float


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """One alert's delivery to one channel (``alert_deliveries``), as it is now."""

    alert_id: str
    channel: str
    state: str  # pending, sent, failed, expired, suppressed, cancelled
    attempts: int
    next_attempt_at: float | None
    last_attempt_at: float | None
    sent_at: float | None
    resolved_sent_at: float | None
    last_error: str | None
    idempotency_key: str
    updated_at: float


@dataclass(frozen=True, slots=True)
class CallbackCall:
    pbx: str
    call_id: str
    queue: str
    outcome: str
    lost_at: float


@dataclass(frozen=True, slots=True)
class CallbackAttempt:
    id: str
    at: float
    by: str | None
    call_id: str | None
    answered: bool


@dataclass(frozen=True, slots=True)
class CallbackRow:
    """A worklist entry as it is now (``callbacks``, with its lost calls and its attempts)."""

    id: str
    pbx: str
    caller_key: str
    caller: str
    caller_name: str
    queue: str
    state: str  # waiting, claimed, done
    lost_count: int
    first_lost_at: float
    last_lost_at: float
    claimed_by: str | None
    claimed_at: float | None
    note: str | None
    attempts: int
    last_attempt_at: float | None
    resolution: str | None  # inbound, outbound, manual, expired
    done_reason: str | None
    resolved_by_call: str | None
    closed_at: float | None
    updated_at: float
    calls: tuple[CallbackCall, ...] = field(default_factory=tuple)
    attempt_list: tuple[CallbackAttempt, ...] = field(default_factory=tuple)


Fact = AlertRow | DeliveryRow | CallbackRow
_KINDS: dict[str, type[Any]] = {"alert": AlertRow, "delivery": DeliveryRow, "callback": CallbackRow}
_NAMES = {v: k for k, v in _KINDS.items()}


def fact_to_line(fact: Fact) -> dict[str, Any]:
    """A spool line for a fact: ``{"fact": "alert", ...fields}``."""
    return {"fact": _NAMES[type(fact)], **asdict(fact)}


def fact_from_line(line: dict[str, Any]) -> Fact:
    """The fact of a spool line (raises ``KeyError``/``TypeError``/``ValueError`` when it is not one)."""
    kind = _KINDS[line["fact"]]
    data = {k: v for k, v in line.items() if k != "fact"}
    if kind is CallbackRow:
        data["calls"] = tuple(CallbackCall(**c) for c in data.get("calls") or ())
        data["attempt_list"] = tuple(CallbackAttempt(**a) for a in data.get("attempt_list") or ())
    fact: Fact = kind(**data)
    return fact
