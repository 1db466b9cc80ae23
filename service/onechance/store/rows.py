"""From a journey dict (``Journey.to_dict()``) to the rows of the schema.

Pure functions, no I/O.  The journey JSON is read defensively (``.get`` with defaults) so that new or
missing optional fields never stop a journey from being stored: the full dict is kept in
``calls.journey`` whatever its shape.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

#: outcomes that make a call lost (unless it is a short abandon): the callback worklist
LOST_OUTCOMES = frozenset({"abandoned", "timeout", "rejected"})

Key = tuple[str, str]


class BadJourney(ValueError):
    """A journey dict that cannot be stored (no call id, wrong types...)."""


@dataclass(slots=True)
class JourneyRows:
    """The rows one journey becomes."""

    key: Key
    call: dict[str, Any]
    visits: list[dict[str, Any]] = field(default_factory=list)
    legs: list[dict[str, Any]] = field(default_factory=list)
    transfers: list[dict[str, Any]] = field(default_factory=list)


def journey_key(journey: Mapping[str, Any]) -> Key:
    """``(pbx, call_id)`` of a journey dict."""
    call_id = journey.get("call_id")
    if not isinstance(call_id, str) or not call_id:
        raise BadJourney(f"journey without a call_id: {str(journey)[:120]}")
    pbx = journey.get("pbx") or ""
    if not isinstance(pbx, str):
        raise BadJourney(f"journey {call_id}: pbx must be a string")
    return pbx, call_id


def version_of(journey: Mapping[str, Any]) -> float:
    """The journey's version for last-writer-wins: its ``updated_at``."""
    try:
        return float(journey.get("updated_at") or 0.0)
    except (TypeError, ValueError):
        return 0.0


def coalesce(journeys: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """One journey per key, the newest (highest ``updated_at``; on a tie the later one)."""
    out: dict[Key, Mapping[str, Any]] = {}
    for j in journeys:
        key = journey_key(j)
        old = out.get(key)
        if old is None or version_of(j) >= version_of(old):
            out[key] = j
    return list(out.values())


def is_lost(journey: Mapping[str, Any]) -> bool:
    return journey.get("outcome") in LOST_OUTCOMES and not journey.get("short_abandon")


def _f(value: Any) -> float | None:
    if value is None:
        return None
    return float(value)


def _s(value: Any, limit: int) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text[:limit]


def _transfer_queue(t: Mapping[str, Any], legs: list[Mapping[str, Any]]) -> str | None:
    """The queue through which the transferring operator answered (None for a direct call)."""
    at = _f(t.get("at")) or 0.0
    best: Mapping[str, Any] | None = None
    for leg in legs:
        start = leg.get("talk_from") or leg.get("answered_at")
        if start is None or float(start) > at + 1e-6:
            continue
        if t.get("from") is not None and leg.get("operator") != t.get("from"):
            continue
        best = leg
    if best is None:
        return None
    return best.get("queue") if best.get("kind", "queue") == "queue" else None


def journey_rows(journey: Mapping[str, Any], stored_at: float) -> JourneyRows:
    """The rows of one journey dict.  Raises :class:`BadJourney` when it cannot be stored."""
    pbx, call_id = journey_key(journey)
    try:
        return _rows(journey, pbx, call_id, stored_at)
    except BadJourney:
        raise
    except (TypeError, ValueError, AttributeError, KeyError) as exc:
        raise BadJourney(f"journey {call_id}: {type(exc).__name__}: {exc}") from exc


def _rows(journey: Mapping[str, Any], pbx: str, call_id: str, stored_at: float) -> JourneyRows:
    queues: list[Mapping[str, Any]] = list(journey.get("queues") or [])
    consultations: list[Mapping[str, Any]] = list(journey.get("consultations") or [])
    legs: list[Mapping[str, Any]] = list(journey.get("legs") or [])
    xfers: list[Mapping[str, Any]] = list(journey.get("transfers") or [])
    operators = list(journey.get("operators") or [])
    started_at = _f(journey.get("started_at"))
    if started_at is None:
        raise BadJourney(f"journey {call_id}: no started_at")
    short = bool(journey.get("short_abandon"))
    call = {
        "pbx": pbx,
        "call_id": call_id,
        "caller": _s(journey.get("caller") or "", 128),
        "caller_name": _s(journey.get("caller_name") or "", 256),
        "started_at": started_at,
        "ended_at": _f(journey.get("ended_at")),
        "updated_at": version_of(journey),
        "outcome": str(journey.get("outcome") or "in_progress")[:16],
        "lost": is_lost(journey),
        "short_abandon": short,
        "bounced": bool(journey.get("bounced")),
        "uncertain": bool(journey.get("uncertain")),
        "recovered": bool(journey.get("recovered")),
        "recovered_by": _s(journey.get("recovered_by"), 64),
        "recovered_at": _f(journey.get("recovered_at")),
        "first_queue": _s(queues[0].get("queue"), 128) if queues else None,
        "last_queue": _s(queues[-1].get("queue"), 128) if queues else None,
        "first_operator": _s(operators[0], 256) if operators else None,
        "queue_count": len(queues),
        "transfer_count": len(xfers),
        "wait_seconds": float(journey.get("wait_seconds") or 0.0),
        "talk_seconds": float(journey.get("talk_seconds") or 0.0),
        "hangup_by": _s(journey.get("hangup_by"), 32),
        "closed_reason": _s(journey.get("closed_reason"), 64),
        "journey": dict(journey),
        "stored_at": stored_at,
    }
    rows = JourneyRows(key=(pbx, call_id), call=call)
    visits = [(v, True) for v in queues] + [(v, False) for v in consultations]
    for seq, (v, on_path) in enumerate(visits):
        result = str(v.get("result") or "unknown")[:16]
        is_last = on_path and seq == len(queues) - 1
        rows.visits.append(
            {
                "pbx": pbx,
                "call_id": call_id,
                "seq": seq,
                "queue": _s(v.get("queue") or "", 128),
                "callid": _s(v.get("callid"), 64),
                "joined_at": float(v["joined_at"]) if v.get("joined_at") is not None else started_at,
                "left_at": _f(v.get("left_at")),
                "wait_seconds": float(v.get("wait_seconds") or 0.0),
                "result": result,
                "operator": _s(v.get("operator"), 256),
                "consultation": bool(v.get("consultation")) or not on_path,
                "caller_visit": on_path,
                "short_abandon": short and is_last and result == "abandoned",
                "exit_status": _s(v.get("exit_status"), 32),
            }
        )
    for seq, leg in enumerate(legs):
        rows.legs.append(
            {
                "pbx": pbx,
                "call_id": call_id,
                "seq": seq,
                "operator": _s(leg.get("operator") or "?", 256),
                "kind": _s(leg.get("kind") or "queue", 16),
                "queue": _s(leg.get("queue"), 128),
                "interface": _s(leg.get("interface"), 256),
                "answered_at": _f(leg.get("answered_at")),
                "talk_from": _f(leg.get("talk_from")),
                "ended_at": _f(leg.get("ended_at")),
                "talk_seconds": float(leg.get("talk_seconds") or 0.0),
                "ended_by": _s(leg.get("ended_by"), 32),
            }
        )
    for seq, t in enumerate(xfers):
        rows.transfers.append(
            {
                "pbx": pbx,
                "call_id": call_id,
                "seq": seq,
                "kind": _s(t.get("kind") or "blind", 16),
                "from_operator": _s(t.get("from"), 256),
                "from_queue": _s(_transfer_queue(t, legs), 128),
                "to_target": _s(t.get("to") or "", 256),
                "to_queue": _s(t.get("to_queue"), 128),
                "at": float(t["at"]) if t.get("at") is not None else started_at,
            }
        )
    return rows
