"""Real server processes for the tests (Prometheus, Alertmanager...): started, awaited until ready, stopped."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp


@asynccontextmanager
async def process(argv: list[str], ready_url: str, log_path: Path, timeout: float = 30.0
                  ) -> AsyncIterator[subprocess.Popen[bytes]]:
    """Start a server process (its output in ``log_path``), wait until ``ready_url`` answers 200 (at most
    ``timeout`` seconds; its log's tail in the error otherwise), stop it at the end."""

    def tail() -> str:
        return log_path.read_text(encoding="utf-8", errors="replace")[-2000:]

    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as s:
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"{argv[0]} exited {proc.returncode}: {tail()}")
                try:
                    async with s.get(ready_url) as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"{argv[0]} not ready after {timeout} s: {tail()}")
                await asyncio.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
