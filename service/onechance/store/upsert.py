"""Idempotent, batched upserts of journeys.

One transaction per batch: the ``calls`` rows are upserted on ``(pbx, call_id)`` and only where the
stored row is not newer (``updated_at``), then the child rows of every call actually written are
deleted and inserted again.  Writing the same journeys twice, in any order, leaves the same rows.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypeVar

from sqlalchemy import delete, insert
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .models import calls, operator_legs, queue_visits, transfers
from .rows import JourneyRows, Key, coalesce, journey_rows

T = TypeVar("T")

#: rows per INSERT statement (keeps bound parameters far below SQLite's and asyncpg's limits)
CHUNK = 400
_UPDATABLE = [c.name for c in calls.columns if c.name not in ("pbx", "call_id")]


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def upsert_rows(conn: AsyncConnection, rows: Sequence[JourneyRows]) -> set[Key]:
    """Upsert already mapped journeys (one per key) on an open transaction; returns the keys written
    (a key whose stored row is newer is left alone)."""
    if not rows:
        return set()
    dialect = conn.dialect.name
    if dialect == "postgresql":
        make_insert: Any = postgresql.insert
    elif dialect == "sqlite":
        make_insert = sqlite.insert
    else:  # pragma: no cover - make_engine only builds these two
        raise RuntimeError(f"unsupported database dialect {dialect}")
    applied: set[Key] = set()
    for chunk in _chunks(rows, CHUNK):
        stmt = make_insert(calls).values([r.call for r in chunk])
        stmt = stmt.on_conflict_do_update(
            index_elements=[calls.c.pbx, calls.c.call_id],
            set_={name: stmt.excluded[name] for name in _UPDATABLE},
            where=calls.c.updated_at <= stmt.excluded.updated_at,
        ).returning(calls.c.pbx, calls.c.call_id)
        result = await conn.execute(stmt)
        applied.update((row.pbx, row.call_id) for row in result)
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


async def store_journeys(engine: AsyncEngine, journeys: Sequence[Mapping[str, Any]], stored_at: float) -> int:
    """Upsert journey dicts in one transaction (newest version per key wins); returns rows written.
    Raises :class:`~onechance.store.rows.BadJourney` for a journey that cannot be mapped."""
    rows = [journey_rows(j, stored_at) for j in coalesce(journeys)]
    async with engine.begin() as conn:
        return len(await upsert_rows(conn, rows))
