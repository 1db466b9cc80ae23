#!/usr/bin/env python3
"""Live ingest, end to end: a real ``onechance run`` blasted over loopback TCP, against panoramisk's parse rate.

What is measured, in interleaved rounds (one line per round; median and spread at the end):

* a fake Asterisk (a process of its own: banner, Login, Ping, CoreShowChannels, QueueStatus answered like
  Asterisk 22) sends a stream built from ``tests/data/load_a.ami`` (``../shared/tools/scale_capture.py``: fresh
  call ids and later timestamps per copy) as fast as the daemon reads it, one part per round;
* ``onechance run`` (a process of its own, default settings: metrics, alerts, worklist, the store) with SQLite
  and with PostgreSQL (a cluster of the bench's own, ``tests/pg.py``, or ``--pg-url``): the daemon's CPU time
  (``/proc/PID/stat``, every thread) from the first byte of the part until every event was read, tracked and
  every journey written, less the CPU of the ``/metrics`` polls that watch for the end (measured idle first);
  events per CPU second is the per-core rate;
* in the same round, in this process: panoramisk 1.4's bare parse of the same bytes (``AMIProtocol.
  data_received``, message handling stubbed out): the ratio live / panoramisk is taken within the round;
* nothing lost: the ``calls`` rows are counted after each part and must equal the journeys a replay of the same
  bytes ends; the daemon's RSS after each part shows whether memory grows blast after blast.

usage: bench/ingest_live.py [--mb 30] [--rounds 3] [--backends sqlite,postgresql] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "service"))
sys.path.insert(0, str(ROOT))

SECRET = "bench-secret"
PBX = "bench"
SLICE = 1 << 20  # bytes per write of the fake PBX (cut on message boundaries)
PY_SPY = shutil.which("py-spy") or "py-spy"


# ---- the fake Asterisk (runs as `ingest_live.py --serve`) ---------------------------------------------------
async def _serve() -> None:
    """Answer the daemon like Asterisk 22; on stdin ``go PATH`` send that file's bytes, then print ``sent N``."""
    loop = asyncio.get_running_loop()
    clients: list[asyncio.StreamWriter] = []

    def reply(writer: asyncio.StreamWriter, lines: list[str]) -> None:
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"Asterisk Call Manager/11.0.0\r\n")
        clients.append(writer)
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                action = dict(line.split(": ", 1) for line in raw.decode().split("\r\n") if ": " in line)
                name = action.get("Action", "").lower()
                aid = action.get("ActionID", "")
                if name == "login":
                    reply(writer, ["Response: Success", f"ActionID: {aid}", "Message: Authentication accepted"])
                    reply(writer, ["Event: FullyBooted", "Privilege: system,all", "Status: Fully Booted"])
                elif name == "ping":
                    reply(writer, ["Response: Success", f"ActionID: {aid}", "Ping: Pong",
                                   f"Timestamp: {time.time():.6f}"])
                elif name in ("coreshowchannels", "queuestatus"):
                    done = "CoreShowChannelsComplete" if name == "coreshowchannels" else "QueueStatusComplete"
                    reply(writer, ["Response: Success", f"ActionID: {aid}", "EventList: start",
                                   "Message: Channels will follow" if name == "coreshowchannels"
                                   else "Message: Queue status will follow"])
                    reply(writer, [f"Event: {done}", f"ActionID: {aid}", "EventList: Complete", "ListItems: 0"])
                elif name == "logoff":
                    reply(writer, ["Response: Goodbye", f"ActionID: {aid}", "Message: Thanks for all the fish."])
                    await writer.drain()
                    break
                else:
                    reply(writer, ["Response: Error", f"ActionID: {aid}", "Message: Invalid/unknown command"])
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            with contextlib.suppress(ValueError):
                clients.remove(writer)
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(f"port {server.sockets[0].getsockname()[1]}", flush=True)
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    while True:
        line = (await stdin.readline()).decode().strip()
        if not line or line == "quit":
            break
        path = line.split(" ", 1)[1]
        data = Path(path).read_bytes()
        writer = clients[-1]
        i = 0
        while i < len(data):
            j = data.find(b"\r\n\r\n", min(len(data), i + SLICE))
            j = len(data) if j < 0 else j + 4
            writer.write(data[i:j])  # whole messages only: a Pong may come between two writes
            await writer.drain()
            i = j
        print(f"sent {len(data)}", flush=True)
    server.close()


# ---- helpers -------------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, every thread included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of each thread of a process: the main thread (the event loop) by itself, the others by name."""
    out: dict[str, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            head, _, rest = (task / "stat").read_text().rpartition(")")
            fields = rest.split()
            name = "main" if task.name == str(pid) else head.partition("(")[2]
            out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def metrics(port: int) -> dict[str, float]:
    """The daemon's ``onechance_*`` samples of the bench PBX (or without labels), summed by family."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = re.match(r"^(onechance_[a-z_]+)(?:\{([^}]*)\})? (\S+)$", line)
        if m is None or (m.group(2) and f'pbx="{PBX}"' not in m.group(2)):
            continue
        out[m.group(1)] = out.get(m.group(1), 0.0) + float(m.group(3))
    return out


def scale(capture: Path, copies: int, out: Path, tool: Path) -> None:
    if not tool.exists():
        sys.exit(f"bench: {tool} not found (the shared tools live in ../shared/tools)")
    subprocess.run([sys.executable, str(tool), str(capture), str(copies), str(out)], check=True)


def split_parts(stream: bytes, per_copy: int, copies_per_part: int, parts: int) -> list[bytes]:
    """The scaled stream cut into parts of whole copies (every call of a copy starts and ends in it)."""
    _banner, _, body = stream.partition(b"\r\n")
    blocks = body.split(b"\r\n\r\n")
    if blocks and not blocks[-1].strip():
        blocks.pop()
    out = []
    step = per_copy * copies_per_part
    for p in range(parts):
        chunk = blocks[p * step : (p + 1) * step]
        out.append(b"".join(b + b"\r\n\r\n" for b in chunk))
    return out


def bench_panoramisk(data: bytes) -> tuple[int, float]:
    """panoramisk 1.4's bare parse of ``data`` in 64 KiB reads: (messages, CPU seconds)."""
    from panoramisk.ami_protocol import AMIProtocol

    class Counting(AMIProtocol):  # type: ignore[misc]
        n = 0

        def handle_message(self, message: Any) -> None:  # parse only: no routing, no dispatch
            self.n += 1

    class Transport:
        def write(self, data: bytes) -> None: ...

        def close(self) -> None: ...

    parts = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    proto = Counting()
    proto.connection_made(Transport())
    proto.encoding = "utf8"
    gc.collect()
    t0 = time.process_time()
    for part in parts:
        proto.data_received(part)
    return proto.n, time.process_time() - t0


def expected_rows(parts: list[bytes], tmp: Path) -> list[int]:
    """Journeys a replay of the parts (one after the other, one tracker) has ended after each part."""
    from onechance.replay import replay_files

    out = []
    files = []
    for i, part in enumerate(parts):
        p = tmp / f"expect_{i}.ami"
        p.write_bytes(b"Asterisk Call Manager/11.0.0\r\n" + part)
        files.append(str(p))
        out.append(sum(1 for j in replay_files(files).journeys if j.ended_at is not None))
    return out


def count_rows(url: str) -> int:
    if url.startswith("sqlite"):
        db = url.split(":///", 1)[1]
        with contextlib.closing(sqlite3.connect(db)) as conn:
            return int(conn.execute("SELECT count(*) FROM calls").fetchone()[0])
    from tests.pg import connect, run_sync

    async def q() -> int:
        conn = await connect(url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM calls"))
        finally:
            await conn.close()

    return run_sync(q())


# ---- one daemon --------------------------------------------------------------------------------------------
@dataclass
class Daemon:
    backend: str
    url: str
    proc: subprocess.Popen[bytes]
    http: int
    log: Path
    scrape_cpu: float = 0.0  # daemon CPU seconds per /metrics poll
    rows: list[int] = field(default_factory=list)


def start_daemon(backend: str, url: str, ami_port: int, tmp: Path) -> Daemon:
    http = free_port()
    data_dir = tmp / f"data-{backend}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECHANCE_")}
    env.update({
        "ONECHANCE_DATA_DIR": str(data_dir),
        "ONECHANCE_DATABASE__URL": url,
        "ONECHANCE_HTTP__LISTEN": f"127.0.0.1:{http}",
        "ONECHANCE_AMI__NAME": PBX,
        "ONECHANCE_AMI__HOST": "127.0.0.1",
        "ONECHANCE_AMI__PORT": str(ami_port),
        "ONECHANCE_AMI__USERNAME": "onechance",
        "ONECHANCE_AMI__SECRET": SECRET,
        "ONECHANCE_LOG_LEVEL": "WARNING",
    })
    log = tmp / f"daemon-{backend}.log"
    proc = subprocess.Popen([sys.executable, "-m", "onechance.cli", "run"], env=env, stdout=subprocess.DEVNULL,
                            stderr=log.open("wb"))
    d = Daemon(backend, url, proc, http, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bench: the {backend} daemon exited: {log.read_text()[-2000:]}")
        with contextlib.suppress(OSError):
            if urllib.request.urlopen(f"http://127.0.0.1:{http}/readyz", timeout=2).status == 200:
                break
        time.sleep(0.2)
    else:
        sys.exit(f"bench: the {backend} daemon is not ready after 60 s: {log.read_text()[-2000:]}")
    # the CPU one /metrics poll costs the daemon (subtracted from the blast's CPU)
    time.sleep(1.0)
    c0 = cpu_seconds(proc.pid)
    for _ in range(20):
        metrics(http)
    idle0 = cpu_seconds(proc.pid)
    time.sleep(1.0)
    idle = cpu_seconds(proc.pid) - idle0
    d.scrape_cpu = max(0.0, (idle0 - c0) / 20)
    print(f"  {backend}: daemon pid {proc.pid} ready; a /metrics poll costs it {d.scrape_cpu * 1e3:.1f} ms CPU, "
          f"idle {idle * 1e3:.0f} ms CPU/s", flush=True)
    return d


def stop_daemon(d: Daemon) -> None:
    d.proc.terminate()
    try:
        d.proc.wait(30)
    except subprocess.TimeoutExpired:
        d.proc.kill()
        d.proc.wait(10)


@dataclass
class Blast:
    events: int
    cpu: float
    wall: float
    rows: int
    expected: int
    rss: float
    threads: dict[str, float] = field(default_factory=dict)  # CPU seconds by thread during the blast


def blast(d: Daemon, pbx: subprocess.Popen[bytes], path: Path, events: int, expected: int, base: dict[str, float],
          timeout: float = 600.0, profile: Path | None = None) -> Blast:
    """Send one part; wait until the daemon read, tracked and stored it all (``profile``: py-spy samples it into
    this file, collapsed stacks)."""
    assert pbx.stdin is not None and pbx.stdout is not None
    spy = None
    if profile is not None:
        spy = subprocess.Popen([PY_SPY, "record", "--gil", "--format", "raw", "-r", "250", "-o", str(profile), "-p",
                                str(d.proc.pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
    want_events = base.get("onechance_ami_events_total", 0.0) + events
    want_written = base.get("onechance_store_journeys_written_total", 0.0)
    c0 = cpu_seconds(d.proc.pid)
    th0 = thread_cpu(d.proc.pid)
    t0 = time.perf_counter()
    pbx.stdin.write(f"go {path}\n".encode())
    pbx.stdin.flush()
    polls = 0
    m: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(0.2)
        m = metrics(d.http)
        polls += 1
        if (m.get("onechance_ami_events_total", 0) >= want_events and m.get("onechance_ami_queue_depth", 1) == 0
                and m.get("onechance_store_queue_depth", 1) == 0
                and m.get("onechance_store_journeys_written_total", 0) >= want_written + expected):
            break
    wall = time.perf_counter() - t0
    cpu = cpu_seconds(d.proc.pid) - c0 - polls * d.scrape_cpu
    th1 = thread_cpu(d.proc.pid)
    threads = {name: th1[name] - th0.get(name, 0.0) for name in th1 if th1[name] - th0.get(name, 0.0) > 0}
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    line = pbx.stdout.readline().decode().strip()
    assert line.startswith("sent"), line
    base.update(m)
    return Blast(events, cpu, wall, 0, expected, rss_mb(d.proc.pid), threads)


# ---- main --------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=30.0, help="size of one round's part")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backends", default="sqlite,postgresql")
    ap.add_argument("--pg-url", default=os.environ.get("ONECHANCE_TEST_PG_URL"))
    ap.add_argument("--capture", type=Path, default=ROOT / "tests" / "data" / "load_a.ami")
    ap.add_argument("--scale-tool", type=Path, default=ROOT.parent / "shared" / "tools" / "scale_capture.py")
    ap.add_argument("--py-spy", type=Path, default=None, metavar="DIR",
                    help="profile each blast with py-spy (collapsed stacks in DIR/<backend>-<round>.txt)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        asyncio.run(_serve())
        return
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]

    backends = [b for b in args.backends.split(",") if b]
    tmp = Path(tempfile.mkdtemp(prefix="onechance-bench-live-"))
    pg_server = None
    daemons: list[Daemon] = []
    pbxs: list[subprocess.Popen[bytes]] = []
    try:
        raw = args.capture.read_bytes()
        per_copy = raw.partition(b"\r\n")[2].count(b"\r\n\r\n")
        copies_per_part = max(1, int(args.mb * 1e6 // len(raw)))
        scaled = tmp / "scaled.ami"
        scale(args.capture, copies_per_part * args.rounds, scaled, args.scale_tool)
        parts = split_parts(scaled.read_bytes(), per_copy, copies_per_part, args.rounds)
        paths = []
        for i, part in enumerate(parts):
            p = tmp / f"part_{i}.ami"
            p.write_bytes(part)
            paths.append(p)
        expected = expected_rows(parts, tmp)
        events = [sum(1 for b in part.split(b"\r\n\r\n") if b.startswith(b"Event:")) for part in parts]
        print(f"machine: {machine()}; python {sys.version.split()[0]}")
        print(f"stream: {copies_per_part} copies of {args.capture.name} per round ({len(parts[0]) / 1e6:.1f} MB, "
              f"{events[0]} events, {expected[0]} calls), {args.rounds} rounds")

        urls = {}
        for backend in backends:
            if backend == "sqlite":
                urls[backend] = f"sqlite+aiosqlite:///{tmp / 'data-sqlite' / 'onechance.db'}"
            elif backend == "postgresql":
                from tests.pg import own_server, server_at

                if pg_server is None:
                    pg_server = server_at(args.pg_url) if args.pg_url else own_server()
                urls[backend] = pg_server.create_database()
            else:
                sys.exit(f"bench: unknown backend {backend!r}")
        for backend in backends:
            pbx = subprocess.Popen([sys.executable, __file__, "--serve"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE)
            pbxs.append(pbx)
            assert pbx.stdout is not None
            port = int(pbx.stdout.readline().decode().split()[1])
            daemons.append(start_daemon(backend, urls[backend], port, tmp))
        bases: list[dict[str, float]] = [metrics(d.http) for d in daemons]
        rss0 = {d.backend: rss_mb(d.proc.pid) for d in daemons}

        results: dict[str, list[Blast]] = {d.backend: [] for d in daemons}
        pano: list[float] = []
        ratios: dict[str, list[float]] = {d.backend: [] for d in daemons}
        for r in range(args.rounds):
            n, t = bench_panoramisk(parts[r])
            pano.append(n / t)
            line = [f"round {r}: panoramisk parse {n / t:>9,.0f} ev/s"]
            for d, pbx, base in zip(daemons, pbxs, bases):
                prof = args.py_spy / f"{d.backend}-{r}.txt" if args.py_spy else None
                b = blast(d, pbx, paths[r], events[r], expected[r] - (expected[r - 1] if r else 0), base,
                          profile=prof)
                b.rows = count_rows(d.url)
                b.expected = expected[r]
                results[d.backend].append(b)
                rate = b.events / b.cpu
                ratios[d.backend].append(rate / pano[-1])
                line.append(f"{d.backend} {rate:>9,.0f} ev/s per core ({rate / pano[-1]:.2f}x), wall "
                            f"{b.events / b.wall:>9,.0f} ev/s, rows {b.rows}/{b.expected}, RSS {b.rss:.0f} MB, "
                            "CPU " + " ".join(f"{k} {v:.2f}s" for k, v in sorted(b.threads.items())))
            print("; ".join(line), flush=True)

        def spread(values: list[float], fmt: str) -> str:
            return f"median {format(statistics.median(values), fmt)} (min {format(min(values), fmt)}, " \
                   f"max {format(max(values), fmt)})"

        print(f"panoramisk 1.4 bare parse: {spread(pano, ',.0f')} events/s")
        for d in daemons:
            bl = results[d.backend]
            rates = [b.events / b.cpu for b in bl]
            lost = bl[-1].expected - bl[-1].rows
            print(f"live {d.backend}: {spread(rates, ',.0f')} events/s per core; ratio to panoramisk "
                  f"{spread(ratios[d.backend], '.2f')}x; rows {bl[-1].rows}/{bl[-1].expected} "
                  f"({'nothing lost' if lost == 0 else f'{lost} MISSING'}); RSS {rss0[d.backend]:.0f} MB before, "
                  f"{', '.join(f'{b.rss:.0f}' for b in bl)} MB after each part")
        summary = {d.backend: {"events_per_core": statistics.median([b.events / b.cpu for b in results[d.backend]]),
                               "ratio": statistics.median(ratios[d.backend]),
                               "rows": results[d.backend][-1].rows, "expected": results[d.backend][-1].expected}
                   for d in daemons}
        print("json: " + json.dumps({"panoramisk": statistics.median(pano), **summary}))
    finally:
        for d in daemons:
            stop_daemon(d)
        for pbx in pbxs:
            with contextlib.suppress(Exception):
                assert pbx.stdin is not None
                pbx.stdin.write(b"quit\n")
                pbx.stdin.close()
            try:
                pbx.wait(10)
            except subprocess.TimeoutExpired:
                pbx.kill()
        if pg_server is not None:
            pg_server.close()
        shutil.rmtree(tmp, ignore_errors=True)


def machine() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return f"{os.cpu_count()} CPUs"
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return f"{info.get('Model name', '?').strip()}, {info.get('CPU(s)', '?').strip()} CPUs"


if __name__ == "__main__":
    main()
