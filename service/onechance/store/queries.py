"""Read-side queries for the HTTP API, the tracker's restart and the reports.

Calls come back as the stored journey dicts: exactly the shape of ``onechance replay --json``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Select, exists, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ..journey.model import Journey, OperatorLeg, QueueVisit, Transfer, VisitResult
from .models import calls, queue_visits

MAX_LIMIT = 10000


def _as_list(value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [v for v in value.split(",") if v]
    return list(value)


def _calls_query(
    *,
    since: float | None = None,
    until: float | None = None,
    outcome: str | Iterable[str] | None = None,
    queue: str | None = None,
    caller: str | None = None,
    pbx: str | None = None,
    lost: bool | None = None,
    recovered: bool | None = None,
    bounced: bool | None = None,
) -> Select[Any]:
    q = select(calls.c.journey)
    if since is not None:
        q = q.where(calls.c.started_at >= since)
    if until is not None:
        q = q.where(calls.c.started_at < until)
    outcomes = _as_list(outcome)
    if outcomes:
        q = q.where(calls.c.outcome.in_(outcomes))
    if queue:
        q = q.where(
            exists().where(
                queue_visits.c.pbx == calls.c.pbx,
                queue_visits.c.call_id == calls.c.call_id,
                queue_visits.c.queue == queue,
                queue_visits.c.caller_visit.is_(True),
            )
        )
    if caller:
        q = q.where(calls.c.caller == caller)
    if pbx is not None:
        q = q.where(calls.c.pbx == pbx)
    if lost is not None:
        q = q.where(calls.c.lost.is_(lost))
    if recovered is not None:
        q = q.where(calls.c.recovered.is_(recovered))
    if bounced is not None:
        q = q.where(calls.c.bounced.is_(bounced))
    return q


async def list_calls(
    engine: AsyncEngine,
    *,
    since: float | None = None,
    until: float | None = None,
    outcome: str | Iterable[str] | None = None,
    queue: str | None = None,
    caller: str | None = None,
    pbx: str | None = None,
    lost: bool | None = None,
    bounced: bool | None = None,
    limit: int = 100,
    offset: int = 0,
    newest_first: bool = True,
) -> list[dict[str, Any]]:
    """Stored journeys that started in ``[since, until)`` (epoch seconds), filtered by outcome (one or
    several, or a comma-separated string), queue (any queue the caller visited), caller number, PBX."""
    q = _calls_query(since=since, until=until, outcome=outcome, queue=queue, caller=caller, pbx=pbx,
                     lost=lost, bounced=bounced)
    order = (calls.c.started_at.desc(), calls.c.call_id.desc()) if newest_first else (
        calls.c.started_at.asc(), calls.c.call_id.asc())
    q = q.order_by(*order).limit(max(0, min(limit, MAX_LIMIT))).offset(max(0, offset))
    async with engine.connect() as conn:
        return [dict(row.journey) for row in await conn.execute(q)]


async def get_call(engine: AsyncEngine, call_id: str, pbx: str | None = None) -> dict[str, Any] | None:
    """One stored journey by call id (the newest one if several PBXs used the same id)."""
    q = select(calls.c.journey).where(calls.c.call_id == call_id)
    if pbx is not None:
        q = q.where(calls.c.pbx == pbx)
    q = q.order_by(calls.c.started_at.desc()).limit(1)
    async with engine.connect() as conn:
        row = (await conn.execute(q)).first()
    return dict(row.journey) if row is not None else None


async def callback_worklist(
    engine: AsyncEngine,
    *,
    since: float | None = None,
    until: float | None = None,
    pbx: str | None = None,
    queue: str | None = None,
    limit: int = 1000,
) -> list[dict[str, Any]]:
    """Lost calls (abandoned but not short, timed out, rejected) not yet recovered, oldest first:
    the people to call back."""
    q = _calls_query(since=since, until=until, pbx=pbx, queue=queue, lost=True, recovered=False)
    q = q.where(calls.c.ended_at.is_not(None))
    q = q.order_by(calls.c.started_at.asc(), calls.c.call_id.asc()).limit(max(0, min(limit, MAX_LIMIT)))
    async with engine.connect() as conn:
        return [dict(row.journey) for row in await conn.execute(q)]


class StoreCallQuery:
    """The HTTP API's call query (``onechance.sinks.CallQuery``) backed by the store."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def list_calls(self, flt: Any) -> list[dict[str, Any]]:
        """Journeys matching a ``CallFilter`` (since, outcomes, queue, pbx, limit), newest first."""
        outcomes = getattr(flt, "outcomes", None)
        return await list_calls(
            self.engine,
            since=getattr(flt, "since", None),
            outcome=sorted(outcomes) if outcomes is not None else None,
            queue=getattr(flt, "queue", None),
            pbx=getattr(flt, "pbx", None),
            limit=getattr(flt, "limit", 100),
        )

    async def get_call(self, call_id: str, pbx: str | None = None) -> dict[str, Any] | None:
        return await get_call(self.engine, call_id, pbx)


@dataclass(slots=True)
class StoredJourney(Journey):
    """A journey rebuilt from the store, for :meth:`JourneyTracker.remember_lost` after a restart.

    Its :meth:`to_dict` is the stored dict with the fields the tracker can still change on an ended
    call (recovery, ``updated_at``) taken from the live object, so a later update never loses data the
    rebuilt object does not model.
    """

    stored: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.stored)
        out["recovered"] = self.recovered
        out["recovered_by"] = self.recovered_by
        if self.recovered_at is not None or "recovered_at" in out:
            out["recovered_at"] = self.recovered_at
        out["updated_at"] = self.updated_at
        return out


def journey_from_dict(d: Mapping[str, Any]) -> StoredJourney:
    """Rebuild a journey object from its stored dict (best effort for the derived views; exact for
    :meth:`StoredJourney.to_dict`)."""
    j = StoredJourney(
        call_id=str(d["call_id"]),
        started_at=float(d.get("started_at") or 0.0),
        pbx=str(d.get("pbx") or ""),
        caller=str(d.get("caller") or ""),
        caller_name=str(d.get("caller_name") or ""),
        ended_at=d.get("ended_at"),
        bounced=bool(d.get("bounced")),
        recovered=bool(d.get("recovered")),
        recovered_by=d.get("recovered_by"),
        recovered_at=d.get("recovered_at"),
        uncertain=bool(d.get("uncertain")),
        hangup_by=d.get("hangup_by"),
        closed_reason=d.get("closed_reason"),
        updated_at=float(d.get("updated_at") or 0.0),
        stored=dict(d),
    )
    for v in d.get("queues") or []:
        try:
            result = VisitResult(v.get("result") or "unknown")
        except ValueError:
            result = VisitResult.UNKNOWN
        j.visits.append(
            QueueVisit(
                queue=str(v.get("queue") or ""),
                channel=str(v.get("callid") or ""),
                joined_at=float(v.get("joined_at") or j.started_at),
                left_at=v.get("left_at"),
                result=result,
                operator=v.get("operator"),
                consultation=bool(v.get("consultation")),
                exit_status=v.get("exit_status"),
            )
        )
    for leg in d.get("legs") or []:
        answered = leg.get("answered_at")
        talk_from = leg.get("talk_from")
        j.legs.append(
            OperatorLeg(
                operator=str(leg.get("operator") or "?"),
                kind=str(leg.get("kind") or "queue"),
                channel="",
                queue=leg.get("queue"),
                interface=leg.get("interface"),
                group="caller",
                rang_at=float(answered or j.started_at),
                started_at=answered,
                ended_at=leg.get("ended_at"),
                adopted_at=talk_from if talk_from is not None and talk_from != answered else None,
                ended_by=leg.get("ended_by"),
            )
        )
    for t in d.get("transfers") or []:
        j.transfers.append(
            Transfer(kind=str(t.get("kind") or "blind"), from_=t.get("from"), to=str(t.get("to") or ""),
                     at=float(t.get("at") or 0.0), to_queue=t.get("to_queue"))
        )
    return j


async def load_worklist(
    engine: AsyncEngine, *, since: float, pbx: str | None = None, limit: int = 100000
) -> list[StoredJourney]:
    """Lost, unrecovered calls that ended after ``since`` (now minus the recovery window), as journey
    objects for ``tracker.remember_lost()``."""
    q = _calls_query(pbx=pbx, lost=True, recovered=False)
    q = q.where(calls.c.ended_at.is_not(None), calls.c.ended_at >= since)
    q = q.order_by(calls.c.started_at.asc()).limit(limit)
    async with engine.connect() as conn:
        return [journey_from_dict(row.journey) for row in await conn.execute(q)]


async def count_rows(engine: AsyncEngine, tables: Sequence[str] = ()) -> dict[str, int]:
    """Row counts per table (for checks and tests)."""
    from sqlalchemy import func

    from .models import metadata

    names = list(tables) or [t for t in metadata.tables]
    out: dict[str, int] = {}
    async with engine.connect() as conn:
        for name in names:
            table = metadata.tables[name]
            out[name] = int((await conn.execute(select(func.count()).select_from(table))).scalar_one())
    return out
