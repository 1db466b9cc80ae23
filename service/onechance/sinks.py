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
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from .journey import CallJson, CallRecord, Recovered, Update, UpdateKind

log = logging.getLogger(__name__)

__all__ = ["CallFilter", "CallLog", "CallQuery", "MergedCallQuery", "RecentCalls", "Sink"]


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


@dataclass(frozen=True, slots=True)
class CallFilter:
    """The filters of ``GET /api/calls``."""

    since: float | None = None  # started at or after (epoch seconds)
    outcomes: frozenset[str] | None = None
    queue: str | None = None  # visited this queue
    pbx: str | None = None
    limit: int = 100

    def matches(self, call: CallRecord) -> bool:
        if self.since is not None and call.started_at < self.since:
            return False
        if self.outcomes is not None and str(call.outcome) not in self.outcomes:
            return False
        if self.pbx is not None and call.pbx != self.pbx:
            return False
        return self.queue is None or any(q.queue == self.queue for q in call.queues)


class CallQuery(Protocol):
    """Finished calls for the HTTP API; the store provides one backed by SQL."""

    async def list_calls(self, flt: CallFilter) -> list[CallJson]:
        """Matching calls, newest first, at most ``flt.limit``."""
        ...

    async def get_call(self, call_id: str, pbx: str | None = None) -> CallJson | None:
        """One call by call id (the newest when several PBXs used the same id)."""
        ...


def _order(call: CallJson) -> tuple[float, str]:
    return call["started_at"], call["call_id"]


class RecentCalls:
    """A sink and a :class:`CallQuery`: the last ``size`` finished calls, in memory."""

    def __init__(self, size: int = 10000) -> None:
        self.size = size
        self._calls: OrderedDict[tuple[str, str], CallRecord] = OrderedDict()
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
            self._calls.pop(key, None)
            return
        if update.kind != UpdateKind.ENDED and key not in self._calls:
            return
        self._calls[key] = record
        self._calls.move_to_end(key)
        while len(self._calls) > self.size:
            self._calls.popitem(last=False)

    def records(self) -> Iterable[CallRecord]:
        return self._calls.values()

    def with_recovery(self, call: CallJson) -> CallJson:
        """A call from elsewhere (the store) with the recovery this memory knows of and it may not yet have."""
        found = self._recoveries.get((call["pbx"], call["call_id"]))
        if found is None or call["recovered"]:
            return call
        return CallRecord.from_json(call).with_recovery(found.by, found.at, found.how).to_json()

    async def list_calls(self, flt: CallFilter) -> list[CallJson]:
        found = [c.to_json() for c in self._calls.values() if flt.matches(c)]
        found.sort(key=_order, reverse=True)
        return found[: flt.limit]

    async def get_call(self, call_id: str, pbx: str | None = None) -> CallJson | None:
        if pbx is not None:
            found = self._calls.get((pbx, call_id))
            return found.to_json() if found is not None else None
        matches = [c for (_p, cid), c in self._calls.items() if cid == call_id]
        return max(matches, key=lambda c: c.started_at).to_json() if matches else None


def _why(exc: Exception) -> str:
    return "no answer in time" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__


def _newest(a: CallJson | None, b: CallJson | None) -> CallJson | None:
    if a is None or b is None:
        return a or b
    return a if a["updated_at"] >= b["updated_at"] else b


class MergedCallQuery:
    """The store's answers merged with the calls still in memory.

    The store holds everything for months but is written in batches (and may be unreachable for a
    while: the writer spools); the in-memory recent calls are never behind.  Each call is answered from
    whichever copy is newer (``updated_at``); when the store fails or does not answer within ``timeout``
    seconds (a locked table, a connection to a vanished server), the memory answers alone.
    """

    def __init__(self, store: CallQuery, recent: RecentCalls, timeout: float = 5.0) -> None:
        self.store = store
        self.recent = recent
        self.timeout = timeout
        self.store_failures = 0

    async def list_calls(self, flt: CallFilter) -> list[CallJson]:
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
        found = sorted(merged.values(), key=_order, reverse=True)
        return found[: flt.limit]

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
