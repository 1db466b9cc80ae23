"""Helpers for the alert tests (channels and engine): a real HTTP receiver on loopback, a real Alertmanager
process, and sample calls/alerts.

* :class:`Receiver`: an aiohttp server on 127.0.0.1 that records every request and answers from a script of
  statuses (``Receiver(script=[503, 503])``: fail twice, then ``default``), :data:`HANG` never answers (until
  the receiver stops), and counts requests per ``Idempotency-Key``.
* :func:`alertmanager`: the ``alertmanager`` binary (Debian ``prometheus-alertmanager``) on free loopback ports,
  a temporary storage path, no clustering; optionally routing everything to a webhook; stopped at the end.
* :func:`make_record` / :func:`make_alert`: a lost call and its alert, any field overridable.
"""

from __future__ import annotations

import asyncio
import collections
import json
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from onechance.alerts.model import Alert, Notice, alert_id
from onechance.journey import AlertKind, CallRecord

from .servers import process

__all__ = [
    "HANG",
    "Alertmanager",
    "Received",
    "Receiver",
    "alertmanager",
    "alertmanager_binary",
    "closed_port",
    "free_port",
    "make_alert",
    "make_record",
    "notice",
]

#: in a receiver's script: do not answer (the request hangs until the receiver stops or ``hang_seconds``)
HANG = -1
T0 = 1714630443.5  # 2024-05-02 06:14:03.5 UTC (09:14 in Tallinn)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    return free_port()


# ---- sample calls ----------------------------------------------------------------------------------------
def make_record(**overrides: Any) -> CallRecord:
    """A call that was lost in ``support`` after 42 s (decided at :data:`T0`); JSON fields can be overridden."""
    data: dict[str, Any] = {
        "call_id": "1714630401.1207",
        "pbx": "main",
        "caller": "+37251234567",
        "caller_name": "Jaan Kivi",
        "started_at": T0 - 42.5,
        "ended_at": T0,
        "outcome": "abandoned",
        "lost": True,
        "queues": [{"queue": "support", "joined_at": T0 - 42.0, "left_at": T0, "wait_seconds": 42.0,
                    "result": "abandoned", "callid": "1714630401.1207"}],
        "alerts": ["abandoned"],
        "updated_at": T0,
    }
    data.update(overrides)
    return CallRecord.from_json(data)


def make_alert(kind: str = "abandoned", *, queue: str = "support", decided_at: float = T0,
               **record: Any) -> Alert:
    rec = make_record(**record)
    return Alert(id=alert_id(rec.pbx, rec.call_id, kind), kind=AlertKind(kind), record=rec, queue=queue,
                 decided_at=decided_at, raised_at=decided_at + 0.1)


def notice(*alerts: Alert, kind: str = "alert", key: str | None = None) -> Notice:
    """A notice of these alerts (``kind`` alert/digest/resolved), with a fresh idempotency key unless given."""
    return Notice(kind=kind, alerts=tuple(alerts),  # type: ignore[arg-type]
                  idempotency_key=key or f"test-{time.monotonic_ns()}")


# ---- the HTTP receiver -----------------------------------------------------------------------------------
@dataclass
class Received:
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]
    body: bytes
    peer_port: int
    at: float = field(default_factory=time.time)

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8"))

    @property
    def key(self) -> str | None:
        return self.headers.get("Idempotency-Key")


class Receiver:
    """A real HTTP server on 127.0.0.1 recording requests.  Each request takes the next status of the
    script (then ``default``); :data:`HANG` holds the request without answering."""

    def __init__(self, script: Iterable[int] = (), *, default: int = 200, hang_seconds: float = 60.0,
                 headers: dict[str, str] | None = None, body: str = "ok") -> None:
        self.script: collections.deque[int] = collections.deque(script)
        self.default = default
        self.hang_seconds = hang_seconds
        self.headers = headers or {}  # sent with every answer (e.g. Retry-After)
        self.body = body
        self.requests: list[Received] = []
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()
        self._arrived = asyncio.Event()

    def plan(self, *statuses: int) -> None:
        """Append statuses to the script."""
        self.script.extend(statuses)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def per_key(self) -> collections.Counter[str]:
        """How many requests came with each ``Idempotency-Key``."""
        return collections.Counter(r.key or "" for r in self.requests)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append(Received(request.method, request.path, dict(request.query),
                                      CIMultiDict(request.headers), body, int(peer[1]) if peer else 0))
        self._arrived.set()
        status = self.script.popleft() if self.script else self.default
        if status == HANG:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.hang_seconds)
            status = 504
        return web.Response(status=status, text=self.body, headers=self.headers)

    async def wait_for(self, count: int, timeout: float = 10.0) -> list[Received]:
        """The first ``count`` requests, waiting for them at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while len(self.requests) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{len(self.requests)} requests arrived within {timeout} s, expected {count}")
            self._arrived.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)
        return self.requests[:count]

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Receiver:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


# ---- Alertmanager ----------------------------------------------------------------------------------------
def alertmanager_binary() -> str:
    for name in ("alertmanager", "prometheus-alertmanager"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("the alertmanager binary is not on PATH: install the Debian package prometheus-alertmanager "
                "(.ci/install-debian-deps does)")


@dataclass
class Alertmanager:
    url: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    async def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` (the active, silenced and inhibited alerts; resolved ones are left out)."""
        async with aiohttp.ClientSession() as s, s.get(f"{self.url}/api/v2/alerts", params=filters) as resp:
            assert resp.status == 200, await resp.text()
            result: list[dict[str, Any]] = await resp.json()
            return result

    async def wait_alerts(self, predicate: Any, timeout: float = 15.0) -> list[dict[str, Any]]:
        """Poll the alerts until ``predicate(alerts)`` holds (at most ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while True:
            alerts = await self.alerts()
            if predicate(alerts):
                return alerts
            if time.monotonic() > deadline:
                raise AssertionError(f"Alertmanager alerts did not reach the expected state within {timeout} s: "
                                     f"{json.dumps(alerts)[:2000]}")
            await asyncio.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


@asynccontextmanager
async def alertmanager(webhook_url: str | None = None, *, config_file: Path | None = None,
                       ready_timeout: float = 30.0) -> AsyncIterator[Alertmanager]:
    """A real Alertmanager on 127.0.0.1: with ``config_file``, that configuration; else one route to
    ``webhook_url`` when given (resolved notifications too, 1 s before a group's first notification)."""
    receiver: dict[str, Any] = {"name": "sink"}
    if webhook_url:
        receiver["webhook_configs"] = [{"url": webhook_url, "send_resolved": True}]
    config = {
        "route": {"receiver": "sink", "group_by": ["alertname", "pbx", "queue"], "group_wait": "1s",
                  "group_interval": "1s", "repeat_interval": "1h"},
        "receivers": [receiver],
    }
    with tempfile.TemporaryDirectory(prefix="onechance-am-") as tmp:
        root = Path(tmp)
        if config_file is None:
            config_file = root / "alertmanager.yml"
            config_file.write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log_path = root / "alertmanager.log"
        argv = [alertmanager_binary(), f"--config.file={config_file}",
                f"--storage.path={root / 'data'}", f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address="]
        async with process(argv, f"{url}/-/ready", log_path, ready_timeout) as proc:
            yield Alertmanager(url, proc, log_path)
