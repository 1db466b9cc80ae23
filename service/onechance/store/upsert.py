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
from collections.abc import Callable, Iterator, Sequence
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
_F = TypeVar("_F", AlertRow, DeliveryRow, CallbackRow)

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


def _newer_statement(make_insert: Any, table: Any, keys: Sequence[str], columns: Sequence[str]) -> Any:
    """Insert a row, or update it where the stored one is not newer (``updated_at``), RETURNING its first key;
    the values are bound at execution (one statement per table and dialect, compiled once)."""
    stmt = make_insert(table)
    return stmt.on_conflict_do_update(
        index_elements=[table.c[k] for k in keys],
        set_={name: stmt.excluded[name] for name in columns if name not in keys},
        where=table.c.updated_at <= stmt.excluded.updated_at,
    ).returning(table.c[keys[0]])


_ALERT_COLUMNS = tuple(AlertRow.__dataclass_fields__)
_DELIVERY_COLUMNS = tuple(DeliveryRow.__dataclass_fields__)
_CALLBACK_COLUMNS = tuple(f for f in CallbackRow.__dataclass_fields__ if f not in ("calls", "attempt_list"))
#: (dialect, table) -> its "newer version wins" upsert (immutable statement constructs)
_NEWER: dict[tuple[str, str], Any] = {
    (dialect, table.name): _newer_statement(make_insert, table, keys, columns)
    for dialect, make_insert in (("postgresql", postgresql.insert), ("sqlite", sqlite.insert))
    for table, keys, columns in ((alerts, ("id",), _ALERT_COLUMNS),
                                 (alert_deliveries, ("alert_id", "channel"), _DELIVERY_COLUMNS),
                                 (callbacks, ("id",), _CALLBACK_COLUMNS))
}


async def _upsert_newer(conn: AsyncConnection, table: Any, rows: list[dict[str, Any]]) -> set[Any]:
    """Insert rows, or update them where the stored one is not newer (``updated_at``), all with one statement
    executed over the rows (one key per row: coalesce first); returns the first key of each row written."""
    stmt = _NEWER.get((conn.dialect.name, table.name))
    if stmt is None:  # pragma: no cover - make_engine only builds these two
        raise RuntimeError(f"unsupported database dialect {conn.dialect.name}")
    return {row[0] for row in await conn.execute(stmt, rows)}


def _newest(facts: list[_F], key: Callable[[_F], Any]) -> list[_F]:
    """One fact per key, the newest (highest ``updated_at``; on a tie the later one), as writing them one after
    the other would leave it."""
    out: dict[Any, _F] = {}
    for fact in facts:
        k = key(fact)
        old = out.get(k)
        if old is None or fact.updated_at >= old.updated_at:
            out[k] = fact
    return list(out.values())


async def apply_facts(conn: AsyncConnection, facts: Sequence[Fact]) -> None:
    """Upsert alert, delivery and worklist rows on an open transaction (the newest version of each wins): one
    statement per table for the whole batch (alerts first: a delivery refers to its alert)."""
    alert_rows = _newest([f for f in facts if isinstance(f, AlertRow)], lambda f: f.id)
    delivery_rows = _newest([f for f in facts if isinstance(f, DeliveryRow)], lambda f: (f.alert_id, f.channel))
    entries = _newest([f for f in facts if isinstance(f, CallbackRow)], lambda f: f.id)
    if alert_rows:
        await _upsert_newer(conn, alerts, [{f: getattr(a, f) for f in _ALERT_COLUMNS} for a in alert_rows])
    if delivery_rows:
        await _upsert_newer(conn, alert_deliveries,
                            [{f: getattr(d, f) for f in _DELIVERY_COLUMNS} for d in delivery_rows])
    if entries:
        written = await _upsert_newer(conn, callbacks, [{f: getattr(e, f) for f in _CALLBACK_COLUMNS} for e in entries])
        await _replace_callback_children(conn, [e for e in entries if e.id in written])


async def _replace_callback_children(conn: AsyncConnection, entries: list[CallbackRow]) -> None:
    """The lost calls and attempts of worklist entries just written: replaced by theirs."""
    ids = [e.id for e in entries]
    for ids_part in _chunks(ids, 500):
        await conn.execute(delete(callback_calls).where(callback_calls.c.callback_id.in_(ids_part)))
        await conn.execute(delete(callback_attempts).where(callback_attempts.c.callback_id.in_(ids_part)))
    lost: list[dict[str, Any]] = [
        {"callback_id": e.id, "pbx": c.pbx, "call_id": c.call_id, "queue": c.queue, "outcome": c.outcome,
         "lost_at": c.lost_at} for e in entries for c in e.calls]
    tried: list[dict[str, Any]] = [
        {"id": a.id, "callback_id": e.id, "at": a.at, "by": a.by, "call_id": a.call_id, "answered": a.answered}
        for e in entries for a in e.attempt_list]
    for rows in _chunks(lost, 1000):
        await conn.execute(insert(callback_calls), list(rows))
    for rows in _chunks(tried, 1000):
        await conn.execute(insert(callback_attempts), list(rows))


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
