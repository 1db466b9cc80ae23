"""``onechance import-queue-log``: calls from Asterisk's queue_log (files or a realtime table) into the store.

The calls are built by :mod:`onechance.importer` (pure); this module reads the realtime ``queue_log`` table,
writes the calls and keeps the promises of ``docs/import.md``:

* **never over a live call**: a built call is skipped when a call recorded live (an id without ``ql:``) of the
  same PBX has a queue visit with one of its callids (``queue_visits.callid``, within a day of it: the
  ``joined_at`` index finds it).  A call imported earlier and recorded live since is removed (the live one
  knows more);
* **idempotent**: the same lines give the same records (deterministic ids and times); a call whose stored JSON
  is already the same is not written again, so importing twice changes no row (``stored_at`` included);
* batches of :data:`BATCH` calls, one transaction each: an import stopped half-way is completed by running
  it again.

Errors are one line: 2 for bad arguments or settings, 1 for an unreadable input or database.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import column as sql_column
from sqlalchemy import delete, inspect, select
from sqlalchemy import table as sql_table
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..importer import (
    ID_PREFIX,
    BuildStats,
    ImportedCall,
    QueueLogBuilder,
    QueueLogFileError,
    QueueLogLine,
    check_file,
    line_of_row,
    merge_lines,
    read_file,
)
from ..journey import CallPolicy
from .commands import CommandError, command_engine, command_settings, run_command
from .engine import StoreConfigError, make_engine, mask_url, normalize_url
from .migrate import current_revision, upgrade
from .models import CHILD_TABLES, calls, queue_visits
from .rows import journey_rows
from .upsert import upsert_rows

__all__ = ["BATCH", "WriteStats", "cmd_import_queue_log", "read_table", "store_imported"]

#: calls per transaction
BATCH = 500
#: how far apart (seconds) a live visit and the queue_log line of the same callid may be
LIVE_SLACK = 86400.0
#: the columns a realtime queue_log table must have (Asterisk's contrib/ast-db-manage/queue_log schema)
TABLE_COLUMNS = ("time", "callid", "queuename", "agent", "event")
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_CHUNK = 400  # values in one IN (...)


@dataclass
class WriteStats:
    """What an import did to the database."""

    imported: int = 0  # new rows
    updated: int = 0  # rows imported before, now different (more lines, other rules)
    unchanged: int = 0  # rows imported before, identical
    skipped_live: int = 0  # calls recorded live: left alone
    removed: int = 0  # rows imported before whose call has been recorded live since


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def _live_callids(conn: AsyncConnection, pbx: str, callids: list[str], lo: float, hi: float) -> dict[str, str]:
    """callid -> the id of the live call with a visit of that callid (joined within [lo, hi])."""
    v = queue_visits
    found: dict[str, str] = {}
    for part in _chunks(sorted(set(callids))):
        q = select(v.c.callid, v.c.call_id).where(
            v.c.pbx == pbx, v.c.callid.in_(part), v.c.joined_at >= lo, v.c.joined_at <= hi,
            ~v.c.call_id.startswith(ID_PREFIX, autoescape=True))
        for row in await conn.execute(q):
            found.setdefault(row.callid, row.call_id)
    return found


async def store_imported(engine: AsyncEngine | None, batch: Sequence[ImportedCall], pbx: str, stats: WriteStats,
                         *, dry_run: bool = False, stored_at: float | None = None) -> None:
    """Write one batch of imported calls in one transaction (``engine`` None: a dry run without a database,
    everything counts as new)."""
    if not batch:
        return
    if engine is None:
        stats.imported += len(batch)
        return
    times = [v.joined_at for c in batch for v in (*c.record.queues, *c.record.consultations)]
    times += [c.record.recovered_at for c in batch if c.record.recovered_at is not None]
    lo, hi = (min(times) - LIVE_SLACK, max(times) + LIVE_SLACK) if times else (0.0, 0.0)
    wanted = [cid for c in batch for cid in c.callids] + [c.recovered_by_callid for c in batch
                                                          if c.recovered_by_callid is not None]
    async with engine.begin() as conn:
        live = await _live_callids(conn, pbx, wanted, lo, hi)
        keep: list[ImportedCall] = []
        gone: list[str] = []
        for c in batch:
            if any(cid in live for cid in c.callids):
                stats.skipped_live += 1
                gone.append(c.record.call_id)
                continue
            by = c.recovered_by_callid
            if by is not None and by in live:  # recovered by a call recorded live: name that one
                c = dataclasses.replace(c, record=dataclasses.replace(c.record, recovered_by=live[by]))
            keep.append(c)
        existing: dict[str, Any] = {}
        for part in _chunks([c.record.call_id for c in keep] + gone):
            q = select(calls.c.call_id, calls.c.journey).where(calls.c.pbx == pbx, calls.c.call_id.in_(part))
            existing.update({row.call_id: row.journey for row in await conn.execute(q)})
        stale = [cid for cid in gone if cid in existing]
        fresh = [c for c in keep if existing.get(c.record.call_id) != c.record.to_json()]
        stats.unchanged += len(keep) - len(fresh)
        if dry_run:
            stats.removed += len(stale)
            for c in fresh:
                if c.record.call_id in existing:
                    stats.updated += 1
                else:
                    stats.imported += 1
            return
        for part in _chunks(stale):
            for child in CHILD_TABLES:
                await conn.execute(delete(child).where(child.c.pbx == pbx, child.c.call_id.in_(part)))
            await conn.execute(delete(calls).where(calls.c.pbx == pbx, calls.c.call_id.in_(part)))
        stats.removed += len(stale)
        now = time.time() if stored_at is None else stored_at
        applied = await upsert_rows(conn, [journey_rows(c.record, now) for c in fresh])
        for c in fresh:
            if c.key not in applied:
                stats.unchanged += 1  # the stored row is newer
            elif c.record.call_id in existing:
                stats.updated += 1
            else:
                stats.imported += 1


# ---- the realtime table --------------------------------------------------------------------------------
async def _table_columns(engine: AsyncEngine, table: str) -> set[str]:
    schema, _, name = table.rpartition(".")

    def columns(sync_conn: Any) -> set[str]:
        insp = inspect(sync_conn)
        if not insp.has_table(name, schema=schema or None):
            return set()
        return {str(c["name"]).lower() for c in insp.get_columns(name, schema=schema or None)}

    async with engine.connect() as conn:
        return await conn.run_sync(columns)


async def read_table(engine: AsyncEngine, table: str, tz: tzinfo | None,
                     stats: BuildStats) -> AsyncIterator[QueueLogLine]:
    """The rows of a realtime ``queue_log`` table in time order (bad rows are counted in ``stats``); times
    without a zone are in ``tz`` (None: this machine's local time)."""
    have = await _table_columns(engine, table)
    if not have:
        raise CommandError(f"{mask_url(engine.url)}: no table {table!r}")
    missing = [c for c in TABLE_COLUMNS if c not in have]
    data = [c for c in ("data1", "data2", "data3", "data4", "data5", "data") if c in have]
    if missing or not data:
        need = ", ".join(missing or ["data1..data5 (or data)"])
        raise CommandError(f"{table}: not a queue_log table (no column {need})")
    schema, _, name = table.rpartition(".")
    cols = [*TABLE_COLUMNS, *data] + (["id"] if "id" in have else [])
    t = sql_table(name, *(sql_column(c) for c in cols), schema=schema or None)
    order = [t.c.time] + ([t.c.id] if "id" in have else [])
    q = select(*(t.c[c] for c in cols)).order_by(*order)
    number = 0
    async with engine.connect() as conn:
        async for row in await conn.stream(q.execution_options(yield_per=1000)):
            number += 1
            where = f"{table} row {number}" + (f" (id {row.id})" if "id" in have else "")
            stats.lines += 1
            try:
                yield line_of_row(row, tz, where)
            except ValueError as exc:
                stats.bad(where, str(exc))


# ---- the command ---------------------------------------------------------------------------------------
def _pbx_name(args: argparse.Namespace, settings: Any) -> str:
    if args.pbx:
        return str(args.pbx)
    names = [p.name for p in settings.pbxs()]
    if len(names) > 1:
        raise CommandError(f"several PBXs are configured ({', '.join(names)}): choose one with --pbx", 2)
    return str(names[0]) if names else "default"


def _zone(name: str | None) -> tzinfo | None:
    """``--db-tz``: a zone, or None (not given) for this machine's local time, as Asterisk writes it."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise CommandError(f"unknown time zone {name!r} (e.g. UTC, Europe/Tallinn)", 2) from None


def _summary(source: str, build: BuildStats, write: WriteStats, dry_run: bool, checked: bool) -> str:
    would = "would be " if dry_run else ""
    parts = [f"{build.lines} lines read from {source}: {build.calls} calls"]
    parts.append(f"{write.imported} {would}imported, {write.updated} {would}updated, {write.unchanged} unchanged, "
                 f"{write.skipped_live} skipped (recorded live)")
    if write.removed:
        parts.append(f"{write.removed} imported before and recorded live since {would}removed")
    if build.recovered:
        parts.append(f"{build.recovered} lost callers answered later (recovered)")
    if build.unfinished:
        parts.append(f"{build.unfinished} unfinished at the end of the input (not imported)")
    if build.closed:
        parts.append(f"{build.closed} without an end in the log (imported as uncertain)")
    if build.orphan_lines:
        parts.append(f"{build.orphan_lines} lines of calls that started before the input (ignored)")
    if build.unmatched_lines:
        parts.append(f"{build.unmatched_lines} lines that fit no visit of their call (ignored)")
    parts.append(f"{build.bad_lines} bad lines")
    text = "; ".join(parts)
    if dry_run and not checked:
        text += " (no database yet: nothing checked against live calls)"
    return text


def cmd_import_queue_log(args: argparse.Namespace) -> int:
    """``onechance import-queue-log FILE... | --from-db URL [--table T] [--db-tz Z]`` ``[--pbx N] [--dry-run]``."""
    prog = "onechance import-queue-log"

    async def main() -> int:
        files: list[str] = list(args.files or [])
        if files and args.from_db:
            raise CommandError("give queue_log files or --from-db, not both", 2)
        if not files and not args.from_db:
            raise CommandError("nothing to import: give queue_log FILE(s) or --from-db URL", 2)
        if args.from_db is None and (args.table != "queue_log" or args.db_tz is not None):
            raise CommandError("--table and --db-tz go with --from-db", 2)
        if not _TABLE_NAME.match(args.table):
            raise CommandError(f"--table {args.table!r}: not a table name (NAME or SCHEMA.NAME)", 2)
        settings = command_settings(args)
        pbx = _pbx_name(args, settings)
        tz = _zone(args.db_tz) if args.from_db else None
        source_engine = None
        if args.from_db:
            try:
                source_engine = make_engine(normalize_url(args.from_db))
            except StoreConfigError as exc:
                raise CommandError(f"--from-db: {exc}", 2) from None
        try:
            for path in files:  # read through once: a broken file stops the import before anything is written
                check_file(path)
        except QueueLogFileError as exc:
            raise CommandError(str(exc)) from None
        builder = QueueLogBuilder(CallPolicy.from_settings(settings), pbx=pbx, settings=settings.tracker_settings())
        write = WriteStats()
        engine: AsyncEngine | None = None
        checked = True
        if args.dry_run:  # read the database if there is one; never create it
            try:
                engine = command_engine(settings, must_exist=True)
            except CommandError as exc:
                if exc.status == 2:
                    raise
            if engine is not None and await current_revision(engine) is None:
                await engine.dispose()
                engine = None
            checked = engine is not None
        else:
            engine = command_engine(settings)
            await upgrade(engine)
        batch: list[ImportedCall] = []
        stored_at = time.time()

        async def take(done: list[ImportedCall]) -> None:
            batch.extend(done)
            if len(batch) >= BATCH:
                await store_imported(engine, batch, pbx, write, dry_run=args.dry_run, stored_at=stored_at)
                batch.clear()

        try:
            if source_engine is not None:
                async for line in read_table(source_engine, args.table, tz, builder.stats):
                    await take(builder.feed(line))
            else:
                for line in merge_lines(read_file(p, builder.stats) for p in files):
                    await take(builder.feed(line))
            await take(builder.finish())
            await store_imported(engine, batch, pbx, write, dry_run=args.dry_run, stored_at=stored_at)
        except QueueLogFileError as exc:  # the file changed since it was checked
            raise CommandError(f"{exc} ({write.imported + write.updated} calls written before; import again)") \
                from None
        finally:
            if engine is not None:
                await engine.dispose()
            if source_engine is not None:
                await source_engine.dispose()
        stats = builder.stats
        for shown in stats.bad_shown:
            print(f"{prog}: bad line {shown}", file=sys.stderr)
        if stats.bad_lines > len(stats.bad_shown):
            print(f"{prog}: ... and {stats.bad_lines - len(stats.bad_shown)} more bad lines", file=sys.stderr)
        source = mask_url(args.from_db) + f" table {args.table}" if args.from_db else f"{len(files)} file(s)"
        print(f"{prog}: " + _summary(source, stats, write, args.dry_run, checked) + f" (PBX {pbx})")
        return 0

    return run_command(prog, main)
