"""The composition root: ``onechance run`` builds everything here and nowhere else.

::

    settings ─┬─ per PBX: AmiLink ──queue──> PbxPipeline ──> JourneyTracker
              │                                   └──> sinks: RecentCalls, CallMetrics, extra sinks
              ├─ CollectorRegistry (CallMetrics, LiveCollector, build info)
              ├─ aiohttp site: /healthz /readyz /metrics /api/*
              └─ demo PBX (a fake AMI server) when no Asterisk is configured

Everything runs in one :class:`asyncio.TaskGroup`.  :meth:`App.request_stop` (SIGTERM/SIGINT) starts a
graceful drain: links log off, each consumer handles what is already queued and closes the calls in
progress as uncertain, extra services drain (``aclose``), then the HTTP site closes.  The drain is bounded
by ``daemon.shutdown_timeout``; a second signal cancels everything at once.

Plugging a component in (the SQL store writer, an alerts outbox): pass ``sinks=[...]`` (objects with a
synchronous, non-blocking ``handle(update)``; :class:`~onechance.sinks.SubmitSink` adapts a
``submit(journey_dict)`` writer) and ``services=[...]`` (objects with ``async run()`` -- started in the task
group -- and ``async aclose()`` -- awaited once every consumer has stopped, to flush pending work).
A store-backed :class:`~onechance.sinks.CallQuery` replaces the in-memory one with ``call_query=``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
import time
from collections.abc import Sequence
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from . import __version__
from .ami.link import AmiLink, LinkStopped
from .config import AmiSettings, ConfigError, Settings
from .demo import DemoPbx
from .http import make_app
from .journey import Journey, JourneyTracker
from .metrics import CallMetrics, LiveCollector, build_info
from .pipeline import PbxPipeline
from .sinks import CallQuery, RecentCalls, Sink

__all__ = ["App", "Service", "run_daemon"]

log = logging.getLogger(__name__)

HTTP_SHUTDOWN_TIMEOUT = 1.0  # seconds a request still in flight at shutdown may take (after the drain)


class Service(Protocol):
    """A long-running component with pending work to finish at shutdown (e.g. the store writer)."""

    async def run(self) -> None: ...

    async def aclose(self) -> None: ...


class LostCallsLoader(Protocol):
    """Lost calls not yet recovered for a PBX (from the store), to watch for their callers again."""

    async def __call__(self, pbx: str) -> Sequence[Journey]: ...


class App:
    """The daemon: build with settings, ``await run()``; ``request_stop()`` makes ``run()`` return 0."""

    def __init__(
        self,
        settings: Settings,
        *,
        sinks: Sequence[Sink] = (),
        services: Sequence[Service] = (),
        call_query: CallQuery | None = None,
        registry: CollectorRegistry | None = None,
        lost_calls: LostCallsLoader | None = None,
    ) -> None:
        self.settings = settings
        self.registry = registry if registry is not None else CollectorRegistry()
        self.recent = RecentCalls(settings.http.recent_calls)
        self.call_query: CallQuery = call_query if call_query is not None else self.recent
        self.lost_calls = lost_calls
        self.metrics = CallMetrics(self.registry, settings.tracker_settings(), settings.service_level_for)
        self.registry.register(LiveCollector(lambda: self.pipelines))
        build_info(self.registry)
        self.extra_sinks = list(sinks)
        self.services = list(services)
        self.pipelines: list[PbxPipeline] = []
        self.demo: DemoPbx | None = None
        self.http_port: int | None = None
        self.started = asyncio.Event()  # HTTP listening, links started
        self.stopping = False
        self._stop = asyncio.Event()
        self._secrets: dict[str, str] = {}
        # resolve secrets now: a missing secret file is a configuration error, reported before starting
        for pbx in settings.pbxs():
            if pbx.host:
                secret = pbx.resolved_secret()
                if not secret:
                    raise ConfigError(f"PBX {pbx.name!r}: set ami.secret or ami.secret_file "
                                      f"(ONECHANCE_AMI__SECRET or ONECHANCE_AMI__SECRET_FILE)")
                self._secrets[pbx.name] = secret

    # ---- control ---------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Begin the graceful shutdown (idempotent)."""
        self._stop.set()

    @property
    def ready(self) -> bool:
        return bool(self.pipelines) and not self.stopping and all(p.ready for p in self.pipelines)

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        detail: dict[str, Any] = {"pbx": {p.name: p.status() for p in self.pipelines}}
        if self.stopping:
            detail["reason"] = "shutting down"
        elif not self.ready:
            reasons = [f"{p.name}: {p.status().get('error')}" for p in self.pipelines if not p.ready]
            detail["reason"] = "; ".join(reasons) or "starting"
        return self.ready, detail

    def live(self) -> dict[str, Any]:
        calls: list[dict[str, Any]] = []
        queues: dict[str, dict[str, Any]] = {}
        for p in self.pipelines:
            calls.extend(j.to_dict() for j in p.tracker.live())
            now = p.pbx_now()
            queues[p.name] = {
                q: {"callers": len(joins), "oldest_wait_seconds": round(max(0.0, now - min(joins)), 3)}
                for q, joins in sorted(p.tracker.waiting_by_queue().items())
            }
        calls.sort(key=lambda c: (c.get("started_at") or 0.0, c.get("call_id") or ""))
        return {"calls": calls, "queues": queues}

    # ---- building --------------------------------------------------------------------------------------
    async def _start_demo(self) -> list[AmiSettings]:
        base = self.settings.ami
        demo_cfg = self.settings.demo
        secret = secrets.token_hex(16)
        try:
            self.demo = DemoPbx(demo_cfg.capture, speed=demo_cfg.speed, loop=demo_cfg.loop, username="demo",
                                secret=secret)
        except OSError as exc:
            raise ConfigError(f"demo.capture {demo_cfg.capture}: {exc.strerror or exc}") from None
        self.demo.start_at_present()
        port = await self.demo.start()
        name = base.name if base.name != "default" else "demo"
        self._secrets[name] = secret
        log.info("no Asterisk configured (ami.host): following the embedded demo PBX on 127.0.0.1:%d, playing "
                 "%s at %gx%s", port, demo_cfg.capture or "the bundled capture", demo_cfg.speed,
                 " in a loop" if demo_cfg.loop else "")
        return [base.model_copy(update={"name": name, "host": "127.0.0.1", "port": port, "username": "demo",
                                        "secret": SecretStr(secret), "secret_file": None})]

    def _build_pipelines(self, pbxs: list[AmiSettings]) -> None:
        sinks: list[Sink] = [self.recent, self.metrics, *self.extra_sinks]
        tracker_settings = self.settings.tracker_settings()
        for pbx in pbxs:
            link = AmiLink(pbx, secret=self._secrets[pbx.name])
            tracker = JourneyTracker(tracker_settings, pbx=pbx.name)
            self.pipelines.append(PbxPipeline(tracker, link.queue, sinks, link=link, name=pbx.name,
                                              tick_interval=self.settings.daemon.tick_interval,
                                              queues=self.settings.queues.keys()))

    async def _load_lost_calls(self) -> None:
        """Put the callback worklist back on each tracker's watch list, so a caller lost before a restart
        is still recovered when the same number is answered.  A store that is down only costs that."""
        if self.lost_calls is None:
            return
        for p in self.pipelines:
            try:
                async with asyncio.timeout(10):
                    lost = await self.lost_calls(p.name)
            except Exception as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                log.warning("%s: could not load the callback worklist (lost calls are still recorded, but "
                            "those from before this start will not be marked recovered): %s", p.name, reason)
                continue
            for j in lost:
                p.tracker.remember_lost(j)
            if lost:
                log.info("%s: watching %d lost caller(s) from the callback worklist", p.name, len(lost))

    async def _start_http(self) -> web.AppRunner:
        token = self.settings.http.token.get_secret_value() if self.settings.http.token else None
        http_app = make_app(registry=self.registry, calls=self.call_query, live=self.live,
                            readiness=self.readiness, token=token, version=__version__)
        # at shutdown, requests still in flight get HTTP_SHUTDOWN_TIMEOUT, not aiohttp's 60 s (per stage)
        runner = web.AppRunner(http_app, access_log=None, handle_signals=False,
                               shutdown_timeout=HTTP_SHUTDOWN_TIMEOUT)
        await runner.setup()
        site = web.TCPSite(runner, self.settings.http.host, self.settings.http.port)
        try:
            await site.start()
        except OSError as exc:  # address in use, not an address of this machine, a privileged port
            await runner.cleanup()
            raise ConfigError(f"http.listen {self.settings.http.listen}: cannot listen there: "
                              f"{exc.strerror or exc}") from None
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        self.http_port = sockets[0].getsockname()[1] if sockets else self.settings.http.port
        log.info("HTTP API and metrics on http://%s:%d (/metrics, /api/calls, /api/live, /readyz)",
                 self.settings.http.host, self.http_port)
        return runner

    # ---- running ---------------------------------------------------------------------------------------
    async def run(self) -> int:
        """Run until :meth:`request_stop`; returns the exit code (0 after a complete drain)."""
        pbxs = self.settings.pbxs()
        runner: web.AppRunner | None = None
        code = 0
        try:
            if self.settings.demo_mode():
                pbxs = await self._start_demo()
            self._build_pipelines(pbxs)
            runner = await self._start_http()
            async with asyncio.TaskGroup() as tg:
                # services first (the store upgrades its schema), then the worklist, then the PBXs
                service_tasks = [tg.create_task(s.run(), name=f"service-{type(s).__name__}") for s in self.services]
                await self._load_lost_calls()
                link_tasks = [tg.create_task(p.link.run(), name=f"ami-link-{p.name}")
                              for p in self.pipelines if p.link is not None]
                consumer_tasks = [tg.create_task(p.run(), name=f"consumer-{p.name}") for p in self.pipelines]
                self.started.set()
                await self._stop.wait()
                code = await self._drain(link_tasks, consumer_tasks, service_tasks)
        finally:
            self.stopping = True
            if runner is not None:
                await runner.cleanup()
            if self.demo is not None:
                await self.demo.stop()
        log.info("onechance stopped")
        return code

    async def _drain(self, link_tasks: list[asyncio.Task[None]], consumer_tasks: list[asyncio.Task[None]],
                     service_tasks: list[asyncio.Task[None]]) -> int:
        self.stopping = True
        timeout = self.settings.daemon.shutdown_timeout
        log.info("shutting down: finishing pending work (at most %g s)", timeout)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(p.link.stop() for p in self.pipelines if p.link is not None))
                await asyncio.gather(*link_tasks, return_exceptions=True)
                for p in self.pipelines:
                    if p.link is not None:
                        p.link.stop_item()  # after whatever the link still holds back
                    else:
                        await p.queue.put(LinkStopped())
                await asyncio.gather(*consumer_tasks, return_exceptions=True)
                for service in self.services:
                    await service.aclose()
                await asyncio.gather(*service_tasks, return_exceptions=True)
            return 0
        except TimeoutError:
            log.error("shutdown took longer than %g s: stopping anyway", timeout)
            for task in (*link_tasks, *consumer_tasks, *service_tasks):
                task.cancel()
            return 1


async def _serve(settings: Settings) -> int:
    from .sinks import MergedCallQuery, SubmitSink
    from .store import JourneyWriter, StoreCallQuery, engine_from_settings, load_worklist

    registry = CollectorRegistry()
    engine = engine_from_settings(settings)
    writer = JourneyWriter.from_settings(settings, engine, registry)
    recovery_window = settings.journey.recovery_window

    async def lost_calls(pbx: str) -> Sequence[Journey]:
        await writer.start()  # idempotent: the service task may not have started it yet
        if not await writer.wait_ready(timeout=5):
            raise RuntimeError("the database is not reachable yet")
        return await load_worklist(engine, since=time.time() - recovery_window, pbx=pbx)

    app = App(settings, registry=registry, sinks=[SubmitSink(writer.submit)], services=[writer],
              lost_calls=lost_calls)
    app.call_query = MergedCallQuery(StoreCallQuery(engine), app.recent)
    try:
        return await _serve_app(app)
    finally:
        await engine.dispose()


async def _serve_app(app: App) -> int:
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    forced = False

    def on_signal(sig: signal.Signals) -> None:
        nonlocal forced
        if app.stopping or app._stop.is_set():
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


def run_daemon(settings: Settings) -> int:
    """``onechance run``: serve until SIGTERM/SIGINT; the process exit code."""
    return asyncio.run(_serve(settings))
