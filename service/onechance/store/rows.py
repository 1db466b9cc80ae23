"""From call records to the rows of the schema, and the spool's line format.

Pure functions, no I/O.  A :class:`~onechance.journey.CallRecord` is typed: every column is read from its
fields.  The full JSON (``CallRecord.to_json()``) is kept in ``calls.journey``.  A recovery
(:class:`~onechance.journey.Recovered`) is not part of a record: it is written to the ``recovered*`` columns
by a targeted update (:func:`recovery_values`) that a later upsert of the call never overwrites.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..journey import CallRecord, Recovered
from .facts import AlertRow, CallbackRow, DeliveryRow, fact_from_line, fact_to_line

#: what the writer writes: a call (upserted), a recovery (a targeted update), or a fact of the alerts and the
#: callback worklist (upserted, newest version first)
StoreItem = CallRecord | Recovered | AlertRow | DeliveryRow | CallbackRow
Key = tuple[str, str]

#: the columns a recovery sets; an upsert of the call leaves them alone
RECOVERY_COLUMNS = ("recovered", "recovered_by", "recovered_at", "recovered_how")


class BadJourney(ValueError):
    """A record or spool line that cannot be stored (no call id, wrong types...)."""


@dataclass(slots=True)
class JourneyRows:
    """The rows one call becomes."""

    key: Key
    call: dict[str, Any]
    visits: list[dict[str, Any]] = field(default_factory=list)
    legs: list[dict[str, Any]] = field(default_factory=list)
    transfers: list[dict[str, Any]] = field(default_factory=list)


def coalesce(records: Iterable[CallRecord]) -> list[CallRecord]:
    """One record per call, the newest (highest ``updated_at``; on a tie the later one)."""
    out: dict[Key, CallRecord] = {}
    for r in records:
        old = out.get(r.key)
        if old is None or r.updated_at >= old.updated_at:
            out[r.key] = r
    return list(out.values())


def _s(value: str | None, limit: int) -> str | None:
    if value is None:
        return None
    return value[:limit]


def journey_rows(record: CallRecord, stored_at: float) -> JourneyRows:
    """The rows of one call record.  Raises :class:`BadJourney` when it cannot be stored."""
    pbx, call_id = record.key
    if not call_id:
        raise BadJourney("a call without a call_id")
    queues, consultations = record.queues, record.consultations
    operators = record.operators
    call = {
        "pbx": pbx,  # keys are never cut: a database that refuses them sets the call aside, visibly
        "call_id": call_id,
        "caller": record.caller[:128],
        "caller_name": record.caller_name[:256],
        "started_at": record.started_at,
        "ended_at": record.ended_at,
        "updated_at": record.updated_at,
        "outcome": str(record.outcome),
        "lost": record.lost,
        "short_abandon": record.short_abandon,
        "bounced": record.bounced,
        "uncertain": record.uncertain,
        "recovered": record.recovered,
        "recovered_by": _s(record.recovered_by, 64),
        "recovered_at": record.recovered_at,
        "recovered_how": _s(record.recovered_how, 16),
        "first_queue": _s(queues[0].queue, 128) if queues else None,
        "last_queue": _s(queues[-1].queue, 128) if queues else None,
        "first_operator": _s(operators[0], 256) if operators else None,
        "queue_count": len(queues),
        "transfer_count": len(record.transfers),
        "wait_seconds": record.wait_seconds,
        "talk_seconds": record.talk_seconds,
        "hangup_by": str(record.hangup_by) if record.hangup_by is not None else None,
        "closed_reason": _s(record.closed_reason, 64),
        "direction": str(record.direction),
        "callee": _s(record.callee, 128),
        "caller_key": _s(record.caller_key, 64),
        "journey": record.to_json(),
        "stored_at": stored_at,
    }
    rows = JourneyRows(key=(pbx, call_id), call=call)
    visits = [(v, True) for v in queues] + [(v, False) for v in consultations]
    for seq, (v, on_path) in enumerate(visits):
        is_last = on_path and seq == len(queues) - 1
        rows.visits.append({
            "pbx": pbx,
            "call_id": call_id,
            "seq": seq,
            "queue": v.queue[:128],
            "callid": _s(v.callid, 64),
            "joined_at": v.joined_at,
            "left_at": v.left_at,
            "wait_seconds": v.wait_seconds,
            "result": str(v.result),
            "operator": _s(v.operator, 256),
            "consultation": v.consultation or not on_path,
            "caller_visit": on_path,
            "short_abandon": record.short_abandon and is_last and v.result == "abandoned",
            "exit_status": _s(v.exit_status, 32),
        })
    for seq, leg in enumerate(record.legs):
        rows.legs.append({
            "pbx": pbx,
            "call_id": call_id,
            "seq": seq,
            "operator": leg.operator[:256] or "?",
            "kind": str(leg.kind),
            "queue": _s(leg.queue, 128),
            "interface": _s(leg.interface, 256),
            "answered_at": leg.answered_at,
            "talk_from": leg.talk_from,
            "ended_at": leg.ended_at,
            "talk_seconds": leg.talk_seconds,
            "ended_by": str(leg.ended_by) if leg.ended_by is not None else None,
        })
    for seq, t in enumerate(record.transfers):
        rows.transfers.append({
            "pbx": pbx,
            "call_id": call_id,
            "seq": seq,
            "kind": str(t.kind),
            "from_operator": _s(t.from_, 256),
            "from_queue": _s(record.transfer_queue(t), 128),
            "to_target": t.to[:256],
            "to_queue": _s(t.to_queue, 128),
            "at": t.at,
        })
    return rows


def recovery_values(r: Recovered) -> dict[str, Any]:
    return {"recovered": True, "recovered_by": r.by[:64], "recovered_at": r.at, "recovered_how": r.how[:16]}


# ---- the spool's lines ---------------------------------------------------------------------------------
def to_line(item: StoreItem) -> dict[str, Any]:
    """The JSON object of one spool line: a call's JSON, ``{"recovered": {...}}`` or ``{"fact": ...}``."""
    if isinstance(item, (AlertRow, DeliveryRow, CallbackRow)):
        return fact_to_line(item)
    if isinstance(item, Recovered):
        return {"recovered": {"pbx": item.pbx, "call_id": item.call_id, "caller": item.caller, "queue": item.queue,
                              "by": item.by, "at": item.at, "how": item.how}}
    return dict(item.to_json())


def from_line(line: Mapping[str, Any]) -> StoreItem:
    """The item of a spool line (older spools hold bare call JSON).  Raises :class:`BadJourney`."""
    try:
        if "fact" in line:
            return fact_from_line(dict(line))
        rec = line.get("recovered")
        if isinstance(rec, Mapping):
            return Recovered(str(rec["pbx"]), str(rec["call_id"]), str(rec.get("caller") or ""),
                             str(rec.get("queue") or ""), str(rec["by"]), float(rec["at"]), str(rec.get("how") or ""))
        record = CallRecord.from_json(line)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadJourney(f"unreadable spool line ({type(exc).__name__}: {exc}): {str(line)[:120]}") from None
    if not record.call_id:
        raise BadJourney(f"a call without a call_id: {str(line)[:120]}")
    return record
