"""One PBX's consumer: the single ordered reader of its AMI link, feeding the tracker and the sinks.

Items come from :class:`~onechance.ami.link.AmiLink` in stream order and are handled one at a time:

* :class:`~onechance.ami.items.AmiEvents` (the events of one socket read; or one
  :class:`~onechance.ami.items.AmiEvent`) go to the tracker, one by one; the updates they cause go to every sink.
  The link builds only the events someone here reads (the tracker's :meth:`~onechance.journey.JourneyTracker.interest`
  plus the members' and the queue catalogue's), and counts the rest;
* a :class:`~onechance.ami.link.LinkDown` finishes every live call as ``uncertain``
  (:func:`~onechance.journey.resync.close_for_gap`); those ends are held back from the sinks until the next
  snapshot, at most :data:`GAP_HOLD` seconds: a call the snapshot finds still going on is taken up again, and one
  that became part of another call during the gap (a phone's transfer or pickup) is merged into it, neither
  ever stored, counted or alerted on as a call that ended;
* a :class:`~onechance.ami.link.Snapshot` rebuilds the calls live now
  (:func:`~onechance.journey.resync.apply_snapshot`), then lets the held ends of the calls it did not take up go
  to the sinks;
* :class:`~onechance.ami.link.LinkStopped` (daemon shutdown) finishes the live calls as ``uncertain``
  (``daemon_stopped``) after everything before it was handled, and ends the consumer.

A journey whose first channel was not seen being created (the daemon joined in the middle of the call,
e.g. one that started while the link was down) is marked ``uncertain`` too.

Time: the tracker runs on the PBX's clock (the events' ``Timestamp``), believing a timestamp only within
``journey.max_clock_jump`` of the recent ones or of its arrival (:mod:`~onechance.journey.clock`; the others are
counted in ``onechance_ami_clock_jumps_total`` and logged, at most once a minute).  The consumer keeps the offset
between that clock and the local one, learnt from the trusted timestamps, to date what has no timestamp (a link
loss, a snapshot without Ping time, scrape-time waits).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

from .ami.items import AmiEvent, AmiEvents, LinkDown, LinkItem, LinkState, LinkStopped, Snapshot
from .ami.parser import AmiMessage, EventFilter
from .errors import RateLimitedLog
from .journey import JourneyTracker, JourneyUpdate, Update, UpdateKind
from .journey.resync import Gap, TakeUp, apply_snapshot, close_for_gap
from .members import QueueMembers
from .queues import QueueCatalog
from .sinks import Sink

if TYPE_CHECKING:
    from .ami.link import AmiLink

__all__ = ["PbxPipeline", "tracker_error_hook"]

log = logging.getLogger(__name__)

GAP_HOLD = 30.0  # seconds the calls closed at a link loss wait for the resync before they go to the sinks

#: the events the pipeline reads itself, besides the tracker's: queue names, members
PIPELINE_EVENTS = frozenset({"Hangup", "QueueCallerJoin", *QueueMembers.EVENTS})
#: seconds between two warnings about untrusted timestamps (the count is in the metric)
CLOCK_WARNING_INTERVAL = 60.0
#: events without any ``Timestamp`` after which the PBX is taken to have ``timestampevents = no`` (said once)
UNTIMED_EVENTS_WARNING = 50


def tracker_error_hook(errors: RateLimitedLog, pbx: str) -> Callable[[str, BaseException], None]:
    """The tracker's ``on_error``: an event it could not apply is logged (with its traceback, at most once a
    minute per event type); the call it was about is marked uncertain by the tracker."""
    def failed(event: str, exc: BaseException) -> None:
        errors.failed(f"event:{event}", f"{pbx}: could not apply an AMI {event} event (its call is now "
                      f"uncertain): {type(exc).__name__}: {exc}", exc)
    return failed


class PbxPipeline:
    """Reads ``queue`` (the link's), feeds ``tracker`` and dispatches updates to ``sinks``."""

    def __init__(
        self,
        tracker: JourneyTracker,
        queue: asyncio.Queue[LinkItem],
        sinks: Sequence[Sink],
        *,
        link: AmiLink | None = None,
        name: str | None = None,
        tick_interval: float = 1.0,
        catalog: QueueCatalog | None = None,
        errors: RateLimitedLog | None = None,
    ) -> None:
        self.tracker = tracker
        self.queue = queue
        self.sinks = list(sinks)
        self.link = link
        self.name = name if name is not None else (link.name if link is not None else tracker.pbx)
        self.tick_interval = tick_interval
        self.offset = 0.0  # PBX clock minus local clock
        self.items = 0
        # sink name -> updates it failed on (every sink from 0: a counter that appears only on its first error
        # cannot be rated by Prometheus)
        self.sink_errors: dict[str, int] = {type(sink).__name__: 0 for sink in self.sinks}
        self.errors = errors if errors is not None else RateLimitedLog(log)
        self.snapshots = 0
        self.resynced = False
        self.stopped = False
        self.gap: Gap | None = None
        self._held: list[JourneyUpdate] = []  # the ends of the calls closed at the gap, until the snapshot
        self._held_until = 0.0  # local time
        self._hung_up: set[str] = set()
        self._collect_hangups = True  # between a (re)connect and its snapshot
        self.catalog = catalog if catalog is not None else QueueCatalog()
        self.catalog.add_pbx(self.name)
        self.members = QueueMembers()
        self._clock_known = False  # offset learnt from a timestamped event
        self._jumps_logged = 0
        self._jumps_logged_at: float | None = None
        self.untimed = 0  # events handled while none has had a Timestamp yet (-1 once that was warned about)
        interest = tracker.interest()
        self.event_filter = EventFilter(interest.events | PIPELINE_EVENTS, interest.conditions)
        if link is not None:
            link.event_filter = self.event_filter

    @property
    def last_ts(self) -> float:
        """The latest trusted event time (the PBX's clock), 0 before any."""
        return self.tracker.clock.reference or 0.0

    @property
    def clock_jumps(self) -> int:
        """Event timestamps not trusted (a jump beyond ``journey.max_clock_jump``)."""
        return self.tracker.clock.jumps

    # ---- views (HTTP API, metrics) ---------------------------------------------------------------------
    def pbx_now(self) -> float:
        """The PBX's clock now (estimated)."""
        return time.time() + self.offset

    @property
    def ready(self) -> bool:
        """Logged in and resynced (the snapshot applied)."""
        link_ok = self.link is None or self.link.state == LinkState.READY
        return link_ok and self.resynced and self._collect_hangups is False and not self.stopped

    def known_queues(self) -> Iterable[str]:
        return self.catalog.queues(self.name)

    def link_counters(self) -> dict[str, float]:
        link = self.link
        if link is None:
            return {"up": 1.0 if self.ready else 0.0, "queue_depth": float(self.queue.qsize()),
                    "clock_jumps": float(self.clock_jumps)}
        return {
            "up": 1.0 if self.ready else 0.0,
            "queue_depth": float(link.flow.count),
            "clock_jumps": float(self.clock_jumps),
            "reconnects": link.reconnects,
            "events": link.events,
            "bad_messages": link.bad_messages,
            "login_failures": link.login_failures,
            "resyncs": link.resyncs,
            "watchdog_timeouts": link.watchdog_timeouts,
            "slow_pongs": link.slow_pongs,
            "dropped": link.dropped,
        }

    def status(self) -> dict[str, object]:
        out: dict[str, object] = dict(self.link.status()) if self.link is not None else {}
        out["ready"] = self.ready
        out["resynced"] = self.resynced
        out["calls_in_progress"] = len(self.tracker.calls)
        if not self.ready and out.get("error") is None:
            out["error"] = "waiting for the AMI login and resync" if not self.stopped else "stopped"
        return out

    # ---- running ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Handle items until :class:`LinkStopped`; every ``tick_interval`` the tracker is given the time (long
        waits, over-age calls), busy or idle."""
        loop = asyncio.get_running_loop()
        next_tick = loop.time() + self.tick_interval
        burst = 0
        while True:
            if burst >= 256:  # a long backlog must not starve the HTTP API and the link's watchdog
                burst = 0
                await asyncio.sleep(0)
            if loop.time() >= next_tick:
                next_tick = loop.time() + self.tick_interval
                self._dispatch(self.tracker.tick(self.pbx_now()))
                self.release_expired()
            try:
                item = self.queue.get_nowait()
            except asyncio.QueueEmpty:
                burst = 0
                try:
                    item = await asyncio.wait_for(self.queue.get(), max(0.0, next_tick - loop.time()))
                except TimeoutError:
                    continue
            burst += len(item.msgs) if isinstance(item, AmiEvents) else 1
            try:
                if isinstance(item, LinkStopped):
                    self._stop()
                    return
                self.handle(item)
            except Exception:  # one bad item must never stop the consumer
                log.exception("%s: error while handling %s", self.name, type(item).__name__)
            finally:
                if self.link is not None:
                    self.link.item_done()

    def handle(self, item: LinkItem) -> None:
        """Apply one item (synchronously)."""
        self.items += 1
        if isinstance(item, AmiEvents):
            self._events(item.msgs, item.arrival)
        elif isinstance(item, AmiEvent):
            self._events((item.msg,), item.arrival)
        elif isinstance(item, LinkDown):
            self._dispatch(self.tracker.flush())  # events held while a timestamp was judged came before
            at = max(item.at + self.offset, self.last_ts)
            updates, self.gap = close_for_gap(self.tracker, at, item.reason, self.gap)
            self.tracker.index.closed = TakeUp(self.tracker, self.gap, at, item.reason)  # until the snapshot
            self._collect_hangups = True
            self._hung_up.clear()
            self.resynced = False
            ended = [u for u in updates if isinstance(u, JourneyUpdate) and u.kind == UpdateKind.ENDED]
            if ended:
                log.warning("%s: %d call(s) in progress closed as uncertain (%s)", self.name, len(ended),
                            item.reason)
            self._held_until = time.monotonic() + GAP_HOLD  # from the latest loss
            self._held += ended
            self._dispatch([u for u in updates if not (isinstance(u, JourneyUpdate) and u.kind == UpdateKind.ENDED)])
        elif isinstance(item, Snapshot):
            self._dispatch(self.tracker.flush())
            if not self._clock_known and item.clock_offset is not None:
                self.offset = item.clock_offset
            at = max(self.last_ts, item.arrival + self.offset)
            for p in item.params:
                q = p.headers.get("Queue")
                if q:
                    self.catalog.label(self.name, q)
            if item.complete:
                self.members.replace(item.members)
            takeup = self.tracker.index.closed
            self.tracker.index.closed = None
            # (a refused channel list says nothing of what hung up: the calls taken up stay as they are)
            settled = (takeup.settle({m.headers.get("Uniqueid") or "" for m in item.channels}, at)
                       if isinstance(takeup, TakeUp) and item.channels_complete else [])
            updates = settled + apply_snapshot(self.tracker, channels=item.channels, entries=item.entries,
                                               members=item.members, at=at, gap=self.gap, hung_up=self._hung_up)
            if isinstance(takeup, TakeUp):
                updates += takeup.end_kept()
            self.gap = None
            self._hung_up.clear()
            self._collect_hangups = False
            self.resynced = True
            self.snapshots += 1
            if updates:
                log.info("%s: resync rebuilt %d call(s) in progress", self.name, len(updates))
            self._release_held(_taken_up(updates))
            self._dispatch(updates)
        elif isinstance(item, LinkStopped):
            self._stop()

    def _events(self, msgs: Sequence[AmiMessage], arrival: float) -> None:
        """The events of one read, in order (``arrival``: the local time of the read)."""
        tracker = self.tracker
        clock = tracker.clock
        feed = tracker.feed
        mine = PIPELINE_EVENTS
        before = clock.reference
        for msg in msgs:
            event = msg.headers.get("Event")
            if event in mine:
                self._side(event, msg)
            updates = feed(msg, arrival + self.offset)
            if updates:
                self._dispatch(updates)
        reference = clock.reference
        if reference is None and self.untimed >= 0:
            self._untimed(len(msgs))
        elif reference is not None and reference != before:
            # the latest trusted time came with this read: the PBX's clock minus ours
            self.offset = reference - arrival
            self._clock_known = True
        if clock.jumps != self._jumps_logged:
            self._clock_warning()

    def _untimed(self, count: int) -> None:
        """No event has carried a ``Timestamp`` yet: past :data:`UNTIMED_EVENTS_WARNING` of them, say once why
        the figures will be rougher (each event is then timed when it arrives, on the PBX's clock as the Ping at
        login gave it)."""
        self.untimed += count
        if self.untimed >= UNTIMED_EVENTS_WARNING:
            self.untimed = -1  # said once
            log.warning("%s: AMI events carry no Timestamp (manager.conf [general] timestampevents = no): each is "
                        "timed when it arrives, so delays on the way go into waits and talk times; set "
                        "timestampevents = yes and `manager reload` (docs/troubleshooting.md)", self.name)

    def _side(self, event: str | None, msg: AmiMessage) -> None:
        """What the pipeline itself reads: hang-ups before a snapshot, queue names, members."""
        h = msg.headers
        if event == "Hangup":
            if self._collect_hangups:
                uid = h.get("Uniqueid")
                if uid:
                    self._hung_up.add(uid)
        elif event == "QueueCallerJoin":
            q = h.get("Queue")
            if q:
                self.catalog.label(self.name, q)
        else:
            self.members.feed(msg)

    def _clock_warning(self) -> None:
        now = time.monotonic()
        last = self._jumps_logged_at
        if last is not None and now - last < CLOCK_WARNING_INTERVAL:
            return
        jumps = self.tracker.clock.jumps
        log.warning("%s: %d event timestamp(s) jumped more than %g s away from the PBX's recent events and were not "
                    "trusted (the previous trusted time was used); %d in all", self.name,
                    jumps - self._jumps_logged, self.tracker.settings.max_clock_jump, jumps)
        self._jumps_logged = jumps
        self._jumps_logged_at = now

    def _release_held(self, taken_up: set[str] | frozenset[str] = frozenset()) -> None:
        """The held ends of the calls closed at the gap go to the sinks, but those of ``taken_up``."""
        held, self._held = self._held, []
        self._dispatch([u for u in held if u.record.call_id not in taken_up])

    def release_expired(self) -> None:
        """The held ends go to the sinks once :data:`GAP_HOLD` passed without a snapshot (the PBX is still
        unreachable)."""
        if self._held and time.monotonic() >= self._held_until:
            log.info("%s: no resync within %g s: %d call(s) closed at the link loss are recorded as ended",
                     self.name, GAP_HOLD, len(self._held))
            self._release_held()

    def _stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        self.tracker.index.closed = None
        self._release_held()
        at = max(self.pbx_now(), self.last_ts)
        updates = self.tracker.close_all(at, "daemon_stopped")
        if updates:
            log.info("%s: %d call(s) in progress closed as uncertain (daemon stopped)", self.name, len(updates))
        self._dispatch(updates)

    def _dispatch(self, updates: list[Update]) -> None:
        if self._held:  # a call closed at the gap, seen again before the resync (by any path): not ended
            taken_up = _taken_up(updates)
            if taken_up:
                self._held = [u for u in self._held if u.record.call_id not in taken_up]
        for update in updates:
            for sink in self.sinks:
                try:
                    sink.handle(update)
                except Exception as exc:
                    name = type(sink).__name__
                    self.sink_errors[name] = self.sink_errors.get(name, 0) + 1
                    self.errors.failed(f"sink:{name}", f"{self.name}: sink {name} failed on an update", exc)


def _taken_up(updates: Iterable[Update]) -> set[str]:
    """The calls closed at a gap that ``updates`` take up again or merge into another call."""
    return {u.record.call_id for u in updates if isinstance(u, JourneyUpdate)
            and (u.kind == UpdateKind.MERGED or (u.detail or {}).get("revived"))}
