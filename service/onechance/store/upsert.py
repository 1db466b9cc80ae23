"""Idempotent, batched upserts of call records, and recoveries.

One transaction per batch: the ``calls`` rows are upserted on ``(pbx, call_id)`` and only where the
stored row is not newer (``updated_at``), then the child rows of every call actually written are
deleted and inserted again.  Writing the same records twice, in any order, leaves the same rows.  A recovery is
a targeted update of its call's ``recovered*`` columns, which upserts never reset.

Speed: the upsert is one statement per dialect, built once (:data:`_UPSERTS`) and executed with every row of the
batch as parameters (``executemany``): SQLAlchemy compiles it once and caches it, and its "insertmanyvalues"
sends the rows in multi-row pages (RETURNING the keys written) -- instead of building and compiling a fresh
multi-VALUES statement for every batch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import case, delete, insert, or_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..journey import CallRecord, Recovered
from .facts import AlertRow, CallbackRow, DeliveryRow, Fact
from .models import (
    alert_deliveries,
    alerts,
    callback_attempts,
    callback_calls,
    callbacks,
    calls,
    operator_legs,
    queue_visits,
    transfers,
)
from .rows import RECOVERY_COLUMNS, JourneyRows, Key, coalesce, journey_rows, recovery_values

T = TypeVar("T")

_UPDATABLE = [c.name for c in calls.columns if c.name not in ("pbx", "call_id", *RECOVERY_COLUMNS)]


def _upsert_statement(make_insert: Any) -> Any:
    """``INSERT ... ON CONFLICT (pbx, call_id) DO UPDATE ... WHERE stored.updated_at <= new.updated_at RETURNING``
    for one dialect, its values bound per row at execution."""
    stmt = make_insert(calls)
    new = stmt.excluded
    set_ = {name: new[name] for name in _UPDATABLE}
    # a recovery is never undone by an upsert (a record from before it); a record that knows one sets it
    set_["recovered"] = or_(calls.c.recovered, new.recovered)
    for name in ("recovered_by", "recovered_at", "recovered_how"):
        set_[name] = case((new.recovered, new[name]), else_=calls.c[name])
    return stmt.on_conflict_do_update(
        index_elements=[calls.c.pbx, calls.c.call_id],
        set_=set_,
        where=calls.c.updated_at <= new.updated_at,
    ).returning(calls.c.pbx, calls.c.call_id)


#: the compiled-once upsert of each dialect (immutable statement constructs)
_UPSERTS: dict[str, Any] = {"postgresql": _upsert_statement(postgresql.insert),
                            "sqlite": _upsert_statement(sqlite.insert)}


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def upsert_rows(conn: AsyncConnection, rows: Sequence[JourneyRows]) -> set[Key]:
    """Upsert already mapped journeys (one per key) on an open transaction; returns the keys written
    (a key whose stored row is newer is left alone)."""
    if not rows:
        return set()
    upsert = _UPSERTS.get(conn.dialect.name)
    if upsert is None:  # pragma: no cover - make_engine only builds these two
        raise RuntimeError(f"unsupported database dialect {conn.dialect.name}")
    result = await conn.execute(upsert, [r.call for r in rows])
    applied: set[Key] = {(row.pbx, row.call_id) for row in result}
    if not applied:
        return applied
    by_pbx: dict[str, list[str]] = defaultdict(list)
    for pbx, call_id in applied:
        by_pbx[pbx].append(call_id)
    for table in (queue_visits, operator_legs, transfers):
        for pbx, ids in by_pbx.items():
            for ids_chunk in _chunks(ids, 500):
                await conn.execute(delete(table).where(table.c.pbx == pbx, table.c.call_id.in_(ids_chunk)))
    written = [r for r in rows if r.key in applied]
    for table, children in (
        (queue_visits, [v for r in written for v in r.visits]),
        (operator_legs, [leg for r in written for leg in r.legs]),
        (transfers, [t for r in written for t in r.transfers]),
    ):
        for part in _chunks(children, 1000):
            await conn.execute(insert(table), list(part))
    return applied


def _insert_for(conn: AsyncConnection) -> Any:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        return postgresql.insert
    if dialect == "sqlite":
        return sqlite.insert
    raise RuntimeError(f"unsupported database dialect {dialect}")  # pragma: no cover


async def _upsert_newer(conn: AsyncConnection, table: Any, keys: Sequence[str], values: dict[str, Any]) -> bool:
    """Insert a row, or update it where the stored one is not newer (``updated_at``); True if written."""
    make_insert = _insert_for(conn)
    stmt = make_insert(table).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c[k] for k in keys],
        set_={name: stmt.excluded[name] for name in values if name not in keys},
        where=table.c.updated_at <= stmt.excluded.updated_at,
    ).returning(table.c[keys[0]])
    return (await conn.execute(stmt)).first() is not None


async def apply_facts(conn: AsyncConnection, facts: Sequence[Fact]) -> None:
    """Upsert alert, delivery and worklist rows on an open transaction (the newest version of each wins)."""
    for fact in facts:
        if isinstance(fact, AlertRow):
            values = {f: getattr(fact, f) for f in AlertRow.__dataclass_fields__}
            await _upsert_newer(conn, alerts, ["id"], values)
        elif isinstance(fact, DeliveryRow):
            values = {f: getattr(fact, f) for f in DeliveryRow.__dataclass_fields__}
            await _upsert_newer(conn, alert_deliveries, ["alert_id", "channel"], values)
        else:
            await _apply_callback(conn, fact)


async def _apply_callback(conn: AsyncConnection, entry: CallbackRow) -> None:
    values = {f: getattr(entry, f) for f in CallbackRow.__dataclass_fields__ if f not in ("calls", "attempt_list")}
    if not await _upsert_newer(conn, callbacks, ["id"], values):
        return
    await conn.execute(delete(callback_calls).where(callback_calls.c.callback_id == entry.id))
    await conn.execute(delete(callback_attempts).where(callback_attempts.c.callback_id == entry.id))
    if entry.calls:
        await conn.execute(insert(callback_calls), [
            {"callback_id": entry.id, "pbx": c.pbx, "call_id": c.call_id, "queue": c.queue, "outcome": c.outcome,
             "lost_at": c.lost_at} for c in entry.calls])
    if entry.attempt_list:
        await conn.execute(insert(callback_attempts), [
            {"id": a.id, "callback_id": entry.id, "at": a.at, "by": a.by, "call_id": a.call_id,
             "answered": a.answered} for a in entry.attempt_list])


async def apply_ordered(conn: AsyncConnection, items: Sequence[Recovered | Fact]) -> list[Recovered]:
    """Recoveries and facts, in order; returns the recoveries whose call is not stored (yet)."""
    missing: list[Recovered] = []
    facts: list[Fact] = []
    for item in items:
        if isinstance(item, Recovered):
            if facts:
                await apply_facts(conn, facts)
                facts = []
            missing.extend(await apply_recoveries(conn, [item]))
        else:
            facts.append(item)
    if facts:
        await apply_facts(conn, facts)
    return missing


async def apply_recoveries(conn: AsyncConnection, recoveries: Sequence[Recovered]) -> list[Recovered]:
    """Mark recovered calls on an open transaction; returns the recoveries whose call is not stored (yet).
    A call already recovered keeps its first recovery."""
    missing = []
    for r in recoveries:
        result = await conn.execute(
            update(calls)
            .where(calls.c.pbx == r.pbx, calls.c.call_id == r.call_id)
            .values(**{k: (v if k == "recovered" else case((calls.c.recovered, calls.c[k]), else_=v))
                       for k, v in recovery_values(r).items()})
        )
        if result.rowcount == 0:
            missing.append(r)
    return missing


async def store_journeys(engine: AsyncEngine, records: Sequence[CallRecord], stored_at: float) -> int:
    """Upsert call records in one transaction (newest version per key wins); returns rows written.
    Raises :class:`~onechance.store.rows.BadJourney` for a record that cannot be mapped."""
    rows = [journey_rows(r, stored_at) for r in coalesce(records)]
    async with engine.begin() as conn:
        return len(await upsert_rows(conn, rows))
