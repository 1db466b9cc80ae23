"""A robust AMI link: one PBX's manager connection, kept up until stopped, its events handed on in order.

* **connection** (:mod:`onechance.ami.adapter`, the only module that knows panoramisk): our byte framer,
  our routing of responses, no action replay;
* **ordering and back-pressure** (:class:`~onechance.ami.flow.FlowControl`): the events of each socket read go
  through one synchronous enqueue (one :class:`~onechance.ami.items.AmiEvents` per read) into a queue read by
  one consumer, bounded in reads (``queue_size``) and in bytes (``queue_bytes``); when it falls behind, socket
  reading is paused (TCP back-pressure); should even the backlog overflow, the connection is dropped so that
  the resync rebuilds a consistent view rather than silently losing events;
* **events nobody reads** (:attr:`AmiLink.event_filter`, set by the consumer) are counted on the raw bytes
  and never built: :attr:`AmiLink.events` counts them all the same;
* **one session per connection** (:class:`Session`): login, the resync lists, the watchdog.  Every action is
  awaited at most ``action_timeout`` (or ``ping_timeout``), not counting time during which reading was paused
  by back-pressure (the answer may be waiting unread behind events);
* **watchdog**: a Ping every ``ping_interval`` seconds; the link is declared dead only when nothing at all
  came from the PBX for ``ping_timeout`` seconds -- a busy Asterisk streaming events but slow to answer a
  Ping is alive;
* **reconnect**: exponential backoff with jitter between ``reconnect_min`` and ``reconnect_max``; a refused
  login is reported (log, :attr:`AmiLink.login_failures`, :attr:`AmiLink.last_error`) and retried every
  ``login_retry`` seconds; a ``Shutdown`` event (Asterisk restarting) closes the link and reconnects;
* **resync**: after each login ``CoreShowChannels`` and ``QueueStatus`` are fetched and handed to the
  consumer as one :class:`~onechance.ami.items.Snapshot`, in stream order with the events around it.

The consumer receives :data:`~onechance.ami.items.LinkItem` objects in order: ``AmiEvents``, ``LinkDown`` (the
stream was interrupted: what was live is no longer seen), ``Snapshot`` and, once, ``LinkStopped``.
The AMI secret is only ever written to the socket: never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..config import AmiSettings
from .adapter import AmiConnection, Connector, Responses, succeeded
from .flow import FlowControl
from .items import (
    AmiError,
    AmiEvent,
    AmiEvents,
    LinkDead,
    LinkDown,
    LinkItem,
    LinkLost,
    LinkState,
    LinkStopped,
    LoginRefused,
    Snapshot,
)
from .parser import AmiMessage, EventFilter

__all__ = [
    "AmiEvent",
    "AmiEvents",
    "AmiLink",
    "LinkDown",
    "LinkItem",
    "LinkLost",
    "LinkState",
    "LinkStopped",
    "LoginRefused",
    "Session",
    "Snapshot",
]

log = logging.getLogger(__name__)


class Session:
    """One connection's life: login, resync, watchdog.  Made by :class:`AmiLink` for each connection."""

    def __init__(self, link: AmiLink, conn: AmiConnection) -> None:
        self.link = link
        self.conn = conn
        self.closed = asyncio.Event()
        self.logged_in = False
        self.peer_shutdown = False
        self.overflowed = False

    async def action(self, fields: dict[str, str], timeout: float | None = None,
                     on_complete: Callable[[Responses], None] | None = None, strict: bool = False,
                     single: bool = False) -> Responses:
        """Send one action and await its responses, at most ``timeout`` (``action_timeout``) seconds.

        Time spent with socket reading paused (back-pressure: the answer may be waiting unread behind the
        events) does not count against the PBX, unless ``strict``."""
        conn = self.conn
        if conn.closed:
            raise LinkLost("not connected")
        link = self.link
        future = conn.submit({**fields, "ActionID": link.next_action_id()}, on_complete=on_complete, single=single)
        limit = timeout or link.settings.action_timeout
        flow = link.flow
        try:
            while True:
                pauses = flow.pauses
                done, _ = await asyncio.wait({future}, timeout=limit)
                if done:
                    return future.result()
                if strict or not (flow.paused or flow.pauses != pauses):
                    raise TimeoutError(f"no answer to {fields['Action']} within {limit:g} s")
        finally:
            conn.forget(future)
            if not future.done():
                future.cancel()

    async def login(self) -> None:
        s = self.link.settings
        responses = await self.action({"Action": "Login", "Username": s.username, "Secret": self.link.secret,
                                       "Events": s.events})
        first = responses[0] if responses else None
        if first is None or not succeeded(first):
            raise LoginRefused((first.headers.get("Message") if first is not None else None) or "login rejected")
        self.logged_in = True

    def _list_items(self, action: str, responses: Responses, snapshot: Snapshot) -> list[AmiMessage]:
        first = responses[0] if responses else None
        if first is None or not succeeded(first):
            why = first.headers.get("Message") if first is not None else "no answer"
            log.warning("%s: %s refused (%s): calls in progress cannot be fully rebuilt; give the manager user "
                        "write=system,reporting", self.link.name, action, why)
            snapshot.complete = False
            return []
        return [m for m in responses[1:] if not (m.headers.get("Event") or "").endswith("Complete")]

    async def resync(self) -> Snapshot:
        snap = Snapshot()
        pong = await self.action({"Action": "Ping"}, timeout=self.link.settings.ping_timeout)
        if pong:
            stamp = pong[0].headers.get("Timestamp")  # the first value, however many the PBX sent
            with contextlib.suppress(ValueError, TypeError):
                clock = float(stamp or "")
                if clock == clock and abs(clock) != float("inf"):
                    snap.clock_offset = clock - time.time()
        # Both lists are asked for at once, so the PBX answers them one right after the other: the events that
        # come between the two lists (and that the snapshot cannot reconcile) are as few as possible.  The
        # callbacks run inside data_received, in stream order: the channels are in the snapshot before it is
        # queued.
        def channels(responses: Responses) -> None:
            snap.channels = self._list_items("CoreShowChannels", responses, snap)
            snap.channels_complete = snap.complete

        def queued(responses: Responses) -> None:
            # runs inside data_received, right where the list ends: queue the snapshot there
            for item in self._list_items("QueueStatus", responses, snap):
                kind = item.event
                if kind == "QueueEntry":
                    snap.entries.append(item)
                elif kind == "QueueMember":
                    snap.members.append(item)
                elif kind == "QueueParams":
                    snap.params.append(item)
            snap.arrival = time.time()
            if not self.link.flow.put(snap):
                self.link.dropped += 1
                self.overflowed = True
                self.conn.abort()

        lists = [asyncio.ensure_future(self.action({"Action": "CoreShowChannels"}, on_complete=channels)),
                 asyncio.ensure_future(self.action({"Action": "QueueStatus"}, on_complete=queued))]
        try:
            await asyncio.gather(*lists)
        finally:
            for f in lists:
                if not f.done():
                    f.cancel()
            await asyncio.gather(*lists, return_exceptions=True)
        return snap

    async def watch(self) -> None:
        """Ping every ``ping_interval``; return when the connection closes.  Raises :class:`LinkDead` when
        the PBX sent nothing at all, not even a pong, for ``ping_timeout`` seconds."""
        link = self.link
        interval, timeout = link.settings.ping_interval, link.settings.ping_timeout
        while not link.stopping:
            try:
                await asyncio.wait_for(self.closed.wait(), interval)
                return
            except TimeoutError:
                pass
            if link.flow.paused or link.stopping:
                continue  # we are the ones not reading: do not blame the PBX
            try:
                await self.action({"Action": "Ping"}, timeout=timeout)
            except TimeoutError:
                silent = time.monotonic() - link.last_rx_monotonic
                if silent < timeout:
                    link.slow_pongs += 1  # busy, not dead: it streams events but answers late
                    continue
                link.watchdog_timeouts += 1
                raise LinkDead(f"nothing from the PBX for {silent:.1f} s (Ping unanswered)") from None
            except LinkLost:
                return


class AmiLink:
    """One PBX's AMI connection, kept up until :meth:`stop`; events go to :attr:`queue` in order."""

    def __init__(self, settings: AmiSettings, *, secret: str | None = None, rng: random.Random | None = None
                 ) -> None:
        self.settings = settings
        self.name = settings.name
        self.secret = secret if secret is not None else settings.resolved_secret()
        self.flow: FlowControl[LinkItem] = FlowControl(settings.queue_size, max_weight=settings.queue_bytes)
        #: the events worth building into messages (the consumer's interest); None: every one
        self.event_filter: EventFilter | None = None
        self._rng = rng or random.Random()
        self._id_prefix = f"oc-{uuid.uuid4().hex[:10]}-"
        self._next_id = 0
        self._connector = Connector(settings.host or "", settings.port, settings.events, self)
        self.state = LinkState.STARTING
        self.state_since = time.time()
        self.last_error: str | None = None
        self.banner: str | None = None
        # counters, read by the metrics collector
        self.events = 0
        self.connections = 0
        self.reconnects = 0
        self.login_failures = 0
        self.resyncs = 0
        self.watchdog_timeouts = 0
        self.slow_pongs = 0
        self.dropped = 0
        self.unmatched_responses = 0
        self._bad_closed = 0
        self._session: Session | None = None
        self._connecting: asyncio.Task[Any] | None = None
        self.stopping = False
        self._wake = asyncio.Event()
        self.last_rx = 0.0  # wall clock of the last bytes from the PBX
        self.last_rx_monotonic = 0.0
        self._session_ready = False

    # ---- the consumer's side ---------------------------------------------------------------------------
    @property
    def queue(self) -> asyncio.Queue[LinkItem]:
        return self.flow.queue

    def item_done(self) -> None:
        """Called by the consumer after each item (refills the queue, resumes reading when drained)."""
        self.flow.item_done()

    def stop_item(self) -> None:
        """Queue :class:`LinkStopped` after everything else (call once :meth:`run` has returned)."""
        self.flow.put_last(LinkStopped())

    # ---- status ----------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.state == LinkState.READY

    @property
    def pauses(self) -> int:
        return self.flow.pauses

    @property
    def bad_messages(self) -> int:
        session = self._session
        return self._bad_closed + (session.conn.bad_messages if session is not None else 0)

    @property
    def connector(self) -> Connector:
        return self._connector

    @property
    def session(self) -> Session | None:
        """The current connection's session (None between connections)."""
        return self._session

    def status(self) -> dict[str, Any]:
        return {
            "state": str(self.state),
            "since": self.state_since,
            "error": self.last_error,
            "host": self.settings.host,
            "port": self.settings.port,
            "banner": self.banner,
            "reconnects": self.reconnects,
            "login_failures": self.login_failures,
        }

    async def originate(self, channel: str, context: str, exten: str, caller_id: str) -> None:
        """Have Asterisk ring ``channel`` (an operator's phone) and, when answered, dial ``exten`` in ``context``
        (the caller's number): the "call back now" button.  Needs the manager user's ``originate`` write class.
        Raises :class:`~onechance.ami.items.AmiError` with a readable line when it cannot be done."""
        session = self._session
        if session is None or not self.ready:
            raise AmiError(f"{self.name}: not connected to the PBX")
        responses = await session.action({"Action": "Originate", "Channel": channel, "Context": context,
                                          "Exten": exten, "Priority": "1", "CallerID": caller_id,
                                          "Async": "true", "Timeout": "30000"}, single=True)
        first = responses[0] if responses else None
        if first is None or not succeeded(first):
            why = first.headers.get("Message") if first is not None else "no answer"
            raise AmiError(f"{self.name}: the PBX refused to originate the call: {why}")

    def next_action_id(self) -> str:
        """ActionIDs of ours carry a per-process random prefix: a stale answer never matches a pending one."""
        self._next_id += 1
        return f"{self._id_prefix}{self._next_id}"

    def _set_state(self, state: LinkState, error: str | None = None) -> None:
        if state != self.state:
            self.state = state
            self.state_since = time.time()
        if error is not None or state == LinkState.READY:
            self.last_error = error

    # ---- running ---------------------------------------------------------------------------------------
    async def run(self) -> None:
        """Connect, log in, resync and follow the PBX; reconnect on any loss, until :meth:`stop`."""
        failures = 0
        first = True
        try:
            while not self.stopping:
                if not first:
                    self.reconnects += 1
                first = False
                self._session_ready = False
                delay: float | None = None
                try:
                    await self._connection()
                except LoginRefused as exc:
                    self.login_failures += 1
                    self._set_state(LinkState.LOGIN_FAILED, f"login refused: {exc}")
                    delay = self.settings.login_retry * self._rng.uniform(0.9, 1.1)
                    log.error("%s: AMI login refused for user %r: %s; retrying in %.0f s", self.name,
                              self.settings.username, exc, delay)
                except (OSError, TimeoutError, AmiError) as exc:
                    if not self.stopping:
                        self._set_state(LinkState.DOWN, _describe(exc))
                except Exception as exc:  # a bug must not end the daemon's only link to the PBX
                    log.exception("%s: unexpected error in the AMI link", self.name)
                    self._set_state(LinkState.DOWN, f"internal error: {type(exc).__name__}")
                if self.stopping:
                    break
                if self._session_ready:
                    failures = 0  # a healthy session ended: start the backoff again from the bottom
                failures += 1
                if delay is None:
                    delay = self.backoff(failures)
                    log.warning("%s: AMI link to %s:%s: %s; reconnecting in %.2f s", self.name,
                                self.settings.host, self.settings.port, self.last_error, delay)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
        finally:
            session = self._session
            if session is not None and not session.conn.closed:
                session.conn.abort()
            self._set_state(LinkState.STOPPED)

    def backoff(self, failures: int) -> float:
        """The delay before the next try after ``failures`` failed ones (exponential, with jitter)."""
        base = min(self.settings.reconnect_max, self.settings.reconnect_min * 2.0 ** max(0, failures - 1))
        return float(base / 2 + self._rng.uniform(0, base / 2))

    async def stop(self, timeout: float = 2.0) -> None:
        """Log off (best effort) and close; :meth:`run` returns soon after."""
        self.stopping = True
        self._wake.set()
        if self._connecting is not None:
            self._connecting.cancel()
        session = self._session
        if session is not None and not session.conn.closed and session.logged_in:
            with contextlib.suppress(AmiError, TimeoutError, OSError):
                await session.action({"Action": "Logoff"}, timeout=timeout, strict=True)
        session = self._session
        if session is not None:
            if not session.conn.closed:
                session.conn.close()
            session.closed.set()

    async def _connection(self) -> None:
        """One connection, from TCP connect to its loss (``_session_ready``: it got to READY)."""
        self._session = None
        self._set_state(LinkState.CONNECTING)
        connect = self._connecting = self._connector.connect()
        try:
            done, _ = await asyncio.wait({connect}, timeout=self.settings.connect_timeout)
        finally:
            self._connecting = None
            if not connect.done():
                connect.cancel()
        if connect.cancelled():  # stop() gave up on a connect that hangs (SYNs dropped, host down)
            return
        if not done:
            raise TimeoutError(f"no TCP connection within {self.settings.connect_timeout:g} s")
        connect.result()  # the OSError of a failed connect
        session = self._session
        assert session is not None  # connection_made made it
        self.connections += 1
        try:
            if self.stopping:
                return
            self._set_state(LinkState.LOGGING_IN)
            await session.login()
            self.banner = session.conn.banner
            log.info("%s: logged in to AMI at %s:%s (%s)", self.name, self.settings.host, self.settings.port,
                     self.banner or "no banner")
            self._set_state(LinkState.RESYNCING)
            snapshot = await session.resync()
            self.resyncs += 1
            self._set_state(LinkState.READY)
            self._session_ready = True
            log.info("%s: resynced: %d channels, %d queue callers live", self.name, len(snapshot.channels),
                     len(snapshot.entries))
            await session.watch()
            if not self.stopping:
                why = "Asterisk shut down" if session.peer_shutdown else (
                    "event queue overflow" if session.overflowed else "connection closed by the PBX")
                self._set_state(LinkState.DOWN, why)
                log.warning("%s: AMI link lost: %s", self.name, why)
        finally:
            if not session.conn.closed:
                session.conn.abort()
            self._bad_closed += session.conn.bad_messages
            session.conn.framer.bad_messages = 0
            self.flow.resume()
            self.flow.detach()
            if session.logged_in and not self.stopping:
                reason = "pbx_restart" if session.peer_shutdown else "link_lost"
                self.flow.put_last(LinkDown(self.last_rx or time.time(), reason))
            session.logged_in = False

    # ---- the connection's callbacks (synchronous, inside the event loop's callbacks) --------------------
    def connection_made(self, conn: AmiConnection) -> None:
        old = self._session
        if old is not None and old.conn is not conn and not old.conn.closed:
            old.conn.abort()
        self._session = Session(self, conn)
        self.flow.attach(conn)

    def connection_lost(self, conn: AmiConnection, exc: Exception | None) -> None:
        session = self._session
        if session is not None and session.conn is conn:
            session.closed.set()

    def traffic(self) -> None:
        self.last_rx = time.time()
        self.last_rx_monotonic = time.monotonic()

    def messages(self, conn: AmiConnection, msgs: list[AmiMessage], unread: int, nbytes: int) -> None:
        """Enqueue-only: the events of one read in, in order, as one item.  Never blocks, never raises."""
        session = self._session
        if session is None or session.conn is not conn or conn.closed:
            return
        self.events += unread  # counted, never built: nobody reads them (or a repetition, dropped)
        prefix = self._id_prefix
        events: list[AmiMessage] = []
        shutdown: AmiMessage | None = None
        for msg in msgs:
            headers = msg.headers
            name = headers.get("Event")
            if name is None or headers.get("ActionID", "").startswith(prefix):
                # a response nobody waits for (a timed-out action of ours, or someone else's ActionID)
                self.unmatched_responses += 1
                log.debug("%s: ignoring unmatched %r", self.name, msg)
                continue
            events.append(msg)
            if name == "Shutdown":
                shutdown = msg
                break  # the connection closes here: nothing after it is read
        if not events:
            return
        self.events += len(events)
        if not self.flow.put(AmiEvents(events, self.last_rx), nbytes, len(events)):
            self.dropped += len(events)
            if not session.overflowed:
                session.overflowed = True
                log.error("%s: event queue and backlog full (%d reads): dropping the connection to resync",
                          self.name, self.flow.queue.maxsize)
                conn.abort()
            return
        if shutdown is not None:
            session.peer_shutdown = True
            log.warning("%s: Asterisk is shutting down (%s)", self.name, shutdown.headers.get("Shutdown", "?"))
            conn.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return str(exc) or "timed out"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    text = str(exc)
    return text or type(exc).__name__
