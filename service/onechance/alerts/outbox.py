"""The alert outbox: every alert durable before it is sent, every delivery retried until it is done.

* :meth:`Outbox.raise_alert` and :meth:`Outbox.resolve_call` are synchronous and never wait: the tracker's
  consumer calls them (through :class:`~onechance.alerts.raiser.AlertRaiser`).
* An alert is routed (:class:`~onechance.alerts.routing.Router`) and written, with one delivery row per channel,
  through the store's writer (:meth:`~onechance.store.JourneyWriter.persist`: fsync'd in its spool, from where
  the writer stores it in the database) **before** its first delivery attempt; nothing waits for the database.
* Each delivery is tried at once, then retried with exponential backoff and jitter (``retry_min`` ..
  ``retry_max``; a receiver's ``Retry-After`` is honoured up to ``retry_max``) while it fails for a reason
  that may pass (timeouts, 5xx, 429...), until it is sent, refused for good (``failed``), older than the
  channel's ``max_age`` (``expired``), or its caller was reached (``cancelled``).  Every attempt carries the
  same idempotency key, so a receiver recognises a retry after a lost response.  Its state is written after
  each attempt; once ``sent`` it is never sent again, across restarts too (a restart loads the deliveries
  still pending from the store).
* Storm guard: past ``storm_limit`` alerts in a minute on one channel, the next ones wait for the minute to end
  and go as one digest.
* Channels that resolve (Alertmanager) get the open alert again every ``repeat_interval`` while the caller
  waits for a callback, and a ``resolved`` notice when the caller is reached or the worklist entry is closed.
* Delivery never blocks the tracker, the writer or HTTP: sends run in tasks of the outbox's own, Apprise in a
  thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram

from ..config import ChannelSettings
from ..errors import RateLimitedLog, load_when_ready
from ..journey import AlertKind, CallRecord
from ..store.facts import AlertRow, DeliveryRow
from .model import Alert, Channel, DeliveryFailed, DeliveryState, Notice
from .routing import Router

__all__ = ["Outbox", "PersistFacts"]

log = logging.getLogger("onechance.alerts")

STORM_WINDOW = 60.0  # seconds over which a channel's storm_limit counts
DELIVERY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
FINAL = frozenset({DeliveryState.SENT, DeliveryState.FAILED, DeliveryState.EXPIRED, DeliveryState.SUPPRESSED,
                   DeliveryState.CANCELLED})


class PersistFacts(Protocol):
    """What the outbox needs of the store writer (``JourneyWriter``)."""

    async def persist(self, facts: Sequence[AlertRow | DeliveryRow]) -> None: ...

    def submit(self, item: AlertRow | DeliveryRow) -> None: ...


@dataclass(slots=True)
class _Delivery:
    alert: Alert
    channel: str
    state: DeliveryState
    key: str
    attempts: int = 0
    next_at: float | None = None
    last_attempt_at: float | None = None
    sent_at: float | None = None
    resolved_sent_at: float | None = None
    last_error: str | None = None
    resolve_due: bool = False  # a "resolved" notice is owed to this (resolving) channel
    busy: bool = False  # an attempt is in flight
    version: float = 0.0  # updated_at of the last row: strictly increasing (the store keeps the newest)

    def row(self, now: float) -> DeliveryRow:
        self.version = now = max(now, self.version + 1e-6)
        return DeliveryRow(alert_id=self.alert.id, channel=self.channel, state=str(self.state),
                           attempts=self.attempts, next_attempt_at=self.next_at,
                           last_attempt_at=self.last_attempt_at, sent_at=self.sent_at,
                           resolved_sent_at=self.resolved_sent_at, last_error=self.last_error,
                           idempotency_key=self.key, updated_at=now)


@dataclass(slots=True)
class _AlertState:
    alert: Alert
    resolved_at: float | None = None
    deliveries: dict[str, _Delivery] = field(default_factory=dict)
    version: float = 0.0  # updated_at of the last row: strictly increasing (the store keeps the newest)

    def row(self, now: float) -> AlertRow:
        self.version = now = max(now, self.version + 1e-6)
        a = self.alert
        return AlertRow(id=a.id, pbx=a.pbx, call_id=a.call_id, kind=str(a.kind), queue=a.queue,
                        caller=a.record.caller, decided_at=a.decided_at, created_at=a.raised_at,
                        state="resolved" if self.resolved_at is not None else "open", resolved_at=self.resolved_at,
                        payload=alert_payload(a), updated_at=now)


def alert_payload(alert: Alert) -> dict[str, Any]:
    """What the store keeps of an alert (enough to send it again after a restart)."""
    return {"kind": str(alert.kind), "queue": alert.queue, "decided_at": alert.decided_at,
            "raised_at": alert.raised_at, "record": dict(alert.record.to_json())}


def alert_from_payload(alert_id: str, payload: Mapping[str, Any]) -> Alert:
    return Alert(id=alert_id, kind=AlertKind(payload["kind"]), record=CallRecord.from_json(payload["record"]),
                 queue=str(payload.get("queue") or ""), decided_at=float(payload["decided_at"]),
                 raised_at=float(payload["raised_at"]))


class _Storm:
    """A channel's sends in the last minute, and the alerts held back for its next digest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.sent: deque[float] = deque()
        self.held: list[_Delivery] = []
        self.flush_at: float | None = None

    def allows(self, now: float) -> bool:
        while self.sent and self.sent[0] <= now - STORM_WINDOW:
            self.sent.popleft()
        return not self.held and len(self.sent) < self.limit


class Outbox:
    """The alert outbox and delivery service (a daemon service: ``run()`` / ``aclose()``)."""

    def __init__(
        self,
        router: Router,
        channels: Mapping[str, Channel],
        settings: Sequence[ChannelSettings],
        store: PersistFacts,
        registry: CollectorRegistry,
        *,
        load: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.router = router
        self.channels = dict(channels)
        self.settings = {c.name: c for c in settings}
        self.store = store
        self._load = load  # async () -> [(AlertRow, [DeliveryRow])]: the deliveries a restart must go on with
        self._clock = clock
        self._rng = rng or random.Random()
        self._alerts: dict[str, _AlertState] = {}
        self._by_call: dict[tuple[str, str], set[str]] = {}
        self._due: list[tuple[float, int, str, str]] = []  # (when, seq, alert_id, channel)
        self._seq = 0
        self._storm = {c.name: _Storm(c.storm_limit) for c in settings}
        self._incoming: deque[tuple[str, Any]] = deque()
        self._wake = asyncio.Event()
        self._closing = False
        self._closed = asyncio.Event()
        self._finished = asyncio.Event()
        self._running = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._errors = RateLimitedLog(log)
        self.m_alerts = Counter("onechance_alerts", "Alerts raised, by the queue they are about and kind",
                                ["pbx", "queue", "kind"], registry=registry)
        self.m_deliveries = Counter("onechance_alert_deliveries",
                                    "Alert delivery outcomes per channel: sent, retried (an attempt failed, another "
                                    "follows), failed (refused for good), expired, suppressed (muted or outside "
                                    "business hours), cancelled (the caller was reached first)",
                                    ["channel", "result"], registry=registry)
        self.m_latency = Histogram("onechance_alert_delivery_seconds",
                                   "From the AMI event that decided an alert to its delivery", ["channel"],
                                   buckets=DELIVERY_BUCKETS, registry=registry)
        for name in self.settings:
            for result in ("sent", "retried", "failed", "expired", "suppressed", "cancelled"):
                self.m_deliveries.labels(name, result)

    # ---- the consumer's side (synchronous, never waits) --------------------------------------------------
    def raise_alert(self, alert: Alert) -> None:
        if alert.id in self._alerts:
            return  # one alert per call and kind
        self._incoming.append(("raise", alert))
        self._wake.set()

    def resolve_call(self, pbx: str, call_id: str, at: float) -> None:
        """The caller of this call was reached (or their worklist entry closed): its alerts are resolved."""
        self._incoming.append(("resolve", (pbx, call_id, at)))
        self._wake.set()

    def recent(self, limit: int = 1000) -> list[dict[str, Any]]:
        """The alerts in memory, newest first (for the API)."""
        states = sorted(self._alerts.values(), key=lambda s: s.alert.decided_at, reverse=True)[:limit]
        return [alert_view(s.alert, s.resolved_at, {c: _delivery_view(d) for c, d in s.deliveries.items()})
                for s in states]

    def pending(self) -> int:
        return sum(1 for s in self._alerts.values() for d in s.deliveries.values() if d.state not in FINAL)

    # ---- the service ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        self._running = True
        try:
            if self._load is not None:
                self._spawn(self._restore(), "alert-outbox-restore")
            while not self._closing:
                self._take_incoming()
                self._dispatch()
                await self._sleep()
            self._take_incoming()  # raised before the stop: recorded (sent at the next start if not now)
            for task in list(self._tasks):  # attempts in flight end within their channel's timeout
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            for channel in self.channels.values():
                with contextlib.suppress(Exception):
                    await channel.aclose()
        finally:
            self._finished.set()

    async def aclose(self) -> None:
        """Stop taking new attempts; return once those in flight are through and their states handed to the
        writer (which closes after the outbox)."""
        self._closing = True
        self._closed.set()
        self._wake.set()
        if self._running:
            await self._finished.wait()

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _sleep(self) -> None:
        timeout = None
        if self._due:
            timeout = max(0.0, self._due[0][0] - self._clock())
        flushes = [s.flush_at for s in self._storm.values() if s.flush_at is not None]
        if flushes:
            until = max(0.0, min(flushes) - self._clock())
            timeout = until if timeout is None else min(timeout, until)
        self._wake.clear()
        if self._incoming:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    def _schedule(self, d: _Delivery, when: float) -> None:
        d.next_at = when
        self._seq += 1
        heapq.heappush(self._due, (when, self._seq, d.alert.id, d.channel))

    # ---- raising and resolving -----------------------------------------------------------------------------
    def _take_incoming(self) -> None:
        while self._incoming:
            what, data = self._incoming.popleft()
            if what == "raise":
                self._admit(data)
            else:
                self._resolve(*data)

    def _admit(self, alert: Alert) -> None:
        if alert.id in self._alerts:
            return
        state = _AlertState(alert)
        self._alerts[alert.id] = state
        self._by_call.setdefault((alert.pbx, alert.call_id), set()).add(alert.id)
        self.m_alerts.labels(alert.pbx, alert.queue, str(alert.kind)).inc()
        for route in self.router.routes(alert):
            if route.channel not in self.channels:
                continue
            d = _Delivery(alert, route.channel, route.state, key=f"{alert.id}:{route.channel}",
                          last_error=route.reason)
            state.deliveries[route.channel] = d
            if route.state == DeliveryState.SUPPRESSED:
                self.m_deliveries.labels(route.channel, "suppressed").inc()
        self._spawn(self._persist_then_send(state), f"alert-{alert.id[:8]}")

    async def _persist_then_send(self, state: _AlertState) -> None:
        """Durable first (database or spool), then the first attempts."""
        now = self._clock()
        rows: list[AlertRow | DeliveryRow] = [state.row(now), *(d.row(now) for d in state.deliveries.values())]
        try:
            await self.store.persist(rows)
        except Exception as exc:  # the writer keeps them and tries again; we deliver anyway rather than never
            self._errors.failed("persist", f"alert {state.alert.id} could not be made durable yet: {exc}", exc)
        for d in state.deliveries.values():
            if d.state == DeliveryState.PENDING and state.resolved_at is None:
                self._schedule(d, self._clock())
        self._wake.set()

    def _resolve(self, pbx: str, call_id: str, at: float) -> None:
        now = self._clock()
        for alert_id in self._by_call.get((pbx, call_id), ()):
            state = self._alerts.get(alert_id)
            if state is None or state.resolved_at is not None:
                continue
            state.resolved_at = at
            rows: list[AlertRow | DeliveryRow] = [state.row(now)]
            for d in state.deliveries.values():
                resolves = self.channels[d.channel].resolves
                if d.state == DeliveryState.PENDING and d.busy:
                    d.resolve_due = resolves  # in flight: resolve it once it is through
                elif d.state == DeliveryState.PENDING:
                    d.state = DeliveryState.CANCELLED
                    d.next_at = None
                    self.m_deliveries.labels(d.channel, "cancelled").inc()
                    rows.append(d.row(now))
                elif d.state == DeliveryState.SENT and resolves:
                    d.resolve_due = True
                    self._schedule(d, now)
            for row in rows:
                self.store.submit(row)

    # ---- delivering ----------------------------------------------------------------------------------------
    def _dispatch(self) -> None:
        now = self._clock()
        for name, storm in self._storm.items():
            if storm.flush_at is not None and storm.flush_at <= now:
                held, storm.held, storm.flush_at = storm.held, [], None
                live = [h for h in held if h.state == DeliveryState.PENDING]
                if live:
                    for h in live:
                        h.busy = True
                    storm.sent.append(now)
                    self._spawn(self._attempt(name, live, digest=True), f"digest-{name}")
        while self._due and self._due[0][0] <= now:
            _when, _seq, alert_id, channel = heapq.heappop(self._due)
            state = self._alerts.get(alert_id)
            d = state.deliveries.get(channel) if state is not None else None
            if d is None or d.busy or (d.next_at is not None and d.next_at > now):
                continue  # superseded by a later schedule
            settings = self.settings[channel]
            if d.resolve_due and d.state == DeliveryState.SENT:
                d.busy = True
                self._spawn(self._attempt(channel, [d], resolve=True), f"resolve-{channel}")
                continue
            if d.state == DeliveryState.SENT:
                if state is not None and state.resolved_at is None and self.channels[channel].resolves:
                    d.busy = True  # re-post the open alert (Alertmanager forgets alerts not posted again)
                    self._spawn(self._attempt(channel, [d], repeat=True), f"repeat-{channel}")
                continue
            if d.state != DeliveryState.PENDING:
                continue
            if now - d.alert.raised_at > settings.max_age:
                self._finish(d, DeliveryState.EXPIRED, now, "not delivered within max_age")
                continue
            storm = self._storm[channel]
            if not storm.allows(now) and not self.channels[channel].resolves:
                storm.held.append(d)
                d.next_at = None
                if storm.flush_at is None:
                    storm.flush_at = (storm.sent[0] + STORM_WINDOW) if storm.sent else now + STORM_WINDOW
                continue
            storm.sent.append(now)
            d.busy = True
            self._spawn(self._attempt(channel, [d]), f"send-{channel}")

    async def _attempt(self, channel: str, batch: list[_Delivery], *, digest: bool = False,
                       resolve: bool = False, repeat: bool = False) -> None:
        settings = self.settings[channel]
        sender = self.channels[channel]
        first = batch[0]
        if resolve:
            notice = Notice("resolved", (first.alert,), f"{first.key}:resolved")
        elif digest:
            notice = Notice("digest", tuple(d.alert for d in batch), f"digest:{channel}:{first.alert.id}")
        else:
            notice = Notice("alert", (first.alert,), first.key)
        now = self._clock()
        error: DeliveryFailed | None = None
        try:
            async with asyncio.timeout(settings.timeout + 1.0):
                await sender.send(notice)
        except DeliveryFailed as exc:
            error = exc
        except TimeoutError:
            error = DeliveryFailed(f"no answer within {settings.timeout:g} s")
        except Exception as exc:  # a channel must never break the outbox
            self._errors.failed(f"channel:{channel}", f"alert channel {channel} failed unexpectedly: {exc}", exc)
            error = DeliveryFailed(f"{type(exc).__name__}: {exc}")
        finally:
            for d in batch:
                d.busy = False
        done = self._clock()
        if repeat or resolve:
            if error is None and resolve:
                first.resolve_due = False
                first.resolved_sent_at = done
                self.store.submit(first.row(done))
            elif error is None and repeat:
                self._schedule(first, done + settings.repeat_interval)
            else:
                self._schedule(first, done + self._backoff(settings, 1))
            self._wake.set()
            return
        rows = []
        for d in batch:
            d.attempts += 1
            d.last_attempt_at = now
            if d.state != DeliveryState.PENDING:
                continue
            if error is None:
                d.state = DeliveryState.SENT
                d.sent_at = done
                d.last_error = "in a digest" if digest else None
                d.next_at = None
                self.m_deliveries.labels(channel, "sent").inc()
                self.m_latency.labels(channel).observe(max(0.0, done - d.alert.raised_at))
                if d.resolve_due:
                    self._schedule(d, done)  # the caller was reached while it was in flight
                elif self.channels[channel].resolves and self._alerts[d.alert.id].resolved_at is None:
                    self._schedule(d, done + settings.repeat_interval)
            elif not error.retryable:
                self._finish(d, DeliveryState.FAILED, done, str(error), persist=False)
                log.error("alert %s to %s refused for good: %s", d.alert.id[:8], channel, error)
            else:
                d.last_error = str(error)
                self.m_deliveries.labels(channel, "retried").inc()
                wait = self._backoff(settings, d.attempts)
                if error.retry_after is not None:  # the receiver said when (429/503 Retry-After), within reason
                    wait = max(wait, min(error.retry_after, settings.retry_max))
                self._schedule(d, done + wait)
                if d.attempts == 1 or d.attempts % 10 == 0:
                    log.warning("alert %s to %s: attempt %d failed (%s); retrying", d.alert.id[:8], channel,
                                d.attempts, error)
            rows.append(d.row(done))
        if error is None:
            with contextlib.suppress(Exception):  # a sent state must be durable before anything else is tried
                await self.store.persist(rows)
        else:
            for row in rows:
                self.store.submit(row)
        self._wake.set()

    def _finish(self, d: _Delivery, state: DeliveryState, now: float, why: str, persist: bool = True) -> None:
        d.state = state
        d.last_error = why
        d.next_at = None
        self.m_deliveries.labels(d.channel, str(state)).inc()
        if persist:
            self.store.submit(d.row(now))

    def _backoff(self, settings: ChannelSettings, attempts: int) -> float:
        base = min(settings.retry_max, settings.retry_min * 2.0 ** max(0, attempts - 1))
        return float(base / 2 + self._rng.uniform(0, base / 2))

    # ---- after a restart -----------------------------------------------------------------------------------
    async def _restore(self) -> None:
        """Go on with the deliveries a previous run left pending (and the open alerts resolving channels
        re-post), from the store; retried until the store answers."""
        assert self._load is not None
        loaded = await load_when_ready(self._load, self._closed, self._errors, "pending alert deliveries")
        if loaded is None:
            return
        now = self._clock()
        count = 0
        for alert_row, delivery_rows in loaded:
            if alert_row.id in self._alerts:
                continue
            try:
                alert = alert_from_payload(alert_row.id, alert_row.payload)
            except (KeyError, TypeError, ValueError) as exc:
                log.error("alert %s in the store cannot be read back: %s", alert_row.id, exc)
                continue
            state = _AlertState(alert, resolved_at=alert_row.resolved_at)
            self._alerts[alert.id] = state
            self._by_call.setdefault((alert.pbx, alert.call_id), set()).add(alert.id)
            for row in delivery_rows:
                if row.channel not in self.channels:
                    continue
                d = _Delivery(alert, row.channel, DeliveryState(row.state), key=row.idempotency_key,
                              attempts=row.attempts, last_attempt_at=row.last_attempt_at, sent_at=row.sent_at,
                              resolved_sent_at=row.resolved_sent_at, last_error=row.last_error)
                state.deliveries[row.channel] = d
                if d.state == DeliveryState.PENDING:
                    self._schedule(d, min(now, row.next_attempt_at or now))
                    count += 1
                elif d.state == DeliveryState.SENT and self.channels[row.channel].resolves:
                    if state.resolved_at is not None and row.resolved_sent_at is None:
                        d.resolve_due = True
                    self._schedule(d, now)
        if count:
            log.info("%d alert deliveries left pending by an earlier run: sending them", count)
        self._wake.set()

def _delivery_view(d: _Delivery) -> dict[str, Any]:
    return {"state": str(d.state), "attempts": d.attempts, "sent_at": d.sent_at, "last_error": d.last_error}


def alert_view(alert: Alert, resolved_at: float | None, deliveries: Mapping[str, Mapping[str, Any]]
               ) -> dict[str, Any]:
    """An alert as the API shows it."""
    r = alert.record
    return {"id": alert.id, "kind": str(alert.kind), "pbx": r.pbx, "call_id": r.call_id, "queue": alert.queue,
            "caller": r.caller, "caller_name": r.caller_name, "decided_at": alert.decided_at,
            "raised_at": alert.raised_at, "state": "resolved" if resolved_at is not None else "open",
            "resolved_at": resolved_at, "deliveries": dict(deliveries)}
