"""Queues and operators over HTTP: ``GET /api/queues`` and ``GET /api/operators`` (``docs/api.md``).

Live figures come from the pipelines (callers waiting, queue members by state); the day's figures from the
store -- ``/api/queues`` through :func:`~onechance.store.report.daily_figures`, exactly what ``onechance report``
prints, ``/api/operators`` through :func:`~onechance.store.queries.operator_figures` -- cached for ``ttl``
seconds (a busy wallboard polling every second does not hammer the database; concurrent requests share one
query).  When the store fails or is slow, the live figures still answer, the day's are ``null`` and the answer
says ``"partial": true``.

The day is ``?date=YYYY-MM-DD`` (default: today) in ``?tz=`` (an IANA zone; default: the configured zone,
else the machine's).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from .journey import CallPolicy
from .members import Member, MemberState
from .params import BadRequest, check_known, multi, single
from .status import DaemonStatus
from .store.queries import OperatorFigures, operator_figures
from .store.report import QueueDay, daily_figures

__all__ = ["FIGURES_KEY", "DayFigures", "Zone", "add_queue_routes", "day_bounds", "local_zone", "resolve_zone"]

log = logging.getLogger(__name__)

T = TypeVar("T")
#: the order in which an operator's states across queues say what they are doing
_STATE_RANK = (MemberState.IN_CALL, MemberState.RINGING, MemberState.AVAILABLE, MemberState.PAUSED,
               MemberState.UNAVAILABLE)
QUEUE_PARAMS = ("pbx", "queue", "date", "tz")
OPERATOR_PARAMS = ("pbx", "queue", "date", "tz")


# ---- days and zones ----------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    tz: tzinfo


def local_zone() -> Zone:
    """The machine's time zone: ``TZ``, else ``/etc/localtime``, else UTC."""
    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return Zone(name, ZoneInfo(name))
        except (ZoneInfoNotFoundError, ValueError):
            pass
    path = Path("/etc/localtime")
    try:
        with path.open("rb") as f:
            tz = ZoneInfo.from_file(f)
    except (OSError, ValueError):
        return Zone("UTC", ZoneInfo("UTC"))
    target = str(path.resolve())
    name = target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else "localtime"
    return Zone(name, tz)


def resolve_zone(name: str | None) -> Zone:
    """A named zone (:class:`BadRequest` when unknown), or the machine's when ``name`` is None."""
    if name is None:
        return local_zone()
    try:
        return Zone(name, ZoneInfo(name))
    except (ZoneInfoNotFoundError, ValueError):
        raise BadRequest(f"tz: unknown time zone {name!r} (e.g. Europe/Tallinn, UTC)") from None


def day_bounds(day: date, tz: tzinfo) -> tuple[float, float]:
    """``[start, end)`` of a day in a zone, in epoch seconds (23 or 25 hours long on a DST change)."""
    start = datetime(day.year, day.month, day.day, tzinfo=tz)
    nxt = day + timedelta(days=1)
    return start.timestamp(), datetime(nxt.year, nxt.month, nxt.day, tzinfo=tz).timestamp()


def _day(query: Mapping[str, str] | Any, default_zone: str | None) -> tuple[date, Zone]:
    zone = resolve_zone(single(query, "tz") or default_zone)
    text = single(query, "date")
    if text is None:
        return datetime.now(zone.tz).date(), zone
    try:
        return date.fromisoformat(text), zone
    except ValueError:
        raise BadRequest(f"date: expected YYYY-MM-DD, not {text!r}") from None


# ---- the day's figures, cached -----------------------------------------------------------------------
class DayFigures:
    """The day's per-queue and per-operator figures from the store, cached ``ttl`` seconds; ``None`` when the
    store failed or did not answer within ``timeout`` (that is cached too, so a dead database is not asked
    by every request)."""

    def __init__(self, engine: AsyncEngine, policy: CallPolicy, *, timeout: float = 5.0, ttl: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.policy = policy
        self.timeout = timeout
        self.ttl = ttl
        self.clock = clock
        self.queries = 0  # store queries made (the rest came from the cache)
        self.failures = 0
        self._cache: dict[tuple[Any, ...], tuple[float, Any]] = {}
        self._running: dict[tuple[Any, ...], asyncio.Task[Any]] = {}

    async def _cached(self, key: tuple[Any, ...], load: Callable[[], Awaitable[T]]) -> T | None:
        hit = self._cache.get(key)
        if hit is not None and hit[0] > self.clock():
            value: T | None = hit[1]
            return value
        task = self._running.get(key)
        if task is None:
            # a task of its own: a request that goes away (its handler cancelled) does not cancel the query the
            # other requests wait for
            task = self._running[key] = asyncio.create_task(self._load(key, load))
        shared: T | None = await asyncio.shield(task)
        return shared

    async def _load(self, key: tuple[Any, ...], load: Callable[[], Awaitable[T]]) -> T | None:
        result: T | None = None
        self.queries += 1
        try:
            async with asyncio.timeout(self.timeout):
                result = await load()
        except Exception as exc:  # the database is down, broken or stuck: the live figures answer alone
            self.failures += 1
            log.warning("day figures: store query failed: %s",
                        "no answer in time" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__)
        finally:
            now = self.clock()
            self._cache[key] = (now + self.ttl, result)
            self._running.pop(key, None)
            if len(self._cache) > 256:
                for k in [k for k, (until, _v) in self._cache.items() if until <= now]:
                    del self._cache[k]
        return result

    async def queues(self, pbx: str, start: float, end: float, zone: Zone) -> dict[str, QueueDay] | None:
        """Per queue: the figures of visits that joined in ``[start, end)`` on ``pbx``."""
        async def load() -> dict[str, QueueDay]:
            days = await daily_figures(self.engine, start, end, pbx=pbx, policy=self.policy, tz=zone.tz)
            return _by_queue(days)
        return await self._cached(("queues", pbx, start, end), load)

    async def operators(self, start: float, end: float) -> list[OperatorFigures] | None:
        return await self._cached(("operators", start, end), lambda: operator_figures(self.engine, start, end))


def _by_queue(days: list[QueueDay]) -> dict[str, QueueDay]:
    """One row per queue (the period is one day; a row per date only if the zone moved under it)."""
    out: dict[str, QueueDay] = {}
    for d in days:
        if d.queue is None:  # a totals row (the report's), not a queue
            continue
        acc = out.get(d.queue)
        if acc is None:
            out[d.queue] = d
            continue
        for name in ("offered", "answered", "abandoned", "short_abandoned", "timeouts", "rejected", "answered_in_sl",
                     "unanswered_in_sl", "answered_wait", "transfers", "bounced", "lost", "recovered"):
            setattr(acc, name, getattr(acc, name) + getattr(d, name))
        acc.callback_times.extend(d.callback_times)
    return out


def _today(d: QueueDay | None) -> dict[str, Any]:
    if d is None:
        return {"offered": 0, "answered": 0, "abandoned": 0, "timeouts": 0, "rejected": 0, "lost": 0,
                "recovered": 0, "asa_seconds": None, "service_level": None}
    return {"offered": d.offered, "answered": d.answered, "abandoned": d.abandoned, "timeouts": d.timeouts,
            "rejected": d.rejected, "lost": d.lost, "recovered": d.recovered, "asa_seconds": d.asa_seconds,
            "service_level": d.service_level}


# ---- operators ---------------------------------------------------------------------------------------
def _overall(states: list[MemberState]) -> MemberState:
    return min(states, key=_STATE_RANK.index) if states else MemberState.UNAVAILABLE


def _operators(pbx: str, members: list[Member], figures: list[OperatorFigures] | None,
               queues: frozenset[str] | None) -> list[dict[str, Any]]:
    by_interface: dict[str, list[Member]] = {}
    for m in members:
        by_interface.setdefault(m.interface, []).append(m)
    mine = [f for f in figures or () if f.pbx == pbx]
    used: set[int] = set()
    out: list[dict[str, Any]] = []
    for interface, ms in sorted(by_interface.items()):
        if queues is not None and not any(m.queue in queues for m in ms):
            continue
        names = {m.name for m in ms}
        calls = 0
        talk = 0.0
        for i, f in enumerate(mine):
            if f.interface == interface or (f.interface is None and f.operator in names):
                used.add(i)
                calls += f.calls
                talk += f.talk_seconds
        paused = [m.paused_reason for m in ms if m.state == MemberState.PAUSED and m.paused_reason]
        out.append({
            "name": ms[0].name, "interface": interface, "member": True,
            "queues": sorted(m.queue for m in ms),
            "state": str(_overall([m.state for m in ms])),
            "queue_states": {m.queue: str(m.state) for m in sorted(ms, key=lambda m: m.queue)},
            "paused_reason": paused[0] if paused else None,
            "answered": calls if figures is not None else None,
            "talk_seconds": round(talk, 3) if figures is not None else None,
        })
    if queues is None:  # operators who talked with callers without being queue members (direct calls...)
        others: dict[tuple[str, str | None], list[OperatorFigures]] = {}
        for i, f in enumerate(mine):
            if i not in used:
                others.setdefault((f.operator, f.interface), []).append(f)
        for (name, via), fs in sorted(others.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
            out.append({"name": name, "interface": via, "member": False, "queues": [], "state": None,
                        "queue_states": {}, "paused_reason": None, "answered": sum(f.calls for f in fs),
                        "talk_seconds": round(sum(f.talk_seconds for f in fs), 3)})
    return out


# ---- routes ------------------------------------------------------------------------------------------
#: the application's :class:`DayFigures` (for tests and tools: its query counters)
FIGURES_KEY = web.AppKey("onechance_day_figures", DayFigures)


def _json(data: Any) -> web.Response:
    return web.json_response(data, dumps=lambda d: json.dumps(d, ensure_ascii=False))


def add_queue_routes(app: web.Application, status: DaemonStatus, figures: DayFigures | None, *,
                     timezone: str | None = None) -> None:
    """``/api/queues`` and ``/api/operators``; without ``figures`` (no store) the day's figures are null."""

    def wanted(query: Mapping[str, str] | Any, key: str) -> frozenset[str] | None:
        values = multi(query, key)
        return frozenset(values) if values else None

    async def list_queues(request: web.Request) -> web.Response:
        query = request.query
        check_known(query, QUEUE_PARAMS)
        day, zone = _day(query, timezone)
        start, end = day_bounds(day, zone.tz)
        pbxs, queues = wanted(query, "pbx"), wanted(query, "queue")
        live = status.queues_now()
        out: list[dict[str, Any]] = []
        partial = figures is None
        for pbx, by_queue in live.items():
            if pbxs is not None and pbx not in pbxs:
                continue
            days = await figures.queues(pbx, start, end, zone) if figures is not None else None
            partial = partial or days is None
            names = set(by_queue) | {q for q in (days or {}) if q}
            for q in sorted(names):
                if queues is not None and q not in queues:
                    continue
                now = by_queue.get(q) or {"waiting": 0, "oldest_wait_seconds": 0.0,
                                          "members": {str(s): 0 for s in MemberState}}
                today = _today((days or {}).get(q)) if days is not None else None
                out.append({"pbx": pbx, "queue": q, **now, "today": today})
        return _json({"date": day.isoformat(), "timezone": zone.name, "queues": out, "partial": partial})

    async def list_operators(request: web.Request) -> web.Response:
        query = request.query
        check_known(query, OPERATOR_PARAMS)
        day, zone = _day(query, timezone)
        start, end = day_bounds(day, zone.tz)
        pbxs, queues = wanted(query, "pbx"), wanted(query, "queue")
        found = await figures.operators(start, end) if figures is not None else None
        out: list[dict[str, Any]] = []
        for pbx, members in status.members_now().items():
            if pbxs is not None and pbx not in pbxs:
                continue
            out.extend({"pbx": pbx, **o} for o in _operators(pbx, members, found, queues))
        return _json({"date": day.isoformat(), "timezone": zone.name, "operators": out, "partial": found is None})

    if figures is not None:
        app[FIGURES_KEY] = figures
    app.router.add_get("/api/queues", list_queues)
    app.router.add_get("/api/operators", list_operators)
