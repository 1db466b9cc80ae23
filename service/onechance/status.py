"""What the daemon shows of itself: readiness, the calls in progress, one live call (for the HTTP API)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .journey import CallJson
from .pipeline import PbxPipeline

__all__ = ["DaemonStatus", "StoreStatus"]


class StoreStatus(Protocol):
    def status(self) -> dict[str, Any]: ...


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
        return bool(self.pipelines) and not self.stopping and all(p.ready for p in self.pipelines)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        detail: dict[str, Any] = {"pbx": {p.name: p.status() for p in self.pipelines}}
        if self.store is not None:
            detail["store"] = self.store.status()
        if self.stopping:
            detail["reason"] = "shutting down"
        elif not self.ready:
            reasons = [f"{p.name}: {p.status().get('error')}" for p in self.pipelines if not p.ready]
            detail["reason"] = "; ".join(reasons) or "starting"
        return self.ready, detail

    def live(self) -> dict[str, Any]:
        """``{"calls": [...in progress, oldest first], "queues": {pbx: {queue: {...}}}}``."""
        calls: list[CallJson] = []
        queues: dict[str, dict[str, Any]] = {}
        for p in self.pipelines:
            calls.extend(r.to_json() for r in p.tracker.live())
            now = p.pbx_now()
            queues[p.name] = {
                q: {"callers": len(joins), "oldest_wait_seconds": round(max(0.0, now - min(joins)), 3)}
                for q, joins in sorted(p.tracker.waiting_by_queue().items())
            }
        calls.sort(key=lambda c: (c["started_at"], c["call_id"]))
        return {"calls": calls, "queues": queues}

    def live_call(self, call_id: str, pbx: str | None = None) -> CallJson | None:
        """One call in progress, found by id (no scan of the others)."""
        for p in self.pipelines:
            if pbx is not None and p.name != pbx:
                continue
            record = p.tracker.live_journey(call_id)
            if record is not None:
                return record.to_json()
        return None
