"""The callback worklist: every lost caller, until someone reaches them again.

* every lost call (an inbound call abandoned but not short, timed out, refused, exited) puts its caller on the
  worklist; several lost calls of one number are one entry (numbers are keyed with ``phonenumbers``:
  ``+3725550107``, ``003725550107`` and ``5550107`` are one caller), with their count and calls;
* an entry is resolved automatically when that caller is reached again: answered calling in (``inbound``) or
  called back by an operator through the PBX and answering (``outbound``) -- the tracker's
  :class:`~onechance.journey.Recovered`, or an answered outbound call to the number; an unanswered call back is
  an attempt, kept with its time and who made it;
* by hand, on the page or the API: claim (who calls back), note, done (reached / gave up, with a reason);
* entries nobody closed are closed as ``expired`` after ``callbacks.expire_after``.

Closing an entry resolves the alerts of its calls (Alertmanager then shows them resolved).  The state lives in
memory (open entries and those closed in the last day) and every change is written through the store's writer
(durable before a manual change is acknowledged); a restart loads the open entries back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .errors import RateLimitedLog, load_when_ready
from .journey import Direction, JourneyUpdate, Outcome, Recovered, Update, UpdateKind
from .journey.numbers import number_key
from .queues import QueueCatalog
from .store.facts import CallbackAttempt, CallbackCall, CallbackRow

__all__ = ["Entry", "EntryState", "NotFound", "Worklist", "WorklistError"]

log = logging.getLogger("onechance.worklist")

CLOSED_KEPT = 86400.0  # closed entries stay in memory (for the page and the API) this long
CLOSED_MAX = 10000
#: how a worklist entry is closed (the ``how`` label of ``onechance_callbacks_resolved_total``)
RESOLUTIONS = ("inbound", "outbound", "manual", "expired")
CALLBACK_BUCKETS = (60, 300, 600, 1800, 3600, 7200, 14400, 28800, 86400, 172800, 604800)


class EntryState(StrEnum):
    WAITING = "waiting"  # nobody took it yet
    CLAIMED = "claimed"  # someone said they call back
    DONE = "done"  # closed (see resolution)


class WorklistError(ValueError):
    """A request the worklist refuses (shown to the user)."""


class NotFound(WorklistError):
    """No such entry."""


class StoreFacts(Protocol):
    async def persist(self, facts: Sequence[CallbackRow]) -> None: ...

    def submit(self, item: CallbackRow) -> None: ...


@dataclass(slots=True)
class Entry:
    id: str
    pbx: str
    caller_key: str
    caller: str
    caller_name: str
    queue: str
    first_lost_at: float
    last_lost_at: float
    state: EntryState = EntryState.WAITING
    calls: list[CallbackCall] = field(default_factory=list)
    attempts: list[CallbackAttempt] = field(default_factory=list)
    claimed_by: str | None = None
    claimed_at: float | None = None
    note: str | None = None
    resolution: str | None = None
    done_reason: str | None = None
    resolved_by_call: str | None = None
    closed_at: float | None = None
    updated_at: float = 0.0

    @property
    def open(self) -> bool:
        return self.closed_at is None

    def row(self) -> CallbackRow:
        last = max((a.at for a in self.attempts), default=None)
        return CallbackRow(id=self.id, pbx=self.pbx, caller_key=self.caller_key, caller=self.caller,
                           caller_name=self.caller_name, queue=self.queue, state=str(self.state),
                           lost_count=len(self.calls), first_lost_at=self.first_lost_at,
                           last_lost_at=self.last_lost_at, claimed_by=self.claimed_by, claimed_at=self.claimed_at,
                           note=self.note, attempts=len(self.attempts), last_attempt_at=last,
                           resolution=self.resolution, done_reason=self.done_reason,
                           resolved_by_call=self.resolved_by_call, closed_at=self.closed_at,
                           updated_at=self.updated_at, calls=tuple(self.calls), attempt_list=tuple(self.attempts))

    @classmethod
    def from_row(cls, row: CallbackRow) -> Entry:
        return cls(id=row.id, pbx=row.pbx, caller_key=row.caller_key, caller=row.caller,
                   caller_name=row.caller_name, queue=row.queue, first_lost_at=row.first_lost_at,
                   last_lost_at=row.last_lost_at, state=EntryState(row.state), calls=list(row.calls),
                   attempts=list(row.attempt_list), claimed_by=row.claimed_by, claimed_at=row.claimed_at,
                   note=row.note, resolution=row.resolution, done_reason=row.done_reason,
                   resolved_by_call=row.resolved_by_call, closed_at=row.closed_at, updated_at=row.updated_at)

    def view(self, now: float) -> dict[str, Any]:
        """The entry as the API and the page show it."""
        return {
            "id": self.id,
            "pbx": self.pbx,
            "caller": self.caller,
            "caller_name": self.caller_name,
            "caller_key": self.caller_key,
            "queue": self.queue,
            "state": str(self.state),
            "lost_count": len(self.calls),
            "first_lost_at": self.first_lost_at,
            "last_lost_at": self.last_lost_at,
            "waiting_seconds": round(max(0.0, (self.closed_at or now) - self.first_lost_at), 3),
            "calls": [{"call_id": c.call_id, "queue": c.queue, "outcome": c.outcome, "lost_at": c.lost_at}
                      for c in self.calls],
            "attempts": [{"at": a.at, "by": a.by, "call_id": a.call_id, "answered": a.answered}
                         for a in self.attempts],
            "claimed_by": self.claimed_by,
            "claimed_at": self.claimed_at,
            "note": self.note,
            "resolution": self.resolution,
            "done_reason": self.done_reason,
            "resolved_by_call": self.resolved_by_call,
            "closed_at": self.closed_at,
        }


class Worklist:
    """A sink (lost calls, recoveries, call backs), the API's worklist, and a service (expiry, restore)."""

    def __init__(
        self,
        store: StoreFacts,
        registry: CollectorRegistry,
        *,
        expire_after: float,
        region: str | None = None,
        on_close: Callable[[str, str, float], None] | None = None,
        load: Callable[[], Any] | None = None,
        queues: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        catalog: QueueCatalog | None = None,
        pbx_offset: Callable[[str], float] | None = None,
    ) -> None:
        self.store = store
        self.expire_after = expire_after
        self.region = region
        self._on_close = on_close  # (pbx, call_id, at): the alerts of each call of a closed entry are resolved
        self._load = load  # async () -> [CallbackRow]: the open entries of an earlier run
        self._clock = clock
        # a PBX's clock minus ours (the pipeline learns it from the events): lost calls are stamped in the PBX's
        # time, so waits, expiry and closing times are counted in it too
        self._pbx_offset = pbx_offset
        self._open: dict[tuple[str, str], Entry] = {}  # (pbx, caller_key) -> open entry
        self._by_id: dict[str, Entry] = {}
        self._by_call: dict[tuple[str, str], Entry] = {}  # (pbx, call_id) of a lost or resolving call -> entry
        self._closed: OrderedDict[str, Entry] = OrderedDict()
        self._closed_event = asyncio.Event()
        self._errors = RateLimitedLog(log)
        self._known_queues: set[tuple[str, str]] = set()  # (pbx, queue label) whose series exist
        self._queue_names = list(queues)
        # metric labels: the same bounded queue names as the call metrics (every known queue from 0)
        self.catalog = catalog if catalog is not None else QueueCatalog(self._queue_names)
        registry.register(_PendingCollector(self))  # first: it creates the series of new queues at 0
        self.m_resolved = Counter("onechance_callbacks_resolved",
                                  "Worklist entries closed, by how: inbound (the caller called again and was "
                                  "answered), outbound (called back and answered), manual, expired",
                                  ["pbx", "queue", "how"], registry=registry)
        self.m_time = Histogram("onechance_time_to_callback_seconds",
                                "From a caller's first lost call to being reached again (inbound or outbound)",
                                ["pbx", "queue"], buckets=CALLBACK_BUCKETS, registry=registry)

    # ---- as a sink -----------------------------------------------------------------------------------------
    def handle(self, update: Update) -> None:
        if isinstance(update, Recovered):
            entry = self._by_call.get((update.pbx, update.call_id))
            if entry is not None and entry.open:
                self._close(entry, update.how, update.at, resolved_by=update.by)
            return
        if update.kind != UpdateKind.ENDED:
            return
        r = update.record
        if r.lost and r.direction == Direction.INBOUND and r.caller_key:
            self._lost(update)
        elif r.direction == Direction.OUTBOUND and r.callee:
            self._called_back(update)

    def _lost(self, update: JourneyUpdate) -> None:
        r = update.record
        assert r.caller_key is not None
        if (r.pbx, r.call_id) in self._by_call:
            return  # the same call ended again (taken up after a resync): already on the list
        now = self._clock()
        key = (r.pbx, r.caller_key)
        entry = self._open.get(key)
        lost_at = r.ended_at or update.at
        if entry is None:
            entry = Entry(id=uuid.uuid4().hex, pbx=r.pbx, caller_key=r.caller_key, caller=r.caller,
                          caller_name=r.caller_name, queue=r.first_queue, first_lost_at=lost_at,
                          last_lost_at=lost_at)
            self._open[key] = entry
            self._by_id[entry.id] = entry
        entry.calls.append(CallbackCall(r.pbx, r.call_id, r.first_queue, str(r.outcome), lost_at))
        entry.last_lost_at = max(entry.last_lost_at, lost_at)
        entry.caller_name = entry.caller_name or r.caller_name
        _touch(entry, now)
        self._by_call[(r.pbx, r.call_id)] = entry
        self.store.submit(entry.row())

    def _called_back(self, update: JourneyUpdate) -> None:
        r = update.record
        key = number_key(r.callee or "", self.region)
        if key is None:
            return
        entry = self._open.get((r.pbx, key)) or self._by_call.get((r.pbx, r.call_id))
        if entry is None:
            return
        answered = r.outcome == Outcome.ANSWERED
        if any(a.call_id == r.call_id for a in entry.attempts):
            return
        entry.attempts.append(CallbackAttempt(uuid.uuid4().hex, r.started_at, r.dialled_by, r.call_id, answered))
        _touch(entry, self._clock())
        if answered and entry.open:  # reached (the tracker's recovery may have closed it already)
            self._close(entry, "outbound", r.ended_at or update.at, resolved_by=r.call_id, persist=False)
        self.store.submit(entry.row())

    # ---- by hand --------------------------------------------------------------------------------------------
    def get(self, entry_id: str) -> Entry:
        entry = self._by_id.get(entry_id) or self._closed.get(entry_id)
        if entry is None:
            raise NotFound(f"no callback entry {entry_id!r}")
        return entry

    async def claim(self, entry_id: str, by: str) -> Entry:
        entry = self._open_entry(entry_id)
        by = _clean(by, 128)
        if not by:
            raise WorklistError("say who calls back (by)")
        entry.state = EntryState.CLAIMED
        entry.claimed_by = by
        entry.claimed_at = self.now(entry.pbx)
        return await self._save(entry)

    async def note(self, entry_id: str, text: str) -> Entry:
        entry = self.get(entry_id)
        entry.note = _clean(text, 2000) or None
        return await self._save(entry)

    async def done(self, entry_id: str, reason: str, note: str | None = None) -> Entry:
        if reason not in ("reached", "gave_up"):
            raise WorklistError("reason must be reached or gave_up")
        entry = self._open_entry(entry_id)
        if note:
            entry.note = _clean(note, 2000)
        entry.done_reason = reason
        self._close(entry, "manual", self.now(entry.pbx), persist=False)
        return await self._save(entry)

    def _open_entry(self, entry_id: str) -> Entry:
        entry = self.get(entry_id)
        if not entry.open:
            raise WorklistError(f"callback entry {entry_id!r} is already closed ({entry.resolution})")
        return entry

    async def _save(self, entry: Entry) -> Entry:
        _touch(entry, self._clock())
        await self.store.persist([entry.row()])
        return entry

    def _close(self, entry: Entry, how: str, at: float, *, resolved_by: str | None = None,
               persist: bool = True) -> None:
        entry.state = EntryState.DONE
        entry.resolution = how
        entry.resolved_by_call = resolved_by or entry.resolved_by_call
        entry.closed_at = at
        _touch(entry, self._clock())
        self._open.pop((entry.pbx, entry.caller_key), None)
        self._by_id.pop(entry.id, None)
        self._closed[entry.id] = entry
        if resolved_by:
            self._by_call[(entry.pbx, resolved_by)] = entry
        while len(self._closed) > CLOSED_MAX:
            self._forget(self._closed.popitem(last=False)[1])
        label = self.catalog.label(entry.pbx, entry.queue)
        self.m_resolved.labels(entry.pbx, label, how).inc()
        if how in ("inbound", "outbound"):
            self.m_time.labels(entry.pbx, label).observe(max(0.0, at - entry.first_lost_at))
        if self._on_close is not None:
            for c in entry.calls:
                self._on_close(c.pbx, c.call_id, at)
        if persist:
            self.store.submit(entry.row())

    def _forget(self, entry: Entry) -> None:
        for c in entry.calls:
            if self._by_call.get((c.pbx, c.call_id)) is entry:
                del self._by_call[(c.pbx, c.call_id)]
        if entry.resolved_by_call and self._by_call.get((entry.pbx, entry.resolved_by_call)) is entry:
            del self._by_call[(entry.pbx, entry.resolved_by_call)]

    # ---- reading --------------------------------------------------------------------------------------------
    def entries(self, states: Iterable[str] = ("waiting", "claimed"), queue: Collection[str] | str | None = None,
                pbx: Collection[str] | str | None = None) -> list[Entry]:
        """Entries in memory (open ones, and those closed in the last day), oldest lost first; of any of the
        queues and PBXs given (one name or several; None or empty: any)."""
        wanted = set(states)
        queues = {queue} if isinstance(queue, str) else set(queue or ())
        pbxs = {pbx} if isinstance(pbx, str) else set(pbx or ())
        pool: Iterator[Entry] = iter([*self._by_id.values(), *self._closed.values()])
        found = [e for e in pool if str(e.state) in wanted and (not queues or e.queue in queues)
                 and (not pbxs or e.pbx in pbxs)]
        found.sort(key=lambda e: (e.first_lost_at, e.id))
        return found

    def open_entries(self) -> Iterable[Entry]:
        return self._by_id.values()

    def ensure_series(self, keys: Iterable[tuple[str, str]]) -> None:
        """The resolved and time-to-callback series of these (pbx, queue label) exist (at 0 if new)."""
        for key in keys:
            if key not in self._known_queues:
                self._known_queues.add(key)
                for how in RESOLUTIONS:
                    self.m_resolved.labels(*key, how)
                self.m_time.labels(*key)

    def queue_names(self) -> list[str]:
        return self._queue_names

    def now(self, pbx: str | None = None) -> float:
        """The present in ``pbx``'s clock (the times of its lost calls), ours without one."""
        offset = self._pbx_offset(pbx) if pbx is not None and self._pbx_offset is not None else 0.0
        return self._clock() + offset

    def view(self, entry: Entry) -> dict[str, Any]:
        """The entry as the API and the page show it, its waits counted in its PBX's clock."""
        return entry.view(self.now(entry.pbx))

    # ---- the service ----------------------------------------------------------------------------------------
    async def run(self) -> None:
        if self._load is not None:
            await self._restore()
        while not self._closed_event.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed_event.wait(), 60.0)
            self.sweep()

    async def aclose(self) -> None:
        self._closed_event.set()

    def sweep(self) -> None:
        """Close entries nobody closed within ``expire_after``; forget closed ones older than a day."""
        for entry in [e for e in self._by_id.values() if e.first_lost_at < self.now(e.pbx) - self.expire_after]:
            self._close(entry, "expired", self.now(entry.pbx))
        while self._closed:
            first = next(iter(self._closed.values()))
            now = self.now(first.pbx)
            if (first.closed_at or now) >= now - CLOSED_KEPT:
                break
            self._forget(self._closed.popitem(last=False)[1])

    async def _restore(self) -> None:
        assert self._load is not None
        rows = await load_when_ready(self._load, self._closed_event, self._errors, "the open callback entries")
        if rows is None:
            return
        loaded = 0
        for row in rows:
            if row.id in self._by_id or (row.pbx, row.caller_key) in self._open:
                continue
            entry = Entry.from_row(row)
            self._open[(entry.pbx, entry.caller_key)] = entry
            self._by_id[entry.id] = entry
            for c in entry.calls:
                self._by_call.setdefault((c.pbx, c.call_id), entry)
            loaded += 1
        if loaded:
            log.info("%d callers waiting for a call back (from the store)", loaded)


def _clean(text: str, limit: int) -> str:
    """Text from a person: control characters out, trimmed, bounded."""
    return "".join(ch for ch in text if ch >= " " or ch in "\n\t").strip()[:limit]


class _PendingCollector(Collector):
    """``onechance_callbacks_pending`` and ``onechance_callback_oldest_seconds`` at scrape time."""

    def __init__(self, worklist: Worklist) -> None:
        self.worklist = worklist

    def collect(self) -> Iterator[Metric]:
        pending = GaugeMetricFamily("onechance_callbacks_pending", "Callers waiting for a call back (worklist "
                                    "entries open)", labels=["pbx", "queue"])
        oldest = GaugeMetricFamily("onechance_callback_oldest_seconds", "How long the caller waiting longest for "
                                   "a call back has waited since their first lost call (0: nobody)",
                                   labels=["pbx", "queue"])
        worklist = self.worklist
        catalog = worklist.catalog
        by: dict[tuple[str, str], list[float]] = {}  # (pbx, queue) -> how long each has waited
        for entry in worklist.open_entries():  # in its PBX's clock, as its lost calls are stamped
            by.setdefault((entry.pbx, catalog.label(entry.pbx, entry.queue)), []).append(
                worklist.now(entry.pbx) - entry.first_lost_at)
        for pbx in catalog.pbxs():  # every known queue from 0
            for queue in catalog.queues(pbx):
                by.setdefault((pbx, queue), [])
        worklist.ensure_series(by)  # the counters' series too, before they are collected
        for key in sorted(by):
            firsts = by[key]
            pending.add_metric(list(key), len(firsts))
            oldest.add_metric(list(key), max(0.0, max(firsts)) if firsts else 0.0)
        yield pending
        yield oldest


def _touch(entry: Entry, now: float) -> None:
    """A new version of the entry: ``updated_at`` strictly increases (the store keeps the newest version, and a
    version may reach it after a newer one: persisted through the spool, submitted through the queue)."""
    entry.updated_at = max(now, entry.updated_at + 1e-6)
