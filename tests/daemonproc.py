"""`onechance run` as a real process, as an installer starts it (for the CLI-level daemon tests)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp

ONECHANCE = [sys.executable, "-m", "onechance.cli"]
_TMP = tempfile.TemporaryDirectory(prefix="onechance-test-")  # removed when the test process ends


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any ONECHANCE_* of the caller's, with a fresh data directory (its
    SQLite store and spool) unless ``ONECHANCE_DATA_DIR`` is given."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECHANCE_")}
    env["ONECHANCE_DATA_DIR"] = tempfile.mkdtemp(dir=_TMP.name)
    env.update(extra)
    return env


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as resp:
        return resp.status, await resp.json()


@dataclass
class Daemon:
    proc: subprocess.Popen[str]
    port: int = 0
    lines: list[str] = field(default_factory=list)
    returncode: int | None = None
    log: str = ""

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def calls_when(self, session: aiohttp.ClientSession, done, timeout: float = 20.0) -> list[dict]:
        """Poll ``/api/calls`` until ``done(calls)`` (or the timeout); the last answer."""
        deadline = time.monotonic() + timeout
        calls: list[dict] = []
        while time.monotonic() < deadline:
            status, body = await get_json(session, self.base + "/api/calls")
            calls = body.get("calls", []) if status == 200 else []
            if done(calls):
                break
            await asyncio.sleep(0.05)
        return calls

    async def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)
        _out, err = await asyncio.get_running_loop().run_in_executor(None, self.proc.communicate, None, 30)
        self.returncode = self.proc.returncode
        self.log = "".join(self.lines) + err


async def _wait_port(proc: subprocess.Popen[str], lines: list[str]) -> int:
    loop = asyncio.get_running_loop()
    assert proc.stderr is not None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = await loop.run_in_executor(None, proc.stderr.readline)
        lines.append(line)
        m = re.search(r"http://127\.0\.0\.1:(\d+)/callbacks", line)
        if m:
            return int(m.group(1))
    raise AssertionError("".join(lines))


@asynccontextmanager
async def daemon(*args: str, command: str = "run", **env: str) -> AsyncIterator[Daemon]:
    """``onechance run`` (or ``command``) with ``clean_env(**env)`` listening on a free port; killed if not
    stopped."""
    env.setdefault("ONECHANCE_HTTP__LISTEN", "127.0.0.1:0")
    proc = subprocess.Popen([*ONECHANCE, command, *args], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            env=clean_env(**env))
    d = Daemon(proc)
    try:
        d.port = await _wait_port(proc, d.lines)
        yield d
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
