"""The composition root: :func:`build_app` builds every component of ``onechance run`` from the settings.

::

    settings ─┬─ CallPolicy (one for every tracker, the metrics, the reports)
              ├─ store: engine, JourneyWriter (a service), StoreSink, StoreCallQuery
              ├─ per PBX: AmiLink ──queue──> PbxPipeline ──> JourneyTracker ──> records
              │                                   └──> sinks: RecentCalls, CallMetrics, StoreSink
              ├─ CollectorRegistry: CallMetrics, LiveCollector, build info, the store's metrics
              ├─ DaemonStatus (readiness, live calls) and the aiohttp application (API, /callbacks page)
              └─ App: the lifecycle only (start, serve, drain)

Everything is passed through constructors; nothing is patched afterwards and there is no global state.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from prometheus_client import CollectorRegistry, disable_created_metrics
from pydantic import SecretStr

from . import __version__
from .alerts.model import Channel
from .ami.link import AmiLink
from .api_queues import DayFigures
from .app import App, Service, serve
from .callback_page import add_callback_page, originate_through
from .config import AmiSettings, ChannelSettings, ConfigError, Settings
from .demo_receiver import DemoReceiver
from .errors import RateLimitedLog
from .gc_pace import GcPace
from .http import make_app
from .http_front import HttpLimits
from .journey import CallPolicy, JourneyTracker, LostCall
from .metrics import CallMetrics, LiveCollector, build_info
from .pipeline import PbxPipeline, tracker_error_hook
from .queues import QueueCatalog
from .sinks import CallLog, CallQuery, MergedCallQuery, RecentCalls, Sink
from .status import DaemonStatus

__all__ = ["build_app", "run_daemon"]

log = logging.getLogger("onechance")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Pbx:
    settings: AmiSettings
    secret: str


def _secrets(settings: Settings) -> list[_Pbx]:
    """Each PBX with its secret (none, or a missing secret file, is a configuration error, before starting)."""
    return [_Pbx(pbx, pbx.required_secret()) for pbx in settings.followed_pbxs()]


class _DemoService:
    """The embedded demo PBX as a service of the daemon (listening before the links connect)."""

    def __init__(self, settings: Settings, sock: socket.socket, secret: str) -> None:
        from .demo import DemoPbx

        demo = settings.demo
        if demo.capture is not None:
            try:
                self.pbx = DemoPbx(demo.capture, speed=demo.speed, loop=demo.loop, username="demo", secret=secret,
                                   sock=sock)
            except OSError as exc:
                sock.close()
                raise ConfigError(f"demo.capture {demo.capture}: {exc.strerror or exc}") from None
            self.pbx.start_at_present()
        else:
            from .demo import SimSource
            from .sim import RateProfile, SimConfig

            centre = SimConfig.default(seed=demo.seed, rate=RateProfile(per_hour=(demo.calls_per_hour,) * 24))
            self.pbx = DemoPbx(source=SimSource(centre), speed=demo.speed, username="demo", secret=secret, sock=sock)
            # it has been running for a while when the daemon connects: calls in progress, callers waiting
            self.pbx.start_at_present(earlier=demo.warmup)
            self.pbx.warm_up(demo.warmup)
        self._stopped = False
        self._done = asyncio.Event()

    async def run(self) -> None:
        await self.pbx.start()
        await self._done.wait()

    async def aclose(self) -> None:
        if not self._stopped:
            self._stopped = True
            await self.pbx.stop()
        self._done.set()


def _demo(settings: Settings) -> tuple[_Pbx, _DemoService]:
    import secrets

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    secret = secrets.token_hex(16)
    service = _DemoService(settings, sock, secret)
    base = settings.ami
    name = base.name if base.name != "default" else "demo"
    demo = settings.demo
    if demo.capture is not None:
        log.info("demo: following the embedded demo PBX on 127.0.0.1:%d, playing %s at %gx%s", service.pbx.port,
                 demo.capture, demo.speed, " in a loop" if demo.loop else "")
    else:
        log.info("demo: following the embedded demo PBX on 127.0.0.1:%d: a simulated call centre (seed %d, %g calls "
                 "an hour, 7 operators) at %gx", service.pbx.port, demo.seed, demo.calls_per_hour, demo.speed)
    pbx = base.model_copy(update={"name": name, "host": "127.0.0.1", "port": service.pbx.port, "username": "demo",
                                  "secret": None, "secret_file": None})
    return _Pbx(pbx, secret), service


def _channels(settings: Settings) -> dict[str, Channel]:
    """The configured alert channels (a URL a channel cannot use is a configuration error)."""
    if not settings.alerts.channels:
        return {}
    from .alerts.channels import build_channel

    region = settings.journey.default_region
    return {c.name: build_channel(c, settings.alerts, region=region) for c in settings.alerts.channels}


def _with_demo_channel(settings: Settings, url: str) -> Settings:
    """The demo's settings: its alerts also go to the local receiver that logs them."""
    import secrets

    channel = ChannelSettings(name="demo-receiver", kind="webhook", url=SecretStr(url),
                              secret=SecretStr(secrets.token_hex(16)))
    alerts = settings.alerts.model_copy(update={"channels": [*settings.alerts.channels, channel]})
    return settings.model_copy(update={"alerts": alerts})


def build_app(settings: Settings, *, demo: bool = False, store_query: CallQuery | None = None) -> App:
    """Every component of the daemon, wired.  Raises :class:`~onechance.config.ConfigError` (or the store's
    ``StoreConfigError``) for settings that cannot work.  ``store_query`` replaces the SQL side of the API's
    call query (tests: a store that never answers)."""
    from .alerts.outbox import Outbox
    from .alerts.query import AlertQuery
    from .alerts.raiser import AlertRaiser
    from .alerts.routing import Router
    from .store import (
        JourneyWriter,
        StoreCallQuery,
        StoreSink,
        engine_from_settings,
        load_callbacks,
        load_live_deliveries,
        load_lost_calls,
    )
    from .worklist import Worklist

    # no "_created" series: they double the exposition and make Prometheus take every counter for a gauge
    # family of its own in some parsers; rates and increases do not need them (process-wide switch of
    # prometheus_client, the same for every registry)
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    policy = CallPolicy.from_settings(settings)
    tracker_settings = settings.tracker_settings()
    services: list[Service] = []
    if demo:
        demo_pbx, demo_service = _demo(settings)
        pbxs = [demo_pbx]
        receiver = DemoReceiver()
        services += [demo_service, receiver]
        settings = _with_demo_channel(settings, receiver.url)
    else:
        pbxs = _secrets(settings)

    engine = engine_from_settings(settings)
    writer = JourneyWriter.from_settings(settings, engine, registry)
    services.append(writer)
    recent = RecentCalls(settings.http.recent_calls)
    catalog = QueueCatalog(policy.configured_queues())
    metrics = CallMetrics(registry, policy, catalog)
    async def when_ready(load: Callable[[], Awaitable[_T]]) -> _T:
        """A load from the store, once the writer has brought its schema up (else a one-line error)."""
        if not await writer.wait_ready(timeout=10):
            raise RuntimeError(f"the database is not reachable yet ({writer.last_error or 'starting'})")
        return await load()

    outbox = Outbox(Router(policy, settings.alerts.channels, settings.alerts.hours), _channels(settings),
                    settings.alerts.channels, writer, registry,
                    load=lambda: when_ready(lambda: load_live_deliveries(engine)))
    offsets: dict[str, PbxPipeline] = {}  # each PBX's pipeline knows its clock (filled below)
    worklist = Worklist(writer, registry, expire_after=settings.callbacks.expire_after,
                        region=settings.journey.default_region, on_close=outbox.resolve_call,
                        load=lambda: when_ready(lambda: load_callbacks(engine)), queues=policy.configured_queues(),
                        catalog=catalog, pbx_offset=lambda name: offsets[name].offset if name in offsets else 0.0)
    services += [outbox, worklist]
    sinks: Sequence[Sink] = (recent, metrics, StoreSink(writer), AlertRaiser(policy, outbox), worklist, CallLog())

    pipelines: list[PbxPipeline] = []
    for pbx in pbxs:
        link = AmiLink(pbx.settings, secret=pbx.secret)
        errors = RateLimitedLog(logging.getLogger("onechance.pipeline"))
        tracker = JourneyTracker(policy, tracker_settings, pbx=pbx.settings.name,
                                 on_error=tracker_error_hook(errors, pbx.settings.name))
        pipelines.append(PbxPipeline(tracker, link.queue, sinks, link=link, name=pbx.settings.name,
                                     tick_interval=settings.daemon.tick_interval, catalog=catalog,
                                     errors=errors))
    offsets.update((p.name, p) for p in pipelines)
    registry.register(LiveCollector(lambda: pipelines, catalog))
    build_info(registry)

    status = DaemonStatus(pipelines, writer)
    calls = MergedCallQuery(store_query if store_query is not None else StoreCallQuery(engine), recent,
                            timeout=settings.http.store_timeout)
    token = settings.http.token.get_secret_value() if settings.http.token else None
    figures = DayFigures(engine, policy, timeout=settings.http.store_timeout)
    http = make_app(registry=registry, calls=calls, status=status, token=token, version=__version__,
                    worklist=worklist, alerts=AlertQuery(engine, outbox, settings.http.store_timeout),
                    figures=figures, timezone=settings.alerts.timezone, region=settings.journey.default_region,
                    limits=HttpLimits.from_settings(settings.http))
    links = {p.name: p.link for p in pipelines if p.link is not None}
    add_callback_page(http, worklist, token=token, settings=settings.callbacks, version=__version__,
                      originate=originate_through(links) if settings.callbacks.originate else None)
    recovery_window = settings.journey.recovery_window

    async def lost_calls(pbx: str) -> Sequence[LostCall]:
        if not await writer.wait_ready(timeout=10):
            raise RuntimeError("the database is not reachable yet")
        return await load_lost_calls(engine, since=time.time() - recovery_window, pbx=pbx)

    return App(pipelines=pipelines, http=http, listen=(settings.http.host, settings.http.port), status=status,
               services=services, lost_calls=lost_calls, shutdown_timeout=settings.daemon.shutdown_timeout,
               closers=[engine.dispose])


def run_daemon(settings: Settings, *, demo: bool = False) -> int:
    """``onechance run`` (``demo``: ``onechance demo``): serve until SIGTERM/SIGINT; the process exit code."""
    async def main() -> int:
        app = build_app(settings, demo=demo)
        # what is made so far lives as long as the process: out of every collection; the full ones on a timer
        # (onechance.gc_pace, docs/performance.md)
        pace = GcPace(settings.daemon.gc_interval)
        with pace.installed():
            collector = asyncio.create_task(pace.run(), name="gc-pace")
            try:
                return await serve(app)
            finally:
                collector.cancel()

    return asyncio.run(main())
