#!/usr/bin/env python3
"""The HTTP attacks of issue 12, against a real daemon (``onechance run`` in its own process, 1024 open files,
the default ``[http]`` limits, an API token), over loopback only, each bounded in count and time:

* ``slow``: ``--slow`` clients (1,100) send a request one byte every ``--slow-every`` seconds (5), never
  finishing it, for ``--seconds`` (30); each comes back 1 s after the daemon cuts it;
* ``api``: ``--api`` (1,000) concurrent ``GET /api/calls?limit=1000``, each on its own connection;
* ``oversize``: ``--oversize`` (1,000) requests with a 20 KB header holding the token, 50 at a time;
* ``queues``: a PBX that sends ``--queue-names`` (20,000) distinct queue names (a caller waiting and a member
  in each), then ``/metrics``, ``/api/queues``, ``/api/live`` timed;
* ``big``: ``--big`` (50,000) calls in progress (the simulator's, held open), then ``/api/calls/{id}`` of a live
  call, ``/api/live`` and ``/metrics`` timed.

During every attack a prober asks ``/healthz`` every 50 ms on a new connection (a health checker) and
``/metrics`` every second; the report gives their p50/p99/max and failures, what the attack got (statuses,
latencies), the daemon's refusals by reason (``onechance_http_rejected_total``), its peak RSS and open files,
and its log: lines, ERROR lines, tracebacks, whether the token appears.  ``--compare REV`` runs the same
attacks on that git revision's daemon afterwards.

usage: bench/http_load.py [--only slow,api,oversize,queues,big] [--seconds 30] [--slow 1100] [--api 1000]
                          [--big 50000] [--queue-names 20000] [--compare REV]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import platform
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from http_common import (
    BANNER,
    CACHE,
    TOKEN,
    Daemon,
    Stream,
    build_stream,
    export_revision,
    loaded_daemons,
    pct,
    timed_get,
)

NOFILE = 1024


@dataclass
class Report:
    attack: str
    daemon: str
    health: list[float] = field(default_factory=list)
    health_failures: int = 0
    metrics: list[float] = field(default_factory=list)
    metrics_failures: int = 0
    figures: dict[str, Any] = field(default_factory=dict)
    rejected: dict[str, float] = field(default_factory=dict)
    rss_peak: float = 0.0
    fds_peak: int = 0
    log: dict[str, Any] = field(default_factory=dict)


class Watch:
    """The probers and the daemon's RSS and open files, while an attack runs."""

    def __init__(self, d: Daemon, report: Report) -> None:
        self.d, self.report = d, report
        self._tasks: list[asyncio.Task[None]] = []

    async def _health(self) -> None:
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            while True:
                r = await timed_get(session, self.d.base + "/healthz", timeout=30)
                self.report.health.append(r.seconds)
                if r.status != 200:
                    self.report.health_failures += 1
                await asyncio.sleep(0.05)

    async def _metrics(self) -> None:
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            while True:
                r = await timed_get(session, self.d.base + "/metrics", timeout=30)
                self.report.metrics.append(r.seconds)
                if r.status != 200:
                    self.report.metrics_failures += 1
                await asyncio.sleep(1.0)

    async def _proc(self) -> None:
        while True:
            with contextlib.suppress(OSError, ValueError):
                self.report.rss_peak = max(self.report.rss_peak, self.d.rss_mb())
                self.report.fds_peak = max(self.report.fds_peak, self.d.fds())
            await asyncio.sleep(0.2)

    async def __aenter__(self) -> Watch:
        self._tasks = [asyncio.create_task(c) for c in (self._health(), self._metrics(), self._proc())]
        await asyncio.sleep(0.2)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


async def rejected(session: aiohttp.ClientSession, d: Daemon) -> dict[str, float]:
    out: dict[str, float] = {}
    with contextlib.suppress(aiohttp.ClientError, OSError):
        async with session.get(d.base + "/metrics") as resp:
            text = await resp.text()
        for line in text.splitlines():
            if line.startswith("onechance_http_rejected_total{"):
                reason = line.split('reason="', 1)[1].split('"', 1)[0]
                value = float(line.rsplit(" ", 1)[1])
                if value:
                    out[reason] = value
    return out


def log_figures(d: Daemon, since: int) -> dict[str, Any]:
    text = d.log_text()[since:]
    lines = text.splitlines()
    return {"lines": len(lines), "bytes": len(text.encode()), "errors": sum(" ERROR " in x for x in lines),
            "tracebacks": text.count("Traceback"), "token": TOKEN in text}


# ---- the attacks -------------------------------------------------------------------------------------------
async def slow_client(port: int, stop: float, every: float, stats: Counter[str]) -> None:
    request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: a\r\n" * 100000
    while time.monotonic() < stop:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            stats["connect_failed"] += 1
            await asyncio.sleep(1.0)
            continue
        stats["connections"] += 1
        try:
            for byte in request:
                writer.write(bytes([byte]))
                await writer.drain()
                with contextlib.suppress(TimeoutError):
                    if await asyncio.wait_for(reader.read(4096), max(0.0, min(every, stop - time.monotonic()))) \
                            == b"":
                        stats["cut"] += 1
                        break
                if time.monotonic() >= stop:
                    return
        except OSError:
            stats["cut"] += 1
        finally:
            writer.close()
        await asyncio.sleep(1.0)


async def attack_slow(d: Daemon, args: argparse.Namespace, report: Report) -> None:
    stats: Counter[str] = Counter()
    stop = time.monotonic() + args.seconds
    tasks = [asyncio.create_task(slow_client(d.port, stop, args.slow_every, stats)) for _ in range(args.slow)]
    await asyncio.gather(*tasks)
    report.figures = {"slow clients": args.slow, "connections made": stats["connections"],
                      "cut by the daemon": stats["cut"], "connects failed": stats["connect_failed"]}


async def attack_api(d: Daemon, args: argparse.Namespace, report: Report) -> None:
    async def one(session: aiohttp.ClientSession) -> tuple[int, float]:
        r = await timed_get(session, d.base + "/api/calls?limit=1000", d.headers, timeout=180)
        return r.status, r.seconds

    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    t0 = time.monotonic()
    async with aiohttp.ClientSession(connector=connector) as session:
        results = await asyncio.gather(*(one(session) for _ in range(args.api)))
    took = time.monotonic() - t0
    by_status = Counter(s for s, _t in results)
    ok = [t for s, t in results if s == 200]
    busy = [t for s, t in results if s == 503]
    report.figures = {"requests": args.api, "statuses": dict(sorted(by_status.items())), "whole wave s": round(took, 1),
                      "200 p50/p99 s": f"{pct(ok, 0.5):.2f}/{pct(ok, 0.99):.2f}" if ok else "-",
                      "503 p50/p99 s": f"{pct(busy, 0.5):.3f}/{pct(busy, 0.99):.3f}" if busy else "-"}


async def attack_oversize(d: Daemon, args: argparse.Namespace, report: Report) -> None:
    request = (b"GET /api/calls HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + TOKEN.encode() + b"x" * 20000
               + b"\r\n\r\n")
    statuses: Counter[int] = Counter()
    gate = asyncio.Semaphore(50)

    async def one() -> None:
        async with gate:
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", d.port)
                writer.write(request)
                answer = await asyncio.wait_for(reader.read(), 30)
                writer.close()
                statuses[int(answer.split(b" ", 2)[1]) if answer else 0] += 1
            except (OSError, TimeoutError, ValueError, IndexError):
                statuses[0] += 1

    await asyncio.gather(*(one() for _ in range(args.oversize)))
    report.figures = {"requests": args.oversize, "statuses": dict(sorted(statuses.items()))}


async def timed_routes(d: Daemon, paths: list[str], rounds: int = 5) -> dict[str, str]:
    out = {}
    async with aiohttp.ClientSession() as session:
        for path in paths:
            times, size, statuses = [], 0, set()
            for _ in range(rounds):
                r = await timed_get(session, d.base + path, d.headers, timeout=120)
                times.append(r.seconds)
                size = r.size
                statuses.add(r.status)
            out[path] = f"{pct(times, 0.5) * 1000:.1f} ms, {size / 1e6:.2f} MB, {sorted(statuses)}"
    return out


def queue_names_stream(n: int) -> Stream:
    """``n`` callers, each waiting in a queue of its own name, and a member in each of those queues."""
    path = CACHE / f"http-queue-names-{n}.ami"
    if not path.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        t = 1_800_000_000.0
        with path.open("wb") as out:
            out.write(BANNER)
            for i in range(n):
                t += 0.001
                uid = f"{int(t)}.{i}"
                chan = (f"Channel: PJSIP/carrier-{i:08x}\r\nChannelState: 6\r\nChannelStateDesc: Up\r\n"
                        f"CallerIDNum: +37255{i:06d}\r\nCallerIDName: Caller {i}\r\nConnectedLineNum: <unknown>\r\n"
                        f"ConnectedLineName: <unknown>\r\nLanguage: en\r\nAccountCode: \r\nContext: inbound\r\n"
                        f"Exten: 7001\r\nPriority: 1\r\nUniqueid: {uid}\r\nLinkedid: {uid}\r\n")
                out.write(f"Event: Newchannel\r\nPrivilege: call,all\r\nTimestamp: {t:.6f}\r\n{chan}\r\n".encode())
                out.write(f"Event: QueueCallerJoin\r\nPrivilege: agent,all\r\nTimestamp: {t:.6f}\r\n{chan}"
                          f"Queue: hostile-{i:06d}\r\nPosition: 1\r\nCount: 1\r\n\r\n".encode())
                out.write(f"Event: QueueMemberStatus\r\nPrivilege: agent,all\r\nTimestamp: {t:.6f}\r\n"
                          f"Queue: hostile-{i:06d}\r\nMemberName: Anna Tamm\r\nInterface: Local/101@agents/n\r\n"
                          f"StateInterface: PJSIP/101\r\nMembership: dynamic\r\nPenalty: 0\r\nCallsTaken: 0\r\n"
                          f"LastCall: 0\r\nLastPause: 0\r\nLoginTime: 0\r\nInCall: 0\r\nStatus: 1\r\nPaused: 0\r\n"
                          f"PausedReason: \r\nRinginuse: 0\r\nWrapuptime: 0\r\n\r\n".encode())
    return Stream(path=path, queues=51, seed=11, live=n, finished=0, messages=3 * n, size=path.stat().st_size,
                  last_ts=1_800_000_000.0 + n * 0.001)


async def attack_queues(d: Daemon, args: argparse.Namespace, report: Report) -> None:
    report.figures = await timed_routes(d, ["/metrics", "/api/queues", "/api/live", "/api/operators"])


async def attack_big(d: Daemon, args: argparse.Namespace, report: Report) -> None:
    async with aiohttp.ClientSession() as session, \
            session.get(d.base + "/api/live?limit=1", headers=d.headers) as resp:
        live = await resp.json()
    call_id = live["calls"][0]["call_id"]
    report.figures = await timed_routes(d, [f"/api/calls/{call_id}", "/api/live", "/api/live?limit=1000",
                                            "/metrics"])


ATTACKS = {"slow": attack_slow, "api": attack_api, "oversize": attack_oversize, "queues": attack_queues,
           "big": attack_big}


@contextlib.asynccontextmanager
async def daemon_for(stream: Stream, name: str, source: Path | None,
                     http: dict[str, Any]) -> AsyncIterator[Daemon]:
    async with loaded_daemons(stream, [(name, source)], http=http, nofile=NOFILE) as (d,):
        yield d


async def run(attack: str, stream: Stream, name: str, source: Path | None, args: argparse.Namespace) -> Report:
    report = Report(attack, name)
    http: dict[str, Any] = {}
    for setting in args.http if source is None else ():
        http.update(json.loads("{" + setting + "}"))
    async with daemon_for(stream, name, source, http) as d, aiohttp.ClientSession() as session:
        since = len(d.log_text())
        before = await rejected(session, d)
        print(f"{name}: {attack} attack...", file=sys.stderr, flush=True)
        async with Watch(d, report):
            await asyncio.sleep(1.0)
            try:
                await asyncio.wait_for(ATTACKS[attack](d, args, report), args.seconds * 10 + 300)
            except TimeoutError:
                report.figures["stopped"] = "the attack did not end within its time bound"
            await asyncio.sleep(1.0)
        after = await rejected(session, d)
        report.rejected = {k: v - before.get(k, 0) for k, v in after.items() if v - before.get(k, 0)}
        report.log = log_figures(d, since)
    return report


def show(reports: list[Report]) -> None:
    print(f"\nmachine: {platform.machine()}; Python {platform.python_version()}; daemon open-files limit {NOFILE}")
    print("| attack | daemon | /healthz p50 / p99 / max ms (failed) | /metrics p50 / p99 ms (failed) | what the "
          "attack got | refused (reason: count) | peak RSS MB | peak fds | log: lines, ERROR, tracebacks, token |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in reports:
        h = (f"{pct(r.health, 0.5) * 1000:.1f} / {pct(r.health, 0.99) * 1000:.1f} / {max(r.health) * 1000:.0f} "
             f"({r.health_failures}/{len(r.health)})") if r.health else "-"
        m = (f"{pct(r.metrics, 0.5) * 1000:.1f} / {pct(r.metrics, 0.99) * 1000:.1f} ({r.metrics_failures}/"
             f"{len(r.metrics)})") if r.metrics else "-"
        figures = "; ".join(f"{k}: {v}" for k, v in r.figures.items())
        refused = ", ".join(f"{k}: {v:.0f}" for k, v in sorted(r.rejected.items())) or "-"
        log = f"{r.log['lines']}, {r.log['errors']}, {r.log['tracebacks']}, {'YES' if r.log['token'] else 'no'}"
        print(f"| {r.attack} | {r.daemon} | {h} | {m} | {figures} | {refused} | {r.rss_peak:.0f} | {r.fds_peak} | "
              f"{log} |")


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="slow,api,oversize,queues,big")
    ap.add_argument("--seconds", type=float, default=30.0, help="how long the slow clients keep at it")
    ap.add_argument("--slow", type=int, default=1100)
    ap.add_argument("--slow-every", type=float, default=5.0)
    ap.add_argument("--api", type=int, default=1000)
    ap.add_argument("--oversize", type=int, default=1000)
    ap.add_argument("--queue-names", type=int, default=20000)
    ap.add_argument("--big", type=int, default=50000)
    ap.add_argument("--live", type=int, default=10000, help="calls in progress during slow, api, oversize")
    ap.add_argument("--finished", type=int, default=5000)
    ap.add_argument("--compare", metavar="REV")
    ap.add_argument("--http", action="append", default=[], metavar='\'"KEY": VALUE\'',
                    help='an [http] setting for this version\'s daemon, as JSON, e.g. \'"api_concurrency": 2\'')
    args = ap.parse_args()
    attacks = [a for a in args.only.split(",") if a]
    unknown = set(attacks) - set(ATTACKS)
    if unknown:
        raise SystemExit(f"--only: unknown attack(s) {', '.join(sorted(unknown))}; of {', '.join(ATTACKS)}")
    versions: list[tuple[str, Path | None]] = [("this", None)]
    if args.compare:
        versions.append((args.compare, export_revision(args.compare)))
    reports = []
    for attack in attacks:
        if attack == "queues":
            stream = queue_names_stream(args.queue_names)
        elif attack == "big":
            stream = build_stream(args.big, 1000)
        else:
            stream = build_stream(args.live, args.finished)
        for name, source in versions:
            reports.append(await run(attack, stream, name, source, args))
            print(json.dumps(reports[-1].figures), file=sys.stderr, flush=True)
    show(reports)


if __name__ == "__main__":
    asyncio.run(main())
