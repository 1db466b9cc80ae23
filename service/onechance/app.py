"""The daemon's lifecycle: start, serve, drain.  Everything it runs is built by :mod:`onechance.compose`.

:meth:`App.run` starts the services (the store writer upgrades the schema and drains its spool; the demo PBX
listens), loads the callback worklist into each tracker, starts each AMI link and its consumer, serves HTTP,
and waits for :meth:`App.request_stop` (SIGTERM/SIGINT).  Then it drains: the links log off, each consumer
handles what it already received and closes the calls in progress as uncertain, the services flush (the store
writes or spools every journey), and the HTTP site closes.  Every long-running task is a task of the one
:class:`asyncio.TaskGroup`; the drain is bounded by ``daemon.shutdown_timeout`` and a second signal cancels
everything at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

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

    # ---- control ---------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Begin the graceful shutdown (idempotent)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self.status.stopping or self._stop.is_set()

    # ---- running ---------------------------------------------------------------------------------------
    async def run(self) -> int:
        runner: web.AppRunner | None = None
        code = 0
        try:
            runner = await self._start_http()  # first: a port that cannot be had is a config error, nothing runs
            async with asyncio.TaskGroup() as tg:
                # services first (the store upgrades its schema, the demo PBX listens), then the worklist,
                # then the PBXs
                service_tasks = [tg.create_task(s.run(), name=f"service-{type(s).__name__}") for s in self.services]
                await self._load_lost_calls(tg)
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
        self.status.begin_stop()
        timeout = self.shutdown_timeout
        log.info("shutting down: finishing pending work (at most %g s)", timeout)
        try:
            async with asyncio.timeout(timeout):
                await _gather_logged("stopping an AMI link", *(p.link.stop() for p in self.pipelines
                                                                if p.link is not None))
                await _gather_logged("an AMI link", *link_tasks)
                for p in self.pipelines:
                    if p.link is not None:
                        p.link.stop_item()  # after whatever the link still holds back
                    else:
                        await p.queue.put(LinkStopped())
                await _gather_logged("a consumer", *consumer_tasks)
                for service in reversed(self.services):  # the last started first: the store writer after those
                    await service.aclose()                # that write through it (alerts, worklist)
                await _gather_logged("a service", *service_tasks)
            return 0
        except TimeoutError:
            log.error("shutdown took longer than %g s: stopping anyway", timeout)
            for task in (*link_tasks, *consumer_tasks, *service_tasks):
                task.cancel()
            return 1


async def _released(front: HttpFront) -> None:
    front.release()


async def _gather_logged(what: str, *aws: object) -> None:
    """Await everything; log (never raise) what failed, so one failure does not hide the others' work."""
    results = await asyncio.gather(*aws, return_exceptions=True)  # type: ignore[call-overload]
    for result in results:
        if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
            log.error("shutdown: %s failed: %s", what, result, exc_info=result)


async def serve(app: App) -> int:
    """Run ``app`` with SIGTERM/SIGINT handlers: the first starts the drain, a second exits at once (130)."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    forced = False

    def on_signal(sig: signal.Signals) -> None:
        nonlocal forced
        if app.stopping:
            log.warning("%s again: exiting now", sig.name)
            forced = True
            if main is not None:
                main.cancel()
            return
        log.info("%s received: shutting down (send it again to exit at once)", sig.name)
        app.request_stop()

    installed = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on this platform / thread
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    try:
        return await app.run()
    except asyncio.CancelledError:
        if forced:
            return 130
        raise
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
