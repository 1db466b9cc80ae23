#!/usr/bin/env python3
"""HTTP latency at scale: ``/metrics``, ``/api/live``, ``/api/calls`` and ``/api/calls/{id}`` of a daemon
following ``--live`` calls in progress (10,000) in ``--queues`` queues (51), with ``--finished`` calls done
before them (in memory and in the SQLite store).

The daemon is ``onechance run`` in a process of its own, fed over loopback TCP by a fake AMI server playing a
stream of the call simulator (see ``bench/http_common.py``); the rounds start once every event is handled and
the store has caught up.  Each request is timed on the client (the whole answer read), with the CPU time of
the daemon's event-loop thread over it (``/proc/PID/schedstat``, nanoseconds) and the longest ``/healthz``
answer a prober on another connection saw meanwhile (how long the event loop was held: the AMI consumer
waits as long).

``--compare REV`` runs a second daemon from that git revision's code (exported with ``git archive``) on the
same stream; the rounds interleave the two (and the routes), so both see the same machine speed.  Prints,
per route and daemon: median [p10-p90] of latency, loop CPU and loop hold, in ms; answer size.

usage: bench/http_latency.py [--live 10000] [--finished 5000] [--queues 51] [--rounds 15] [--compare REV]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import aiohttp
from http_common import (
    Daemon,
    Prober,
    build_stream,
    export_revision,
    loaded_daemons,
    summary,
    timed_get,
)


async def ids(session: aiohttp.ClientSession, d: Daemon) -> tuple[str, str]:
    """A live call's id and a finished call's id."""
    async with session.get(d.base + "/api/live", headers=d.headers) as resp:
        live = await resp.json()
    async with session.get(d.base + "/api/calls?limit=1", headers=d.headers) as resp:
        done = await resp.json()
    calls = live["calls"]
    return calls[len(calls) // 2]["call_id"], done["calls"][0]["call_id"]


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--live", type=int, default=10000)
    ap.add_argument("--finished", type=int, default=5000)
    ap.add_argument("--queues", type=int, default=51)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--compare", metavar="REV", help="also run this git revision's daemon, interleaved")
    args = ap.parse_args()

    stream = build_stream(args.live, args.finished, args.queues)
    print(f"stream: {stream.messages} messages, {stream.size / 1e6:.0f} MB, {args.queues} queues, "
          f"{args.finished} calls ending then {args.live} held open", file=sys.stderr)
    sources: list[tuple[str, Path | None]] = [("this", None)]
    if args.compare:
        sources.append((args.compare, export_revision(args.compare)))
    async with loaded_daemons(stream, sources) as daemons, aiohttp.ClientSession() as session:
        routes: dict[str, dict[str, str]] = {}
        for d in daemons:
            live_id, done_id = await ids(session, d)
            routes[d.name] = {
                "/metrics": "/metrics",
                "/api/live": "/api/live",
                "/api/calls?limit=100": "/api/calls?limit=100",
                "/api/calls?limit=1000": "/api/calls?limit=1000",
                "/api/calls/{live id}": f"/api/calls/{live_id}",
                "/api/calls/{finished id}": f"/api/calls/{done_id}",
            }
        lat: dict[tuple[str, str], list[float]] = defaultdict(list)
        cpu: dict[tuple[str, str], list[float]] = defaultdict(list)
        hold: dict[tuple[str, str], list[float]] = defaultdict(list)
        size: dict[tuple[str, str], int] = {}
        status: dict[tuple[str, str], set[int]] = defaultdict(set)
        for _warm in range(2):
            for d in daemons:
                for path in routes[d.name].values():
                    await timed_get(session, d.base + path, d.headers)
        for r in range(args.rounds):
            order = daemons if r % 2 == 0 else list(reversed(daemons))
            for label in routes[daemons[0].name]:
                for d in order:
                    await asyncio.sleep(0.05)
                    async with Prober(d) as probe:
                        await asyncio.sleep(0.03)
                        c0 = d.loop_cpu()
                        res = await timed_get(session, d.base + routes[d.name][label], d.headers)
                        c1 = d.loop_cpu()
                        during = list(probe.latencies)
                    key = (label, d.name)
                    lat[key].append(res.seconds)
                    cpu[key].append(c1 - c0)
                    hold[key].append(max(during) if during else res.seconds)
                    size[key] = res.size
                    status[key].add(res.status)
            print(f"round {r + 1}/{args.rounds}", file=sys.stderr, flush=True)
        rss = {d.name: d.rss_mb() for d in daemons}

    print(f"\nmachine: {platform.machine()}, {platform.processor() or '?'}; Python {platform.python_version()}; "
          f"{stream.queues} queues, {args.live} calls held live, {args.finished} finished before; "
          f"{args.rounds} rounds")
    print("median [p10-p90] ms over the rounds; loop held = the longest /healthz answer meanwhile\n")
    print("| route | daemon | latency | loop CPU | loop held | answer | status |")
    print("|---|---|---|---|---|---|---|")
    for label in routes[daemons[0].name]:
        for d in daemons:
            key = (label, d.name)
            print(f"| `{label}` | {d.name} | {summary(lat[key])} | {summary(cpu[key])} | {summary(hold[key])} | "
                  f"{size[key] / 1e3:.1f} kB | {','.join(map(str, sorted(status[key])))} |")
    if len(daemons) == 2:
        print("\nratios (median of per-round ratios, the other / this):")
        for label in routes[daemons[0].name]:
            a, b = lat[(label, daemons[0].name)], lat[(label, daemons[1].name)]
            ratios = [y / x for x, y in zip(a, b, strict=True) if x > 0]
            print(f"  {label}: {statistics.median(ratios):.1f}x")
    print("\nRSS after: " + ", ".join(f"{k} {v:.0f} MB" for k, v in rss.items()))


if __name__ == "__main__":
    asyncio.run(main())
