#!/usr/bin/env python3
"""Several daemons writing one PostgreSQL: the store's write rate, and what a journey costs the server, at 1, 4
and 16 writers.

Each writer is a process of its own with the daemon's store writer (``JourneyWriter``: batches of 200 calls per
transaction, the upsert of ``calls`` and the rewrite of its child rows), as N daemons would be; each writes under
a PBX name of its own.  The journeys are real: ``load_a`` scaled with ``../shared/tools/scale_capture.py`` (fresh
call ids and times per copy) and replayed by the tracker (``onechance.replay.replay_files``), each call then given
more fresh ids (a suffix) until there are ``--journeys`` of them.  Every round writes the same ``--journeys`` in
all, split evenly between its writers, into a fresh database of a PostgreSQL 15 cluster of the bench's own
(fsync and synchronous commits on), started together; it ends when every writer's ``flush()`` has returned, and
the rows are counted (all there, none twice).  Rounds are interleaved (1, 4, 16, 1, 4, 16...), unpartitioned and,
with ``--partitioned``, partitioned by month (``onechance db partition``).  Then the last unpartitioned database
is converted by ``onechance db partition``, timed.

Prints per round: journeys/s in all and per writer; the server's CPU per journey (every server process, from /proc:
the writers' backends, and the WAL writer, checkpointer, autovacuum...) and that of the writers' backends alone;
the writers' own CPU per journey; WAL bytes per journey; the bytes on disk per journey (tables and indexes); the
machine's load average; then the median and spread of each setup.  On this machine writers and server share the
CPUs: the server's CPU and WAL per journey are the figures that carry over to a dedicated database server.

usage: bench/scale_writers.py [--writers 1,4,16] [--journeys 24000] [--rounds 2] [--partitioned]
                              [--max-seconds 900] [--fast]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scale_common import ROOT, BenchCluster, Deadline, clean_env, connect, machine, median, proc_cpu, spread

SCALE_TOOL = ROOT.parent / "shared" / "tools" / "scale_capture.py"
CAPTURE = ROOT / "tests" / "data" / "load_a.ami"
TABLES = ("calls", "queue_visits", "operator_legs", "transfers")


def build_journeys(total: int, copies: int, workdir: Path) -> list[str]:
    """``total`` distinct call records (JSON), from load_a scaled to ``copies`` copies and replayed."""
    from onechance.replay import replay_files

    if not SCALE_TOOL.exists():
        sys.exit(f"scale_writers: {SCALE_TOOL} not found (the shared tools live in ../shared/tools)")
    scaled = workdir / f"load_a_x{copies}.ami"
    subprocess.run([sys.executable, str(SCALE_TOOL), str(CAPTURE), str(copies), str(scaled)], check=True)
    records = [r for r in replay_files([str(scaled)]).journeys if r.ended_at is not None]
    scaled.unlink()
    out: list[str] = []
    k = 0
    while len(out) < total:
        for r in records:
            d = dict(r.to_json())
            if k:
                d["call_id"] = f"{r.call_id}{k:03d}"  # like scale_capture's per-copy suffix: the epoch stays
            out.append(json.dumps(d))
            if len(out) == total:
                break
        k += 1
    return out


def writer_main(url: str, pbx: str, journeys: list[str], spool: str, ready: Any, go: Any, finish: Any,
                results: Any) -> None:
    """One writer process: the daemon's store writer, all its journeys at once, until flushed; reports, then
    waits for ``finish`` before closing its connections (the bench reads their backends' CPU first)."""
    from prometheus_client import CollectorRegistry

    from onechance.journey import CallRecord
    from onechance.store import JourneyWriter, make_engine

    async def run() -> dict[str, Any]:
        records = []
        for line in journeys:
            d = json.loads(line)
            d["pbx"] = pbx
            records.append(CallRecord.from_json(d))
        engine = make_engine(url)
        writer = JourneyWriter(engine, spool, CollectorRegistry(), queue_size=len(records) + 1)
        try:
            await writer.start()
            if not await writer.wait_ready(timeout=60):
                raise RuntimeError(f"{pbx}: the database did not answer: {writer.last_error}")
            ready.set()
            while not go.wait(0.01):
                await asyncio.sleep(0)
            w0, c0 = time.perf_counter(), time.process_time()
            for record in records:
                writer.submit(record)
            if not await writer.flush(timeout=600):
                raise RuntimeError(f"{pbx}: not flushed: {writer.last_error}")
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            results.put({"pbx": pbx, "wall": wall, "cpu": cpu, "journeys": len(records), "spooled": writer.spooled})
            while not finish.wait(0.01):
                await asyncio.sleep(0)
            await writer.close()
            return {"pbx": pbx, "closed": True}
        finally:
            await engine.dispose()

    try:
        results.put(asyncio.run(run()))
    except BaseException as exc:
        results.put({"pbx": pbx, "error": f"{type(exc).__name__}: {exc}"})
        ready.set()


@dataclass
class Round:
    writers: int
    layout: str
    rate: float  # journeys/s in all
    per_writer: float
    server_us: float  # server CPU per journey, µs (every server process)
    backend_us: float  # the writers' backends' CPU per journey, µs
    client_us: float  # writers' CPU per journey, µs
    wal: float  # WAL bytes per journey
    disk: float  # bytes on disk per journey (tables and indexes)


async def _pg(url: str, query: str) -> Any:
    conn = await connect(url)
    try:
        return await conn.fetchval(query)
    finally:
        await conn.close()


async def _counts(url: str) -> dict[str, int]:
    conn = await connect(url)
    try:
        return {r[0]: r[1] for r in await conn.fetch("SELECT pbx, count(*) FROM calls GROUP BY pbx")}
    finally:
        await conn.close()


def partition(url: str, months: tuple[str, str]) -> float:
    """``onechance db partition`` on ``url``; returns the seconds it took."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "onechance.cli", "db", "partition", "--from", months[0], "--until",
                    months[1]], check=True, capture_output=True, timeout=3600,
                   env={**clean_env(), "ONECHANCE_DATABASE__URL": url})
    return time.perf_counter() - t0


def one_round(pg: BenchCluster, journeys: list[str], writers: int, layout: str, months: tuple[str, str],
              workdir: Path, keep: bool = False) -> tuple[Round, str | None]:
    url = pg.create_database()
    if layout == "partitioned":
        partition(url, months)
    ctx = mp.get_context("spawn")
    ready = [ctx.Event() for _ in range(writers)]
    go, finish = ctx.Event(), ctx.Event()
    results: Any = ctx.Queue()
    share = len(journeys) // writers
    procs = []
    for i in range(writers):
        spool = tempfile.mkdtemp(prefix=f"w{i}-", dir=workdir)
        p = ctx.Process(target=writer_main, args=(url, f"writer{i:02d}", journeys[i * share:(i + 1) * share], spool,
                                                   ready[i], go, finish, results))
        p.start()
        procs.append(p)
    try:
        for e in ready:
            if not e.wait(120):
                raise SystemExit("scale_writers: a writer did not start within 120 s")
        database = url.rsplit("/", 1)[1]
        wal0 = asyncio.run(_pg(url, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))
        b0 = pg.backends(database)
        s0 = pg.cpu_seconds()
        t0 = time.perf_counter()
        go.set()
        outs = [results.get(timeout=900) for _ in range(writers)]
        wall = time.perf_counter() - t0
        server = pg.cpu_seconds() - s0
        b1 = pg.backends(database)
        backends = sum(cpu - b0[pid] for pid, cpu in b1.items() if pid in b0)
        wal1 = asyncio.run(_pg(url, "SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))
        finish.set()
        closed = [results.get(timeout=120) for _ in range(writers)]
        outs += [c for c in closed if "error" in c]
    finally:
        finish.set()
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    errors = [o["error"] for o in outs if "error" in o]
    if errors:
        raise SystemExit(f"scale_writers: {errors[0]}")
    total = writers * share
    counts = asyncio.run(_counts(url))
    if counts != {o["pbx"]: o["journeys"] for o in outs if "journeys" in o} or any(o.get("spooled") for o in outs):
        raise SystemExit(f"scale_writers: rows {counts} do not match what was written")
    disk = asyncio.run(_pg(url, "SELECT " + " + ".join(f"pg_total_relation_size('{t}')" for t in TABLES)
                           if layout == "plain" else
                           "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_inherits i "
                           "ON i.inhrelid = c.oid WHERE i.inhparent::regclass::text IN "
                           "(" + ", ".join(f"'{t}'" for t in TABLES) + ")"))
    done = [o for o in outs if "journeys" in o]
    r = Round(writers, layout, total / wall, median([o["journeys"] / o["wall"] for o in done]),
              server / total * 1e6, backends / total * 1e6, sum(o["cpu"] for o in done) / total * 1e6,
              float(wal1 - wal0) / total, float(disk) / total)
    if keep:
        return r, url
    pg.drop_database(url)
    return r, None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--writers", default="1,4,16", help="writer counts, comma-separated (default 1,4,16)")
    ap.add_argument("--journeys", type=int, default=24000, help="journeys per round, in all (default 24000)")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds of each setup (default 2)")
    ap.add_argument("--partitioned", action="store_true", help="also rounds on tables partitioned by month")
    ap.add_argument("--max-seconds", type=float, default=900, help="stop starting rounds after this (default 900)")
    ap.add_argument("--fast", action="store_true", help="fsync and synchronous commits off (the tests' cluster)")
    args = ap.parse_args()
    try:
        counts = [int(x) for x in args.writers.split(",") if x]
    except ValueError:
        ap.error("--writers: numbers separated by commas, e.g. 1,4,16")
    if not counts or any(not 1 <= n <= 64 for n in counts):
        ap.error("--writers: each between 1 and 64")
    if not 1000 <= args.journeys <= 1_000_000:
        ap.error("--journeys must be in [1000, 1000000]")
    if not 1 <= args.rounds <= 20:
        ap.error("--rounds must be in [1, 20]")
    deadline = Deadline(args.max_seconds)
    print(f"machine: {machine()}")
    workdir = Path(tempfile.mkdtemp(prefix="onechance-scale-writers-"))
    t0 = time.perf_counter()
    journeys = build_journeys(args.journeys, 20, workdir)
    ids = sorted(json.loads(j)["call_id"] for j in (journeys[0], journeys[-1]))
    from onechance.store.partition import Month

    first = Month.of(int(ids[0][:10]))
    months = (str(first), str(Month.of(int(ids[-1][:10])).next()))
    print(f"{len(journeys)} journeys built from {CAPTURE.name} in {time.perf_counter() - t0:.1f} s; "
          f"{'fsync off' if args.fast else 'fsync and synchronous_commit on'}")
    layouts = ["plain", "partitioned"] if args.partitioned else ["plain"]
    results: list[Round] = []
    last_plain: str | None = None
    print(f"\n{'writers':>7s} {'tables':>11s} {'journeys/s':>11s} {'per writer':>11s} {'server us/j':>12s} "
          f"{'backends':>9s} {'writers us/j':>13s} {'WAL B/j':>8s} {'disk B/j':>9s} {'load':>5s}")
    with BenchCluster(durable=not args.fast) as pg:
        plan = [(rnd, n, layout) for rnd in range(args.rounds) for n in counts for layout in layouts]
        for i, (rnd, n, layout) in enumerate(plan):
            if deadline.passed:
                print(f"(--max-seconds reached: the last {len(plan) - i} rounds skipped)")
                break
            keep = rnd == args.rounds - 1 and layout == "plain" and n == counts[-1]
            r, url = one_round(pg, journeys, n, layout, months, workdir, keep=keep)
            last_plain = url or last_plain
            results.append(r)
            print(f"{n:7d} {layout:>11s} {r.rate:11,.0f} {r.per_writer:11,.0f} {r.server_us:12,.0f} "
                  f"{r.backend_us:9,.0f} {r.client_us:13,.0f} {r.wal:8,.0f} {r.disk:9,.0f} {os.getloadavg()[0]:5.2f}",
                  flush=True)
        print("\nmedian (min-max) of the rounds:")
        print(f"{'writers':>7s} {'tables':>11s} {'journeys/s':>20s} {'server us/journey':>20s} "
              f"{'backends us/journey':>20s} {'writers us/journey':>20s} {'WAL B/journey':>18s}")
        for n in counts:
            for layout in layouts:
                rs = [r for r in results if r.writers == n and r.layout == layout]
                if rs:
                    print(f"{n:7d} {layout:>11s} {spread([r.rate for r in rs]):>20s} "
                          f"{spread([r.server_us for r in rs]):>20s} {spread([r.backend_us for r in rs]):>20s} "
                          f"{spread([r.client_us for r in rs]):>20s} {spread([r.wal for r in rs]):>18s}")
        if last_plain is not None:
            rows = asyncio.run(_pg(last_plain, "SELECT count(*) FROM calls"))
            seconds = partition(last_plain, months)
            print(f"\nonechance db partition converted {rows:,} calls (and their child rows) in {seconds:.1f} s "
                  f"({rows / seconds:,.0f} calls/s, the command's start-up included)")
            pg.drop_database(last_plain)
    print(f"\nbench process CPU {proc_cpu(os.getpid()):.1f} s; wall {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
