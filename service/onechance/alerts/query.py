"""Alerts for the API: the store's, with the outbox's memory over them (newer, and there when the store is not)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from ..store import list_alerts
from .outbox import Outbox, alert_from_payload, alert_view

__all__ = ["AlertQuery"]

log = logging.getLogger("onechance.alerts")


class AlertQuery:
    def __init__(self, engine: AsyncEngine, outbox: Outbox, timeout: float = 5.0) -> None:
        self.engine = engine
        self.outbox = outbox
        self.timeout = timeout

    async def __call__(self, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        limit = int(params.get("limit") or 100)
        kinds = params.get("kinds")
        queue, pbx, since = params.get("queue"), params.get("pbx"), params.get("since")
        found: dict[str, dict[str, Any]] = {}
        try:
            async with asyncio.timeout(self.timeout):
                rows = await list_alerts(self.engine, since=since, kinds=kinds, pbx=pbx, queue=queue, limit=limit)
            for alert_row, deliveries in rows:
                try:
                    alert = alert_from_payload(alert_row.id, alert_row.payload)
                except (KeyError, TypeError, ValueError):
                    continue
                found[alert.id] = alert_view(alert, alert_row.resolved_at, {
                    d.channel: {"state": d.state, "attempts": d.attempts, "sent_at": d.sent_at,
                                "last_error": d.last_error} for d in deliveries})
        except Exception as exc:  # the store is down or stuck: the memory answers alone
            log.warning("alert query failed, answering from memory: %s", exc or type(exc).__name__)
        for view in self.outbox.recent(max(limit, 1000)):
            if ((not kinds or view["kind"] in kinds) and (not queue or view["queue"] in queue)
                    and (not pbx or view["pbx"] in pbx) and (since is None or view["decided_at"] >= since)):
                found[view["id"]] = view
        return sorted(found.values(), key=lambda v: (v["decided_at"], v["id"]), reverse=True)[:limit]
