"""Monthly partitions of the journey tables on PostgreSQL: ``onechance db partition``.

When ``calls`` outgrows what one set of indexes serves well (tens of millions of rows: retention ``DELETE``s that
bloat, vacuum passes over the whole table, indexes larger than memory), its rows and those of its child tables
(``queue_visits``, ``operator_legs``, ``transfers``) can be kept in one partition per month.  This is optional,
PostgreSQL only (SQLite keeps its single tables), and changes nothing the daemon, the API or the reports do:
see ``docs/database.md`` ("Partitioning by month").

The partition key is ``call_id``, not ``started_at``: PostgreSQL requires every unique constraint of a
partitioned table to contain the partition key, and the writer's upsert is ``ON CONFLICT (pbx, call_id)``, so
the key must be one of those two columns to keep the primary key ``(pbx, call_id)`` (and the foreign keys of
the child tables) as they are.  A call id is Asterisk's Linkedid, ``<epoch>.<sequence>``: the epoch second the
call's first channel was made, i.e. its start.  Ten-digit epochs (2001-09-09 to 2286) compare as text the way
they compare as numbers, so a range of call ids ``['1793491200', '1796083200')`` holds exactly the calls that
began in a month (here 2026-11, UTC).  Ids that do not begin with an epoch (a PBX with ``systemname`` set:
``<systemname>-<epoch>.<seq>``; calls imported from queue_log: ``ql:...``) go to a ``<table>_default``
partition.  Each ``(pbx, call_id)`` belongs to exactly one partition, so the primary key stays unique across
the partitions, whatever the ids look like.

``partition_database`` converts the four tables in one transaction (the rows are copied into the new
partitioned tables, privileges granted on the old tables are granted again, the old tables dropped), and on a
database already partitioned creates the months that are missing up to ``ahead`` months after the present
(moving any rows the default partition holds for such a month into it).  Run it monthly (a timer) so that the
months always exist before their calls arrive.
"""

from __future__ import annotations

import argparse
import calendar
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import MetaData, Table, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.schema import CreateIndex, CreateTable

from .models import NAMING_CONVENTION, calls, operator_legs, queue_visits, transfers

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

__all__ = ["JOURNEY_TABLES", "Month", "PartitionError", "PartitionResult", "cmd_db_partition", "inspect_layout",
           "partition_database", "partition_sql"]

#: the tables partitioned, parents first (the order rows are copied in; children are dropped first)
JOURNEY_TABLES: tuple[Table, ...] = (calls, queue_visits, operator_legs, transfers)
KEY = "call_id"
MAX_NEW_MONTHS = 600  # one run never creates more (a mistyped --from is an error, not 50 years of tables)
_BOUND_RE = re.compile(r"^FOR VALUES FROM \('(\d{10})'\) TO \('(\d{10})'\)$")
_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


class PartitionError(Exception):
    """Partitioning cannot be done as asked; the message is one line."""


@dataclass(frozen=True, order=True)
class Month:
    """A calendar month in UTC."""

    year: int
    month: int

    @classmethod
    def parse(cls, value: str) -> Month:
        m = re.fullmatch(r"(\d{4})-(\d{2})", value.strip())
        if not m or not 1 <= int(m.group(2)) <= 12:
            raise PartitionError(f"bad month {value!r} (YYYY-MM, e.g. 2026-11)")
        month = cls(int(m.group(1)), int(m.group(2)))
        month.check()
        return month

    @classmethod
    def of(cls, epoch: float) -> Month:
        d = datetime.fromtimestamp(epoch, UTC)
        return cls(d.year, d.month)

    def check(self) -> None:
        if not FIRST <= self <= LAST:
            raise PartitionError(f"month {self} is out of range: call ids compare as 10-digit epochs from {FIRST} "
                                 f"to {LAST}")

    @property
    def start(self) -> int:
        """Epoch second the month begins (UTC)."""
        return calendar.timegm((self.year, self.month, 1, 0, 0, 0))

    @property
    def end(self) -> int:
        return self.next().start

    def next(self) -> Month:
        return Month(self.year + self.month // 12, self.month % 12 + 1)

    def plus(self, months: int) -> Month:
        n = self.year * 12 + self.month - 1 + months
        return Month(n // 12, n % 12 + 1)

    @property
    def suffix(self) -> str:
        return f"y{self.year:04d}m{self.month:02d}"

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"


FIRST = Month(2001, 10)  # the first whole month of 10-digit epochs
LAST = Month(2286, 10)  # the last one


def months_between(first: Month, last: Month) -> list[Month]:
    out: list[Month] = []
    m = first
    while m <= last:
        out.append(m)
        m = m.next()
    return out


def partition_name(table: str, month: Month) -> str:
    return f"{table}_{month.suffix}"


def default_name(table: str) -> str:
    return f"{table}_default"


def _q(value: int | str) -> str:
    """A text literal of digits (bounds are only ever epochs)."""
    s = str(value)
    if not s.isdigit():
        raise ValueError(s)
    return f"'{s}'"


def _in_range(month: Month) -> str:
    return f"{KEY} >= {_q(month.start)} AND {KEY} < {_q(month.end)}"


def _columns(table: Table) -> str:
    return ", ".join(c.name for c in table.columns)


# ---- what the database has ----------------------------------------------------------------------------------
@dataclass
class Layout:
    """The journey tables as they are: partitioned or not, which months exist, what is in the default."""

    kind: dict[str, str]  # table -> relkind: 'r' table, 'p' partitioned, '' missing
    months: dict[str, set[Month]] = field(default_factory=dict)  # partitioned tables: monthly partitions
    defaults: dict[str, bool] = field(default_factory=dict)  # partitioned tables: has a default partition
    grants: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # table -> (grantee, privilege)

    @property
    def partitioned(self) -> bool:
        return all(self.kind.get(t.name) == "p" for t in JOURNEY_TABLES)

    @property
    def plain(self) -> bool:
        return all(self.kind.get(t.name) == "r" for t in JOURNEY_TABLES)


async def inspect_layout(conn: AsyncConnection) -> Layout:
    kinds: dict[str, str] = {}
    layout = Layout(kinds)
    for table in JOURNEY_TABLES:
        name = table.name
        kind = (await conn.execute(text("SELECT c.relkind::text FROM pg_class c WHERE c.oid = to_regclass(:t)"),
                                   {"t": name})).scalar()
        kinds[name] = str(kind) if kind is not None else ""
        rows = (await conn.execute(text(
            "SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END, "
            "a.privilege_type FROM pg_class c, aclexplode(c.relacl) a "
            "WHERE c.oid = to_regclass(:t) AND a.grantee <> c.relowner ORDER BY 1, 2"), {"t": name})).all()
        layout.grants[name] = [(str(r[0]), str(r[1])) for r in rows]
        if kinds[name] != "p":
            continue
        months: set[Month] = set()
        has_default = False
        for (bound,) in (await conn.execute(text(
                "SELECT pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(:t)"), {"t": name})).all():
            if bound == "DEFAULT":
                has_default = True
                continue
            m = _BOUND_RE.match(str(bound))
            if m:
                month = Month.of(int(m.group(1)))
                if month.start == int(m.group(1)) and month.end == int(m.group(2)):
                    months.add(month)
        layout.months[name] = months
        layout.defaults[name] = has_default
    return layout


# ---- the SQL ------------------------------------------------------------------------------------------------
def _partitioned_tables() -> list[Table]:
    """The journey tables exactly as ``models`` defines them (same columns, names, keys, indexes), declared
    ``PARTITION BY RANGE (call_id)``."""
    md = MetaData(naming_convention=NAMING_CONVENTION)
    out = []
    for table in JOURNEY_TABLES:
        copy = table.to_metadata(md)
        copy.dialect_kwargs["postgresql_partition_by"] = f"RANGE ({KEY})"
        out.append(copy)
    return out


def _ddl(element: Any) -> str:
    return str(element.compile(dialect=_PG)).strip()


def create_month_sql(month: Month, *, move_from_default: bool) -> list[str]:
    """The month's partition of every journey table.  With ``move_from_default``, rows the default partitions
    hold for that month are set aside first and put back after (PostgreSQL refuses a new partition while the
    default holds rows of its range); deleting the calls deletes their child rows (``ON DELETE CASCADE``)."""
    out: list[str] = []
    if move_from_default:
        for table in JOURNEY_TABLES:
            out.append(f"CREATE TEMPORARY TABLE oc_move_{table.name} ON COMMIT DROP AS SELECT {_columns(table)} "
                       f"FROM {default_name(table.name)} WHERE {_in_range(month)}")
        out.append(f"DELETE FROM {default_name(calls.name)} WHERE {_in_range(month)}")
    for table in JOURNEY_TABLES:
        out.append(f"CREATE TABLE {partition_name(table.name, month)} PARTITION OF {table.name} "
                   f"FOR VALUES FROM ({_q(month.start)}) TO ({_q(month.end)})")
    if move_from_default:
        for table in JOURNEY_TABLES:
            cols = _columns(table)
            out.append(f"INSERT INTO {table.name} ({cols}) SELECT {cols} FROM oc_move_{table.name}")
            out.append(f"DROP TABLE oc_move_{table.name}")
    return out


def convert_sql(months: Sequence[Month], grants: dict[str, list[tuple[str, str]]] | None = None) -> list[str]:
    """Unpartitioned journey tables (at the head revision) to partitioned ones with ``months`` and a default
    partition each, in statements to run in one transaction."""
    out: list[str] = []
    old = {t.name: f"{t.name}_unpartitioned" for t in JOURNEY_TABLES}
    out.append("LOCK TABLE " + ", ".join(t.name for t in JOURNEY_TABLES) + " IN ACCESS EXCLUSIVE MODE")
    # 1. the old tables step aside: their names, and the names of their keys and indexes, are the new tables'
    for table in JOURNEY_TABLES:
        out.append(f"ALTER TABLE {table.name} RENAME TO {old[table.name]}")
        pk = table.primary_key.name
        out.append(f"ALTER TABLE {old[table.name]} RENAME CONSTRAINT {pk} TO {pk}_unpartitioned")
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            out.append(f"ALTER INDEX {index.name} RENAME TO {index.name}_unpartitioned")
    # 2. the partitioned tables, their indexes, their partitions
    for table in _partitioned_tables():
        out.append(_ddl(CreateTable(table)))
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            out.append(_ddl(CreateIndex(index)))
        out.append(f"CREATE TABLE {default_name(table.name)} PARTITION OF {table.name} DEFAULT")
    for month in months:
        out.extend(create_month_sql(month, move_from_default=False))
    # 3. the rows (parents first, for the foreign keys), the privileges, the old tables gone
    for table in JOURNEY_TABLES:
        cols = _columns(table)
        out.append(f"INSERT INTO {table.name} ({cols}) SELECT {cols} FROM {old[table.name]}")
    for table in JOURNEY_TABLES:
        for grantee, privilege in (grants or {}).get(table.name, []):
            out.append(f"GRANT {privilege} ON {table.name} TO {grantee}")
    out.append("DROP TABLE " + ", ".join(old[t.name] for t in reversed(JOURNEY_TABLES)))
    out.append("ANALYZE " + ", ".join(t.name for t in JOURNEY_TABLES))
    return out


# ---- doing it -----------------------------------------------------------------------------------------------
@dataclass
class PartitionResult:
    converted: bool = False
    copied: int = 0  # calls copied into the partitioned table (conversion)
    created: list[Month] = field(default_factory=list)  # months created (each for every journey table)
    moved: int = 0  # calls moved out of the default partition into a new month
    in_default: int = 0  # calls in the default partition afterwards
    months: list[Month] = field(default_factory=list)  # every monthly partition afterwards
    statements: list[str] = field(default_factory=list)  # what was (or, dry run, would be) executed


async def _first_month(conn: AsyncConnection, table: str, now: Month) -> Month:
    """The month of the oldest call id that begins with an epoch (the present month when there is none)."""
    low = (await conn.execute(text(
        f"SELECT min(substr({KEY}, 1, 10)) FROM {table} WHERE {KEY} ~ '^[0-9]{{10}}([.]|$)'"))).scalar()
    return Month.of(int(low)) if low is not None and FIRST.start <= int(low) < LAST.end else now


async def plan(conn: AsyncConnection, *, ahead: int, first: Month | None, last: Month | None,
               now: float) -> tuple[Layout, list[Month], list[str]]:
    """What to do: (layout, months to create, statements)."""
    if ahead < 0 or ahead > 120:
        raise PartitionError(f"--ahead {ahead}: months ahead must be 0 to 120")
    layout = await inspect_layout(conn)
    missing = [t.name for t in JOURNEY_TABLES if not layout.kind.get(t.name)]
    if missing:
        raise PartitionError(f"no table {', '.join(missing)} (run `onechance db upgrade` first)")
    this = Month.of(now)
    last = last or this.plus(ahead)
    if first is not None and first > last:
        raise PartitionError(f"the first month {first} is after the last one {last}")
    if layout.plain:
        start = first or min(await _first_month(conn, calls.name, this), last)
        months = months_between(start, last)
        if len(months) > MAX_NEW_MONTHS:
            raise PartitionError(f"{len(months)} months from {months[0]} to {last}: more than {MAX_NEW_MONTHS}")
        return layout, months, convert_sql(months, layout.grants)
    if not layout.partitioned:
        odd = ", ".join(f"{t.name} ({'partitioned' if layout.kind[t.name] == 'p' else 'not partitioned'})"
                        for t in JOURNEY_TABLES)
        raise PartitionError(f"the journey tables are partly partitioned: {odd}; fix them by hand (docs/database.md)")
    have = set.intersection(*(layout.months[t.name] for t in JOURNEY_TABLES))
    odd_months = set.union(*(layout.months[t.name] for t in JOURNEY_TABLES)) - have
    if odd_months:
        raise PartitionError("months partitioned in some journey tables but not all: "
                             + ", ".join(str(m) for m in sorted(odd_months)))
    if not all(layout.defaults.get(t.name) for t in JOURNEY_TABLES):
        raise PartitionError("a journey table has no default partition (docs/database.md: each has one)")
    start = first or min(min(have) if have else this, last)
    wanted = [m for m in months_between(start, last) if m not in have]
    if len(wanted) > MAX_NEW_MONTHS:
        raise PartitionError(f"{len(wanted)} months to create: more than {MAX_NEW_MONTHS}")
    statements = [s for m in wanted for s in create_month_sql(m, move_from_default=True)]
    return layout, wanted, statements


async def partition_database(engine: AsyncEngine, *, ahead: int = 3, first: Month | None = None,
                             last: Month | None = None, dry_run: bool = False, lock_timeout: float = 30.0,
                             clock: Callable[[], float] = time.time) -> PartitionResult:
    """Partition the journey tables by month (or add the missing months), in one transaction: the months from
    ``first`` (default: the oldest call's, or the first existing partition's) to ``last`` (default: the present
    month plus ``ahead``).  Raises
    :class:`PartitionError` (one line) when it cannot; database errors propagate (nothing is changed)."""
    from .migrate import current_revision, head_revision

    if engine.dialect.name != "postgresql":
        raise PartitionError("partitioning is for PostgreSQL; a SQLite database keeps its single tables "
                             "(nothing done)")
    for month in (first, last):
        if month is not None:
            month.check()
    rev, head = await current_revision(engine), head_revision()
    if rev is None:
        raise PartitionError("the database has no onechance tables yet (run `onechance db upgrade`)")
    if rev != head:
        raise PartitionError(f"the database is at revision {rev}, not {head} (run `onechance db upgrade` first)")
    result = PartitionResult()
    async with engine.connect() as conn:
        trans = await conn.begin()
        try:
            await conn.execute(text(f"SET LOCAL lock_timeout = '{max(1, int(lock_timeout * 1000))}ms'"))
            layout, months, statements = await plan(conn, ahead=ahead, first=first, last=last, now=clock())
            result.statements = statements
            result.converted = layout.plain
            result.created = months
            if dry_run:
                await trans.rollback()
                return result
            if not layout.plain:
                for month in months:
                    result.moved += int((await conn.execute(text(
                        f"SELECT count(*) FROM {default_name(calls.name)} WHERE {_in_range(month)}"))).scalar() or 0)
            for statement in statements:
                await conn.execute(text(statement))
            if layout.plain:
                result.copied = int((await conn.execute(text(f"SELECT count(*) FROM {calls.name}"))).scalar() or 0)
            result.in_default = int((await conn.execute(text(
                f"SELECT count(*) FROM {default_name(calls.name)}"))).scalar() or 0)
            after = await inspect_layout(conn)
            result.months = sorted(after.months.get(calls.name, set()))
            await trans.commit()
        except BaseException as exc:
            if trans.is_active:
                await trans.rollback()
            if _sqlstate(exc) == "55P03":
                raise PartitionError(f"could not lock the journey tables within {lock_timeout:g} s (a long query or "
                                     "an open transaction holds them); nothing changed, try again") from None
            raise
    return result


def _sqlstate(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    for err in (orig, getattr(orig, "__cause__", None), exc):
        code = getattr(err, "sqlstate", None) or getattr(err, "pgcode", None)
        if isinstance(code, str):
            return code
    return ""


def partition_sql(statements: Sequence[str]) -> str:
    """A script for psql: the statements in one transaction."""
    body = "".join(f"{s.rstrip(';')};\n" for s in statements)
    return f"BEGIN;\nSET LOCAL lock_timeout = '30s';\n{body}COMMIT;\n"


# ---- the command ----------------------------------------------------------------------------------------------
def _span(months: Sequence[Month]) -> str:
    if not months:
        return "none"
    return str(months[0]) if len(months) == 1 else f"{months[0]} to {months[-1]} ({len(months)})"


def cmd_db_partition(args: argparse.Namespace) -> int:
    """``onechance db partition [--ahead N] [--from YYYY-MM] [--until YYYY-MM] [--sql]``."""
    from .commands import CommandError, command_engine, command_settings, run_command
    from .engine import mask_url

    prog = "onechance db partition"

    async def main() -> int:
        settings = command_settings(args)
        try:
            first = Month.parse(args.first) if args.first else None
        except PartitionError as exc:
            raise CommandError(f"--from: {exc}", 2) from None
        try:
            last = Month.parse(args.last) if args.last else None
        except PartitionError as exc:
            raise CommandError(f"--until: {exc}", 2) from None
        engine = command_engine(settings, must_exist=True)
        url = mask_url(settings.database_url())
        try:
            try:
                result = await partition_database(engine, ahead=args.ahead, first=first, last=last, dry_run=args.sql,
                                                  lock_timeout=args.lock_timeout)
            except PartitionError as exc:
                raise CommandError(str(exc), 2 if engine.dialect.name != "postgresql" else 1) from None
        finally:
            await engine.dispose()
        if args.sql:
            print(partition_sql(result.statements), end="")
            return 0
        tables = ", ".join(t.name for t in JOURNEY_TABLES)
        if result.converted:
            print(f"{url}: {tables} partitioned by month ({result.copied} calls copied); months {_span(result.months)}"
                  f", and a default partition each")
        elif result.created:
            print(f"{url}: months {_span(result.created)} added to {tables}"
                  + (f"; {result.moved} calls moved out of the default partition" if result.moved else ""))
        else:
            print(f"{url}: nothing to do: months {_span(result.months)} exist")
        if result.in_default:
            print(f"{url}: {result.in_default} calls in the default partition (call ids that do not begin with an "
                  f"epoch, or outside the months)")
        return 0

    return run_command(prog, main)
