"""Queue and operator figures per period, as supervisors and ``onechance report`` see them.

Definitions (``docs/reports.md`` has them all, with examples).  Every queue figure counts queue *visits*: a call
that visits two queues counts in both, and a call that comes back to a queue after a transfer counts twice there;
the consultation call of an attended transfer is a visit of the queue it dialled, counted as Asterisk's queue_log
ends it (CONNECT, ABANDON...) even when the caller it belongs to hung up before the transfer completed.  A visit
belongs to the period it joined the queue in, in the report's time zone:

* ``offered``: visits that entered the queue (Asterisk's ENTERQUEUE); a refused caller never entered
  and is counted in ``rejected`` only;
* ``answered``: an operator answered (CONNECT); ``asa_seconds`` is their mean wait;
* ``abandoned``: the caller hung up while waiting (ABANDON), short abandons included;
  ``short_abandoned``: those shorter than the short-abandon threshold (the journey's ``short_abandon``);
* ``timeouts``: the queue gave up (EXITWITHTIMEOUT, EXITEMPTY, WITHDRAW);
* ``rejected``: the queue refused the caller (FULL, JOINEMPTY, JOINUNAVAIL; no queue_log line);
* ``service_level``: Asterisk's ``ServicelevelPerf`` = answered within the service level / answered
  x 100; ``service_level2``: Asterisk's ``ServicelevelPerf2`` = (answered within + unanswered within)
  / (answered + unanswered) x 100, where unanswered = abandoned + timeouts, as Asterisk 22 counts them
  (``record_abandoned`` runs for both).  "Within" is the call policy's one service-level rule, Asterisk's
  whole-second arithmetic (``floor(left) - floor(joined) <= service level``).  Both are ``None`` when their
  denominator is 0;
* ``transfers``: blind and attended transfers made by operators who answered through this queue,
  in the period of the transfer;
* ``bounced``: bounced calls, counted once, in the first queue the caller entered;
* ``lost``: lost callers (the call policy's verdict: an inbound call abandoned but not short, timed out,
  refused or exited), by the call's first queue and the period it started in; ``recovered``: those reached again
  (called again and answered, or called back and answering); ``recovery_rate``: recovered / lost x 100;
  ``median_callback_seconds``: the median time from a lost call's end to the caller being reached.

Rows: one per PBX, queue and period (``kind = "queue"``); after each period's queue rows a total of that period
(``kind = "total"``, ``queue`` None), preceded by one per PBX when the data holds several PBXs; at the end the
grand totals (``period`` None): one per queue when the report has several periods, one per PBX when it has
several PBXs, and the grand total.  A total's counts are the sums of the rows it covers and its rates are
computed from those sums (the median from all the callback times it covers).

Operator figures (``operator_figures=True``), per PBX, operator, queue (``""``: calls not answered through a queue,
e.g. direct calls) and period: ``answered`` (the operator started talking with the caller, in that period),
``talk_seconds`` and ``aht_seconds`` (mean talk time), ``transfers`` (made by the operator, in the period of the
transfer, in the queue the operator answered through), ``bounced_passed_on`` (calls that became bounced by this
operator's transfer: the transfer that reached the bounce threshold), then one total per operator.
"""

from __future__ import annotations

import csv
import io
import json
import os
import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, tzinfo
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..journey import CallPolicy
from .models import calls, operator_legs, queue_visits, transfers

UTC = ZoneInfo("UTC")
YIELD_PER = 1000  # rows fetched at a time
PERIODS = ("hour", "day", "week", "month")
FORMATS = ("table", "csv", "json", "html")

#: the figures of a queue row, in order
QUEUE_FIGURES = (
    "offered",
    "answered",
    "abandoned",
    "short_abandoned",
    "timeouts",
    "rejected",
    "asa_seconds",
    "service_level",
    "service_level2",
    "transfers",
    "bounced",
    "lost",
    "recovered",
    "recovery_rate",
    "median_callback_seconds",
)
#: the fields of a queue or total row (JSON ``rows``)
FIELDS = ("kind", "pbx", "queue", "period", "period_start", *QUEUE_FIGURES)
OPERATOR_FIGURES = ("answered", "talk_seconds", "aht_seconds", "transfers", "bounced_passed_on")
#: the fields of an operator row (JSON ``operators``)
OPERATOR_FIELDS = ("kind", "pbx", "operator", "queue", "period", "period_start", *OPERATOR_FIGURES)
#: CSV: both kinds of rows in one file, the union of their fields, each line with the report's time zone
CSV_FIELDS = ("timezone", "kind", "pbx", "queue", "operator", "period", "period_start", *QUEUE_FIGURES,
              *(f for f in OPERATOR_FIGURES if f not in QUEUE_FIGURES))


class ReportError(ValueError):
    """A bad report argument (period, time zone, bound); the message is one line."""


# ---- time zones and periods ----------------------------------------------------------------------------
def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; :class:`ReportError` when there is none."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ReportError(f"unknown time zone {name!r} (e.g. UTC, Europe/Tallinn)") from None


def local_zone() -> ZoneInfo:
    """The machine's time zone: ``$TZ``, else ``/etc/localtime`` (its IANA name when it links into a zoneinfo
    directory, ``/etc/timezone`` otherwise), else UTC."""
    tz_env = os.environ.get("TZ", "").strip()
    if tz_env:
        name = tz_env.removeprefix(":")
        if name.startswith("/"):
            try:
                with open(name, "rb") as fh:
                    return ZoneInfo.from_file(fh, key=name)
            except (OSError, ValueError):
                pass
        else:
            try:
                return ZoneInfo(name)
            except (ZoneInfoNotFoundError, ValueError):
                pass  # a POSIX rule such as EST5EDT,M3.2.0,M11.1.0 that is no zone name: the system's zone
    localtime = Path("/etc/localtime")
    try:
        target = str(localtime.resolve())
        marker = "/zoneinfo/"
        if marker in target:
            return ZoneInfo(target.split(marker, 1)[1])
    except (OSError, ZoneInfoNotFoundError, ValueError):
        pass
    try:
        name = Path("/etc/timezone").read_text(encoding="utf-8").strip()
        if name:
            return ZoneInfo(name)
    except (OSError, UnicodeDecodeError, ZoneInfoNotFoundError, ValueError):
        pass
    try:
        with localtime.open("rb") as fh:
            return ZoneInfo.from_file(fh, key="localtime")
    except (OSError, ValueError):
        return UTC


def zone_name(tz: tzinfo) -> str:
    key = getattr(tz, "key", None)
    return str(key) if key else str(tz)


@dataclass(frozen=True, slots=True)
class Period:
    """One period of a report: its label and its first instant."""

    start: float  # epoch seconds
    label: str  # 2026-11-22 14:00 | 2026-11-22 | 2026-W47 | 2026-11
    start_iso: str  # the first instant in the report's zone, with its UTC offset


def _local_midnight(d: date, tz: tzinfo) -> datetime:
    """The first instant of day ``d`` in ``tz``: midnight, or the first whole hour after a gap at midnight."""
    for hour in range(4):
        wall = datetime.combine(d, time(hour), tzinfo=tz)
        found = datetime.fromtimestamp(wall.timestamp(), tz)
        if found.replace(tzinfo=None) == wall.replace(tzinfo=None):
            return found
    return datetime.combine(d, time(0), tzinfo=tz)


def period_of(ts: float, by: str, tz: tzinfo) -> Period:
    """The period (``hour``, ``day``, ISO ``week`` or ``month`` in ``tz``) that the instant ``ts`` falls in."""
    dt = datetime.fromtimestamp(ts, tz)
    if by == "hour":
        start = dt.replace(minute=0, second=0, microsecond=0)
        label = start.strftime("%Y-%m-%d %H:00")
        if start.replace(fold=1 - start.fold).utcoffset() != start.utcoffset():
            # the hour that happens twice when the clocks go back: told apart by the offset
            label += start.strftime("%z")[:3] + ":" + start.strftime("%z")[3:]
        return Period(start.timestamp(), label, start.isoformat())
    if by == "day":
        d = dt.date()
        label = d.isoformat()
    elif by == "week":
        iso = dt.isocalendar()
        d = date.fromisocalendar(iso.year, iso.week, 1)
        label = f"{iso.year}-W{iso.week:02d}"
    elif by == "month":
        d = date(dt.year, dt.month, 1)
        label = f"{dt.year}-{dt.month:02d}"
    else:
        raise ReportError(f"unknown period {by!r} (hour, day, week or month)")
    start = _local_midnight(d, tz)
    return Period(start.timestamp(), label, start.isoformat())


def next_period(p: Period, by: str, tz: tzinfo) -> Period:
    """The period after ``p``."""
    if by == "hour":
        ts = p.start + 3600.0
        nxt = period_of(ts, by, tz)
        while nxt.label == p.label:  # a zone whose clocks move by half an hour
            ts += 1800.0
            nxt = period_of(ts, by, tz)
        return nxt
    d = datetime.fromtimestamp(p.start, tz).date()
    if by == "day":
        d += timedelta(days=1)
    elif by == "week":
        d += timedelta(days=7)
    else:
        d = date(d.year + d.month // 12, d.month % 12 + 1, 1)
    return period_of(_local_midnight(d, tz).timestamp(), by, tz)


def periods_between(start: float, end: float, by: str, tz: tzinfo, limit: int = 2000) -> list[Period] | None:
    """Every period that meets ``[start, end)``, in order; None when there are more than ``limit``."""
    out: list[Period] = []
    if end <= start:
        return out
    p = period_of(start, by, tz)
    while p.start < end:
        if len(out) >= limit:
            return None
        out.append(p)
        p = next_period(p, by, tz)
    return out


# ---- rows ----------------------------------------------------------------------------------------------
@dataclass(slots=True)
class QueueRow:
    """The figures of one queue in one period, or a total (``kind == "total"``; None = all)."""

    kind: str
    pbx: str | None
    queue: str | None
    period: str | None
    period_start: str | None
    offered: int = 0
    answered: int = 0
    abandoned: int = 0
    short_abandoned: int = 0
    timeouts: int = 0
    rejected: int = 0
    answered_in_sl: int = 0
    unanswered_in_sl: int = 0
    answered_wait: float = 0.0
    transfers: int = 0
    bounced: int = 0
    lost: int = 0
    recovered: int = 0
    callback_times: list[float] = field(default_factory=list)

    @property
    def date(self) -> str | None:
        """The period's label (the day, for a daily report)."""
        return self.period

    @property
    def recovery_rate(self) -> float | None:
        return round(100.0 * self.recovered / self.lost, 1) if self.lost else None

    @property
    def median_callback_seconds(self) -> float | None:
        return round(statistics.median(self.callback_times), 1) if self.callback_times else None

    @property
    def asa_seconds(self) -> float | None:
        return round(self.answered_wait / self.answered, 1) if self.answered else None

    @property
    def service_level(self) -> float | None:
        return round(100.0 * self.answered_in_sl / self.answered, 1) if self.answered else None

    @property
    def service_level2(self) -> float | None:
        total = self.answered + self.abandoned + self.timeouts
        if not total:
            return None
        return round(100.0 * (self.answered_in_sl + self.unanswered_in_sl) / total, 1)

    def add(self, other: QueueRow) -> None:
        for name in _QUEUE_SUMS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.callback_times.extend(other.callback_times)

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}


_QUEUE_SUMS = ("offered", "answered", "abandoned", "short_abandoned", "timeouts", "rejected", "answered_in_sl",
               "unanswered_in_sl", "answered_wait", "transfers", "bounced", "lost", "recovered")

#: the name this module's queue row had when reports were daily only
QueueDay = QueueRow


@dataclass(slots=True)
class OperatorRow:
    """The figures of one operator in one queue and period, or the operator's total (``operator_total``)."""

    kind: str
    pbx: str | None
    operator: str
    queue: str | None  # "" = not through a queue; None = all queues (a total)
    period: str | None
    period_start: str | None
    answered: int = 0
    talk_seconds: float = 0.0
    transfers: int = 0
    bounced_passed_on: int = 0

    @property
    def aht_seconds(self) -> float | None:
        return round(self.talk_seconds / self.answered, 1) if self.answered else None

    def add(self, other: OperatorRow) -> None:
        self.answered += other.answered
        self.talk_seconds += other.talk_seconds
        self.transfers += other.transfers
        self.bounced_passed_on += other.bounced_passed_on

    def to_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in OPERATOR_FIELDS}
        out["talk_seconds"] = round(self.talk_seconds, 1)
        return out


@dataclass(slots=True)
class Report:
    """A report: its rows in display order and what they are about."""

    timezone: str
    by: str
    start: float
    end: float
    start_iso: str
    end_iso: str
    pbxs: list[str]  # the PBXs with figures in the report
    rows: list[QueueRow]
    operators: list[OperatorRow] | None = None  # only when asked for
    periods: list[Period] = field(default_factory=list)  # the periods with figures, in order
    tz: tzinfo = UTC

    def all_periods(self, limit: int = 2000) -> list[Period]:
        """Every period of the report's range, with figures or not (those with figures past ``limit``)."""
        found = periods_between(self.start, self.end, self.by, self.tz, limit)
        return self.periods if found is None else found

    @property
    def several_pbxs(self) -> bool:
        return len(self.pbxs) > 1

    def queue_rows(self) -> list[QueueRow]:
        return [r for r in self.rows if r.kind == "queue"]

    def period_totals(self) -> list[QueueRow]:
        """The total of each period over every queue and PBX, in order."""
        return [r for r in self.rows if r.kind == "total" and r.queue is None and r.period is not None
                and (r.pbx is None or not self.several_pbxs)]

    def grand_total(self) -> QueueRow:
        return self.rows[-1]

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "timezone": self.timezone,
            "by": self.by,
            "from": self.start_iso,
            "to": self.end_iso,
            "pbxs": self.pbxs,
            "rows": [r.to_dict() for r in self.rows],
        }
        if self.operators is not None:
            out["operators"] = [r.to_dict() for r in self.operators]
        return out


# ---- computing -----------------------------------------------------------------------------------------
async def build_report(
    engine: AsyncEngine,
    start: float,
    end: float,
    *,
    by: str = "day",
    tz: tzinfo = UTC,
    queue: str | None = None,
    pbx: str | None = None,
    policy: CallPolicy | None = None,
    operator_figures: bool = False,
) -> Report:
    """The report of ``[start, end)`` (epoch seconds) per ``by`` period in ``tz``, judged by ``policy`` (each
    queue's service level and bounce threshold).  Rows are streamed from the database: only the figures of
    each (PBX, queue, period) stay in memory."""
    if by not in PERIODS:
        raise ReportError(f"unknown period {by!r} (hour, day, week or month)")
    rules = policy or CallPolicy()
    periods: dict[str, Period] = {}
    cells: dict[tuple[str, str, str], QueueRow] = {}

    def period(ts: float) -> Period:
        p = period_of(ts, by, tz)
        return periods.setdefault(p.label, p)

    def cell(pbx_: str, q: str, ts: float) -> QueueRow:
        p = period(ts)
        key = (pbx_, q, p.label)
        row = cells.get(key)
        if row is None:
            row = cells[key] = QueueRow("queue", pbx_, q, p.label, p.start_iso)
        return row

    v = queue_visits
    visits_q = select(v.c.pbx, v.c.queue, v.c.joined_at, v.c.left_at, v.c.wait_seconds, v.c.result,
                      v.c.short_abandon).where(v.c.joined_at >= start, v.c.joined_at < end)
    t = transfers
    transfers_q = select(t.c.pbx, t.c.from_queue, t.c.at).where(t.c.at >= start, t.c.at < end,
                                                                 t.c.from_queue.is_not(None))
    bounced_q = (
        select(v.c.pbx, v.c.queue, v.c.joined_at)
        .select_from(v.join(calls, and_(calls.c.pbx == v.c.pbx, calls.c.call_id == v.c.call_id)))
        .where(calls.c.bounced.is_(True), v.c.seq == 0, v.c.caller_visit.is_(True))
        .where(v.c.joined_at >= start, v.c.joined_at < end)
    )
    lost_q = select(calls.c.pbx, calls.c.first_queue, calls.c.started_at, calls.c.ended_at, calls.c.recovered,
                    calls.c.recovered_at).where(calls.c.lost.is_(True), calls.c.started_at >= start,
                                                calls.c.started_at < end)
    if queue is not None:
        lost_q = lost_q.where(calls.c.first_queue == queue)
        visits_q = visits_q.where(v.c.queue == queue)
        transfers_q = transfers_q.where(t.c.from_queue == queue)
        bounced_q = bounced_q.where(v.c.queue == queue)
    if pbx is not None:
        lost_q = lost_q.where(calls.c.pbx == pbx)
        visits_q = visits_q.where(v.c.pbx == pbx)
        transfers_q = transfers_q.where(t.c.pbx == pbx)
        bounced_q = bounced_q.where(v.c.pbx == pbx)

    ops: dict[tuple[str, str, str, str], OperatorRow] | None = None
    async with engine.connect() as conn:
        # streamed: a year of a busy PBX is millions of visits; only the figures per period stay in memory
        async for row in await conn.stream(visits_q.execution_options(yield_per=YIELD_PER)):
            c = cell(row.pbx, row.queue, row.joined_at)
            result = row.result
            if result == "rejected":
                c.rejected += 1
                continue
            c.offered += 1
            in_sl = rules.within_service_level(row.queue, row.joined_at, row.left_at)
            if result == "answered":
                c.answered += 1
                c.answered_wait += float(row.wait_seconds or 0.0)
                c.answered_in_sl += in_sl
            elif result in ("abandoned", "timeout"):
                if result == "abandoned":
                    c.abandoned += 1
                    c.short_abandoned += bool(row.short_abandon)
                else:
                    c.timeouts += 1
                c.unanswered_in_sl += in_sl
        async for row in await conn.stream(transfers_q.execution_options(yield_per=YIELD_PER)):
            cell(row.pbx, row.from_queue, row.at).transfers += 1
        async for row in await conn.stream(bounced_q.execution_options(yield_per=YIELD_PER)):
            cell(row.pbx, row.queue, row.joined_at).bounced += 1
        async for row in await conn.stream(lost_q.execution_options(yield_per=YIELD_PER)):
            c = cell(row.pbx, row.first_queue or "", row.started_at)
            c.lost += 1
            if row.recovered:
                c.recovered += 1
                if row.recovered_at is not None and row.ended_at is not None:
                    c.callback_times.append(max(0.0, row.recovered_at - row.ended_at))
        if operator_figures:
            ops = await _operator_cells(conn, start, end, queue, pbx, rules, period)

    ordered = sorted(periods.values(), key=lambda p: p.start)
    pbxs = sorted({k[0] for k in cells} | ({k[0] for k in ops} if ops else set()))
    rows = _arrange(cells, ordered, pbxs)
    start_dt, end_dt = datetime.fromtimestamp(start, tz), datetime.fromtimestamp(end, tz)
    report = Report(
        timezone=zone_name(tz), by=by, start=start, end=end, start_iso=start_dt.isoformat(),
        end_iso=end_dt.isoformat(), pbxs=pbxs, rows=rows, periods=ordered, tz=tz,
    )
    if ops is not None:
        report.operators = _arrange_operators(ops, ordered)
    return report


async def _operator_cells(conn: AsyncConnection, start: float, end: float, queue: str | None, pbx: str | None,
                          rules: CallPolicy, period: Callable[[float], Period],
                          ) -> dict[tuple[str, str, str, str], OperatorRow]:
    """Operator figures per (pbx, operator, queue, period label)."""
    cells: dict[tuple[str, str, str, str], OperatorRow] = {}

    def cell(pbx_: str, operator: str | None, q: str | None, ts: float) -> OperatorRow:
        p = period(ts)
        key = (pbx_, operator or "?", q or "", p.label)
        row = cells.get(key)
        if row is None:
            row = cells[key] = OperatorRow("operator", key[0], key[1], key[2], p.label, p.start_iso)
        return row

    lg, t = operator_legs, transfers
    legs_q = select(lg.c.pbx, lg.c.operator, lg.c.kind, lg.c.queue, lg.c.talk_from, lg.c.talk_seconds).where(
        lg.c.talk_from >= start, lg.c.talk_from < end)
    made_q = select(t.c.pbx, t.c.from_operator, t.c.from_queue, t.c.at).where(t.c.at >= start, t.c.at < end)
    # every transfer of the bounced calls that may have been bounced in the period, in order
    bounced_q = (
        select(t.c.pbx, t.c.call_id, t.c.from_operator, t.c.from_queue, t.c.at, calls.c.first_queue)
        .select_from(t.join(calls, and_(calls.c.pbx == t.c.pbx, calls.c.call_id == t.c.call_id)))
        .where(calls.c.bounced.is_(True), calls.c.started_at < end,
               or_(calls.c.ended_at.is_(None), calls.c.ended_at >= start))
        .order_by(t.c.pbx, t.c.call_id, t.c.seq)
    )
    if queue is not None:
        legs_q = legs_q.where(lg.c.queue == queue, lg.c.kind == "queue")
        made_q = made_q.where(t.c.from_queue == queue)
    if pbx is not None:
        legs_q = legs_q.where(lg.c.pbx == pbx)
        made_q = made_q.where(t.c.pbx == pbx)
        bounced_q = bounced_q.where(t.c.pbx == pbx)
    async for row in await conn.stream(legs_q.execution_options(yield_per=YIELD_PER)):
        c = cell(row.pbx, row.operator, row.queue if row.kind == "queue" else "", row.talk_from)
        c.answered += 1
        c.talk_seconds += float(row.talk_seconds or 0.0)
    async for row in await conn.stream(made_q.execution_options(yield_per=YIELD_PER)):
        cell(row.pbx, row.from_operator, row.from_queue, row.at).transfers += 1

    def passed_on(call_transfers: list[Any]) -> None:
        if not call_transfers:
            return
        n = rules.rule(call_transfers[0].first_queue).bounce_transfers
        tr = call_transfers[min(n, len(call_transfers)) - 1]  # the transfer that made the call bounced
        if start <= tr.at < end and (queue is None or tr.from_queue == queue):
            cell(tr.pbx, tr.from_operator, tr.from_queue, tr.at).bounced_passed_on += 1

    current: list[Any] = []
    async for row in await conn.stream(bounced_q.execution_options(yield_per=YIELD_PER)):
        if current and (current[0].pbx, current[0].call_id) != (row.pbx, row.call_id):
            passed_on(current)
            current = []
        current.append(row)
    passed_on(current)
    return cells


def _arrange(cells: dict[tuple[str, str, str], QueueRow], periods: Sequence[Period],
             pbxs: Sequence[str]) -> list[QueueRow]:
    """Queue rows and totals in display order (see the module's docstring)."""
    if not cells:
        return []
    several = len(pbxs) > 1
    single = pbxs[0] if len(pbxs) == 1 else None
    by_period: dict[str, list[QueueRow]] = {}
    for (_, _, label), row in cells.items():
        by_period.setdefault(label, []).append(row)
    out: list[QueueRow] = []
    queue_totals: dict[tuple[str, str], QueueRow] = {}
    pbx_totals: dict[str, QueueRow] = {}
    grand = QueueRow("total", None if several else single, None, None, None)
    for p in periods:
        rows = sorted(by_period.get(p.label, ()), key=lambda r: (r.pbx or "", r.queue or ""))
        if not rows:
            continue  # a period with operator figures only
        out.extend(rows)
        period_total = QueueRow("total", None if several else single, None, p.label, p.start_iso)
        per_pbx: dict[str, QueueRow] = {}
        for r in rows:
            assert r.pbx is not None and r.queue is not None
            period_total.add(r)
            if several:
                per_pbx.setdefault(r.pbx, QueueRow("total", r.pbx, None, p.label, p.start_iso)).add(r)
            queue_totals.setdefault((r.pbx, r.queue), QueueRow("total", r.pbx, r.queue, None, None)).add(r)
        if several:
            for name in sorted(per_pbx):
                out.append(per_pbx[name])
                pbx_totals.setdefault(name, QueueRow("total", name, None, None, None)).add(per_pbx[name])
        out.append(period_total)
        grand.add(period_total)
    if len(by_period) > 1:
        out.extend(queue_totals[k] for k in sorted(queue_totals))
    if several:
        out.extend(pbx_totals[k] for k in sorted(pbx_totals))
    out.append(grand)
    return out


def _arrange_operators(cells: dict[tuple[str, str, str, str], OperatorRow],
                       periods: Sequence[Period]) -> list[OperatorRow]:
    order = {p.label: i for i, p in enumerate(periods)}
    rows = sorted(cells.values(), key=lambda r: (order[r.period or ""], r.pbx or "", r.operator, r.queue or ""))
    totals: dict[tuple[str, str], OperatorRow] = {}
    for r in rows:
        assert r.pbx is not None
        totals.setdefault((r.pbx, r.operator), OperatorRow("operator_total", r.pbx, r.operator, None, None,
                                                           None)).add(r)
    return rows + [totals[k] for k in sorted(totals)]


async def daily_figures(
    engine: AsyncEngine,
    start: float,
    end: float,
    *,
    queue: str | None = None,
    pbx: str | None = None,
    policy: CallPolicy | None = None,
    tz: tzinfo = UTC,
) -> list[QueueRow]:
    """The queue rows (no totals) per queue and day for visits that joined in ``[start, end)``, sorted by day,
    PBX then queue."""
    report = await build_report(engine, start, end, by="day", tz=tz, queue=queue, pbx=pbx, policy=policy)
    return report.queue_rows()


# ---- dates ---------------------------------------------------------------------------------------------
def parse_bound(text: str, tz: tzinfo, *, end: bool = False) -> float:
    """Epoch seconds for a report bound: ``YYYY-MM-DD`` (a whole day: its start, or for ``end`` the
    start of the next day) or an ISO date-time (taken as is, in ``tz`` unless it has an offset)."""
    text = text.strip()
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            if end:
                d += timedelta(days=1)
            return _local_midnight(d, tz).timestamp()
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ReportError(f"{text!r} is not a date (YYYY-MM-DD) or date-time (YYYY-MM-DDTHH:MM)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return dt.timestamp()


# ---- output --------------------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _csv_value(value: Any) -> Any:
    return "" if value is None else value


def render(report: Report, fmt: str = "table") -> str:
    """``table`` (for people), ``csv`` (header + one line per row, queue rows and operator rows), ``json``
    (an object: the report's zone, period, bounds, PBXs, ``rows`` and with operator figures ``operators``)
    or ``html`` (a self-contained page with SVG charts, see :mod:`onechance.store.report_html`)."""
    if fmt == "json":
        return json.dumps(report.to_json(), ensure_ascii=False, indent=2) + "\n"
    if fmt == "csv":
        return render_csv(report)
    if fmt == "html":
        from .report_html import render_html

        return render_html(report)
    if fmt == "table":
        return render_table(report)
    raise ReportError(f"unknown format {fmt!r} ({', '.join(FORMATS)})")


def render_csv(report: Report) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(CSV_FIELDS), lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for d in [r.to_dict() for r in report.rows] + [r.to_dict() for r in report.operators or ()]:
        writer.writerow({"timezone": report.timezone} | {k: _csv_value(v) for k, v in d.items()})
    return buf.getvalue()


def describe(report: Report) -> str:
    """One line: what the report covers."""
    first = datetime.fromisoformat(report.start_iso)
    last = datetime.fromisoformat(report.end_iso)
    offset = first.strftime("%z")
    pbxs = f"; PBXs {', '.join(report.pbxs)}" if report.several_pbxs else ""
    return (f"from {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} (excluded), by {report.by}, time zone "
            f"{report.timezone} (UTC{offset[:3]}:{offset[3:]} at the start){pbxs}")


def label_of(value: str | None, *, all_: str = "all") -> str:
    """How a row's pbx, queue or period reads in a table: None is a total over all of them."""
    if value is None:
        return all_
    return value or "(none)"


def queue_table_cells(report: Report, row: QueueRow) -> list[str]:
    cells = [label_of(row.queue, all_="all queues"), label_of(row.period)]
    if report.several_pbxs:
        cells.insert(0, label_of(row.pbx, all_="all PBXs"))
    d = row.to_dict()
    return cells + [_cell(d[f]) for f in QUEUE_FIGURES]


QUEUE_HEAD = ("offered", "answered", "abandoned", "short", "timeouts", "rejected", "ASA s", "SL %", "SL2 %",
              "transfers", "bounced", "lost", "reached", "reached %", "callback s")
OPERATOR_HEAD = ("answered", "talk s", "AHT s", "transfers", "made bounced")


def queue_table_head(report: Report) -> list[str]:
    return (["pbx"] if report.several_pbxs else []) + ["queue", "period", *QUEUE_HEAD]


def operator_table_cells(report: Report, row: OperatorRow) -> list[str]:
    queue = "all queues" if row.queue is None else (row.queue or "(direct)")
    cells = [row.operator, queue, label_of(row.period)]
    if report.several_pbxs:
        cells.insert(0, label_of(row.pbx, all_="all PBXs"))
    d = row.to_dict()
    return cells + [_cell(d[f]) for f in OPERATOR_FIGURES]


def operator_table_head(report: Report) -> list[str]:
    return (["pbx"] if report.several_pbxs else []) + ["operator", "queue", "period", *OPERATOR_HEAD]


def _text_table(head: Sequence[str], rows: Iterable[Sequence[str]], text_columns: int) -> list[str]:
    table = [list(head), *[list(r) for r in rows]]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = []
    for n, r in enumerate(table):
        cells = [c.ljust(widths[i]) if i < text_columns else c.rjust(widths[i]) for i, c in enumerate(r)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def render_table(report: Report) -> str:
    lines = [f"Queues {describe(report)}", ""]
    if not report.queue_rows():
        lines.append("(no queue calls in this period)")
    else:
        text_columns = 3 if report.several_pbxs else 2
        lines += _text_table(queue_table_head(report), (queue_table_cells(report, r) for r in report.rows),
                             text_columns)
    if report.operators is not None:
        lines += ["", "Operators", ""]
        if not report.operators:
            lines.append("(no operator answered in this period)")
        else:
            text_columns = 4 if report.several_pbxs else 3
            lines += _text_table(operator_table_head(report),
                                 (operator_table_cells(report, r) for r in report.operators), text_columns)
    return "\n".join(lines) + "\n"
