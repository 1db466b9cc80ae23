"""The daemon's lifecycle: start, serve, drain.  Everything it runs is built by :mod:`onechance.compose`.

:meth:`App.run` starts the services (the store writer upgrades the schema and drains its spool; the demo PBX
listens), loads the callback worklist into each tracker, starts each AMI link and its consumer, serves HTTP,
and waits for :meth:`App.request_stop` (SIGTERM, SIGINT, SIGHUP).  Then it drains: the links log off, each
consumer handles what it already received and closes the calls in progress as uncertain, the services flush (the
store writes or spools every journey), and the HTTP site closes.  Every long-running task is a task of the one
:class:`asyncio.TaskGroup`.  The drain is bounded by ``daemon.shutdown_timeout``: near its end (and at once after
a second signal) it is hurried, the consumers cut short and the store spooling what the database has not taken;
the exit code says whether every call was kept (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeGuard

from aiohttp import web

from .ami.items import LinkStopped
from .config import ConfigError
from .http_front import FRONT_KEY, HttpFront
from .journey import LostCall
from .pipeline import PbxPipeline
from .status import DaemonStatus

__all__ = ["App", "LostCallsLoader", "Service", "serve"]

log = logging.getLogger(__name__)

HTTP_SHUTDOWN_TIMEOUT = 1.0  # seconds a request still in flight at shutdown may take (after the drain)
CANCEL_WAIT = 1.0  # seconds a cancelled task is waited for at shutdown
HURRY_GRACE = 0.2  # seconds a service is given to close when the stop is hurried
SPOOL_RESERVE = 2.0  # the last seconds of the drain (at most a quarter of it): the store spools what is left
WORKLIST_WAIT = 15.0  # seconds the links wait at start for the callback worklist to load from the store
WORKLIST_RETRY = 30.0  # seconds between later tries when it could not be loaded


class Service(Protocol):
    """A long-running component with pending work to finish at shutdown (e.g. the store writer)."""

    async def run(self) -> None: ...

    async def aclose(self) -> None: ...


class LostCallsLoader(Protocol):
    """Lost calls not yet recovered for a PBX (from the store), to watch for their callers again."""

    async def __call__(self, pbx: str) -> Sequence[LostCall]: ...


class App:
    """The daemon: ``await run()`` until ``request_stop()``; returns the exit code (0 after a complete drain)."""

    def __init__(
        self,
        *,
        pipelines: Sequence[PbxPipeline],
        http: web.Application,
        listen: tuple[str, int],
        status: DaemonStatus,
        services: Sequence[Service] = (),
        lost_calls: LostCallsLoader | None = None,
        shutdown_timeout: float = 10.0,
        closers: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self.pipelines = list(pipelines)
        self.http = http
        self.listen = listen
        self.status = status
        self.services = list(services)
        self.lost_calls = lost_calls
        self.shutdown_timeout = shutdown_timeout
        self.closers = list(closers)  # awaited last (e.g. the database engine's dispose)
        self.http_port: int | None = None
        self.started = asyncio.Event()  # HTTP listening, links started
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()  # stop waiting for anything slow: spool what is not stored
        self._forced = False  # a second signal
        self.unsaved = 0  # after the drain: calls and records no service could keep (the exit code is then 1)

    # ---- control ---------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Begin the graceful shutdown (idempotent)."""
        self._stop.set()

    def force(self) -> None:
        """A second signal: stop, and hurry (straight to the spool); the exit code is then 130."""
        self._forced = True
        self._stop.set()
        self._hurry_now("asked to hurry")

    def in_memory(self) -> int:
        """Journeys and records the services hold in memory only (what exiting now would lose)."""
        return sum(int(getattr(s, "in_memory", 0)) for s in self.services)

    @property
    def stopping(self) -> bool:
        return self.status.stopping or self._stop.is_set()

    # ---- running ---------------------------------------------------------------------------------------
    async def run(self) -> int:
        runner: web.AppRunner | None = None
        code = 0
        try:
            for service in self.services:  # first what must be had before anything runs (the store's spool)
                prepare = getattr(service, "prepare", None)
                if callable(prepare):
                    prepare()
            runner = await self._start_http()  # a port that cannot be had is a config error, nothing runs
            async with asyncio.TaskGroup() as tg:
                # services first (the store upgrades its schema, the demo PBX listens), then the worklist,
                # then the PBXs
                service_tasks = [tg.create_task(s.run(), name=f"service-{type(s).__name__}") for s in self.services]
                await self._unless_stopped(self._load_lost_calls(tg))
                link_tasks = [tg.create_task(p.link.run(), name=f"ami-link-{p.name}")
                              for p in self.pipelines if p.link is not None]
                consumer_tasks = [tg.create_task(p.run(), name=f"consumer-{p.name}") for p in self.pipelines]
                self.started.set()
                await self._stop.wait()
                code = await self._drain(link_tasks, consumer_tasks, service_tasks)
        finally:
            self.status.begin_stop()
            if runner is not None:
                await runner.cleanup()
            for close in self.closers:
                try:
                    await close()
                except Exception as exc:
                    log.error("shutdown: closing failed: %s", exc, exc_info=exc)
        log.info("onechance stopped")
        return code

    async def _unless_stopped(self, aw: Awaitable[None]) -> None:
        """Await ``aw``, or give it up when a stop is asked for meanwhile (a SIGTERM while starting)."""
        task = asyncio.ensure_future(aw)
        stop = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not task.done():
                await _cancel(task)
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    async def _load_lost_calls(self, tg: asyncio.TaskGroup) -> None:
        """Put the callback worklist back on each tracker's watch list, so a caller lost before a restart
        is still recovered when the same number is answered.  The links wait for it at most
        ``WORKLIST_WAIT`` seconds; a store that is down then costs only that, and the load is retried in the
        background until it succeeds."""
        if self.lost_calls is None:
            return
        pending = await self._load_worklist(self.pipelines, WORKLIST_WAIT)
        if pending:
            tg.create_task(self._retry_worklist(pending), name="worklist-loader")

    async def _load_worklist(self, pipelines: Sequence[PbxPipeline], timeout: float) -> list[PbxPipeline]:
        """Load the worklist into each pipeline's tracker; the pipelines it could not be loaded for."""
        assert self.lost_calls is not None
        pending = []
        for p in pipelines:
            try:
                async with asyncio.timeout(timeout):
                    lost = await self.lost_calls(p.name)
            except Exception as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                log.warning("%s: the callback worklist is not loaded yet (lost calls are still recorded, but those "
                            "from before this start are only watched for once it is): %s", p.name, reason)
                pending.append(p)
                continue
            for entry in lost:
                p.tracker.remember_lost(entry)
            if lost:
                log.info("%s: watching %d lost caller(s) from the callback worklist", p.name, len(lost))
        return pending

    async def _retry_worklist(self, pending: list[PbxPipeline]) -> None:
        while pending and not self.stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), WORKLIST_RETRY)
            if self.stopping:
                return
            pending = await self._load_worklist(pending, WORKLIST_WAIT)

    async def _start_http(self) -> web.AppRunner:
        # at shutdown, requests still in flight get HTTP_SHUTDOWN_TIMEOUT, not aiohttp's 60 s (per stage)
        host, port = self.listen
        front = self.http.get(FRONT_KEY)  # the bounded front (onechance.http_front) that make_app sets up
        if front is not None:
            front.check_exposure(host)
            runner = front.runner(self.http, shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT)
            self.http.on_cleanup.append(lambda _app: _released(front))
        else:
            runner = web.AppRunner(self.http, access_log=None, handle_signals=False,
                                   shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT)
        await runner.setup()
        site = front.site(runner, host, port) if front is not None else web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:  # address in use, not an address of this machine, a privileged port
            await runner.cleanup()
            raise ConfigError(f"http.listen {host}:{port}: cannot listen there: {exc.strerror or exc}") from None
        addresses = runner.addresses
        self.http_port = addresses[0][1] if addresses else port
        base = f"http://{host if host not in ('0.0.0.0', '::') else '127.0.0.1'}:{self.http_port}"
        log.info("open %s/callbacks (callers to call back), %s/api/live (calls now), %s/metrics, %s/api/calls",
                 base, base, base, base)
        return runner

    async def _drain(self, link_tasks: list[asyncio.Task[None]], consumer_tasks: list[asyncio.Task[None]],
                     service_tasks: list[asyncio.Task[None]]) -> int:
        """Stop in order, within ``shutdown_timeout``: the links log off, the consumers handle what they received
        and close the calls in progress, the services close (the store writer last).  The store is hurried
        ``SPOOL_RESERVE`` seconds before the end (what the database has not taken by then goes to the spool), and
        the consumers earlier still; a second signal hurries everything at once.  The exit code: 0 when every
        call was stored or spooled, 130 after a second signal, 1 when some could not be kept (the store says
        exactly how many)."""
        self.status.begin_stop()
        loop = asyncio.get_running_loop()
        timeout = self.shutdown_timeout
        began = loop.time()
        deadline = began + timeout
        reserve = min(SPOOL_RESERVE, timeout / 4)
        log.info("shutting down: finishing pending work (at most %g s)", timeout)
        timer = loop.call_at(deadline - reserve, self._hurry_now, "the shutdown timeout is near")
        try:
            # 1. the links log off (each within its own 2 s) and end
            stops = [loop.create_task(p.link.stop(), name=f"ami-logoff-{p.name}")
                     for p in self.pipelines if p.link is not None]
            if not await self._until([*stops, *link_tasks], deadline - 2 * reserve):
                await _cancel(*stops, *link_tasks)
            _log_failures("stopping an AMI link", stops)
            _log_failures("an AMI link", link_tasks)
            # 2. the consumers handle what they already received, then close the calls in progress
            for p in self.pipelines:
                if p.link is not None:
                    p.link.stop_item()  # after whatever the link still holds back
                else:
                    p.queue.put_nowait(LinkStopped())
            if not await self._until(consumer_tasks, deadline - 2 * reserve):
                await _cancel(*consumer_tasks)
                for p in self.pipelines:  # what they had not handled is left; the calls in progress are closed now
                    left = p.queue.qsize()
                    if left:
                        log.warning("%s: %d AMI events received but not handled before the stop (their calls are "
                                    "closed as uncertain)", p.name, left)
                    p.handle(LinkStopped())
            _log_failures("a consumer", consumer_tasks)
            # 3. the services, the last started first: the store writer after those that write through it
            for service, task in reversed(list(zip(self.services, service_tasks, strict=True))):
                closing = loop.create_task(service.aclose(), name=f"close-{type(service).__name__}")
                if _hurriable(service):
                    await asyncio.wait({closing})  # it hurries itself at the timer (or a second signal)
                    _log_failures(f"closing {type(service).__name__}", [closing])
                    continue
                if self._hurry.is_set():  # a moment all the same: most close at once
                    await asyncio.wait({closing}, timeout=HURRY_GRACE)
                if not closing.done() and not await self._until([closing], deadline - reserve):
                    log.warning("shutdown: %s did not finish in time: stopped", type(service).__name__)
                    await _cancel(closing, task)
                _log_failures(f"closing {type(service).__name__}", [closing])
            if not await self._until(service_tasks, deadline):
                await _cancel(*service_tasks)
            _log_failures("a service", service_tasks)
        finally:
            timer.cancel()
        took = loop.time() - began
        if took > timeout:
            log.warning("shutdown took %.1f s, more than daemon.shutdown_timeout (%g s)", took, timeout)
        self.unsaved = sum(int(getattr(s, "unsaved", 0)) for s in self.services)
        if self.unsaved:
            return 1
        return 130 if self._forced else 0

    def _hurry_now(self, why: str) -> None:
        if not self._hurry.is_set():
            log.warning("shutdown: %s: what the database has not taken yet goes to the spool", why)
        self._hurry.set()
        for service in self.services:
            if _hurriable(service):
                service.hurry()

    async def _until(self, tasks: Sequence[asyncio.Future[Any]], until: float) -> bool:
        """Wait for every task until ``until`` (loop time) or a hurry; True when they all ended."""
        loop = asyncio.get_running_loop()
        pending: set[asyncio.Future[Any]] = {t for t in tasks if not t.done()}
        if not pending:
            return True
        hurry = loop.create_task(self._hurry.wait())
        try:
            while pending and not self._hurry.is_set():
                remaining = until - loop.time()
                if remaining <= 0:
                    break
                _done, pending_now = await asyncio.wait({*pending, hurry}, timeout=remaining,
                                                        return_when=asyncio.FIRST_COMPLETED)
                pending = {t for t in pending_now if t is not hurry}
        finally:
            hurry.cancel()
        return not pending


class _Hurriable(Protocol):
    def hurry(self) -> None: ...


def _hurriable(service: object) -> TypeGuard[_Hurriable]:
    return callable(getattr(service, "hurry", None))


async def _cancel(*tasks: asyncio.Future[Any]) -> None:
    """Cancel these tasks and wait for them to end, at most ``CANCEL_WAIT`` seconds (a task that swallows its
    cancellation must not hold the stop up: the store still has to close)."""
    for task in tasks:
        task.cancel()
    pending = [t for t in tasks if not t.done()]
    if pending:
        _done, late = await asyncio.wait(pending, timeout=CANCEL_WAIT)
        for task in late:
            name = task.get_name() if isinstance(task, asyncio.Task) else "a task"
            log.warning("shutdown: %s goes on after being cancelled; not waiting for it", name)


def _log_failures(what: str, tasks: Sequence[asyncio.Future[Any]]) -> None:
    """Log (never raise) what failed, so one failure does not hide the others' work."""
    for task in tasks:
        if task.done() and not task.cancelled():
            exc = task.exception()
            if exc is not None:
                log.error("shutdown: %s failed: %s", what, exc, exc_info=exc)


async def _released(front: HttpFront) -> None:
    front.release()
    cut = await front.finish()
    if cut:
        log.info("shutdown: %d HTTP request(s) of closed connections cut", cut)


async def serve(app: App) -> int:
    """Run ``app`` with SIGTERM, SIGINT and SIGHUP handlers: the first starts the graceful stop; a second hurries
    it (what the database has not taken goes to the spool at once; 130); a third exits at once (what is still in
    memory then is lost, and counted)."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    signals = 0

    def on_signal(sig: signal.Signals) -> None:
        nonlocal signals
        signals += 1
        if signals == 1 and not app.stopping:
            log.info("%s received: shutting down (send it again to hurry: straight to the spool)", sig.name)
            app.request_stop()
        elif signals <= 2:
            app.force()
            log.warning("%s again: hurrying the stop (send it again to exit at once, losing what is not "
                        "spooled yet)", sig.name)
        else:
            log.warning("%s a third time: exiting now", sig.name)
            if main is not None:
                main.cancel()

    installed = []
    # SIGHUP (the terminal closed, or `kill -HUP`) stops it gracefully too: nothing is reloaded in place
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on this platform / thread
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    try:
        return await app.run()
    except asyncio.CancelledError:
        if signals >= 3:
            left = app.in_memory()
            if left:
                log.error("exited at once: %d journeys and records still in memory are LOST", left)
                return 1
            return 130
        raise
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
