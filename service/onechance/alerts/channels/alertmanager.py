"""The Alertmanager channel: ``POST {url}/api/v2/alerts`` (Alertmanager's API v2), see docs/alerts.md.

Each alert becomes one Alertmanager alert whose labels identify it (``alertname``, ``severity``, ``pbx``,
``queue``, ``kind``, ``call_id``; never the caller's number) and whose annotations carry the call
(``summary``, ``description``, ``caller``, ``caller_name``, ``wait_seconds``, ``callback_url``, ``call_url``).
``startsAt`` is when onechance decided it, ``generatorURL`` the call in the API.  An open alert is posted with
``endsAt`` three ``repeat_interval`` ahead (the engine re-posts it every ``repeat_interval`` while the caller
waits for a callback; if onechance stops, Alertmanager resolves it by itself); a ``resolved`` notice posts the
same labels with ``endsAt`` = now.  A digest is every alert posted at once: Alertmanager groups them itself.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ...journey import AlertKind
from ..model import Alert, DeliveryFailed, Notice
from ..render import LOST_KINDS, Renderer, caller_name_of, iso8601, severity_of, wait_of, what_of
from .common import HttpPoster

__all__ = ["ALERTNAMES", "AlertmanagerChannel", "alerts_endpoint"]

ALERTNAMES = {
    **{kind: "OnechanceLostCaller" for kind in LOST_KINDS},
    AlertKind.BOUNCED: "OnechanceBouncedCall",
    AlertKind.LONG_WAIT: "OnechanceLongWait",
}
_API = "/api/v2/alerts"
#: an open alert lives this many repeat_intervals unless re-posted
_LIFETIMES = 3


def alerts_endpoint(url: str) -> str:
    """``http://am:9093`` (or ``http://host/prefix``) -> ``.../api/v2/alerts``; a URL that already ends so is
    kept."""
    base = url.rstrip("/")
    return base if base.endswith(_API) else base + _API


class AlertmanagerChannel:
    """Posts alerts to Alertmanager and resolves them."""

    def __init__(self, name: str, url: str, renderer: Renderer, timeout: float, repeat_interval: float) -> None:
        self.name = name
        self.renderer = renderer
        self.repeat_interval = repeat_interval
        self._http = HttpPoster(alerts_endpoint(url), timeout)

    @property
    def resolves(self) -> bool:
        return True

    @property
    def origin(self) -> str:
        return self._http.origin

    def labels(self, alert: Alert) -> dict[str, str]:
        """What identifies the alert in Alertmanager (the same for its posts and its resolution)."""
        out = {
            "alertname": ALERTNAMES.get(alert.kind, "OnechanceAlert"),
            "severity": severity_of(alert.kind),
            "pbx": alert.pbx,
            "queue": alert.queue,
            "kind": str(alert.kind),
            "call_id": alert.call_id,
        }
        return {k: v for k, v in out.items() if v}  # Alertmanager treats an empty label as absent

    def annotations(self, alert: Alert) -> dict[str, str]:
        r = self.renderer
        return {
            "summary": f"{r.title(alert)}: {what_of(alert)}",
            "description": r.text(alert),
            "caller": r.caller(alert.record),
            "caller_name": caller_name_of(alert.record),
            "wait_seconds": f"{wait_of(alert):g}",
            "callback_url": r.callbacks_link(),
            "call_url": r.call_link(alert.record),
        }

    def alert_json(self, alert: Alert, *, resolved: bool, now: float) -> dict[str, Any]:
        ends = max(now, alert.decided_at + 0.001)
        if not resolved:
            ends += _LIFETIMES * self.repeat_interval
        return {
            "labels": self.labels(alert),
            "annotations": self.annotations(alert),
            "startsAt": iso8601(alert.decided_at),
            "endsAt": iso8601(ends),
            "generatorURL": self.renderer.call_link(alert.record),
        }

    async def send(self, notice: Notice) -> None:
        if not notice.alerts:
            return
        now = time.time()
        try:
            alerts = [self.alert_json(a, resolved=notice.kind == "resolved", now=now) for a in notice.alerts]
            body = json.dumps(alerts, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        except Exception as exc:  # the contract: DeliveryFailed, never anything else
            raise DeliveryFailed(f"cannot render the notice ({type(exc).__name__})", retryable=False) from None
        headers = {"Content-Type": "application/json", "Idempotency-Key": notice.idempotency_key}
        await self._http.post(body, headers)

    async def aclose(self) -> None:
        await self._http.aclose()
