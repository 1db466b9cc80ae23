"""A robust AMI link on panoramisk 1.4.

panoramisk opens the TCP connection and pairs action responses with their futures; everything it
gets wrong for a long-running daemon (``../shared/notes/ami-semantics.md`` section 7) is replaced here:

* **parsing**: :class:`FramedAMIProtocol` (plugged in through ``protocol_factory``) feeds the raw bytes
  to onechance's own :class:`~onechance.ami.parser.AmiFramer`, so a multi-byte character split across
  TCP reads survives and empty last values are kept; only the responses to our own actions are
  converted to panoramisk ``Message`` objects;
* **ordering**: every event goes through one synchronous, enqueue-only callback into a bounded
  :class:`asyncio.Queue` read by one consumer; panoramisk's per-callback tasks are never used.  When the
  consumer falls behind, socket reading is paused (TCP back-pressure) and the rest of the current read
  waits in a small backlog; should even that overflow, the connection is dropped so that the resync
  rebuilds a consistent view rather than silently losing events;
* **no action replay**: ``forgetable_actions`` contains every action and pending futures fail with
  :class:`LinkLost` when the connection closes, so nothing is ever re-sent after a reconnect;
* **timeouts**: every action is awaited at most ``action_timeout`` (or ``ping_timeout``), not counting time
  during which reading was paused by back-pressure (the answer may be waiting unread behind events);
* **watchdog**: a Ping every ``ping_interval`` seconds must be answered within ``ping_timeout``,
  otherwise the link is declared dead, the socket aborted and a new connection made;
* **reconnect**: exponential backoff with jitter between ``reconnect_min`` and ``reconnect_max``; a refused
  login is reported (log, :attr:`AmiLink.login_failures`, :attr:`AmiLink.last_error`) and retried every
  ``login_retry`` seconds; a ``Shutdown`` event (Asterisk restarting) closes the link and reconnects;
* **resync**: after each login ``CoreShowChannels`` and ``QueueStatus`` are fetched and handed to the
  consumer as one :class:`Snapshot`, in stream order with the events around it.

The consumer receives :data:`LinkItem` objects in order: :class:`AmiEvent`, :class:`LinkDown` (the
stream was interrupted: what was live is no longer seen), :class:`Snapshot` and, once, :class:`LinkStopped`.
The AMI secret is only ever written to the socket: never logged, never kept in panoramisk's config.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from panoramisk import Manager
from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from ..config import AmiSettings
from .parser import AmiFramer, AmiMessage

__all__ = [
    "AmiEvent",
    "AmiLink",
    "FramedAMIProtocol",
    "LinkDown",
    "LinkItem",
    "LinkLost",
    "LinkState",
    "LinkStopped",
    "LoginRefused",
    "Snapshot",
]

log = logging.getLogger(__name__)


class LinkState(StrEnum):
    STARTING = "starting"
    CONNECTING = "connecting"
    LOGGING_IN = "logging_in"
    RESYNCING = "resyncing"
    READY = "ready"
    LOGIN_FAILED = "login_failed"
    DOWN = "down"
    STOPPED = "stopped"


# ---- what the link hands to its consumer, in stream order -----------------------------------------------
@dataclass(slots=True)
class AmiEvent:
    """One AMI event as read from the socket; ``arrival`` is the local wall-clock time of the read."""

    msg: AmiMessage
    arrival: float


@dataclass(slots=True)
class LinkDown:
    """The event stream stopped: everything that happens until the next :class:`Snapshot` is unseen.

    ``at`` is the wall-clock time the PBX was last heard from; ``reason`` is ``link_lost`` (socket
    closed or silent) or ``pbx_restart`` (Asterisk announced a shutdown)."""

    at: float
    reason: str


@dataclass(slots=True)
class Snapshot:
    """What the PBX reported as live right after a (re)connect: the items of ``CoreShowChannels``
    (``CoreShowChannel``) and of ``QueueStatus`` (``QueueParams``, ``QueueMember``, ``QueueEntry``).

    It is queued at the very point of the stream where the ``QueueStatus`` list ended, so events read
    before it happened before the lists were taken.  ``complete`` is False when a list was refused."""

    channels: list[AmiMessage] = field(default_factory=list)
    params: list[AmiMessage] = field(default_factory=list)
    members: list[AmiMessage] = field(default_factory=list)
    entries: list[AmiMessage] = field(default_factory=list)
    arrival: float = 0.0  # local time the QueueStatus list ended (where the snapshot sits in the stream)
    clock_offset: float | None = None  # PBX clock minus local clock, from a Ping answered just before
    complete: bool = True


@dataclass(slots=True)
class LinkStopped:
    """The link was stopped on purpose (daemon shutdown): nothing follows."""


LinkItem = AmiEvent | LinkDown | Snapshot | LinkStopped


class AmiError(Exception):
    """An AMI session problem; the message is one readable line and never contains the secret."""


class LinkLost(AmiError):
    """The connection closed while an action was waiting for its response."""


class LinkDead(AmiError):
    """The watchdog gave up: the PBX stopped answering pings."""


class LoginRefused(AmiError):
    """The PBX refused the username or secret."""


class _AllActions:
    """A ``forgetable_actions`` container holding every action name: panoramisk never re-sends any."""

    def __contains__(self, item: object) -> bool:
        return True


class _Response(Message):  # type: ignore[misc]
    """panoramisk's ``Message`` that also keeps onechance's parsed message."""

    source: AmiMessage


def _to_panoramisk(msg: AmiMessage) -> _Response:
    headers: dict[str, Any] = dict(msg.headers)
    if msg.repeated:
        for key, values in msg.repeated.items():
            headers[key] = list(values)
    out = _Response(headers)
    out.source = msg
    return out


class FramedAMIProtocol(AMIProtocol):  # type: ignore[misc]
    """panoramisk's protocol with onechance's byte framer and routing.

    Responses (and list items) carrying the ActionID of one of *our* pending actions complete that action;
    every other event goes to :meth:`AmiLink._on_message`.  Nothing raised while handling data ever
    reaches asyncio (it would close the transport and lose the rest of the TCP chunk)."""

    def __init__(self, link: AmiLink) -> None:
        super().__init__()
        self.link = link
        self.framer = AmiFramer()
        self.closed = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.framer = AmiFramer()
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # not a TCP socket
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.link._connection_made(self)

    # -- sending -----------------------------------------------------------------------------------------
    def submit(self, fields: dict[str, str], on_complete: Callable[[list[Message]], None] | None = None) -> Action:
        """Send one action; its future resolves to a ``Message`` or a list of them (for lists)."""
        action = Action(fields)
        action.on_complete = on_complete
        if self.closed:
            _fail(action, LinkLost("not connected"))
            return action
        self.responses[action.id] = action
        try:
            self.transport.write(str(action).encode("utf-8"))
        except Exception as exc:  # the action text holds the secret for Login: never log it
            self.responses.pop(action.id, None)
            _fail(action, LinkLost(f"cannot send {fields.get('Action', '?')}: {type(exc).__name__}"))
        return action

    def send(self, data: Any, as_list: bool | None = False) -> asyncio.Future[Any]:
        """panoramisk's ``Manager.send_action`` entry point, kept working (and quiet about its data)."""
        fields = dict(data.items()) if not isinstance(data, dict) else data
        action = self.submit(fields)
        action.as_list = as_list
        return action.future  # type: ignore[no-any-return]

    def forget(self, action: Action) -> None:
        self.responses.pop(action.id, None)

    # -- receiving ---------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        link = self.link
        link._last_rx = time.time()
        try:
            for msg in self.framer.iter_feed(data):
                action_id = msg.headers.get("ActionID")
                action = self.responses.get(action_id) if action_id else None
                if action is not None:
                    self._complete(action, msg)
                else:
                    link._on_message(self, msg)
        except Exception:  # pragma: no cover - defensive: a bug here must not kill the connection
            log.exception("%s: error while handling AMI data", link.name)

    def _complete(self, action: Action, msg: AmiMessage) -> None:
        try:
            done = action.add_message(_to_panoramisk(msg))
        except Exception as exc:  # panoramisk's multi-response heuristics can raise (issue #90)
            done = True
            _fail(action, AmiError(f"{action.get('Action', '?')}: unreadable response ({type(exc).__name__})"))
        if done or action.future.done():
            self.responses.pop(action.id, None)
            hook = getattr(action, "on_complete", None)
            if hook is not None and done:
                hook(list(action.responses))  # synchronously: in stream order with the events around it

    # -- closing -----------------------------------------------------------------------------------------
    def _fail_pending(self, exc: AmiError) -> None:
        pending = list(self.responses.values())
        self.responses.clear()
        for action in pending:
            _fail(action, exc)

    def close(self) -> None:
        """Close after flushing what was written (never re-queues pending actions)."""
        self._fail_pending(LinkLost("connection closed"))
        if not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection at once (a dead peer may never read what is buffered)."""
        self._fail_pending(LinkLost("connection aborted"))
        self.closed = True
        transport = getattr(self, "transport", None)
        if transport is not None:
            transport.abort()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_pending(LinkLost("connection lost"))
        self.closed = True
        self.link._connection_lost(self, exc)


def _fail(action: Action, exc: BaseException) -> None:
    fut = action.future
    if not fut.done():
        fut.set_exception(exc)
        fut.exception()  # mark retrieved: an action nobody awaits any more must not warn at exit


class _Manager(Manager):  # type: ignore[misc]
    """panoramisk's Manager with its own reconnect loop, pinger and action replay switched off."""

    def connection_made(self, f: asyncio.Future[Any]) -> None:
        if f.cancelled() or f.exception() is not None:
            return  # AmiLink reports it and decides when to retry
        _transport, protocol = f.result()
        self.protocol = protocol
        protocol.factory = self
        protocol.config = self.config
        protocol.encoding = self.encoding = "utf-8"
        self.responses = protocol.responses
        self._connected = True

    def connection_lost(self, exc: Exception | None) -> None:  # pragma: no cover - not called
        self._connected = False

    def ping(self) -> None:  # pragma: no cover - the watchdog pings
        pass


class AmiLink:
    """One PBX's AMI connection, kept up until :meth:`stop`; events go to :attr:`queue` in order."""

    def __init__(
        self,
        settings: AmiSettings,
        *,
        secret: str | None = None,
        queue: asyncio.Queue[LinkItem] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self._secret = secret if secret is not None else settings.resolved_secret()
        self.queue: asyncio.Queue[LinkItem] = queue if queue is not None else asyncio.Queue(settings.queue_size)
        self._high = max(1, self.queue.maxsize * 3 // 4) if self.queue.maxsize else 0
        self._low = self.queue.maxsize // 4
        self._backlog: deque[LinkItem] = deque()
        self._backlog_max = max(10000, 4 * self.queue.maxsize)
        self._rng = rng or random.Random()
        self._id_prefix = f"oc-{uuid.uuid4().hex[:10]}-"
        self._next_id = 0
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
        self.dropped = 0
        self.unmatched_responses = 0
        self.pauses = 0  # times socket reading was paused because the consumer fell behind
        self._bad_closed = 0
        self._manager: _Manager | None = None
        self._protocol: FramedAMIProtocol | None = None
        self._closed: asyncio.Event | None = None
        self._connecting: asyncio.Task[Any] | None = None
        self._stopping = False
        self._wake = asyncio.Event()
        self._last_rx = 0.0
        self._paused = False
        self._overflowed = False
        self._peer_shutdown = False
        self._logged_in = False
        self._session_ready = False

    # ---- status ----------------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.state == LinkState.READY

    @property
    def bad_messages(self) -> int:
        proto = self._protocol
        return self._bad_closed + (proto.framer.bad_messages if proto is not None else 0)

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
            while not self._stopping:
                if not first:
                    self.reconnects += 1
                first = False
                self._session_ready = False
                delay: float | None = None
                try:
                    await self._session()
                except LoginRefused as exc:
                    self.login_failures += 1
                    self._set_state(LinkState.LOGIN_FAILED, f"login refused: {exc}")
                    delay = self.settings.login_retry * self._rng.uniform(0.9, 1.1)
                    log.error("%s: AMI login refused for user %r: %s; retrying in %.0f s", self.name,
                              self.settings.username, exc, delay)
                except (OSError, TimeoutError, AmiError) as exc:
                    if not self._stopping:
                        self._set_state(LinkState.DOWN, _describe(exc))
                except Exception as exc:  # a bug must not end the daemon's only link to the PBX
                    log.exception("%s: unexpected error in the AMI link", self.name)
                    self._set_state(LinkState.DOWN, f"internal error: {type(exc).__name__}")
                if self._stopping:
                    break
                if self._session_ready:
                    failures = 0  # a healthy session ended: start the backoff again from the bottom
                failures += 1
                if delay is None:
                    delay = self._backoff(failures)
                    log.warning("%s: AMI link to %s:%s: %s; reconnecting in %.2f s", self.name,
                                self.settings.host, self.settings.port, self.last_error, delay)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
        finally:
            self._teardown()
            self._set_state(LinkState.STOPPED)

    def _backoff(self, failures: int) -> float:
        base = min(self.settings.reconnect_max, self.settings.reconnect_min * 2.0 ** max(0, failures - 1))
        return float(base / 2 + self._rng.uniform(0, base / 2))

    async def stop(self, timeout: float = 2.0) -> None:
        """Log off (best effort) and close; :meth:`run` returns soon after."""
        self._stopping = True
        self._wake.set()
        if self._connecting is not None:
            self._connecting.cancel()
        proto = self._protocol
        if proto is not None and not proto.closed and self._logged_in:
            with contextlib.suppress(AmiError, TimeoutError, OSError):
                await self._action({"Action": "Logoff"}, timeout=timeout, strict=True)
        proto = self._protocol
        if proto is not None and not proto.closed:
            proto.close()
        if self._closed is not None:
            self._closed.set()

    def _teardown(self) -> None:
        proto = self._protocol
        if proto is not None and not proto.closed:
            proto.abort()

    async def _session(self) -> None:
        """One connection, from TCP connect to its loss (``_session_ready``: it got to READY)."""
        loop = asyncio.get_running_loop()
        if self._manager is None:  # created inside the running loop (panoramisk on Python 3.12+)
            self._manager = _Manager(
                host=self.settings.host,
                port=self.settings.port,
                loop=loop,
                events=self.settings.events,
                protocol_factory=lambda: FramedAMIProtocol(self),
                forgetable_actions=_AllActions(),
            )
        self._closed = closed = asyncio.Event()
        self._peer_shutdown = False
        self._overflowed = False
        self._logged_in = False
        self._set_state(LinkState.CONNECTING)
        connect = self._connecting = self._manager.connect()
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
        proto = self._protocol
        assert proto is not None
        self.connections += 1
        try:
            if self._stopping:
                return
            self._set_state(LinkState.LOGGING_IN)
            await self._login()
            self._logged_in = True
            log.info("%s: logged in to AMI at %s:%s (%s)", self.name, self.settings.host, self.settings.port,
                     proto.framer.banner or "no banner")
            self.banner = proto.framer.banner
            self._set_state(LinkState.RESYNCING)
            snapshot = await self._resync()
            self.resyncs += 1
            self._set_state(LinkState.READY)
            self._session_ready = True
            log.info("%s: resynced: %d channels, %d queue callers live", self.name, len(snapshot.channels),
                     len(snapshot.entries))
            await self._watch(closed)
            if not self._stopping:
                why = "Asterisk shut down" if self._peer_shutdown else (
                    "event queue overflow" if self._overflowed else "connection closed by the PBX")
                self._set_state(LinkState.DOWN, why)
                log.warning("%s: AMI link lost: %s", self.name, why)
        finally:
            if not proto.closed:
                proto.abort()
            self._bad_closed += proto.framer.bad_messages
            proto.framer.bad_messages = 0
            self._resume()
            if self._logged_in and not self._stopping:
                reason = "pbx_restart" if self._peer_shutdown else "link_lost"
                self._enqueue(LinkDown(self._last_rx or time.time(), reason))
            self._logged_in = False

    async def _login(self) -> None:
        resp = await self._action({
            "Action": "Login",
            "Username": self.settings.username,
            "Secret": self._secret,
            "Events": self.settings.events,
        })
        if not isinstance(resp, Message) or not resp.success:
            message = resp.get("Message") if isinstance(resp, Message) else None
            raise LoginRefused(message or "login rejected")

    def _list_items(self, action: str, msgs: Any, snapshot: Snapshot) -> list[AmiMessage]:
        msgs = msgs if isinstance(msgs, list) else [msgs]
        first = msgs[0] if msgs else None
        if first is None or not first.success:
            why = first.get("Message") if first is not None else "no answer"
            log.warning("%s: %s refused (%s): calls in progress cannot be fully rebuilt; give the manager user "
                        "write=system,reporting", self.name, action, why)
            snapshot.complete = False
            return []
        return [m.source for m in msgs[1:] if not (m.get("Event") or "").endswith("Complete")]

    async def _resync(self) -> Snapshot:
        snap = Snapshot()
        pong = await self._action({"Action": "Ping"}, timeout=self.settings.ping_timeout)
        if isinstance(pong, Message):
            with contextlib.suppress(ValueError):
                snap.clock_offset = float(pong.get("Timestamp") or "") - time.time()
        snap.channels = self._list_items("CoreShowChannels", await self._action({"Action": "CoreShowChannels"}),
                                         snap)

        def queued(msgs: list[Message]) -> None:
            # runs inside data_received, right where the list ends: queue the snapshot there
            for item in self._list_items("QueueStatus", msgs, snap):
                kind = item.event
                if kind == "QueueEntry":
                    snap.entries.append(item)
                elif kind == "QueueMember":
                    snap.members.append(item)
                elif kind == "QueueParams":
                    snap.params.append(item)
            snap.arrival = time.time()
            if not self._enqueue(snap):
                self.dropped += 1
                self._overflowed = True
                if self._protocol is not None:
                    self._protocol.abort()

        await self._action({"Action": "QueueStatus"}, on_complete=queued)
        return snap

    async def _watch(self, closed: asyncio.Event) -> None:
        interval, timeout = self.settings.ping_interval, self.settings.ping_timeout
        while not self._stopping:
            try:
                await asyncio.wait_for(closed.wait(), interval)
                return
            except TimeoutError:
                pass
            if self._paused or self._stopping:
                continue  # we are the ones not reading: do not blame the PBX
            try:
                await self._action({"Action": "Ping"}, timeout=timeout)
            except TimeoutError:
                self.watchdog_timeouts += 1
                raise LinkDead(f"no answer to Ping within {timeout:g} s") from None
            except LinkLost:
                return

    async def _action(self, fields: dict[str, str], timeout: float | None = None,
                      on_complete: Callable[[list[Message]], None] | None = None, strict: bool = False) -> Any:
        """Send one action and await its response(s), at most ``timeout`` (``action_timeout``) seconds.
        ``on_complete`` runs synchronously when the last response is read, in stream order.

        Time spent with socket reading paused (back-pressure: the answer may be waiting unread behind
        the events) does not count against the PBX, unless ``strict``."""
        proto = self._protocol
        if proto is None or proto.closed:
            raise LinkLost("not connected")
        self._next_id += 1
        action = proto.submit({**fields, "ActionID": f"{self._id_prefix}{self._next_id}"},
                              on_complete=on_complete)
        limit = timeout or self.settings.action_timeout
        try:
            while True:
                pauses = self.pauses
                done, _ = await asyncio.wait({action.future}, timeout=limit)
                if done:
                    return action.future.result()
                if strict or not (self._paused or self.pauses != pauses):
                    raise TimeoutError(f"no answer to {fields['Action']} within {limit:g} s")
        finally:
            proto.forget(action)
            if not action.future.done():
                action.future.cancel()

    # ---- protocol callbacks (synchronous, inside data_received / connection_lost) ------------------------
    def _connection_made(self, proto: FramedAMIProtocol) -> None:
        if self._protocol is not None and self._protocol is not proto and not self._protocol.closed:
            self._protocol.abort()
        self._protocol = proto
        proto.closed = False

    def _connection_lost(self, proto: FramedAMIProtocol, exc: Exception | None) -> None:
        if proto is self._protocol and self._closed is not None:
            self._closed.set()

    def _on_message(self, proto: FramedAMIProtocol, msg: AmiMessage) -> None:
        """Enqueue-only: one event in, in order.  Never blocks, never raises."""
        if proto is not self._protocol or proto.closed:
            return
        headers = msg.headers
        if "Event" not in headers or headers.get("ActionID", "").startswith(self._id_prefix):
            # a response nobody waits for (a timed-out action of ours, or someone else's ActionID)
            self.unmatched_responses += 1
            log.debug("%s: ignoring unmatched %r", self.name, msg)
            return
        self.events += 1
        if not self._enqueue(AmiEvent(msg, time.time())):
            self.dropped += 1
            if not self._overflowed:
                self._overflowed = True
                log.error("%s: event queue and backlog full (%d): dropping the connection to resync", self.name,
                          self.queue.maxsize)
                proto.abort()
            return
        if headers["Event"] == "Shutdown":
            self._peer_shutdown = True
            log.warning("%s: Asterisk is shutting down (%s)", self.name, headers.get("Shutdown", "?"))
            proto.close()

    def _enqueue(self, item: LinkItem) -> bool:
        """Queue one item, in order, never blocking: when the queue is full the item waits in a backlog
        (at most what one socket read holds, since reading is paused) that :meth:`item_done` drains."""
        if self._backlog or self.queue.full():
            if len(self._backlog) >= self._backlog_max:
                return False
            self._backlog.append(item)
            self._pause()
            return True
        self.queue.put_nowait(item)
        if self._high and self.queue.qsize() >= self._high:
            self._pause()
        return True

    def stop_item(self) -> None:
        """Queue :class:`LinkStopped` after everything else (call once :meth:`run` has returned)."""
        if not self._enqueue(LinkStopped()):  # pragma: no cover - the backlog cannot be full here
            self._backlog.append(LinkStopped())

    def _pause(self) -> None:
        proto = self._protocol
        if not self._paused and proto is not None and not proto.closed:
            self._paused = True
            self.pauses += 1
            proto.transport.pause_reading()

    def item_done(self) -> None:
        """Called by the consumer after each item: refills the queue from the backlog and resumes socket
        reading once the queue has drained."""
        backlog = self._backlog
        while backlog and not self.queue.full():
            self.queue.put_nowait(backlog.popleft())
        if self._paused and not backlog and self.queue.qsize() <= self._low:
            self._resume()

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            proto = self._protocol
            if proto is not None and not proto.closed:
                with contextlib.suppress(RuntimeError):  # transport closing
                    proto.transport.resume_reading()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return str(exc) or "timed out"
    if isinstance(exc, OSError):
        return exc.strerror or type(exc).__name__
    text = str(exc)
    return text or type(exc).__name__
