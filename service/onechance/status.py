"""What the daemon shows of itself: readiness, the calls in progress, one live call (for the HTTP API).

Everything here runs on the event loop and reads the trackers without copying them whole: a page of the calls
in progress picks its calls by their keys alone (start time, call id, PBX) and builds the records of that page
only; one live call is found by id in the tracker's index.  Queue names are shown as the metrics label them
(:class:`~onechance.queues.QueueCatalog`: past its limit, ``other``), so a PBX sending thousands of names
cannot make an answer grow without bound.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections.abc import Collection, Sequence
from typing import Any, Protocol

from .journey import CallJson, CallRecord
from .members import Member, MemberState
from .pipeline import PbxPipeline

__all__ = ["DaemonStatus", "LiveKey", "LivePage", "StoreStatus"]

#: a call in progress's place in ``/api/live``: start time, call id, PBX (oldest first)
LiveKey = tuple[float, str, str]


class LivePage:
    """One page of the calls in progress, oldest first: ``calls`` (which tracker, which call id: the records are
    built by :meth:`records`, a slice at a time), ``total`` calls in progress (of the PBXs asked), ``more`` after
    this page."""

    __slots__ = ("calls", "more", "total")

    def __init__(self, calls: list[tuple[PbxPipeline, str]], total: int, more: bool) -> None:
        self.calls = calls
        self.total = total
        self.more = more

    def records(self, start: int = 0, end: int | None = None) -> list[CallRecord]:
        """The records of ``calls[start:end]`` as they are now (a call that ended since is left out)."""
        out = []
        for p, call_id in self.calls[start:end]:
            record = p.tracker.live_journey(call_id)
            if record is not None:
                out.append(record)
        return out


class StoreStatus(Protocol):
    def status(self) -> dict[str, Any]: ...

    def problem(self) -> str | None: ...


class DaemonStatus:
    """Readiness and the live view, read from the pipelines (and the store writer, when there is one)."""

    def __init__(self, pipelines: Sequence[PbxPipeline], store: StoreStatus | None = None) -> None:
        self.pipelines = pipelines
        self.store = store
        self.stopping = False

    def begin_stop(self) -> None:
        self.stopping = True

    @property
    def ready(self) -> bool:
        """Every PBX logged in and resynced, and the store writing (a database down, its file removed or a
        spool that refuses appends is not ready: journeys are at risk or only in the spool)."""
        return (bool(self.pipelines) and not self.stopping and all(p.ready for p in self.pipelines)
                and (self.store is None or self.store.problem() is None))

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        detail: dict[str, Any] = {"pbx": {p.name: p.status() for p in self.pipelines}}
        if self.store is not None:
            detail["store"] = self.store.status()
        if self.stopping:
            detail["reason"] = "shutting down"
        elif not self.ready:
            reasons = [f"{p.name}: {p.status().get('error')}" for p in self.pipelines if not p.ready]
            problem = self.store.problem() if self.store is not None else None
            if problem is not None:
                reasons.append(f"store: {problem}")
            detail["reason"] = "; ".join(reasons) or "starting"
        return self.ready, detail

    def live(self) -> dict[str, Any]:
        """``{"calls": [...every call in progress, oldest first], "queues": {pbx: {queue: {...}}}}`` (every
        call at once: for tools and tests; the API pages with :meth:`live_page`)."""
        page = self.live_page(limit=None)
        return {"calls": [r.to_json() for r in page.records()], "queues": self.waiting_now()}

    def live_page(self, limit: int | None = 100, after: LiveKey | None = None,
                  pbxs: Collection[str] | None = None) -> LivePage:
        """The calls in progress after ``after`` (oldest first), at most ``limit`` (None: all), chosen by their
        keys alone."""
        total = 0
        keys: list[tuple[float, str, str, int]] = []
        sources: list[PbxPipeline] = []
        for p in self.pipelines:
            if pbxs is not None and p.name not in pbxs:
                continue
            calls = p.tracker.calls
            total += len(calls)
            n = len(sources)
            sources.append(p)
            found = ((st.journey.started_at, cid, st.journey.pbx, n) for cid, st in calls.items())
            keys.extend(found if after is None else (k for k in found if k[:3] > after))
        chosen = sorted(keys) if limit is None else heapq.nsmallest(limit + 1, keys)
        more = limit is not None and len(chosen) > limit
        return LivePage([(sources[n], cid) for _ts, cid, _pbx, n in chosen[:limit]], total, more)

    def waiting_now(self, pbxs: Collection[str] | None = None) -> dict[str, dict[str, dict[str, Any]]]:
        """Per PBX and queue: ``{"callers", "oldest_wait_seconds"}`` of the queues where callers wait now."""
        out: dict[str, dict[str, Any]] = {}
        for p in self.pipelines:
            if pbxs is not None and p.name not in pbxs:
                continue
            out[p.name] = {q: {"callers": waiting, "oldest_wait_seconds": oldest}
                           for q, (waiting, oldest) in sorted(self._waiting(p).items())}
        return out

    @staticmethod
    def _waiting(p: PbxPipeline) -> dict[str, tuple[int, float]]:
        """Queue label -> (callers waiting, the longest wait); queues past the catalog's limit as ``other``."""
        now = p.pbx_now()
        label = p.catalog.label
        joined: dict[str, list[float]] = {}
        for q, joins in p.tracker.waiting_by_queue().items():
            joined.setdefault(label(p.name, q), []).extend(joins)
        return {q: (len(joins), round(max(0.0, now - min(joins)), 3)) for q, joins in joined.items()}

    def queues_now(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per PBX and queue (every queue known: configured, listed by the PBX, seen, with members or callers;
        named as the metrics label them): ``{"waiting", "oldest_wait_seconds", "members": {state: count for
        every state}}``."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for p in self.pipelines:
            waiting = self._waiting(p)
            counts: dict[tuple[str, MemberState], int] = {}
            for (q, state), n in p.members.counts().items():
                key = (p.catalog.label(p.name, q), state)
                counts[key] = counts.get(key, 0) + n
            names = set(p.known_queues()) | set(waiting) | {q for q, _s in counts}
            out[p.name] = {
                q: {"waiting": waiting.get(q, (0, 0.0))[0], "oldest_wait_seconds": waiting.get(q, (0, 0.0))[1],
                    "members": {str(s): counts.get((q, s), 0) for s in MemberState}}
                for q in sorted(n for n in names if n)
            }
        return out

    def members_now(self) -> dict[str, list[Member]]:
        """Per PBX: every queue member (one per queue and interface), as last reported; queues named as the
        metrics label them (one member per interface under ``other``)."""
        out: dict[str, list[Member]] = {}
        for p in self.pipelines:
            seen: dict[tuple[str, str], Member] = {}
            for m in p.members.members():
                q = p.catalog.label(p.name, m.queue)
                if (q, m.interface) not in seen:
                    seen[(q, m.interface)] = m if q == m.queue else dataclasses.replace(m, queue=q)
            out[p.name] = list(seen.values())
        return out

    def live_call(self, call_id: str, pbx: str | None = None) -> CallJson | None:
        """One call in progress, found by id (no scan of the others)."""
        for p in self.pipelines:
            if pbx is not None and p.name != pbx:
                continue
            record = p.tracker.live_journey(call_id)
            if record is not None:
                return record.to_json()
        return None
