"""Read-side queries for the HTTP API, the tracker's restart and the reports.

Calls come back as :class:`~onechance.journey.CallJson`: the shape of ``onechance replay --json``, read through
:class:`~onechance.journey.CallRecord` (so rows written by older versions get every field) with the recovery
columns applied.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import ColumnElement, Row, Select, and_, case, exists, false, func, or_, select, true
from sqlalchemy.ext.asyncio import AsyncEngine

from ..journey import CallJson, CallRecord, LostCall
from .facts import AlertRow, CallbackAttempt, CallbackCall, CallbackRow, DeliveryRow
from .models import (
    alert_deliveries,
    alerts,
    callback_attempts,
    callback_calls,
    callbacks,
    calls,
    operator_legs,
    queue_visits,
)

if TYPE_CHECKING:
    from ..sinks import CallFilter, StoredVersion

MAX_LIMIT = 10000


def _as_list(value: str | Iterable[str] | None) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [v for v in value.split(",") if v]
    return list(value)


def stored_call(row: Row[Any]) -> CallJson:
    """A stored call as JSON, with its recovery (kept in columns, never in the upserted JSON) and its ``lost``
    column (rows written before the JSON carried ``lost`` have it there only)."""
    record = CallRecord.from_json(row.journey)
    if "lost" not in row.journey:
        record = dataclasses.replace(record, lost=bool(row.lost))
    if row.recovered:
        record = record.with_recovery(row.recovered_by or "", row.recovered_at or 0.0, row.recovered_how)
    return record.to_json()


def call_conditions(flt: CallFilter) -> list[ColumnElement[bool]]:
    """The SQL of a :class:`~onechance.sinks.CallFilter`'s filters (paging aside): the same meaning as
    ``CallFilter.matches`` on the calls in memory."""
    c = calls.c
    out: list[ColumnElement[bool]] = []
    if flt.since is not None:
        out.append(c.started_at >= flt.since)
    if flt.until is not None:
        out.append(c.started_at < flt.until)
    if flt.outcomes is not None:
        out.append(c.outcome.in_(sorted(flt.outcomes)))
    pbxs = flt.pbxs
    if pbxs is not None:
        out.append(c.pbx.in_(sorted(pbxs)))
    if flt.callers is not None:
        out.append(c.caller_key.in_(sorted(flt.callers)))
    if flt.directions is not None:
        out.append(c.direction.in_(sorted(flt.directions)))
    for name in ("lost", "recovered", "uncertain", "bounced"):
        wanted = getattr(flt, name)
        if wanted is not None:
            out.append(c[name].is_(wanted))
    queues = flt.queues
    if queues is not None:
        v = queue_visits.c
        out.append(exists().where(v.pbx == c.pbx, v.call_id == c.call_id, v.queue.in_(sorted(queues)),
                                  v.caller_visit.is_(True)))
    if flt.operators is not None:
        leg = operator_legs.c
        out.append(exists().where(leg.pbx == c.pbx, leg.call_id == c.call_id,
                                  leg.operator.in_(sorted(flt.operators))))
    return out


def _text(col: ColumnElement[str], dialect: str) -> ColumnElement[str]:
    """Text compared by code point, as Python compares it (PostgreSQL's default collation may not)."""
    return col.collate("C") if dialect == "postgresql" else col


def _keys(dialect: str) -> tuple[ColumnElement[Any], ColumnElement[str], ColumnElement[str]]:
    return calls.c.started_at, _text(calls.c.call_id, dialect), _text(calls.c.pbx, dialect)


def _after(key: tuple[float, str, str], descending: bool, dialect: str) -> ColumnElement[bool]:
    """Calls after ``key`` (started_at, call_id, pbx) in the order."""
    started, call_id, pbx = _keys(dialect)
    s, cid, p = key
    if descending:
        return or_(started < s, and_(started == s, or_(call_id < cid, and_(call_id == cid, pbx < p))))
    return or_(started > s, and_(started == s, or_(call_id > cid, and_(call_id == cid, pbx > p))))


def _order_by(descending: bool, dialect: str) -> list[ColumnElement[Any]]:
    return [k.desc() if descending else k.asc() for k in _keys(dialect)]


_CALL_COLUMNS = (calls.c.journey, calls.c.lost, calls.c.recovered, calls.c.recovered_by, calls.c.recovered_at,
                 calls.c.recovered_how)


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
    from ..sinks import CallFilter

    outcomes = _as_list(outcome)
    flt = CallFilter(since=since, until=until, outcomes=frozenset(outcomes) if outcomes else None,
                     queue=queue or None, pbx=pbx, lost=lost, recovered=recovered, bounced=bounced)
    q = select(*_CALL_COLUMNS).where(*call_conditions(flt))
    if caller:
        q = q.where(calls.c.caller == caller)  # the number exactly as stored
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
) -> list[CallJson]:
    """Stored calls that started in ``[since, until)`` (epoch seconds), filtered by outcome (one or
    several, or a comma-separated string), queue (any queue the caller visited), caller number (exactly as
    stored), PBX."""
    q = _calls_query(since=since, until=until, outcome=outcome, queue=queue, caller=caller, pbx=pbx,
                     lost=lost, bounced=bounced)
    q = q.order_by(*_order_by(newest_first, engine.dialect.name))
    q = q.limit(max(0, min(limit, MAX_LIMIT))).offset(max(0, offset))
    async with engine.connect() as conn:
        return [stored_call(row) for row in await conn.execute(q)]


async def get_call(engine: AsyncEngine, call_id: str, pbx: str | None = None) -> CallJson | None:
    """One stored call by call id (the newest one if several PBXs used the same id)."""
    q = _calls_query(pbx=pbx).where(calls.c.call_id == call_id)
    q = q.order_by(calls.c.started_at.desc()).limit(1)
    async with engine.connect() as conn:
        row = (await conn.execute(q)).first()
    return stored_call(row) if row is not None else None


async def callback_worklist(
    engine: AsyncEngine,
    *,
    since: float | None = None,
    until: float | None = None,
    pbx: str | None = None,
    queue: str | None = None,
    limit: int = 1000,
) -> list[CallJson]:
    """Lost calls (abandoned but not short, timed out, rejected, exited) not yet recovered, oldest first:
    the people to call back."""
    q = _calls_query(since=since, until=until, pbx=pbx, queue=queue, lost=True, recovered=False)
    q = q.where(calls.c.ended_at.is_not(None))
    q = q.order_by(calls.c.started_at.asc(), calls.c.call_id.asc()).limit(max(0, min(limit, MAX_LIMIT)))
    async with engine.connect() as conn:
        return [stored_call(row) for row in await conn.execute(q)]


def _by_pbx(keys: Collection[tuple[str, str]], size: int = 500) -> Iterable[tuple[str, list[str]]]:
    """Keys grouped by PBX, in chunks of ``size`` call ids."""
    grouped: dict[str, list[str]] = {}
    for pbx, call_id in keys:
        grouped.setdefault(pbx, []).append(call_id)
    for pbx, ids in grouped.items():
        unique = sorted(set(ids))
        for start in range(0, len(unique), size):
            yield pbx, unique[start:start + size]


class StoreCallQuery:
    """The HTTP API's call query (``onechance.sinks.CallStore``) backed by the store."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    async def list_calls(self, flt: CallFilter) -> list[CallJson]:
        """Calls matching a ``CallFilter``, in its order, after its cursor (``after``), from its offset, at
        most its limit."""
        q = select(*_CALL_COLUMNS).where(*call_conditions(flt))
        if flt.after is not None:
            q = q.where(_after(flt.after, flt.descending, self.dialect))
        q = q.order_by(*_order_by(flt.descending, self.dialect)).limit(max(0, flt.limit)).offset(max(0, flt.offset))
        async with self.engine.connect() as conn:
            return [stored_call(row) for row in await conn.execute(q)]

    async def count_calls(self, flt: CallFilter) -> int:
        q = select(func.count()).select_from(calls).where(*call_conditions(flt))
        async with self.engine.connect() as conn:
            return int((await conn.execute(q)).scalar_one())

    async def stored_versions(self, keys: Collection[tuple[str, str]],
                              flt: CallFilter) -> dict[tuple[str, str], StoredVersion]:
        from ..sinks import StoredVersion

        conditions = call_conditions(flt)
        matches = case((and_(*conditions), true()), else_=false()) if conditions else true()
        c = calls.c
        out: dict[tuple[str, str], StoredVersion] = {}
        async with self.engine.connect() as conn:
            for pbx, ids in _by_pbx(keys):
                q = select(c.pbx, c.call_id, c.updated_at, c.recovered, c.recovered_at, matches.label("matches")
                           ).where(c.pbx == pbx, c.call_id.in_(ids))
                for r in await conn.execute(q):
                    updated = float(r.updated_at)
                    if r.recovered and r.recovered_at is not None:
                        updated = max(updated, float(r.recovered_at))  # as stored_call gives it
                    out[(r.pbx, r.call_id)] = StoredVersion(updated, bool(r.matches), bool(r.recovered))
        return out

    async def stored_calls(self, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], CallJson]:
        out: dict[tuple[str, str], CallJson] = {}
        async with self.engine.connect() as conn:
            for pbx, ids in _by_pbx(keys):
                q = select(*_CALL_COLUMNS).where(calls.c.pbx == pbx, calls.c.call_id.in_(ids))
                for row in await conn.execute(q):
                    call = stored_call(row)
                    out[(call["pbx"], call["call_id"])] = call
        return out

    async def get_call(self, call_id: str, pbx: str | None = None) -> CallJson | None:
        return await get_call(self.engine, call_id, pbx)


@dataclass(frozen=True, slots=True)
class OperatorFigures:
    """What one operator (a name and, when known, an interface) did in a period: calls answered (talked with
    the caller), talk time."""

    pbx: str
    operator: str
    interface: str | None
    calls: int
    talk_seconds: float


async def operator_figures(engine: AsyncEngine, start: float, end: float, *,
                           pbx: str | None = None) -> list[OperatorFigures]:
    """Per PBX, operator and interface: the calls answered in ``[start, end)`` (by when the operator answered;
    a call counted once per operator however many times they took it) and the talk time of those answers."""
    leg = operator_legs.c
    q = (select(leg.pbx, leg.operator, leg.interface, func.count(func.distinct(leg.call_id)).label("calls"),
                func.coalesce(func.sum(leg.talk_seconds), 0.0).label("talk"))
         .where(leg.answered_at >= start, leg.answered_at < end)
         .group_by(leg.pbx, leg.operator, leg.interface))
    if pbx is not None:
        q = q.where(leg.pbx == pbx)
    async with engine.connect() as conn:
        return [OperatorFigures(r.pbx, r.operator, r.interface, int(r.calls), round(float(r.talk), 3))
                for r in await conn.execute(q)]


async def load_lost_calls(
    engine: AsyncEngine, *, since: float, pbx: str | None = None, limit: int = 100000
) -> list[LostCall]:
    """Lost, unrecovered calls that ended after ``since`` (now minus the recovery window): the tracker's watch
    list after a restart (``tracker.remember_lost``)."""
    q = select(calls.c.pbx, calls.c.call_id, calls.c.caller, calls.c.first_queue, calls.c.ended_at).where(
        calls.c.lost.is_(True), calls.c.recovered.is_(False), calls.c.ended_at.is_not(None),
        calls.c.ended_at >= since)
    if pbx is not None:
        q = q.where(calls.c.pbx == pbx)
    q = q.order_by(calls.c.ended_at.asc()).limit(limit)
    async with engine.connect() as conn:
        return [LostCall(r.pbx, r.call_id, r.caller, r.first_queue or "", r.ended_at) for r in await conn.execute(q)]


async def count_rows(engine: AsyncEngine, tables: Sequence[str] = ()) -> dict[str, int]:
    """Row counts per table (for checks and tests)."""
    from .models import metadata

    names = list(tables) or [t for t in metadata.tables]
    out: dict[str, int] = {}
    async with engine.connect() as conn:
        for name in names:
            table = metadata.tables[name]
            out[name] = int((await conn.execute(select(func.count()).select_from(table))).scalar_one())
    return out


# ---- alerts and the callback worklist -------------------------------------------------------------------
def _alert_row(r: Row[Any]) -> AlertRow:
    return AlertRow(id=r.id, pbx=r.pbx, call_id=r.call_id, kind=r.kind, queue=r.queue, caller=r.caller,
                    decided_at=r.decided_at, created_at=r.created_at, state=r.state, resolved_at=r.resolved_at,
                    payload=dict(r.payload), updated_at=r.updated_at)


def _delivery_row(r: Row[Any]) -> DeliveryRow:
    return DeliveryRow(alert_id=r.alert_id, channel=r.channel, state=r.state, attempts=r.attempts,
                       next_attempt_at=r.next_attempt_at, last_attempt_at=r.last_attempt_at, sent_at=r.sent_at,
                       resolved_sent_at=r.resolved_sent_at, last_error=r.last_error,
                       idempotency_key=r.idempotency_key, updated_at=r.updated_at)


async def load_live_deliveries(engine: AsyncEngine) -> list[tuple[AlertRow, list[DeliveryRow]]]:
    """Alerts with a delivery still to make: pending ones, and those sent to a channel that re-posts open alerts
    and resolves them (they are all loaded; the outbox keeps what its channels need)."""
    d = alert_deliveries
    live = select(d.c.alert_id).where(
        (d.c.state == "pending") | ((d.c.state == "sent") & d.c.resolved_sent_at.is_(None)))
    async with engine.connect() as conn:
        rows = (await conn.execute(select(alerts).where(alerts.c.id.in_(live)))).all()
        by_alert: dict[str, list[DeliveryRow]] = {}
        ids = [r.id for r in rows]
        for start in range(0, len(ids), 500):
            for dr in await conn.execute(select(d).where(d.c.alert_id.in_(ids[start:start + 500]))):
                by_alert.setdefault(dr.alert_id, []).append(_delivery_row(dr))
    return [(_alert_row(r), by_alert.get(r.id, [])) for r in rows]


async def list_alerts(engine: AsyncEngine, *, since: float | None = None, until: float | None = None,
                      kinds: Sequence[str] | None = None, pbx: Sequence[str] | None = None,
                      queue: Sequence[str] | None = None,
                      limit: int = 100) -> list[tuple[AlertRow, list[DeliveryRow]]]:
    """Stored alerts, newest first, with their deliveries (of any of ``pbx`` and ``queue`` when given)."""
    q = select(alerts)
    if since is not None:
        q = q.where(alerts.c.decided_at >= since)
    if until is not None:
        q = q.where(alerts.c.decided_at < until)
    if kinds:
        q = q.where(alerts.c.kind.in_(list(kinds)))
    if pbx:
        q = q.where(alerts.c.pbx.in_(list(pbx)))
    if queue:
        q = q.where(alerts.c.queue.in_(list(queue)))
    q = q.order_by(alerts.c.decided_at.desc(), alerts.c.id).limit(max(0, min(limit, MAX_LIMIT)))
    async with engine.connect() as conn:
        rows = (await conn.execute(q)).all()
        ids = [r.id for r in rows]
        by_alert: dict[str, list[DeliveryRow]] = {}
        if ids:
            d = alert_deliveries
            for dr in await conn.execute(select(d).where(d.c.alert_id.in_(ids))):
                by_alert.setdefault(dr.alert_id, []).append(_delivery_row(dr))
    return [(_alert_row(r), by_alert.get(r.id, [])) for r in rows]


async def load_callbacks(engine: AsyncEngine, *, open_only: bool = True, states: Sequence[str] | None = None,
                         queue: str | None = None, pbx: str | None = None, limit: int = 100000
                         ) -> list[CallbackRow]:
    """Worklist entries (open ones by default), oldest first, with their calls and attempts."""
    c = callbacks
    q = select(c)
    if open_only:
        q = q.where(c.c.closed_at.is_(None))
    if states:
        q = q.where(c.c.state.in_(list(states)))
    if queue is not None:
        q = q.where(c.c.queue == queue)
    if pbx is not None:
        q = q.where(c.c.pbx == pbx)
    q = q.order_by(c.c.first_lost_at.asc(), c.c.id).limit(limit)
    async with engine.connect() as conn:
        rows = (await conn.execute(q)).all()
        ids = [r.id for r in rows]
        lost: dict[str, list[CallbackCall]] = {}
        tries: dict[str, list[CallbackAttempt]] = {}
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            for r in await conn.execute(select(callback_calls).where(callback_calls.c.callback_id.in_(part))
                                        .order_by(callback_calls.c.lost_at)):
                lost.setdefault(r.callback_id, []).append(CallbackCall(r.pbx, r.call_id, r.queue, r.outcome,
                                                                       r.lost_at))
            for r in await conn.execute(select(callback_attempts)
                                        .where(callback_attempts.c.callback_id.in_(part))
                                        .order_by(callback_attempts.c.at)):
                tries.setdefault(r.callback_id, []).append(CallbackAttempt(r.id, r.at, r.by, r.call_id,
                                                                           bool(r.answered)))
    return [CallbackRow(id=r.id, pbx=r.pbx, caller_key=r.caller_key, caller=r.caller, caller_name=r.caller_name,
                        queue=r.queue, state=r.state, lost_count=r.lost_count, first_lost_at=r.first_lost_at,
                        last_lost_at=r.last_lost_at, claimed_by=r.claimed_by, claimed_at=r.claimed_at, note=r.note,
                        attempts=r.attempts, last_attempt_at=r.last_attempt_at, resolution=r.resolution,
                        done_reason=r.done_reason, resolved_by_call=r.resolved_by_call, closed_at=r.closed_at,
                        updated_at=r.updated_at, calls=tuple(lost.get(r.id, ())),
                        attempt_list=tuple(tries.get(r.id, ()))) for r in rows]
