#!/usr/bin/env python3
"""Alert latency: from the deciding AMI event leaving the fake PBX to the webhook request arriving.

Sets up, all on 127.0.0.1:

* the fake PBX (``onechance.demo.DemoPbx``) playing the ``load_a`` capture at ``--speed`` (10x) for
  ``--passes`` passes (fresh call ids each pass);
* a pass-through TCP tap between it and the daemon, noting when each message (by its ``Timestamp``) leaves
  the PBX;
* ``onechance run`` as a separate process, as installed (SQLite store in a temporary directory), with one
  webhook channel (storm guard off: it would hold alerts back on purpose);
* an HTTP receiver noting when each webhook request arrives.

An alert's ``decided_at`` is the ``Timestamp`` of the event that decided it, so each request is matched to the
moment that event left the PBX.  Prints the count, p50, p90, p99 and max in milliseconds (goal: p99 < 50 ms).
Every loop is bounded: ``--passes`` passes and ``--max-seconds`` in all.

usage: bench/alert_latency.py [--speed 10] [--passes 4] [--max-seconds 300] [--capture PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aiohttp import web

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "service"))

from onechance.demo import DemoPbx  # noqa: E402

TIMESTAMP = re.compile(rb"^Timestamp: (\d+\.\d+)\r?$", re.M)
CAPTURE = ROOT / "tests" / "data" / "load_a.ami"


class Tap:
    """Forwards the PBX's bytes to the daemon, noting the wall time each ``Timestamp`` first went through."""

    def __init__(self, pbx_port: int) -> None:
        self.pbx_port = pbx_port
        self.left: dict[str, float] = {}
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.pbx_port)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, note: bool) -> None:
            tail = b""
            try:
                while data := await src.read(65536):
                    now = time.time()
                    dst.write(data)
                    if note:
                        text = tail + data
                        cut = text.rfind(b"\n")
                        for m in TIMESTAMP.finditer(text, 0, cut + 1):
                            self.left.setdefault(m.group(1).decode(), now)
                        tail = text[cut + 1:]
                    await dst.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(up_reader, writer, True), pump(reader, up_writer, False))

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


class Receiver:
    def __init__(self) -> None:
        self.arrivals: list[tuple[float, dict]] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        now = time.time()
        body = await request.json()
        self.arrivals.append((now, body))
        return web.Response(text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def config(path: Path, ami_port: int, hook_port: int) -> None:
    path.write_text("\n".join([
        "[ami]", 'host = "127.0.0.1"', f"port = {ami_port}", 'username = "bench"', 'secret = "bench"',
        "[http]", 'listen = "127.0.0.1:0"',
        "[[alerts.channels]]", 'name = "bench"', 'kind = "webhook"', f'url = "http://127.0.0.1:{hook_port}/hook"',
        'secret = "bench-secret"', "storm_limit = 100000",
    ]) + "\n", encoding="utf-8")


async def wait_http(proc: subprocess.Popen[str], deadline: float) -> None:
    loop = asyncio.get_running_loop()
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = await loop.run_in_executor(None, proc.stderr.readline)
        if not line:
            raise SystemExit("bench: the daemon stopped at start")
        if "logged in to AMI" in line:
            return
    raise SystemExit("bench: the daemon did not log in to the fake PBX in time")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))]


async def run(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.max_seconds
    pbx = DemoPbx(args.capture, speed=args.speed, loop=True, username="bench", secret="bench")
    pbx.start_at_present()
    await pbx.start()
    tap, rx = Tap(pbx.port), Receiver()
    await tap.start()
    await rx.start()
    with tempfile.TemporaryDirectory(prefix="onechance-bench-") as tmp:
        conf = Path(tmp) / "onechance.toml"
        config(conf, tap.port, rx.port)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ONECHANCE_")}
        env["ONECHANCE_DATA_DIR"] = tmp
        proc = subprocess.Popen([sys.executable, "-m", "onechance.cli", "run", "--config", str(conf)], env=env,
                                stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        try:
            await wait_http(proc, deadline)
            drain = asyncio.get_running_loop().run_in_executor(None, proc.stderr.read)  # keep the pipe empty
            while pbx.passes < args.passes and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            await asyncio.sleep(2.0)  # the last alerts of the last pass
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        await drain
    await tap.close()
    await rx.close()
    await pbx.stop()

    latencies, unmatched = [], 0
    for arrived, body in rx.arrivals:
        if body.get("kind") == "digest":
            continue
        left = tap.left.get(f"{body['decided_at']:.6f}")
        if left is None:
            unmatched += 1
            continue
        latencies.append((arrived - left) * 1000.0)
    kinds: dict[str, int] = {}
    for _, body in rx.arrivals:
        kinds[body.get("kind", "?")] = kinds.get(body.get("kind", "?"), 0) + 1
    print(f"alert latency, {args.capture.name} at {args.speed:g}x, {pbx.passes} passes, "
          f"{len(rx.arrivals)} webhooks {json.dumps(kinds, sort_keys=True)}")
    if not latencies:
        print("no alert could be matched to its deciding event")
        return 1
    print(f"  matched {len(latencies)} (unmatched {unmatched})")
    print(f"  p50 {statistics.median(latencies):.1f} ms   p90 {pct(latencies, 90):.1f} ms   "
          f"p99 {pct(latencies, 99):.1f} ms   max {max(latencies):.1f} ms")
    goal = pct(latencies, 99) < 50.0
    print(f"  goal p99 < 50 ms: {'met' if goal else 'NOT met'}")
    return 0 if goal else 1


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--speed", type=float, default=10.0)
    ap.add_argument("--passes", type=int, default=4)
    ap.add_argument("--max-seconds", type=float, default=300.0)
    ap.add_argument("--capture", type=Path, default=CAPTURE)
    args = ap.parse_args()
    if args.passes < 1 or args.speed <= 0:
        ap.error("--passes must be >= 1 and --speed > 0")
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
