"""Where journey updates go: the sink interface, the in-memory recent calls and the call query API.

Each PBX's consumer hands every :class:`~onechance.journey.JourneyUpdate` to every sink, in order, on the
event loop.  A sink's :meth:`Sink.handle` is synchronous and must not block: anything slow (a database,
a webhook) queues the work and does it in its own task.  Sinks that keep a journey past the call must
copy it (``update.journey.to_dict()``): the journey object is the tracker's live one.

* :class:`RecentCalls` keeps the last ``http.recent_calls`` finished journeys in memory and answers the
  HTTP API (:class:`CallQuery`) until a store-backed query replaces it;
* :class:`SubmitSink` adapts any ``submit(journey_dict)`` writer (the SQL store's writer, an outbox);
* :class:`MergedCallQuery` answers the API from the store and the recent calls together.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from .journey import JourneyUpdate, UpdateKind

log = logging.getLogger(__name__)

__all__ = ["FINAL_KINDS", "CallFilter", "CallQuery", "MergedCallQuery", "RecentCalls", "Sink", "SubmitSink"]

#: updates after which a journey's stored copy must be (re)written: its end, and a later recovery
FINAL_KINDS = frozenset({UpdateKind.ENDED, UpdateKind.RECOVERED})


@runtime_checkable
class Sink(Protocol):
    """Receives every journey update of every PBX, in order.  Synchronous and non-blocking."""

    def handle(self, update: JourneyUpdate) -> None: ...


@dataclass(frozen=True, slots=True)
class CallFilter:
    """The filters of ``GET /api/calls``."""

    since: float | None = None  # started at or after (epoch seconds)
    outcomes: frozenset[str] | None = None
    queue: str | None = None  # visited this queue
    pbx: str | None = None
    limit: int = 100

    def matches(self, call: dict[str, Any]) -> bool:
        if self.since is not None and (call.get("started_at") or 0.0) < self.since:
            return False
        if self.outcomes is not None and call.get("outcome") not in self.outcomes:
            return False
        if self.pbx is not None and call.get("pbx") != self.pbx:
            return False
        return self.queue is None or any(q.get("queue") == self.queue for q in call.get("queues") or ())


class CallQuery(Protocol):
    """Finished calls for the HTTP API; the store provides one backed by SQL."""

    async def list_calls(self, flt: CallFilter) -> list[dict[str, Any]]:
        """Matching journeys (``Journey.to_dict()`` shape), newest first, at most ``flt.limit``."""
        ...

    async def get_call(self, call_id: str, pbx: str | None = None) -> dict[str, Any] | None:
        """One journey by call id (the newest when several PBXs used the same id)."""
        ...


class RecentCalls:
    """A sink and a :class:`CallQuery`: the last ``size`` finished journeys, in memory."""

    def __init__(self, size: int = 10000) -> None:
        self.size = size
        self._calls: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._calls)

    def handle(self, update: JourneyUpdate) -> None:
        j = update.journey
        key = (j.pbx, j.call_id)
        if j.ended_at is None:
            # live again (taken up after a resync): the live view shows it until it ends
            if key in self._calls:
                del self._calls[key]
            return
        if update.kind not in FINAL_KINDS and key not in self._calls:
            return
        self._calls[key] = j.to_dict()
        self._calls.move_to_end(key)
        while len(self._calls) > self.size:
            self._calls.popitem(last=False)

    def calls(self) -> Iterable[dict[str, Any]]:
        return self._calls.values()

    async def list_calls(self, flt: CallFilter) -> list[dict[str, Any]]:
        found = [c for c in self._calls.values() if flt.matches(c)]
        found.sort(key=lambda c: (c.get("started_at") or 0.0, c.get("call_id") or ""), reverse=True)
        return found[: flt.limit]

    async def get_call(self, call_id: str, pbx: str | None = None) -> dict[str, Any] | None:
        if pbx is not None:
            return self._calls.get((pbx, call_id))
        found = [c for (p, cid), c in self._calls.items() if cid == call_id]
        return max(found, key=lambda c: c.get("started_at") or 0.0) if found else None


class SubmitSink:
    """Hands a copy of each finished journey to ``submit`` (e.g. the store writer's non-blocking
    ``submit(journey_dict)``).  ``kinds`` selects the updates that trigger a copy."""

    def __init__(self, submit: Callable[[dict[str, Any]], object],
                 kinds: Collection[UpdateKind] = FINAL_KINDS) -> None:
        self._submit = submit
        self.kinds = frozenset(kinds)

    def handle(self, update: JourneyUpdate) -> None:
        if update.kind in self.kinds:
            self._submit(update.journey.to_dict())


def _why(exc: Exception) -> str:
    return "no answer in time" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__


def _newest(a: dict[str, Any] | None, b: dict[str, Any] | None) -> dict[str, Any] | None:
    if a is None or b is None:
        return a or b
    return a if (a.get("updated_at") or 0.0) >= (b.get("updated_at") or 0.0) else b


class MergedCallQuery:
    """The store's answers merged with the journeys still in memory.

    The store holds everything for months but is written in batches (and may be unreachable for a
    while: the writer spools); the in-memory recent calls are never behind.  Each call is answered from
    whichever copy is newer (``updated_at``); when the store fails or does not answer within ``timeout``
    seconds (a locked table, a connection to a vanished server), the memory answers alone.
    """

    def __init__(self, store: CallQuery, recent: CallQuery, timeout: float = 5.0) -> None:
        self.store = store
        self.recent = recent
        self.timeout = timeout
        self.store_failures = 0

    async def list_calls(self, flt: CallFilter) -> list[dict[str, Any]]:
        try:
            async with asyncio.timeout(self.timeout):
                stored = await self.store.list_calls(flt)
        except Exception as exc:  # the database is down, broken or stuck: answer from memory
            self.store_failures += 1
            log.warning("store query failed, answering from memory: %s", _why(exc))
            stored = []
        merged: dict[tuple[str, str], dict[str, Any]] = {}
        for c in [*stored, *await self.recent.list_calls(flt)]:
            key = (c.get("pbx") or "", c.get("call_id") or "")
            merged[key] = _newest(merged.get(key), c)  # type: ignore[assignment]
        found = sorted(merged.values(), key=lambda c: (c.get("started_at") or 0.0, c.get("call_id") or ""),
                       reverse=True)
        return found[: flt.limit]

    async def get_call(self, call_id: str, pbx: str | None = None) -> dict[str, Any] | None:
        try:
            async with asyncio.timeout(self.timeout):
                stored = await self.store.get_call(call_id, pbx)
        except Exception as exc:
            self.store_failures += 1
            log.warning("store query failed, answering from memory: %s", _why(exc))
            stored = None
        return _newest(stored, await self.recent.get_call(call_id, pbx))
