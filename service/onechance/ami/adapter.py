"""The only module that knows panoramisk: a TCP connection to an Asterisk manager interface.

panoramisk (1.4) opens the connection and pairs action responses with their actions (its multi-response
heuristics); everything it gets wrong for a long-running daemon (``../shared/notes/ami-semantics.md``
section 7) is replaced here:

* **parsing**: :class:`AmiConnection` (panoramisk's protocol, plugged in through ``protocol_factory``) feeds the
  raw bytes to onechance's own :class:`~onechance.ami.parser.AmiFramer`, so a multi-byte character split
  across TCP reads survives and empty last values are kept; only the responses to our own actions are
  converted to panoramisk ``Message`` objects, for its pairing, and handed back as our messages;
* **no callbacks of panoramisk's**: every other message goes to one synchronous handler
  (:class:`ConnectionEvents`), in stream order, all those of one socket read in one call; nothing raised there
  ever reaches asyncio (it would close the transport and lose the rest of the TCP chunk);
* **events nobody reads are never built**: the framer gets the handler's :class:`~onechance.ami.parser.EventFilter`
  and only counts them;
* **no action replay**: ``forgetable_actions`` contains every action, pending actions fail with
  :class:`~onechance.ami.items.LinkLost` when the connection closes, and panoramisk's own reconnect loop and
  pinger are switched off (the link does both, properly);
* the Manager is created inside the running loop (Python 3.12+).

The secret of a Login action is only ever written to the socket: never logged, never kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Callable
from typing import Any, Protocol

from panoramisk import Manager
from panoramisk.actions import Action
from panoramisk.ami_protocol import AMIProtocol
from panoramisk.message import Message

from .items import AmiError, LinkLost
from .parser import AmiFramer, AmiMessage, EventFilter

__all__ = ["AmiConnection", "ConnectionEvents", "Connector", "Responses", "succeeded"]

log = logging.getLogger(__name__)

#: an action's answer: the response, then (for a list) its items and the ``...Complete`` event
Responses = list[AmiMessage]
_SUCCESS = frozenset({"Success", "Follows", "Goodbye"})


def succeeded(response: AmiMessage) -> bool:
    """A response saying the action was accepted."""
    return response.headers.get("Response") in _SUCCESS


class ConnectionEvents(Protocol):
    """What a connection tells its owner, synchronously, from inside the event loop's callbacks."""

    #: the events worth building (None: every one)
    event_filter: EventFilter | None

    def connection_made(self, conn: AmiConnection) -> None: ...

    def messages(self, conn: AmiConnection, msgs: list[AmiMessage], unread: int, nbytes: int) -> None:
        """Events (and responses nobody waits for) of one socket read, in stream order (a read holding the end of
        an action's answer comes in two calls, before and after it).  ``unread``: events of the read counted
        but not built (nobody reads them) or dropped (repeated); ``nbytes``: the read's size (0 for the first
        part of a split read)."""

    def connection_lost(self, conn: AmiConnection, exc: Exception | None) -> None: ...

    def traffic(self) -> None:
        """Bytes arrived (the peer is alive)."""


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


class _Pending:
    __slots__ = ("action", "future", "on_complete", "single")

    def __init__(self, action: Action, future: asyncio.Future[Responses],
                 on_complete: Callable[[Responses], None] | None, single: bool = False) -> None:
        self.action = action
        self.future = future
        self.on_complete = on_complete
        self.single = single


class AmiConnection(AMIProtocol):  # type: ignore[misc]
    """One TCP connection: our framer and routing on panoramisk's protocol."""

    def __init__(self, events: ConnectionEvents, max_message_bytes: int | None = None) -> None:
        super().__init__()
        self.events = events
        self._max = max_message_bytes
        self.framer = self._new_framer()
        self.closed = True
        self._pending: dict[str, _Pending] = {}

    def _new_framer(self) -> AmiFramer:
        flt = getattr(self.events, "event_filter", None)
        return AmiFramer(self._max, flt) if self._max else AmiFramer(event_filter=flt)

    @property
    def banner(self) -> str | None:
        return self.framer.banner

    @property
    def bad_messages(self) -> int:
        return self.framer.bad_messages

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.framer = self._new_framer()
        self.closed = False
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):  # not a TCP socket
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.events.connection_made(self)

    # -- sending -----------------------------------------------------------------------------------------
    def submit(self, fields: dict[str, str], on_complete: Callable[[Responses], None] | None = None,
               single: bool = False) -> asyncio.Future[Responses]:
        """Send one action; the future resolves to its responses.  ``on_complete`` runs synchronously when
        the last one is read, in stream order with the events around it.  ``single``: the first response is
        the whole answer (an asynchronous Originate: Asterisk's "successfully queued", whose
        ``OriginateResponse`` event comes only once the phone answers; panoramisk would wait for it)."""
        future: asyncio.Future[Responses] = asyncio.get_running_loop().create_future()
        action = Action(fields)
        if self.closed:
            _fail(future, LinkLost("not connected"))
            return future
        self._pending[action.id] = _Pending(action, future, on_complete, single)
        self.responses[action.id] = action  # panoramisk's own view of what is pending
        try:
            self.transport.write(str(action).encode("utf-8"))
        except Exception as exc:  # the action text holds the secret for Login: never log it
            self.forget(future)
            _fail(future, LinkLost(f"cannot send {fields.get('Action', '?')}: {type(exc).__name__}"))
        return future

    def forget(self, future: asyncio.Future[Responses]) -> None:
        """Stop waiting for an action (timed out): a late answer is then an unmatched response."""
        for action_id, pending in list(self._pending.items()):
            if pending.future is future:
                del self._pending[action_id]
                self.responses.pop(action_id, None)

    # -- receiving ---------------------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        events = self.events
        try:
            events.traffic()
            framer = self.framer
            unread = framer.skipped + framer.duplicates
            batch: list[AmiMessage] = []
            pendings = self._pending
            for msg in framer.iter_feed(data):
                action_id = msg.headers.get("ActionID") if pendings else None
                pending = pendings.get(action_id) if action_id else None
                if pending is not None:
                    if batch:  # what came before the answer goes first (a snapshot is queued where it ends)
                        events.messages(self, batch, 0, 0)
                        batch = []
                    self._complete(action_id or "", pending, msg)
                else:
                    batch.append(msg)
            unread = framer.skipped + framer.duplicates - unread
            if batch or unread:
                events.messages(self, batch, unread, len(data))
        except Exception:  # pragma: no cover - defensive: a bug here must not kill the connection
            log.exception("error while handling AMI data")

    def _complete(self, action_id: str, pending: _Pending, msg: AmiMessage) -> None:
        action = pending.action
        if pending.single:
            self._drop(action_id)
            if not pending.future.done():
                pending.future.set_result([msg])
            if pending.on_complete is not None:
                pending.on_complete([msg])
            return
        try:
            done = bool(action.add_message(_to_panoramisk(msg)))
        except Exception as exc:  # panoramisk's multi-response heuristics can raise (issue #90)
            self._drop(action_id)
            _fail(pending.future, AmiError(f"{action.get('Action', '?')}: unreadable response "
                                           f"({type(exc).__name__})"))
            return
        if not done:
            return
        self._drop(action_id)
        responses = [m.source for m in action.responses]
        if not pending.future.done():
            pending.future.set_result(responses)
        if pending.on_complete is not None:
            pending.on_complete(responses)

    def _drop(self, action_id: str) -> None:
        self._pending.pop(action_id, None)
        self.responses.pop(action_id, None)

    # -- closing -----------------------------------------------------------------------------------------
    def _fail_pending(self, exc: AmiError) -> None:
        pending = list(self._pending.values())
        self._pending.clear()
        self.responses.clear()
        for p in pending:
            _fail(p.future, exc)

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

    def pause_reading(self) -> None:
        self.transport.pause_reading()

    def resume_reading(self) -> None:
        self.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail_pending(LinkLost("connection lost"))
        self.closed = True
        self.events.connection_lost(self, exc)


def _fail(future: asyncio.Future[Responses], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
        future.exception()  # mark retrieved: an action nobody awaits any more must not warn at exit


class _Manager(Manager):  # type: ignore[misc]
    """panoramisk's Manager with its own reconnect loop, pinger and action replay switched off."""

    def connection_made(self, f: asyncio.Future[Any]) -> None:
        if f.cancelled() or f.exception() is not None:
            return  # the link reports it and decides when to retry
        _transport, protocol = f.result()
        self.protocol = protocol
        protocol.factory = self
        protocol.config = self.config
        protocol.encoding = self.encoding = "utf-8"
        self.responses = protocol.responses
        self._connected = True

    def connection_lost(self, exc: Exception | None) -> None:  # pragma: no cover - not called
        self._connected = False

    def ping(self) -> None:  # pragma: no cover - the link's watchdog pings
        pass


class Connector:
    """Opens connections to one manager interface (panoramisk's Manager, created in the running loop)."""

    def __init__(self, host: str, port: int, events_mask: str, handler: ConnectionEvents,
                 max_message_bytes: int | None = None) -> None:
        self.host, self.port, self.events_mask = host, port, events_mask
        self.handler = handler
        self.max_message_bytes = max_message_bytes
        self._manager: _Manager | None = None

    def connect(self) -> asyncio.Task[Any]:
        """Start a TCP connection; the task ends when it is made (``handler.connection_made``) or failed."""
        if self._manager is None:
            self._manager = _Manager(
                host=self.host,
                port=self.port,
                loop=asyncio.get_running_loop(),
                events=self.events_mask,
                protocol_factory=lambda: AmiConnection(self.handler, self.max_message_bytes),
                forgetable_actions=_AllActions(),
            )
        task: asyncio.Task[Any] = self._manager.connect()
        return task

    @property
    def manager(self) -> Any:
        """panoramisk's Manager (for tests that check how it is configured)."""
        return self._manager
