"""What the daemon shows of itself: readiness, the calls in progress, one live call (for the HTTP API)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .journey import CallJson
from .members import Member, MemberState
from .pipeline import PbxPipeline

__all__ = ["DaemonStatus", "StoreStatus"]


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
        """``{"calls": [...in progress, oldest first], "queues": {pbx: {queue: {...}}}}``."""
        calls: list[CallJson] = []
        queues: dict[str, dict[str, Any]] = {}
        for p in self.pipelines:
            calls.extend(r.to_json() for r in p.tracker.live())
            queues[p.name] = {q: {"callers": waiting, "oldest_wait_seconds": oldest}
                              for q, (waiting, oldest) in sorted(self._waiting(p).items())}
        calls.sort(key=lambda c: (c["started_at"], c["call_id"]))
        return {"calls": calls, "queues": queues}

    @staticmethod
    def _waiting(p: PbxPipeline) -> dict[str, tuple[int, float]]:
        now = p.pbx_now()
        return {q: (len(joins), round(max(0.0, now - min(joins)), 3))
                for q, joins in p.tracker.waiting_by_queue().items()}

    def queues_now(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Per PBX and queue (every queue known: configured, listed by the PBX, seen, with members or callers):
        ``{"waiting", "oldest_wait_seconds", "members": {state: count for every state}}``."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for p in self.pipelines:
            waiting = self._waiting(p)
            counts = p.members.counts()
            names = set(p.known_queues()) | set(waiting) | {q for q, _s in counts}
            out[p.name] = {
                q: {"waiting": waiting.get(q, (0, 0.0))[0], "oldest_wait_seconds": waiting.get(q, (0, 0.0))[1],
                    "members": {str(s): counts.get((q, s), 0) for s in MemberState}}
                for q in sorted(n for n in names if n)
            }
        return out

    def members_now(self) -> dict[str, list[Member]]:
        """Per PBX: every queue member (one per queue and interface), as last reported."""
        return {p.name: list(p.members.members()) for p in self.pipelines}

    def live_call(self, call_id: str, pbx: str | None = None) -> CallJson | None:
        """One call in progress, found by id (no scan of the others)."""
        for p in self.pipelines:
            if pbx is not None and p.name != pbx:
                continue
            record = p.tracker.live_journey(call_id)
            if record is not None:
                return record.to_json()
        return None
