"""Helpers for the live-daemon tests: fake PBXs on real TCP, the daemon in-process, a real HTTP client.

The fake PBX is the package's own :class:`onechance.demo.DemoPbx` (a fake Asterisk manager interface);
here it plays the shared captures as fast as possible (``speed=0``) in random 1-64 byte writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from onechance.app import App
from onechance.compose import build_app
from onechance.config import Settings
from onechance.demo import DemoPbx
from onechance.pipeline import PbxPipeline

from .truthcheck import DATA

SECRET = "s3cr3t-Hunter2-do-not-log"

#: AMI timings small enough for tests (seconds)
FAST_AMI: dict[str, Any] = {
    "ping_interval": 0.2,
    "ping_timeout": 1.0,  # generous: a loaded CI machine must not trip the watchdog by accident
    "connect_timeout": 2.0,
    "action_timeout": 3.0,
    "reconnect_min": 0.02,
    "reconnect_max": 0.2,
    "login_retry": 0.3,
}


def capture(name: str) -> bytes:
    return (DATA / f"{name}.ami").read_bytes()


def fake_pbx(name: str, *, seed: int = 0, speed: float = 0.0, chunks: tuple[int, int] | None = (1, 64),
             **kw: Any) -> DemoPbx:
    """A fake Asterisk playing ``tests/data/<name>.ami``; user ``onechance`` with :data:`SECRET`."""
    return DemoPbx(capture(name), speed=speed, chunks=chunks, seed=seed, username="onechance", secret=SECRET,
                   login_fail_delay=0.05, **kw)


def settings_for(pbxs: Sequence[tuple[str, int]], *, token: str | None = None, secret: str = SECRET,
                 **extra: Any) -> Settings:
    """Settings following the fake PBXs ``(name, port)``, HTTP on a free port."""
    data: dict[str, Any] = {
        "pbx": [{"name": name, "host": "127.0.0.1", "port": port, "username": "onechance", "secret": secret,
                 **FAST_AMI} for name, port in pbxs],
        "http": {"listen": "127.0.0.1:0", **({"token": token} if token else {})},
        "daemon": {"shutdown_timeout": 10.0},
    }
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Settings(**data)


@contextlib.asynccontextmanager
async def running(settings: Settings, **app_kw: Any) -> AsyncIterator[App]:
    """The daemon as ``onechance run`` builds it, started in this event loop (with a data directory of its own
    unless the settings name one); stopped (and checked to exit 0) on leaving."""
    with contextlib.ExitStack() as stack:
        if settings.data_dir == Settings().data_dir:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="onechance-test-"))
            settings = settings.model_copy(update={"data_dir": Path(tmp)})
        async with _running(settings, **app_kw) as app:
            yield app


@contextlib.asynccontextmanager
async def _running(settings: Settings, **app_kw: Any) -> AsyncIterator[App]:
    app = build_app(settings, **app_kw)
    task = asyncio.create_task(app.run())
    started = asyncio.create_task(app.started.wait())
    done, _ = await asyncio.wait({task, started}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        started.cancel()
        await task  # raises what made it stop
        raise AssertionError("the daemon stopped at once")
    assert started in done, "the daemon did not start within 10 s"
    try:
        yield app
    finally:
        app.request_stop()
        code = await asyncio.wait_for(task, 20)
        assert code == 0


async def wait_until(pred: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.02)


def pipeline(app: App, name: str) -> PbxPipeline:
    return next(p for p in app.pipelines if p.name == name)


async def settled(app: App, name: str, pbx: DemoPbx, timeout: float = 60.0, quiet: float = 0.3) -> None:
    """The capture was played to its end and the daemon has handled everything it received."""
    p = pipeline(app, name)
    assert p.link is not None
    await asyncio.wait_for(pbx.finished.wait(), timeout)
    link = p.link
    deadline = time.monotonic() + timeout
    last = (-1, -1)
    stable_since = time.monotonic()
    while True:
        now = time.monotonic()
        state = (link.events + link.unmatched_responses, p.items)
        if state != last:
            last, stable_since = state, now
        if p.ready and p.queue.qsize() == 0 and now - stable_since >= quiet:
            return
        if now > deadline:
            raise AssertionError(f"{name}: not settled: {p.status()}")
        await asyncio.sleep(0.02)


class Api:
    """A real HTTP client for the daemon's API."""

    def __init__(self, session: aiohttp.ClientSession, port: int, token: str | None = None) -> None:
        self.session = session
        self.base = f"http://127.0.0.1:{port}"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    async def get(self, path: str, *, headers: dict[str, str] | None = None,
                  params: dict[str, str] | None = None) -> tuple[int, Any]:
        async with self.session.get(self.base + path, headers=headers if headers is not None else self.headers,
                                    params=params) as resp:
            if resp.content_type == "application/json":
                return resp.status, await resp.json()
            return resp.status, await resp.text()

    async def json(self, path: str, **kw: Any) -> Any:
        status, body = await self.get(path, **kw)
        assert status == 200, (path, status, body)
        return body

    async def calls(self, **params: str) -> list[dict[str, Any]]:
        """Every call ``/api/calls`` gives for ``params`` (its next links followed) in the replay shape: the
        ISO 8601 times the API adds are checked against the epoch fields, then taken out."""
        out: list[dict[str, Any]] = []
        path, query = "/api/calls", {"limit": "1000", **params}
        for _ in range(1000):
            body = await self.json(path, params=query)
            out.extend(without_iso(c) for c in body["calls"])
            if body["next"] is None:
                return out
            path, query = body["next"], None
        raise AssertionError("more than 1000 pages")

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics: (name, sorted labels) -> value."""
        status, text = await self.get("/metrics")
        assert status == 200
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out


def without_iso(call: dict[str, Any]) -> dict[str, Any]:
    """A call of the API without the ISO 8601 times it adds, after checking they say what the epoch fields say."""
    out = dict(call)
    for name in ("started_at", "ended_at"):
        text = out.pop(f"{name}_iso")
        if out[name] is None:
            assert text is None, (name, call)
        else:
            assert text.endswith("Z"), text
            assert abs(datetime.fromisoformat(text).timestamp() - out[name]) < 0.0015, (name, text, out[name])
    return out


@contextlib.asynccontextmanager
async def api_for(app: App, token: str | None = None) -> AsyncIterator[Api]:
    assert app.http_port
    async with aiohttp.ClientSession() as session:
        yield Api(session, app.http_port, token)


def sample(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return metrics.get((name, tuple(sorted(labels.items()))), 0.0)


def samples(metrics: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
            **labels: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Samples of ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return {lab: v for (n, lab), v in metrics.items() if n == name and want <= set(lab)}
