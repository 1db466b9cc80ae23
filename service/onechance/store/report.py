"""Per-queue daily figures, as supervisors and ``onechance report`` see them.

Definitions (every figure counts queue *visits*: a call that visits two queues counts in both, and a
call that comes back to a queue after a transfer counts twice there; the consultation call of an
attended transfer is a visit of the queue it dialled).  A visit belongs to the day it joined the
queue, in the report's time zone (UTC by default):

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
  on the day of the transfer;
* ``bounced``: bounced calls, counted once, in the first queue the caller entered;
* ``lost``: lost callers (the call policy's verdict: an inbound call abandoned but not short, timed out,
  refused or exited), by the call's first queue and the day it started; ``recovered``: those reached again
  (called again and answered, or called back and answering); ``recovery_rate``: recovered / lost x 100;
  ``median_callback_seconds``: the median time from a lost call's end to the caller being reached.
"""

from __future__ import annotations

import csv
import io
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from ..journey import CallPolicy
from .models import calls, queue_visits, transfers

UTC = ZoneInfo("UTC")
YIELD_PER = 1000  # rows fetched at a time
FIELDS = (
    "queue",
    "date",
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


@dataclass(slots=True)
class QueueDay:
    """The figures of one queue on one day."""

    queue: str
    date: str  # YYYY-MM-DD in the report's time zone
    service_level_seconds: float
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

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in FIELDS}


def day_of(ts: float, tz: tzinfo) -> str:
    return datetime.fromtimestamp(ts, tz).date().isoformat()


async def daily_figures(
    engine: AsyncEngine,
    start: float,
    end: float,
    *,
    queue: str | None = None,
    pbx: str | None = None,
    policy: CallPolicy | None = None,
    tz: tzinfo = UTC,
) -> list[QueueDay]:
    """Figures per queue and day for visits that joined in ``[start, end)`` (epoch seconds), sorted by
    day then queue, judged by ``policy`` (each queue's service level)."""
    rules = policy or CallPolicy()
    days: dict[tuple[str, str], QueueDay] = {}

    def bucket(q: str, ts: float) -> QueueDay:
        key = (q, day_of(ts, tz))
        row = days.get(key)
        if row is None:
            row = days[key] = QueueDay(queue=q, date=key[1],
                                       service_level_seconds=rules.rule(q).service_level_seconds)
        return row

    v = queue_visits
    visits_q = select(v.c.queue, v.c.joined_at, v.c.left_at, v.c.wait_seconds, v.c.result, v.c.short_abandon).where(
        v.c.joined_at >= start, v.c.joined_at < end
    )
    t = transfers
    transfers_q = select(t.c.from_queue, t.c.at).where(t.c.at >= start, t.c.at < end, t.c.from_queue.is_not(None))
    bounced_q = (
        select(v.c.queue, v.c.joined_at)
        .select_from(v.join(calls, and_(calls.c.pbx == v.c.pbx, calls.c.call_id == v.c.call_id)))
        .where(calls.c.bounced.is_(True), v.c.seq == 0, v.c.caller_visit.is_(True))
        .where(v.c.joined_at >= start, v.c.joined_at < end)
    )
    lost_q = select(calls.c.first_queue, calls.c.started_at, calls.c.ended_at, calls.c.recovered,
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

    async with engine.connect() as conn:
        # streamed: a year of a busy PBX is millions of visits; only the per-day figures stay in memory
        async for row in await conn.stream(visits_q.execution_options(yield_per=YIELD_PER)):
            day = bucket(row.queue, row.joined_at)
            result = row.result
            if result == "rejected":
                day.rejected += 1
                continue
            day.offered += 1
            in_sl = rules.within_service_level(row.queue, row.joined_at, row.left_at)
            if result == "answered":
                day.answered += 1
                day.answered_wait += float(row.wait_seconds or 0.0)
                day.answered_in_sl += in_sl
            elif result in ("abandoned", "timeout"):
                if result == "abandoned":
                    day.abandoned += 1
                    day.short_abandoned += bool(row.short_abandon)
                else:
                    day.timeouts += 1
                day.unanswered_in_sl += in_sl
        async for row in await conn.stream(transfers_q.execution_options(yield_per=YIELD_PER)):
            bucket(row.from_queue, row.at).transfers += 1
        async for row in await conn.stream(bounced_q.execution_options(yield_per=YIELD_PER)):
            bucket(row.queue, row.joined_at).bounced += 1
        async for row in await conn.stream(lost_q.execution_options(yield_per=YIELD_PER)):
            day = bucket(row.first_queue or "", row.started_at)
            day.lost += 1
            if row.recovered:
                day.recovered += 1
                if row.recovered_at is not None and row.ended_at is not None:
                    day.callback_times.append(max(0.0, row.recovered_at - row.ended_at))
    return sorted(days.values(), key=lambda d: (d.date, d.queue))


# ---- dates and output --------------------------------------------------------------------------------
def parse_bound(text: str, tz: tzinfo, *, end: bool = False) -> float:
    """Epoch seconds for a report bound: ``YYYY-MM-DD`` (a whole day: its start, or for ``end`` the
    start of the next day) or an ISO date-time (taken as is, in ``tz`` unless it has an offset)."""
    text = text.strip()
    try:
        if len(text) == 10:
            d = date.fromisoformat(text)
            dt = datetime(d.year, d.month, d.day, tzinfo=tz)
            if end:
                dt = datetime.fromordinal(d.toordinal() + 1).replace(tzinfo=tz)
            return dt.timestamp()
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{text!r} is not a date (YYYY-MM-DD) or date-time (YYYY-MM-DDTHH:MM)") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    return dt.timestamp()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def render(rows: Sequence[QueueDay], fmt: str = "table") -> str:
    """``table`` (for people), ``csv`` (header + one line per queue and day) or ``json`` (a list)."""
    dicts = [r.to_dict() for r in rows]
    if fmt == "json":
        return json.dumps(dicts, ensure_ascii=False, indent=2) + "\n"
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(FIELDS), lineterminator="\n")
        writer.writeheader()
        for d in dicts:
            writer.writerow({k: ("" if v is None else v) for k, v in d.items()})
        return buf.getvalue()
    head = ("queue", "date", "offered", "answered", "abandoned", "short", "timeouts", "rejected", "ASA s",
            "SL %", "SL2 %", "transfers", "bounced", "lost", "reached", "reached %", "callback s")
    table = [head] + [tuple(_cell(d[f]) for f in FIELDS) for d in dicts]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = []
    for n, r in enumerate(table):
        cells = [c.ljust(widths[i]) if i < 2 else c.rjust(widths[i]) for i, c in enumerate(r)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    if not dicts:
        lines.append("(no queue calls in this period)")
    return "\n".join(lines) + "\n"
