"""From call records to alerts: when each kind is raised.

* **bounced** is raised the moment the call reaches its bounce threshold, while it is still live, so a supervisor
  can step in;
* **long_wait** the moment a caller has waited ``long_wait_seconds`` in a queue (once per call: the tracker's
  tick raises it once per visit, the outbox keeps one alert per call and kind);
* **abandoned**, **timeout**, **rejected** and **exited** when the call ends: only then is its outcome final (after
  a queue timeout, a refusal or a key exit the dialplan may still send the caller to another queue, where they
  are answered).  An abandon ends the call at once (the caller hangs up), so that alert goes out within the
  second; the others when the caller hangs up (e.g. after leaving a voicemail).
* a call the tracker closed itself (link lost, daemon stopped) never raises ``abandoned`` (the policy decides);
* only inbound calls raise lost-caller and long-wait alerts.

Nothing here waits: the outbox takes the alert synchronously and persists it in its own task.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..journey import AlertKind, CallPolicy, Direction, JourneyUpdate, Recovered, Update, UpdateKind
from .model import Alert, alert_id
from .outbox import Outbox

__all__ = ["AlertRaiser"]


class AlertRaiser:
    """A sink: raises alerts on the outbox, and resolves them when a lost caller is reached."""

    def __init__(self, policy: CallPolicy, outbox: Outbox, clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self.outbox = outbox
        self._clock = clock

    def handle(self, update: Update) -> None:
        if isinstance(update, Recovered):
            self.outbox.resolve_call(update.pbx, update.call_id, update.at)
            return
        kind = update.kind
        if kind == UpdateKind.BOUNCED:
            queue = update.record.first_queue
            if self.policy.alerts_enabled(queue, AlertKind.BOUNCED):
                self._raise(update, AlertKind.BOUNCED, queue)
        elif kind == UpdateKind.LONG_WAIT:
            detail = update.detail or {}
            if update.record.direction == Direction.INBOUND and not detail.get("consultation"):
                self._raise(update, AlertKind.LONG_WAIT, str(detail.get("queue") or ""))
        elif kind == UpdateKind.ENDED:
            for alert_kind in update.record.alerts:  # what the policy decided, at the end
                if alert_kind != AlertKind.BOUNCED:
                    self._raise(update, alert_kind, update.record.last_queue)

    def _raise(self, update: JourneyUpdate, kind: AlertKind, queue: str) -> None:
        r = update.record
        self.outbox.raise_alert(Alert(id=alert_id(r.pbx, r.call_id, str(kind)), kind=kind, record=r, queue=queue,
                                      decided_at=update.at, raised_at=self._clock()))
