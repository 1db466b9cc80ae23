"""Where the tracker's updates go: the sink interface, the in-memory recent calls and the call query API.

Each PBX's consumer hands every update (:class:`~onechance.journey.JourneyUpdate`, with its immutable
:class:`~onechance.journey.CallRecord`, or :class:`~onechance.journey.Recovered`) to every sink, in order, on the
event loop.  A sink's :meth:`Sink.handle` is synchronous and must not block: anything slow (a database, a
webhook) queues the work and does it in its own task.  Records never change, so a sink may keep them.

* :class:`RecentCalls` keeps the last ``http.recent_calls`` finished calls in memory and answers the HTTP API
  (:class:`CallQuery`) on its own, or together with the store (:class:`MergedCallQuery`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections import OrderedDict
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .journey import CallJson, CallRecord, Recovered, Update, UpdateKind

log = logging.getLogger(__name__)

__all__ = [
    "STEP",
    "CallFilter",
    "CallKey",
    "CallLog",
    "CallPage",
    "CallPages",
    "CallQuery",
    "CallStore",
    "MergedCallQuery",
    "RecentCalls",
    "Sink",
    "StoredVersion",
    "call_key",
]


@runtime_checkable
class Sink(Protocol):
    """Receives every update of every PBX, in order.  Synchronous and non-blocking."""

    def handle(self, update: Update) -> None: ...


class CallLog:
    """One INFO line per lost, bounced or recovered call (the caller's number masked)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger("onechance.calls")

    def handle(self, update: Update) -> None:
        from .alerts.model import caller_masked

        if isinstance(update, Recovered):
            self.log.info("%s: lost caller %s of call %s reached again (%s, by call %s)", update.pbx or "-",
                          caller_masked(update.caller), update.call_id, update.how, update.by)
            return
        r = update.record
        if update.kind == UpdateKind.BOUNCED:
            self.log.info("%s: call %s from %s bounced: %d transfers (%s)", r.pbx or "-", r.call_id,
                          caller_masked(r.caller), len(r.transfers),
                          " > ".join(t.to for t in r.transfers) or "-")
        elif update.kind == UpdateKind.ENDED and r.lost:
            self.log.info("%s: lost caller %s (call %s): %s after %.0f s in %s", r.pbx or "-",
                          caller_masked(r.caller), r.call_id, r.outcome, r.wait_seconds, r.last_queue or "-")


#: a call's place in the API's order: start time, then call id, then PBX (unique per call)
CallKey = tuple[float, str, str]
ORDERS = ("desc", "asc")


def call_key(call: CallJson) -> CallKey:
    return call["started_at"], call["call_id"], call["pbx"]


def _as_set(value: str | Collection[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    return frozenset((value,)) if isinstance(value, str) else frozenset(value)


@dataclass(frozen=True, slots=True)
class CallFilter:
    """The filters of ``GET /api/calls``, and the page asked for.

    Every filter is defined twice, with the same meaning: :meth:`matches` here (the calls in memory) and
    ``onechance.store.queries.call_conditions`` (SQL); a test checks that they agree on the captures.  A set
    filter matches a call that has any of its values; ``None`` does not filter; an empty set matches nothing.
    """

    since: float | None = None  # started at or after (epoch seconds)
    until: float | None = None  # started before
    outcomes: frozenset[str] | None = None
    queue: str | Collection[str] | None = None  # visited one of these queues (on the caller's path)
    pbx: str | Collection[str] | None = None
    callers: frozenset[str] | None = None  # normalised caller numbers (``number_key``), matched on caller_key
    operators: frozenset[str] | None = None  # someone who talked with the caller
    directions: frozenset[str] | None = None
    lost: bool | None = None
    recovered: bool | None = None
    uncertain: bool | None = None
    bounced: bool | None = None
    # the page
    limit: int = 100
    order: str = "desc"  # by start time, then call id, then PBX
    after: CallKey | None = None  # keyset paging: the calls after this one in ``order``
    offset: int = 0  # or: skip this many

    @property
    def queues(self) -> frozenset[str] | None:
        return _as_set(self.queue)

    @property
    def pbxs(self) -> frozenset[str] | None:
        return _as_set(self.pbx)

    @property
    def descending(self) -> bool:
        return self.order != "asc"

    def matches(self, call: CallRecord | CallJson) -> bool:
        """Whether a call passes every filter (paging aside)."""
        c: CallJson = call.to_json() if isinstance(call, CallRecord) else call
        if self.since is not None and c["started_at"] < self.since:
            return False
        if self.until is not None and c["started_at"] >= self.until:
            return False
        if self.outcomes is not None and c["outcome"] not in self.outcomes:
            return False
        pbxs = self.pbxs
        if pbxs is not None and c["pbx"] not in pbxs:
            return False
        if self.callers is not None and c.get("caller_key") not in self.callers:
            return False
        if self.directions is not None and c.get("direction", "inbound") not in self.directions:
            return False
        for name in ("lost", "recovered", "uncertain", "bounced"):
            wanted = getattr(self, name)
            if wanted is not None and bool(c.get(name)) != wanted:
                return False
        queues = self.queues
        if queues is not None and not any(v["queue"] in queues for v in c["queues"]):
            return False
        return self.operators is None or any(op in self.operators for op in c.get("operators", ()))

    def before(self, a: CallKey, b: CallKey) -> bool:
        """``a`` comes before ``b`` in this filter's order."""
        return a > b if self.descending else a < b

    def is_after_cursor(self, key: CallKey) -> bool:
        return self.after is None or self.before(self.after, key)

    def sort(self, found: Iterable[CallJson]) -> list[CallJson]:
        return sorted(found, key=call_key, reverse=self.descending)


@dataclass(frozen=True, slots=True)
class CallPage:
    """One page of calls: ``total`` matching calls in all, ``more`` after this page; ``partial`` when the store
    could not be asked (the calls in memory only)."""

    calls: list[CallJson]
    total: int
    more: bool
    partial: bool = False


@dataclass(frozen=True, slots=True)
class StoredVersion:
    """What the store holds of a call: its version (``updated_at``, recovery included) and whether that copy
    passes a filter."""

    updated_at: float
    matches: bool
    recovered: bool


class CallQuery(Protocol):
    """Finished calls for the HTTP API; the store provides one backed by SQL."""

    async def list_calls(self, flt: CallFilter) -> list[CallJson]:
        """Matching calls in ``flt.order`` (newest first by default) after ``flt.after``, skipping
        ``flt.offset``, at most ``flt.limit``."""
        ...

    async def get_call(self, call_id: str, pbx: str | None = None) -> CallJson | None:
        """One call by call id (the newest when several PBXs used the same id)."""
        ...


@runtime_checkable
class CallStore(CallQuery, Protocol):
    """The store's side of the merged query: what paging and totals need besides :class:`CallQuery`."""

    async def count_calls(self, flt: CallFilter) -> int:
        """How many calls match (paging aside)."""
        ...

    async def stored_versions(self, keys: Collection[tuple[str, str]],
                              flt: CallFilter) -> dict[tuple[str, str], StoredVersion]:
        """The stored version of each of these ``(pbx, call_id)`` (absent: not stored)."""
        ...

    async def stored_calls(self, keys: Collection[tuple[str, str]]) -> dict[tuple[str, str], CallJson]:
        """The stored copies of these calls."""
        ...


class CallPages(Protocol):
    """What the HTTP API reads calls through (:class:`MergedCallQuery`)."""

    async def page(self, flt: CallFilter) -> CallPage: ...

    async def get_call(self, call_id: str, pbx: str | None = None) -> CallJson | None: ...


def _slice(found: list[CallJson], flt: CallFilter) -> CallPage:
    """A page of ``found`` (every matching call, in order)."""
    total = len(found)
    if flt.after is not None:
        found = [c for c in found if flt.is_after_cursor(call_key(c))]
        return CallPage(found[: flt.limit], total, len(found) > flt.limit)
    return CallPage(found[flt.offset: flt.offset + flt.limit], total, flt.offset + flt.limit < total)


class RecentCalls:
    """A sink and a :class:`CallQuery`: the last ``size`` finished calls, in memory."""

    def __init__(self, size: int = 10000) -> None:
        self.size = size
        self._calls: OrderedDict[tuple[str, str], CallRecord] = OrderedDict()
        self._pbxs_of: dict[str, set[str]] = {}  # call id -> the PBXs of the calls held with that id
        # recoveries of calls not in memory (lost before this process started, or pushed out): the store may
        # not have written them yet
        self._recoveries: OrderedDict[tuple[str, str], Recovered] = OrderedDict()

    def __len__(self) -> int:
        return len(self._calls)

    def handle(self, update: Update) -> None:
        if isinstance(update, Recovered):
            key = (update.pbx, update.call_id)
            found = self._calls.get(key)
            if found is not None:
                self._calls[key] = found.with_recovery(update.by, update.at, update.how)
            else:
                self._recoveries[key] = update
                while len(self._recoveries) > self.size:
                    self._recoveries.popitem(last=False)
            return
        record = update.record
        key = record.key
        if update.kind == UpdateKind.MERGED or not record.ended:
            # part of another call now, or live again (taken up after a resync): not a finished call here
            if self._calls.pop(key, None) is not None:
                self._unindex(key)
            return
        if update.kind != UpdateKind.ENDED and key not in self._calls:
            return
        self._calls[key] = record
        self._calls.move_to_end(key)
        self._pbxs_of.setdefault(key[1], set()).add(key[0])
        while len(self._calls) > self.size:
            old, _record = self._calls.popitem(last=False)
            self._unindex(old)

    def _unindex(self, key: tuple[str, str]) -> None:
        pbx, call_id = key
        pbxs = self._pbxs_of.get(call_id)
        if pbxs is not None:
            pbxs.discard(pbx)
            if not pbxs:
                del self._pbxs_of[call_id]

    def records(self) -> Iterable[CallRecord]:
        return self._calls.values()

    def pending_recoveries(self) -> Iterable[tuple[tuple[str, str], Recovered]]:
        """Recoveries of calls this memory does not hold (the store's copies may not have them yet)."""
        return self._recoveries.items()

    def with_recovery(self, call: CallJson) -> CallJson:
        """A call from elsewhere (the store) with the recovery this memory knows of and it may not yet have."""
        found = self._recoveries.get((call["pbx"], call["call_id"]))
        if found is None or call["recovered"]:
            return call
        return CallRecord.from_json(call).with_recovery(found.by, found.at, found.how).to_json()

    def page(self, flt: CallFilter) -> CallPage:
        """A page of the matching calls in memory."""
        return _slice(flt.sort(c.to_json() for c in self._calls.values() if flt.matches(c)), flt)

    async def list_calls(self, flt: CallFilter) -> list[CallJson]:
        return self.page(flt).calls

    async def get_call(self, call_id: str, pbx: str | None = None) -> CallJson | None:
        if pbx is not None:
            found = self._calls.get((pbx, call_id))
            return found.to_json() if found is not None else None
        matches = [self._calls[(p, call_id)] for p in self._pbxs_of.get(call_id, ())]
        return max(matches, key=lambda c: c.started_at).to_json() if matches else None


#: the store's rows read (and turned into calls) per query, and the calls compared per step: each step holds
#: the event loop a few milliseconds at most
STEP = 100


async def _window(store: CallQuery, flt: CallFilter) -> list[CallJson]:
    """``store.list_calls(flt)`` in queries of at most :data:`STEP` calls, each after the last one's final call
    (keyset): the rows of a big page are made into calls a slice at a time, the event loop running between."""
    out: list[CallJson] = []
    part = dataclasses.replace(flt, limit=min(STEP, flt.limit))
    while True:
        found = await store.list_calls(part)
        out.extend(found)
        if len(found) < part.limit or len(out) >= flt.limit:
            return out
        part = dataclasses.replace(flt, offset=0, after=call_key(found[-1]), limit=min(STEP, flt.limit - len(out)))


def _why(exc: Exception) -> str:
    return "no answer in time" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__


def _newest(a: CallJson | None, b: CallJson | None) -> CallJson | None:
    if a is None or b is None:
        return a or b
    return a if a["updated_at"] >= b["updated_at"] else b


@dataclass(slots=True)
class _Overrides:
    """How the memory changes the store's answer to one filter: calls to add (the memory's copy matches, the
    store's does not or is not there yet), to drop (the store's copy matches, the newer one does not), and
    to show in their newer copy (both match)."""

    add: dict[tuple[str, str], CallJson]
    drop: dict[tuple[str, str], CallKey]
    newer: dict[tuple[str, str], CallJson]


class MergedCallQuery:
    """The store's answers merged with the calls still in memory.

    The store holds everything for months but is written in batches (and may be unreachable for a
    while: the writer spools); the in-memory recent calls are never behind.  Each call is answered from
    whichever copy is newer (``updated_at``) and filtered on that copy; when the store fails or does not
    answer within ``timeout`` seconds (a locked table, a connection to a vanished server), the memory answers
    alone (the page says ``partial``).

    Paging and totals stay exact over the merge: the calls in memory whose version the store has not been
    seen to hold are looked up in the store (by key; once the store has a version at least as new, the call
    is not looked up again), which says which calls the memory adds to the store's matching calls and which
    it removes; the store then answers the page with its window widened by that many.
    """

    def __init__(self, store: CallQuery, recent: RecentCalls, timeout: float = 5.0) -> None:
        self.store = store
        self.recent = recent
        self.timeout = timeout
        self.store_failures = 0
        self._synced: dict[tuple[str, str], float] = {}  # calls the store holds, at this version or newer
        self._recovery_stored: set[tuple[str, str]] = set()  # pending recoveries the store holds

    # ---- paging (the HTTP API) -----------------------------------------------------------------------------
    async def page(self, flt: CallFilter) -> CallPage:
        """One page of the merged calls, with the total; the memory's alone when the store fails."""
        try:
            async with asyncio.timeout(self.timeout):
                return await self._merged_page(flt)
        except Exception as exc:  # the database is down, broken or stuck: answer from memory
            self.store_failures += 1
            log.warning("store query failed, answering from memory: %s", _why(exc))
        found = self.recent.page(flt)
        return CallPage(found.calls, found.total, found.more, partial=True)

    async def _merged_page(self, flt: CallFilter) -> CallPage:
        store = self.store
        if not isinstance(store, CallStore):
            raise TypeError(f"{type(store).__name__} cannot count or page calls")
        stored_total = await store.count_calls(flt)
        over = await self._overrides(store, flt)
        total = stored_total - len(over.drop) + len(over.add)
        if flt.after is not None or flt.offset == 0:
            return await self._keyset_page(store, flt, over, total)
        return await self._offset_page(store, flt, over, total, stored_total)

    def _shown(self, call: CallJson, over: _Overrides) -> CallJson:
        key = (call["pbx"], call["call_id"])
        newer = over.newer.get(key)
        return newer if newer is not None else self.recent.with_recovery(call)

    async def _keyset_page(self, store: CallStore, flt: CallFilter, over: _Overrides, total: int) -> CallPage:
        # the first limit+1 merged calls are among the store's first limit+1+|drop| and the memory's additions
        window = await _window(store, dataclasses.replace(flt, offset=0, limit=flt.limit + len(over.drop) + 1))
        merged: dict[tuple[str, str], CallJson] = {}
        for c in window:
            key = (c["pbx"], c["call_id"])
            if key not in over.drop:
                merged[key] = self._shown(c, over)
        for key, c in over.add.items():
            if flt.is_after_cursor(call_key(c)):
                merged[key] = _newest(merged.get(key), c) or c
        found = flt.sort(merged.values())
        return CallPage(found[: flt.limit], total, len(found) > flt.limit)

    async def _offset_page(self, store: CallStore, flt: CallFilter, over: _Overrides, total: int,
                           stored_total: int) -> CallPage:
        # merged = (stored matches - drop) + add, in order.  Ask the store for a window that starts at most
        # |add| calls before the offset and is wide enough to cover the page once drop is taken out; the
        # merged position of the window's first call is known from the keys of drop and add before it.
        added = flt.sort(over.add.values())
        start = max(0, min(flt.offset - len(added), stored_total - 1))
        size = flt.limit + len(added) + len(over.drop)
        window = await _window(store, dataclasses.replace(flt, after=None, offset=start, limit=size))
        lower = call_key(window[0]) if start > 0 and window else None
        upper = call_key(window[-1]) if len(window) == size else None
        base = 0
        if lower is not None:
            base = (start - sum(1 for k in over.drop.values() if flt.before(k, lower))
                    + sum(1 for c in added if flt.before(call_key(c), lower)))
        merged: dict[tuple[str, str], CallJson] = {}
        for c in window:
            key = (c["pbx"], c["call_id"])
            if key not in over.drop:
                merged[key] = self._shown(c, over)
        for c in added:
            k = call_key(c)
            if (lower is None or not flt.before(k, lower)) and (upper is None or not flt.before(upper, k)):
                key = (c["pbx"], c["call_id"])
                merged[key] = _newest(merged.get(key), c) or c
        found = flt.sort(merged.values())
        skip = flt.offset - base
        return CallPage(found[skip: skip + flt.limit], total, flt.offset + flt.limit < total)

    async def _overrides(self, store: CallStore, flt: CallFilter) -> _Overrides:
        over = _Overrides({}, {}, {})
        unsynced = [r for r in self.recent.records() if self._synced.get(r.key, -math.inf) < r.updated_at]
        pending: list[tuple[tuple[str, str], Recovered]] = []
        if flt.recovered is not None:  # a recovery the store has not written changes only that filter
            pending = [(k, r) for k, r in self.recent.pending_recoveries() if k not in self._recovery_stored]
        if not unsynced and not pending:
            return over
        versions = await store.stored_versions([r.key for r in unsynced] + [k for k, _r in pending], flt)
        for n, record in enumerate(unsynced, 1):
            if n % STEP == 0:  # thousands when the store is behind: let the event loop run in between
                await asyncio.sleep(0)
            key = record.key
            version = versions.get(key)
            if version is not None and version.updated_at >= record.updated_at:
                self._synced[key] = version.updated_at  # the store's copy is as new: it answers for the call
                continue
            mine = record.to_json()
            self._compare(over, key, mine, flt.matches(mine), version is not None and version.matches)
        waiting = [k for k, _r in pending if k in versions]
        for key in waiting:
            if versions[key].recovered:
                self._recovery_stored.add(key)
        waiting = [k for k in waiting if not versions[k].recovered]
        if waiting:
            for key, stored in (await store.stored_calls(waiting)).items():
                mine = self.recent.with_recovery(stored)
                self._compare(over, key, mine, flt.matches(mine), versions[key].matches)
        self._prune()
        return over

    @staticmethod
    def _compare(over: _Overrides, key: tuple[str, str], mine: CallJson, mine_matches: bool,
                 stored_matches: bool) -> None:
        if mine_matches and not stored_matches:
            over.add[key] = mine
        elif stored_matches and not mine_matches:
            over.drop[key] = call_key(mine)
        elif mine_matches:
            over.newer[key] = mine

    def _prune(self) -> None:
        limit = 2 * self.recent.size + 1000
        if len(self._synced) > limit:
            held = {r.key for r in self.recent.records()}
            self._synced = {k: v for k, v in self._synced.items() if k in held}
        if len(self._recovery_stored) > limit:
            pending = {k for k, _r in self.recent.pending_recoveries()}
            self._recovery_stored &= pending

    # ---- the CallQuery protocol ------------------------------------------------------------------------
    async def list_calls(self, flt: CallFilter) -> list[CallJson]:
        """The first page of matching calls: the store's and the memory's, merged (no total)."""
        try:
            async with asyncio.timeout(self.timeout):
                stored = await self.store.list_calls(flt)
        except Exception as exc:  # the database is down, broken or stuck: answer from memory
            self.store_failures += 1
            log.warning("store query failed, answering from memory: %s", _why(exc))
            stored = []
        merged: dict[tuple[str, str], CallJson] = {}
        for c in [*map(self.recent.with_recovery, stored), *await self.recent.list_calls(flt)]:
            key = (c["pbx"], c["call_id"])
            newest = _newest(merged.get(key), c)
            assert newest is not None
            merged[key] = newest
        return flt.sort(merged.values())[: flt.limit]

    async def get_call(self, call_id: str, pbx: str | None = None) -> CallJson | None:
        try:
            async with asyncio.timeout(self.timeout):
                stored = await self.store.get_call(call_id, pbx)
        except Exception as exc:
            self.store_failures += 1
            log.warning("store query failed, answering from memory: %s", _why(exc))
            stored = None
        if stored is not None:
            stored = self.recent.with_recovery(stored)
        return _newest(stored, await self.recent.get_call(call_id, pbx))

