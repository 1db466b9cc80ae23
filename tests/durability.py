"""Helpers of the durability tests and of ``bench/soak.py``: ``onechance run`` as a real process (as an
installer starts it) against the fake PBX playing the call simulator, and the journeys counted in the
database after a restart.

* :func:`sim_pbx`: a :class:`~onechance.demo.DemoPbx` playing ``SimSource`` calls as fast as the daemon
  reads (the truths of every call kept), optionally held (``Hold``) after a number of messages, so that
  calls are in progress when a fault strikes.
* :class:`DaemonProcess`: ``python -m onechance.cli run`` with a clean environment; its stderr is read
  continuously by a thread (a busy daemon must never block on a full pipe), signals, exit code, /metrics.
* :func:`restart_and_drain`: start the daemon again on the same data directory (as a restart does) with a
  PBX that plays nothing, until its spool is written back, then stop it.
* :func:`stored_calls`: the ``calls`` rows (SQLite file or PostgreSQL URL).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from onechance.demo import DemoPbx, Hold, SimSource
from onechance.sim import Behaviour, RateProfile, SimConfig

SECRET = "s3cr3t-Hunter2-do-not-log"
ONECHANCE = [sys.executable, "-m", "onechance.cli"]
#: 10:00 UTC of a day: the busiest hour of the simulator's rate profile
PEAK = 1_800_000_000 - 1_800_000_000 % 86400 + 10 * 3600.0
FAST_AMI_ENV = {
    "PING_INTERVAL": "0.5", "PING_TIMEOUT": "3", "CONNECT_TIMEOUT": "2", "ACTION_TIMEOUT": "5",
    "RECONNECT_MIN": "0.05", "RECONNECT_MAX": "0.3", "LOGIN_RETRY": "0.3",
}


def sim_config(seed: int = 1, scale: float = 40.0, **kw: Any) -> SimConfig:
    """The captures' PBX at peak hour, ``scale`` times the profile's rate (40: about 100 calls at once)."""
    return SimConfig.default(seed=seed, start=PEAK, rate=RateProfile(scale=scale), **kw)


def busy_config(seed: int = 1, queues: int = 20, operators_per_queue: int = 4, scale: float = 400.0,
                wait: int = 7200) -> SimConfig:
    """A big centre whose callers wait long (``wait`` seconds of patience and queue timeout): calls in
    progress pile up, for a shutdown with thousands of them."""
    import dataclasses

    cfg = SimConfig.large(queues=queues, operators_per_queue=operators_per_queue, seed=seed, start=PEAK,
                          rate=RateProfile(scale=scale), behaviour=Behaviour(patience=float(wait), impatient=0.0),
                          rtcp=False)
    return dataclasses.replace(cfg, queues=tuple(dataclasses.replace(q, max_wait=wait) for q in cfg.queues))


def sim_pbx(calls: int, *, config: SimConfig | None = None, hold_after: int | None = None,
            speed: float = 0.0) -> DemoPbx:
    """A fake Asterisk (user ``onechance``, :data:`SECRET`) playing ``calls`` simulated calls; held after
    ``hold_after`` messages when given (``pbx.release()`` goes on).  ``pbx.source.centre.truths``: every call."""
    source = SimSource(config or sim_config(), calls=calls, keep_truths=True)
    pbx = DemoPbx(source=source, speed=speed, username="onechance", secret=SECRET, login_fail_delay=0.05)
    if hold_after is not None:
        pbx.plan = {hold_after: Hold()}
    return pbx


def truths(pbx: DemoPbx) -> list[dict[str, Any]]:
    centre = pbx.source.centre  # type: ignore[attr-defined]
    return [t.to_dict() for t in centre.truths] if centre is not None else []


def started_ids(pbx: DemoPbx) -> set[str]:
    """Call ids of every call the PBX has started so far (its first message sent)."""
    return {t["call_id"] for t in truths(pbx)}


def daemon_env(data_dir: Path, ami_port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECHANCE_")}
    env.update({
        "ONECHANCE_DATA_DIR": str(data_dir),
        "ONECHANCE_AMI__HOST": "127.0.0.1", "ONECHANCE_AMI__PORT": str(ami_port),
        "ONECHANCE_AMI__USERNAME": "onechance", "ONECHANCE_AMI__SECRET": SECRET,
        "ONECHANCE_HTTP__LISTEN": "127.0.0.1:0",
        "ONECHANCE_DATABASE__FLUSH_INTERVAL": "0.1",
        "ONECHANCE_DATABASE__RETRY_INTERVAL": "0.3",
    })
    env.update({f"ONECHANCE_AMI__{k}": v for k, v in FAST_AMI_ENV.items()})
    env.update(extra)
    return env


def metrics_of(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@dataclass
class DaemonProcess:
    """``onechance run`` as a separate process; stderr collected line by line (never left to fill its pipe)."""

    env: dict[str, str]
    args: tuple[str, ...] = ()
    command: str = "run"
    proc: subprocess.Popen[str] | None = None
    lines: list[str] = field(default_factory=list)
    port: int = 0
    _reader: threading.Thread | None = None
    _port_seen: threading.Event = field(default_factory=threading.Event)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if not self._port_seen.is_set():
                m = re.search(r"http://127\.0\.0\.1:(\d+)/callbacks", line)
                if m:
                    self.port = int(m.group(1))
                    self._port_seen.set()

    async def start(self, timeout: float = 30.0) -> DaemonProcess:
        self.proc = subprocess.Popen([*ONECHANCE, self.command, *self.args], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(None, self._port_seen.wait, timeout)
        if not ok:
            self.kill()
            raise AssertionError(f"the daemon did not start within {timeout:g} s:\n{self.log}")
        return self

    def send(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        try:
            code = await loop.run_in_executor(None, self.proc.wait, timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the daemon did not exit within {timeout:g} s:\n{self.log[-5000:]}") from None
        if self._reader is not None:
            await loop.run_in_executor(None, self._reader.join, 10)
        return code

    async def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 60.0) -> int:
        self.send(sig)
        return await self.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    async def get(self, path: str, timeout: float = 10.0) -> tuple[int, str]:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s, \
                s.get(self.base + path) as resp:
            return resp.status, await resp.text()

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, text = await self.get("/metrics")
        assert status == 200, text
        return metrics_of(text)

    async def metric(self, name: str, **labels: str) -> float:
        return (await self.metrics()).get((name, tuple(sorted(labels.items()))), 0.0)

    async def wait_for(self, pred: Callable[[dict[tuple[str, tuple[tuple[str, str], ...]], float]], bool],
                       timeout: float = 60.0, what: str = "a condition") -> dict[Any, float]:
        deadline = time.monotonic() + timeout
        while True:
            m = await self.metrics()
            if pred(m):
                return m
            if time.monotonic() > deadline or (self.proc is not None and self.proc.poll() is not None):
                raise AssertionError(f"timed out waiting for {what}:\n{self.log[-5000:]}")
            await asyncio.sleep(0.05)


def value(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


async def wait_handled(d: DaemonProcess, pbx: DemoPbx, quiet: float = 0.5, timeout: float = 60.0) -> None:
    """The PBX is held (or finished) and the daemon has handled every event it received."""
    deadline = time.monotonic() + timeout
    while not (pbx.holding.is_set() or pbx.finished.is_set()):
        if time.monotonic() > deadline:
            raise AssertionError(f"the PBX never reached its hold point:\n{d.log[-3000:]}")
        await asyncio.sleep(0.02)
    last: tuple[float, float] | None = None
    stable = time.monotonic()
    while True:
        m = await d.metrics()
        state = (sum(v for (n, _l), v in m.items() if n == "onechance_ami_events_total"),
                 sum(v for (n, _l), v in m.items() if n == "onechance_ami_queue_depth"))
        now = time.monotonic()
        if state != last:
            last, stable = state, now
        elif state[1] == 0 and now - stable >= quiet:
            return
        if now > deadline:
            raise AssertionError(f"the daemon did not settle:\n{d.log[-3000:]}")
        await asyncio.sleep(0.05)


def stored_calls(where: str | Path) -> dict[str, dict[str, Any]]:
    """call_id -> row (outcome, uncertain, closed_reason, ended_at) of the ``calls`` table."""
    if isinstance(where, Path) or not str(where).startswith("postgresql"):
        path = Path(where)
        if not path.exists():
            return {}
        with sqlite3.connect(path) as conn:
            try:
                rows = conn.execute("SELECT call_id, outcome, uncertain, closed_reason, ended_at FROM calls").fetchall()
            except sqlite3.OperationalError:
                return {}
        return {r[0]: {"outcome": r[1], "uncertain": bool(r[2]), "closed_reason": r[3], "ended_at": r[4]}
                for r in rows}
    from .pg import run_sync

    return run_sync(_pg_calls(str(where)))


async def _pg_calls(url: str) -> dict[str, dict[str, Any]]:
    from .pg import connect

    conn = await connect(url)
    try:
        rows = await conn.fetch("SELECT call_id, outcome, uncertain, closed_reason, ended_at FROM calls")
    finally:
        await conn.close()
    return {r["call_id"]: {"outcome": r["outcome"], "uncertain": r["uncertain"], "closed_reason": r["closed_reason"],
                           "ended_at": r["ended_at"]} for r in rows}


EMPTY_CAPTURE = b"Asterisk Call Manager/11.0.0\r\n"


async def restart_and_drain(data_dir: Path, timeout: float = 60.0, **extra: str) -> DaemonProcess:
    """Start ``onechance run`` again on ``data_dir`` (a PBX with no calls), wait until the store has written
    what the spool held, stop it (SIGTERM); the stopped process (its log, its exit code) is returned."""
    pbx = DemoPbx(EMPTY_CAPTURE, speed=0, username="onechance", secret=SECRET, login_fail_delay=0.05)
    await pbx.start()
    try:
        d = DaemonProcess(daemon_env(data_dir, pbx.port, **extra))
        await d.start()
        try:
            await d.wait_for(lambda m: value(m, "onechance_store_up") == 1
                             and value(m, "onechance_store_spool_journeys") == 0
                             and value(m, "onechance_store_queue_depth") == 0, timeout, "the spool written back")
        finally:
            code = await d.stop()
        assert code == 0, d.log
        return d
    finally:
        await pbx.stop()


def tmp_data_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="onechance-durability-"))
