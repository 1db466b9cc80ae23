"""The HTTP front: what keeps the HTTP side bounded and fair whoever connects (``docs/daemon.md``, "HTTP front").

aiohttp alone lets a client hold a connection forever by sending its request a byte at a time, takes request
bodies up to 1 MiB, runs every request at once however many arrive, and logs a malformed request as an ERROR
with its traceback (the offending header in it: the API token, once).  The front adds, per daemon:

* **a connection limit** (``http.max_connections``, kept below the process's open-files limit): a new
  connection beyond it takes the place of the connection idle the longest (one that has sent no complete
  request: a slow or silent client, an idle keep-alive); when every connection is busy it is refused with a
  ``503`` -- after its request line, read at the door for at most :data:`DOOR_WAIT`: a ``GET /healthz`` is
  answered ``200`` there, so that a flood cannot fail a liveness probe;
* **time limits**: a connection must deliver a complete request (line, headers and body) within
  ``http.header_timeout`` of its start or of its first byte after the previous answer; an idle keep-alive
  connection is closed after ``http.keepalive_timeout``; an answer the client does not read within
  :data:`SEND_TIMEOUT` is abandoned;
* **size limits**: request line and each header ``http.max_header_size`` bytes, at most :data:`MAX_HEADERS`
  headers (``431``); a body of ``http.max_body_size`` bytes (``413``), read whole before any work;
* **bounded API work**: ``http.api_concurrency`` requests to ``/api/*`` and the pages at once,
  ``http.api_queue`` more waiting (at most :data:`API_WAIT` seconds); beyond that ``503`` with
  ``Retry-After: 1``.  ``/healthz``, ``/readyz`` and ``/metrics`` never wait behind the API;
* **quiet refusals**: nothing of the above is logged as an error; each is counted in
  ``onechance_http_rejected_total{reason}`` and summed up in one WARNING line a minute per reason; a
  :class:`RedactFilter` takes the token out of anything the HTTP side logs all the same.

:meth:`HttpFront.runner` and :meth:`HttpFront.site` replace ``web.AppRunner`` and ``web.TCPSite``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import resource
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, HttpProcessingError, LineTooLong
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .redact import redact

__all__ = ["API_WAIT", "FRONT_KEY", "MAX_HEADERS", "REASONS", "SEND_TIMEOUT", "HttpFront", "HttpLimits",
           "RedactFilter", "Refusal"]

log = logging.getLogger(__name__)

#: why a request or connection was refused (``onechance_http_rejected_total{reason}``)
REASONS = ("connections", "evicted", "timeout", "header_too_large", "body_too_large", "bad_request", "busy")
MAX_HEADERS = 100  # headers per request
API_WAIT = 10.0  # seconds an API request may wait for its turn
SEND_TIMEOUT = 60.0  # seconds an answer may take to be read by the client
FD_RESERVE = 64  # open files kept for the rest of the daemon (database, spool, AMI links)
BACKLOG = 128  # connections asyncio accepts at a time (its listen backlog)
EVICT_AFTER = 1.0  # seconds a connection may stay silent before another may take its place
LISTEN_QUEUE = 1024  # connections the kernel holds until they are accepted (capped by net.core.somaxconn)
UNLIMITED_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})  # never wait behind the API
DOOR_WAIT = 0.5  # seconds a connection over the limit may take to say it is a health check
FINISH_WAIT = 2.0  # seconds the requests cut at shutdown may take to end
DOOR_MAX = 64  # connections over the limit waiting so at once, at most (past it the longest waiting is refused)
_LOGGERS = ("aiohttp.server", "aiohttp.web", "aiohttp.access", "aiohttp.internal", "onechance.http",
            "onechance.http_front", "onechance.api_calls", "onechance.api_queues", "onechance.api_worklist",
            "onechance.callback_page")
_SUMMARY_INTERVAL = 60.0


class HttpLimits:
    """The front's bounds (``[http]`` settings of the same names)."""

    __slots__ = ("api_concurrency", "api_queue", "header_timeout", "keepalive_timeout", "max_body_size",
                 "max_connections", "max_header_size")

    def __init__(self, *, max_connections: int = 256, header_timeout: float = 10.0, keepalive_timeout: float = 30.0,
                 max_header_size: int = 8190, max_body_size: int = 65536, api_concurrency: int = 4,
                 api_queue: int = 64) -> None:
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.max_header_size = max_header_size
        self.max_body_size = max_body_size
        self.api_concurrency = api_concurrency
        self.api_queue = api_queue

    @classmethod
    def from_settings(cls, http: Any) -> HttpLimits:
        """From :class:`~onechance.config.HttpSettings`."""
        return cls(**{name: getattr(http, name) for name in cls.__slots__})


#: the application's front (set by ``make_app``; read by ``App`` to start the server)
FRONT_KEY: web.AppKey[HttpFront] = web.AppKey("onechance_http_front")


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    resp = web.Response(status=status, text=json.dumps({"error": message}), content_type="application/json",
                        headers=headers)
    return resp


class RedactFilter(logging.Filter):
    """Replaces the secrets in a record (its message, arguments and traceback) with ``***`` (by
    :func:`onechance.redact.redact`), before any handler sees it: the daemon's own handlers redact every line
    already, this also covers handlers added by whoever embeds the HTTP side."""

    def __init__(self, secrets: Sequence[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def _clean(self, text: str) -> str:
        return redact(text, self.secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        clean = self._clean(message)
        if clean != message:
            record.msg, record.args = clean, ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self._clean(record.exc_text)
        return True


class _ApiSlots:
    """At most ``concurrency`` requests at once, ``queue`` more waiting (``wait`` seconds at most)."""

    def __init__(self, concurrency: int, queue: int, wait: float) -> None:
        self.concurrency = concurrency
        self.queue = queue
        self.wait = wait
        self.running = 0
        self.waiting = 0
        self._turns: asyncio.Semaphore | None = None

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[bool]:
        """``True`` once the request may run; ``False`` when it is refused (too many waiting, or waited too
        long)."""
        if self._turns is None:
            self._turns = asyncio.Semaphore(self.concurrency)
        turns = self._turns
        admitted = False
        if not turns.locked():
            await turns.acquire()  # free: does not wait
            admitted = True
        elif self.waiting < self.queue:
            self.waiting += 1
            try:
                async with asyncio.timeout(self.wait):
                    await turns.acquire()
                admitted = True
            except TimeoutError:
                pass
            finally:
                self.waiting -= 1
        if not admitted:
            yield False
            return
        self.running += 1
        try:
            yield True
        finally:
            self.running -= 1
            turns.release()


class _Refused(asyncio.Protocol):
    """A connection over the limit when none can make room: one ``503`` and the door shut -- but a health check
    still gets its answer.  Its request line is read first (for at most :data:`DOOR_WAIT` seconds; when
    :data:`DOOR_MAX` already wait so, the one waiting the longest is refused to make room): ``GET /healthz`` is
    answered ``200`` at the door (the process runs: that is all it says), anything else ``503``.  A flood of API
    connections cannot make a liveness probe fail."""

    BODY = json.dumps({"error": "too many connections, retry in a moment"}).encode()

    def __init__(self, front: HttpFront, health: bytes) -> None:
        self.front = front
        self.health = health
        self.transport: asyncio.Transport | None = None
        self.head = b""
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        door = self.front.door
        if len(door) >= self.front.door_max:
            if not door:
                self._answer(503)
                return
            next(iter(door))._answer(503)  # the longest waiting makes room: a probe says what it is at once
        door[self] = None  # waiting at the door while in it
        self.timer = asyncio.get_running_loop().call_later(DOOR_WAIT, self._answer, 503)

    def data_received(self, data: bytes) -> None:
        if self not in self.front.door:
            return
        self.head += data
        line, found, _rest = self.head.partition(b"\r\n")
        if found or len(self.head) > 1024:
            method, _, rest = line.partition(b" ")
            path = rest.partition(b" ")[0].partition(b"?")[0]
            self._answer(200 if method in (b"GET", b"HEAD") and path == b"/healthz" else 503, head=method == b"HEAD")

    def connection_lost(self, exc: Exception | None) -> None:
        self._done()

    def _done(self) -> None:
        self.front.door.pop(self, None)
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _answer(self, status: int, head: bool = False) -> None:
        self._done()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if status == 200:
            top, body = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n", self.health
        else:
            top, body = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n",
                         self.BODY)
        transport.write(top + b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(body), b"" if head else body))
        transport.close()


class _Connection(web.RequestHandler):
    """aiohttp's connection handler, watched by the front: when it last received bytes, whether a request is
    being handled, how long it may stay as it is; malformed requests answered without a log line."""

    def __init__(self, manager: web.Server, front: HttpFront, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self.front = front
        self.busy = False  # a request is being handled (or its answer written)
        self.requests = 0  # requests begun on this connection
        self.partial = False  # bytes of a request whose line and headers are not all in yet
        self.arrived = False  # a request's line and headers are in; its handler has not begun yet
        self._tail = b""  # the last bytes received while a request comes (its end may straddle two reads)
        self.activity = 0.0  # when bytes last came in (loop time)
        self.since = 0.0  # when it started to send its current request (connected, or its first byte after an answer)
        self.dropped = False  # closed by the front (no longer counted as open)
        self._deadline: asyncio.TimerHandle | None = None

    # ---- asyncio.Protocol ----------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.activity = self.since = self._loop.time()
        self.front._opened(self)
        self._arm(self.front.limits.header_timeout)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        self.front._closed(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.activity = self._loop.time()
        if data and not self.busy:
            if not self.partial and not self.arrived:
                self.partial = True  # a request starts coming: it has header_timeout to arrive whole
                if self.requests:
                    self.since = self.activity
                self._arm(self.front.limits.header_timeout)
            if not self.arrived:
                seen = self._tail + data
                if b"\r\n\r\n" in seen:  # its line and headers are in: aiohttp hands it to a handler next
                    self.arrived, self.partial = True, False
                    self._disarm()
                self._tail = seen[-3:]
        super().data_received(data)

    # ---- the front's view -------------------------------------------------------------------------------
    def begin(self) -> None:
        """A request begins (its line and headers are in)."""
        self.busy = True
        self.partial = self.arrived = False
        self._tail = b""
        self.requests += 1
        self._disarm()

    def _idle(self) -> None:
        self.busy = False
        self.partial = self.arrived = False
        self._tail = b""
        self._arm(self.front.limits.keepalive_timeout)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self._loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if self.busy or self.arrived:
            return
        # a request that did not arrive in time; an idle keep-alive that ran out is just closed
        self.drop("timeout" if self.partial or self.requests == 0 else None)

    def drop(self, reason: str | None) -> None:
        """Close now (a reset: the descriptor is freed at once), counted under ``reason``."""
        if self.dropped:
            return
        self.dropped = True
        self._disarm()
        self.front._dropped(self, reason)
        transport = self.transport
        self.force_close()
        if transport is not None:
            transport.abort()

    # ---- aiohttp's RequestHandler ------------------------------------------------------------------------
    async def finish_response(self, request: web.BaseRequest, resp: web.StreamResponse,
                              start_time: float | None) -> tuple[web.StreamResponse, bool]:
        self.busy = True  # (an error answer to a malformed request comes here without a middleware)
        self._disarm()
        try:
            async with asyncio.timeout(SEND_TIMEOUT):
                return await super().finish_response(request, resp, start_time)
        except TimeoutError:
            self.drop("timeout")
            return resp, True
        finally:
            if not self.dropped:
                self._idle()

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if isinstance(exc, HttpProcessingError):  # a malformed request: no log line, never its content
            too_large = isinstance(exc, LineTooLong) or (
                isinstance(exc, BadHttpMessage) and "Too many headers" in str(exc))
            self.front._reject("header_too_large" if too_large else "bad_request")
            if too_large:
                resp = _error(431, "request line or headers too large")
            else:
                resp = _error(400, "malformed HTTP request")
            resp.force_close()
            return resp
        return super().handle_error(request, status, exc, message)


class _Site(web.TCPSite):
    """``web.TCPSite`` whose connections go through the front."""

    def __init__(self, runner: web.BaseRunner, front: HttpFront, host: str, port: int,
                 handler_args: dict[str, Any]) -> None:
        super().__init__(runner, host, port)
        self._front = front
        self._handler_args = handler_args

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        front, args = self._front, self._handler_args

        def protocol() -> asyncio.Protocol:
            return front._protocol(server, loop, args)

        # asyncio accepts up to ``backlog`` connections in one go (each a descriptor before the front sees it):
        # kept small; the kernel's queue of connections waiting to be accepted (no descriptor yet) is made
        # longer, so a burst of connections waits there instead of being dropped (a 1 s SYN retry)
        self._server = await loop.create_server(protocol, self._host, self._port, backlog=front.backlog,
                                                reuse_address=self._reuse_address)
        for listening in self._server.sockets:
            with contextlib.suppress(OSError), socket.fromfd(listening.fileno(), listening.family,
                                                             listening.type) as dup:
                dup.listen(LISTEN_QUEUE)
        self._bound_port = self._server.sockets[0].getsockname()[1] if self._server.sockets else self._port


class HttpFront:
    """One daemon's front: its limits, connections and counters (see the module's docstring)."""

    def __init__(self, limits: HttpLimits, *, token: str | None = None,
                 registry: CollectorRegistry | None = None, health: bytes = b'{"status": "ok"}') -> None:
        self.limits = limits
        self.health = health  # the body of GET /healthz, answered at the door when over the limit
        self.door: dict[_Refused, None] = {}  # connections over the limit whose request line is read, oldest first
        self.door_max = DOOR_MAX  # at most so many at once (fewer when descriptors are few: _fit_open_files)
        self.token = token
        self.max_connections = limits.max_connections
        self.backlog = BACKLOG
        self.hard_max = self._hard_max()  # connections refused past this (see _fit_open_files)
        self.evict_after = min(EVICT_AFTER, limits.header_timeout / 2)
        self.rejected: dict[str, int] = dict.fromkeys(REASONS, 0)
        self.api = _ApiSlots(limits.api_concurrency, limits.api_queue, API_WAIT)
        self._open: dict[_Connection, None] = {}  # open and not dropped, oldest first
        self._handling: set[asyncio.Task[Any]] = set()  # the requests being handled (see finish)
        self._summary: dict[str, tuple[float, int]] = {}  # reason -> (last WARNING line, refusals since)
        self._redact = RedactFilter([token] if token else [])
        if registry is not None:
            registry.register(_FrontCollector(self))

    # ---- starting ---------------------------------------------------------------------------------------
    def check_exposure(self, host: str) -> None:
        """Warn when ``host`` is reachable from other machines and ``/api/*`` has no token."""
        if self.token:
            return
        if host == "localhost":
            return
        try:
            if ipaddress.ip_address(host).is_loopback:
                return
        except ValueError:
            pass  # a host name: it may well be reachable from elsewhere
        log.warning("http.listen %s: the HTTP API is reachable from other machines and http.token is not set: "
                    "anyone who can connect reads the calls and the callers' numbers; set http.token "
                    "(ONECHANCE_HTTP__TOKEN), or listen on 127.0.0.1", host)

    def _fit_open_files(self) -> None:
        """Keep every descriptor the HTTP side can hold below the process's open-files limit: the open
        connections, plus the connections asyncio accepts in one go (the listen backlog) before the front
        sees them, plus :data:`FD_RESERVE` for the rest of the daemon.  Past the limit, ``accept()`` fails and
        asyncio logs an error with its traceback for every attempt."""
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft == resource.RLIM_INFINITY:
            return
        budget = max(8, soft - FD_RESERVE)
        self.backlog = min(BACKLOG, max(4, budget // 8))
        # a burst of new connections evicts as many old ones, whose descriptors close a loop turn later, while
        # the next burst is accepted: room for a few bursts above the limit, and for one or two above the most
        # connections ever let in (hard_max: when none can be evicted)
        fits = max(4, budget - 4 * self.backlog)
        if self.limits.max_connections > fits:
            self.max_connections = fits
            log.warning("http.max_connections %d does not fit the open-files limit (%d): at most %d connections "
                        "(raise the limit, e.g. LimitNOFILE= in the systemd unit, or lower http.max_connections)",
                        self.limits.max_connections, soft, fits)
        # and a few descriptors for the connections over the limit whose request line is read at the door
        self.door_max = min(DOOR_MAX, self.backlog // 2)
        self.hard_max = min(self._hard_max(),
                            max(self.max_connections, budget - 2 * self.backlog - self.door_max))

    def _hard_max(self) -> int:
        return max(2 * self.max_connections, self.max_connections + self.backlog)

    def runner(self, app: web.Application, *, shutdown_timeout: float) -> web.AppRunner:
        """The runner of ``app`` (aiohttp's keep-alive timer as a backstop behind the front's own)."""
        self._fit_open_files()
        for name in _LOGGERS:
            logger = logging.getLogger(name)
            if self._redact not in logger.filters:
                logger.addFilter(self._redact)
        return web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout,
                             **self._handler_args())

    def release(self) -> None:
        """Undo :meth:`runner`'s process-wide part (the log filters)."""
        for name in _LOGGERS:
            logging.getLogger(name).removeFilter(self._redact)

    def site(self, runner: web.AppRunner, host: str, port: int) -> web.TCPSite:
        return _Site(runner, self, host, port, self._handler_args())

    def _handler_args(self) -> dict[str, Any]:
        limits = self.limits
        return {"keepalive_timeout": limits.keepalive_timeout + limits.header_timeout,
                "max_line_size": limits.max_header_size, "max_field_size": limits.max_header_size,
                "max_headers": MAX_HEADERS, "lingering_time": 1.0}

    # ---- connections ------------------------------------------------------------------------------------
    def _protocol(self, server: web.Server, loop: asyncio.AbstractEventLoop,
                  args: dict[str, Any]) -> asyncio.Protocol:
        # past the limit, a connection takes the place of one that holds it without using it; when none does (a
        # burst of new connections, their requests not read yet) more are let in while descriptors last
        if (len(self._open) >= self.max_connections and not self._evict()
                and len(self._open) >= self.hard_max):
            self._reject("connections")
            return _Refused(self, self.health)
        return _Connection(server, self, loop=loop, access_log=None, **args)

    def _evict(self) -> bool:
        """Make room: drop a connection that holds a place without using it -- an idle keep-alive first, then
        one whose request is still coming (a slow client: a real one sends its line and headers at once), the
        one that started the longest ago, then one that has not sent a byte for :attr:`evict_after` seconds.  A
        connection whose request has arrived or is being handled is never dropped."""
        now = asyncio.get_running_loop().time()
        victim: _Connection | None = None
        rank: tuple[int, float] | None = None
        for conn in self._open:
            if conn.busy or conn.arrived:
                continue
            if conn.partial:
                kind = 1
            elif conn.requests:
                kind = 0  # an idle keep-alive
            elif now - conn.since >= self.evict_after:
                kind = 2  # connected, silent
            else:
                continue  # just connected: its request is on its way
            mine = (kind, conn.since)
            if rank is None or mine < rank:
                victim, rank = conn, mine
        if victim is None:
            return False
        victim.drop("evicted")
        return True

    def _opened(self, conn: _Connection) -> None:
        self._open[conn] = None

    def _closed(self, conn: _Connection) -> None:
        self._open.pop(conn, None)

    def _dropped(self, conn: _Connection, reason: str | None) -> None:
        self._open.pop(conn, None)
        if reason is not None:
            self._reject(reason)

    @property
    def connections(self) -> int:
        return len(self._open)

    # ---- refusals ---------------------------------------------------------------------------------------
    def _reject(self, reason: str) -> None:
        self.rejected[reason] += 1
        now = time.monotonic()
        last, since = self._summary.get(reason, (-_SUMMARY_INTERVAL, 0))
        since += 1
        if now - last >= _SUMMARY_INTERVAL:
            log.warning("http: %d request(s) or connection(s) refused in the last minute: %s", since,
                        _WHY[reason])
            self._summary[reason] = (now, 0)
        else:
            self._summary[reason] = (last, since)

    # ---- the middleware ---------------------------------------------------------------------------------
    async def install(self, app: web.Application) -> None:
        """``on_startup``: :meth:`middleware` goes last, inside every other middleware (the API's and the
        pages' render its refusals, as JSON or as a page)."""
        app.middlewares.append(self.middleware)

    async def finish(self, timeout: float = FINISH_WAIT) -> int:
        """At shutdown, after aiohttp's own: end the requests still being handled whose connection is gone
        (aiohttp lets such a handler run on, and forgets it when the connection closes; one still waiting at
        exit is destroyed pending).  How many had to be cancelled."""
        left = [t for t in self._handling if not t.done() and t is not asyncio.current_task()]
        for task in left:
            task.cancel()
        if left:
            await asyncio.wait(left, timeout=timeout)
        return len(left)

    @web.middleware
    async def middleware(self, request: web.Request,
                         handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - aiohttp always handles a request in a task
            return await self._handle(request, handler)
        self._handling.add(task)
        try:
            return await self._handle(request, handler)
        finally:
            self._handling.discard(task)

    async def _handle(self, request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        conn = request.protocol
        if isinstance(conn, _Connection):
            conn.begin()
        if request.path in UNLIMITED_PATHS:
            return await handler(request)
        if request.body_exists and not request.content_type.startswith("multipart/"):
            try:  # the body whole, before any work: a slow or huge one holds no API slot
                async with asyncio.timeout(self.limits.header_timeout):
                    await request.read()
            except TimeoutError:
                self._reject("timeout")
                raise Refusal(408, "the request body did not arrive in time", close=True) from None
            except web.HTTPRequestEntityTooLarge:
                self._reject("body_too_large")
                raise Refusal(413, f"the body is larger than {self.limits.max_body_size} bytes", close=True) from None
        async with self.api.slot() as admitted:
            if not admitted:
                self._reject("busy")
                raise Refusal(503, "busy: too many API requests at once, retry in a moment", {"Retry-After": "1"})
            try:
                return await handler(request)
            except web.HTTPRequestEntityTooLarge:  # a multipart body read by the handler
                self._reject("body_too_large")
                raise Refusal(413, f"the body is larger than {self.limits.max_body_size} bytes",
                              close=True) from None


class Refusal(web.HTTPError):
    """A refusal of the front with its one-line reason (``message``): the API answers it as JSON, the pages as
    a page.  ``close``: the connection is closed after it (what is left of the request is not read)."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, *,
                 close: bool = False) -> None:
        self.status_code = status
        self.message = message
        self.close = close
        super().__init__(headers=headers, text=message)
        if close:
            self.force_close()


_WHY = {
    "connections": "too many connections and none idle (http.max_connections)",
    "evicted": "idle connections closed to make room for new ones (http.max_connections)",
    "timeout": "requests that did not arrive in time (http.header_timeout) or answers not read",
    "header_too_large": "request lines or headers too large (http.max_header_size)",
    "body_too_large": "bodies too large (http.max_body_size)",
    "bad_request": "malformed HTTP requests",
    "busy": "API requests over http.api_concurrency + http.api_queue (503)",
}


class _FrontCollector(Collector):
    def __init__(self, front: HttpFront) -> None:
        self.front = front

    def collect(self) -> Iterator[Metric]:
        rejected = CounterMetricFamily("onechance_http_rejected", "HTTP connections and requests refused or cut by "
                                       "the front, by reason", labels=["reason"])
        for reason in REASONS:
            rejected.add_metric([reason], self.front.rejected[reason])
        yield rejected
        yield GaugeMetricFamily("onechance_http_connections", "HTTP connections open now",
                                value=self.front.connections)
