#!/usr/bin/env python3
"""Several PBXs in one daemon: ``--pbxs`` simulated call centres followed by one ``onechance run``, faster and
faster until it falls behind.

Set up for each round, all on 127.0.0.1:

* ``--pbxs`` simulated PBXs (``onechance.sim``: ``SimConfig.large`` centres of ``--queues`` queues of
  ``--operators`` operators, ``--calls-per-hour`` arrivals each, each PBX its own ``systemname`` and seed),
  every one served by ``onechance.demo.DemoPbx(source=...)`` on a port of its own, in ``--senders`` processes.
  Each PBX has already run ``--warm`` seconds when the daemon logs in (its calls in progress come through the
  resync), then streams in real time times ``--speed`` (the knob of the load: the same centres, their events
  ``speed`` times as dense; the calls in progress stay as many);
* one ``onechance run`` process, as installed, following them all (one ``[[pbx]]`` table each) with its metrics,
  API and store: a SQLite file, or a database in a PostgreSQL 15 cluster of the bench's own (fsync on).

The bench reads the daemon's ``/metrics`` every ``--interval`` s (as Prometheus would; a scrape costs the daemon
time) during ``--seconds`` s (after ``--ramp`` s):
``onechance_ami_events_total`` minus ``onechance_ami_queue_depth`` is how many events of each PBX it has handled,
so the PBX ``Timestamp`` of the first event not yet handled, compared with the PBX's clock (its stream's first
``Timestamp`` plus the time since it was sent, times the speed), is the lag: how late the daemon is on that PBX
(0 when it has handled everything due).  CPU and RSS of the daemon (and of the PostgreSQL server, and of the
simulators) come from /proc.  Then the streams stop, the daemon is given up to 2 minutes to catch up and is
stopped with SIGTERM (it stores the calls still in progress), and the journeys stored are compared with the calls
the simulators made: every call that started before the end and was in progress or began after the daemon
logged in must be stored, once, under its PBX (``miss``); a journey of a call the simulator never made is counted
(``xtra``), apart from those in progress when the daemon logged in or stopped (``edge``): a phone's consultation
call for an attended transfer has a Linkedid of its own, and a daemon that sees only its middle or its beginning
cannot know it is not a call.

The demo PBX follows its own stream to answer ``CoreShowChannels``/``QueueStatus``; once the daemon's resync has
been answered it only keeps its clock, which halves what a simulated PBX costs (the bytes sent do not change).  A
reconnection during a round would therefore not resync properly: it is reported (``drops``/``reconnects``).

Rounds run speed by speed, the stores interleaved at each speed; a store's higher speeds are skipped once it has
fallen behind (lag above 1 s at the end, above 5 s at p99, or events dropped).  Prints one line per round: events/s
handled (in all and per PBX), offered (what the PBXs' clocks called for), calls/hour, calls in progress, daemon CPU
(% of one core, µs per event), RSS, lag p50/p99/max and at the end, journeys stored/expected (missing, extra,
edge), journeys written per second and waiting for the store at the end of the window, PostgreSQL server CPU, the
busiest simulator process's CPU and how late the simulators were (p99, s), the seconds the daemon took to catch up
and to stop, its exit status, the median time a ``/metrics`` read took (ms, waiting for the busy event loop
included) and how many series it holds, the most PostgreSQL connections the daemon held at once, the machine's
load average, the verdict.  Then, per store, a straight line through the rounds that kept up: the daemon's CPU as
a fixed part plus a cost per event, and the events/s one core would handle.

usage: bench/scale_pbxs.py [--pbxs 10] [--stores sqlite,postgres] [--speeds 1,8,16,24,32,48] [--seconds 30]
                           [--calls-per-hour 3000] [--queues 20] [--operators 6] [--warm 300] [--senders 2]
                           [--rtcp] [--max-seconds 2400] [--quick] [--verbose]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import dataclasses
import json
import multiprocessing as mp
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scale_common import BenchCluster, Deadline, clean_env, connect, machine, median, proc_cpu, proc_rss

TS = re.compile(rb"\r\nTimestamp: (\d+\.\d+)")
METRIC = re.compile(r'^(onechance_[a-z_]+)(?:\{pbx="([^"]*)"\})? ([0-9.e+-]+)$', re.M)
WANTED = {"onechance_ami_events_total", "onechance_ami_queue_depth", "onechance_calls_in_progress",
          "onechance_ami_dropped_total", "onechance_ami_reconnects_total", "onechance_store_journeys_written_total",
          "onechance_store_queue_depth", "onechance_store_spool_journeys"}


# ---- the simulated PBXs (sender processes) -------------------------------------------------------------------
def sender_main(specs: list[dict[str, Any]], opts: dict[str, Any], pipe: Any) -> None:
    asyncio.run(_sender(specs, opts, pipe))


async def _sender(specs: list[dict[str, Any]], opts: dict[str, Any], pipe: Any) -> None:
    from onechance.ami.parser import TERMINATOR, AmiMessage, parse_block
    from onechance.demo import DemoPbx, Hold, MessageSource, PbxState, QueueInfo, Recorded, SimSource
    from onechance.sim import Centre, RateProfile, SimConfig

    class FollowingState(PbxState):
        """The demo PBX's live model; ``light``: only its clock moves (after the daemon's resync)."""

        light = False

        def apply(self, msg: AmiMessage) -> None:
            if not self.light:
                super().apply(msg)
                return
            ts = msg.headers.get("Timestamp")
            if ts:
                self.clock = max(self.clock, float(ts))

    class BenchSource(MessageSource):
        """The simulator, endless, noting each streamed message's Timestamp (``stamps``); ``light``: messages
        are not parsed (only the Timestamp is read)."""

        def __init__(self, config: SimConfig, pbx_name: str) -> None:
            self.config = config.validate()
            self.pbx_name = pbx_name
            self.centre: Centre | None = None
            self._it: Any = None
            self._i = -1
            self._cur: Recorded | None = None
            self.light = False
            self.streaming = False
            self.first = -1  # index of the first streamed message
            self.stamps = array("d")
            self.t0: float | None = None  # monotonic time the first streamed message was written

        def start_at_present(self, earlier: float = 0.0) -> None:
            self.config = dataclasses.replace(self.config, start=float(int(time.time() - earlier)))

        def queues(self) -> list[QueueInfo]:
            return SimSource(self.config).queues()

        def begin_stream(self) -> None:
            """The warm-up is over: from the current position on, messages are streamed."""
            self.streaming = True
            if self._cur is not None:  # fetched by the warm-up, not played: the first streamed
                self.first = self._i
                self.stamps.append(self._cur.ts or 0.0)
            else:
                self.first = self._i + 1

        def get(self, i: int) -> Recorded | None:
            if i == self._i:
                return self._cur
            if self.centre is None:
                self.centre = Centre(self.config, pbx_name=self.pbx_name, keep_truths=True)
                self._it = self.centre.messages()
            block = next(self._it)[: -len(TERMINATOR)]
            self._i = i
            if self.light:
                m = TS.search(block)
                ts = float(m.group(1)) if m else None
                rec = Recorded(block, AmiMessage({"Timestamp": m.group(1).decode()} if m else {}), ts)
            else:
                msg, _b, _n = parse_block(block.decode("utf-8", "replace"))
                assert msg is not None
                text = msg.headers.get("Timestamp")
                rec = Recorded(block, msg, float(text) if text else None)
            if self.streaming:
                if i == self.first + 1 and self.t0 is None:
                    self.t0 = time.monotonic()
                self.stamps.append(rec.ts if rec.ts is not None else (self.stamps[-1] if self.stamps else 0.0))
            self._cur = rec
            return rec

    speed = opts["speed"]
    pbxs: list[tuple[str, Any, BenchSource]] = []
    for spec in specs:
        rate = RateProfile(per_hour=(opts["calls_per_hour"],) * 24)
        cfg = SimConfig.large(queues=opts["queues"], operators_per_queue=opts["operators"], seed=spec["seed"],
                              system_name=spec["system_name"], rate=rate, rtcp=opts["rtcp"])
        source = BenchSource(cfg, spec["name"])
        pbx = DemoPbx(source=source, speed=speed, username="bench", secret="bench")
        pbx.state = FollowingState()
        pbx.start_at_present(earlier=opts["warm"])
        pbx.warm_up(opts["warm"])
        source.begin_stream()
        await pbx.start()
        pbxs.append((spec["name"], pbx, source))
    pipe.send({"ports": {name: pbx.port for name, pbx, _s in pbxs}})

    late: list[float] = []

    async def watch() -> None:
        """Switch each PBX to light once its resync is answered; note how late the simulators are."""
        synced: dict[str, float] = {}
        while True:
            now = time.monotonic()
            for name, pbx, source in pbxs:
                if name not in synced and {"coreshowchannels", "queuestatus"} <= set(pbx.actions):
                    synced[name] = now
                if name in synced and now - synced[name] > 0.2 and not source.light:
                    source.light = True
                    pbx.state.light = True
                if source.t0 is not None and source.stamps:
                    clock = source.stamps[0] + (now - source.t0) * speed
                    sent = pbx.sent
                    if sent < len(source.stamps) and source.stamps[sent] < clock:
                        late.append((clock - source.stamps[sent]) / speed)
                    else:
                        late.append(0.0)
            await asyncio.sleep(0.25)

    watcher = asyncio.create_task(watch())
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, pipe.recv)  # "stop"
    watcher.cancel()
    for _name, pbx, _s in pbxs:
        pbx.plan[pbx.position + 1] = Hold()
    deadline = time.monotonic() + 10
    while not all(pbx.holding.is_set() for _n, pbx, _s in pbxs) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    results = {}
    for name, pbx, source in pbxs:
        centre = source.centre
        assert centre is not None
        results[name] = {
            "sent": pbx.sent, "stamps": source.stamps[: pbx.sent].tobytes(), "t0": source.t0,
            "truths": [(t.call_id, t.started_at, t.ended_at) for t in centre.truths], "held": pbx.holding.is_set(),
        }
    late.sort()
    pipe.send({"pbxs": results, "cpu": time.process_time(),
               "late_p99": late[int(len(late) * 0.99)] if late else 0.0, "late_max": late[-1] if late else 0.0})
    await loop.run_in_executor(None, pipe.recv)  # "exit"
    for _name, pbx, _s in pbxs:
        pbx.release()
        await pbx.stop()


# ---- the daemon ------------------------------------------------------------------------------------------------
class Daemon:
    """``onechance run --config FILE`` as a process; its stderr kept (the last lines) by a thread."""

    def __init__(self, config: Path, data_dir: Path) -> None:
        env = clean_env()
        env["ONECHANCE_DATA_DIR"] = str(data_dir)
        self.proc = subprocess.Popen([sys.executable, "-m", "onechance.cli", "run", "--config", str(config)],
                                     env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
        self.lines: list[str] = []
        self.port = 0
        self._found = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            del self.lines[:-300]
            m = re.search(r"http://127\.0\.0\.1:(\d+)/callbacks", line)
            if m and not self.port:
                self.port = int(m.group(1))
                self._found.set()

    def wait_port(self, timeout: float) -> None:
        if not self._found.wait(timeout):
            raise SystemExit("scale_pbxs: the daemon did not start:\n" + "".join(self.lines[-20:]))

    def get(self, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stop(self, timeout: float) -> tuple[int | None, float]:
        t0 = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)
            rc = None
        self._reader.join(timeout=10)
        return rc, time.monotonic() - t0

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def config_text(ports: dict[str, int], url: str) -> str:
    lines = ['log_level = "INFO"', "", "[http]", 'listen = "127.0.0.1:0"', "", "[database]", f'url = "{url}"', "",
             "[daemon]", "shutdown_timeout = 120.0", ""]
    for name, port in sorted(ports.items()):
        lines += ["[[pbx]]", f'name = "{name}"', 'host = "127.0.0.1"', f"port = {port}", 'username = "bench"',
                  'secret = "bench"', ""]
    return "\n".join(lines)


def scrape(daemon: Daemon) -> tuple[dict[tuple[str, str], float], float, int, int]:
    """The metrics wanted (by name and pbx), the scrape's seconds, bytes and samples."""
    t0 = time.perf_counter()
    status, body = daemon.get("/metrics")
    seconds = time.perf_counter() - t0
    if status != 200:
        raise SystemExit(f"scale_pbxs: /metrics answered {status}")
    text = body.decode()
    out = {}
    for name, pbx, value in METRIC.findall(text):
        if name in WANTED:
            out[(name, pbx)] = float(value)
    samples = sum(1 for line in text.splitlines() if line and not line.startswith("#"))
    return out, seconds, len(body), samples


@dataclass
class Sample:
    t: float
    metrics: dict[tuple[str, str], float]
    cpu: float
    rss: int
    pg_cpu: float
    scrape: float


@dataclass
class Result:
    store: str
    speed: float
    handled: float = 0.0  # events/s handled, in all
    per_pbx: list[float] = field(default_factory=list)
    offered: float = 0.0
    calls_per_hour: float = 0.0
    live: float = 0.0
    cpu: float = 0.0  # % of one core
    us_per_event: float = 0.0
    rss: int = 0
    lag: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # p50, p99, max, at the end (max over PBXs)
    stored: int = 0
    expected: int = 0
    missing: int = 0
    extra: int = 0
    edge: int = 0  # consultations in progress at the daemon's login or stop: stored as calls of their own
    journeys_per_s: float = 0.0
    store_queue: int = 0  # journeys waiting in the daemon's memory for the store at the end of the window
    pg_cpu: float = 0.0
    sender_cpu: float = 0.0  # % of one core, the busiest sender process
    late_p99: float = 0.0
    drops: int = 0
    reconnects: int = 0
    catch_up: float = 0.0
    shutdown: float = 0.0
    exit_code: int | None = None
    load: float = 0.0  # the machine's 1-minute load average at the end of the round
    connections: int = 0  # most PostgreSQL connections the daemon had open at once
    scrape_ms: float = 0.0
    scrape_bytes: int = 0
    samples: int = 0

    @property
    def behind(self) -> bool:
        return self.lag[3] > 1.0 or self.lag[1] > 5.0 or self.drops > 0 or self.reconnects > 0


def processed(s: Sample, pbx: str) -> int:
    """Events of ``pbx`` the daemon has handled (FullyBooted, sent at login, is not in the stream)."""
    return int(s.metrics.get(("onechance_ami_events_total", pbx), 0) - s.metrics.get(("onechance_ami_queue_depth",
                                                                                        pbx), 0)) - 1


def _id_epoch(call_id: str) -> float:
    """The epoch second in a Linkedid (``[systemname-]<epoch>.<n>``)."""
    m = re.search(r"(\d{9,11})\.\d+$", call_id)
    return float(m.group(1)) if m else float("inf")


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q / 100.0))]


ROWS = "SELECT pbx, call_id, coalesce(closed_reason, '') FROM calls"


async def _pg_rows(url: str) -> list[tuple[str, str, str]]:
    conn = await connect(url)
    try:
        return [(r[0], r[1], r[2]) for r in await conn.fetch(ROWS)]
    finally:
        await conn.close()


def stored_rows(store: str, url: str, path: Path) -> list[tuple[str, str, str]]:
    """(pbx, call_id, closed_reason) of every stored journey."""
    if store == "postgres":
        return asyncio.run(_pg_rows(url))
    with contextlib.closing(sqlite3.connect(path)) as db:
        return [(r[0], r[1], r[2]) for r in db.execute(ROWS)]


def one_round(store: str, speed: float, args: argparse.Namespace, pg: BenchCluster | None) -> Result:
    res = Result(store, speed)
    work = Path(tempfile.mkdtemp(prefix="onechance-scale-pbxs-"))
    db_path = work / "onechance.db"
    url = pg.create_database() if pg is not None and store == "postgres" else f"sqlite+aiosqlite:///{db_path}"
    names = [f"pbx{i:02d}" for i in range(args.pbxs)]
    ctx = mp.get_context("spawn")
    senders = []
    opts = {"speed": speed, "warm": args.warm, "queues": args.queues, "operators": args.operators,
            "calls_per_hour": args.calls_per_hour, "rtcp": args.rtcp}
    for k in range(args.senders):
        mine = [{"name": n, "seed": 100 + i, "system_name": f"site{i:02d}"} for i, n in enumerate(names)
                if i % args.senders == k]
        if not mine:
            continue
        parent, child = ctx.Pipe()
        p = ctx.Process(target=sender_main, args=(mine, opts, child), daemon=True)
        p.start()
        senders.append((p, parent))
    daemon: Daemon | None = None
    try:
        ports: dict[str, int] = {}
        for _p, pipe in senders:
            if not pipe.poll(600):
                raise SystemExit("scale_pbxs: a simulator did not start within 600 s")
            ports.update(pipe.recv()["ports"])
        conf = work / "onechance.toml"
        conf.write_text(config_text(ports, url))
        daemon = Daemon(conf, work / "data")
        daemon.wait_port(60)
        deadline = time.monotonic() + 120
        while daemon.get("/readyz")[0] != 200:
            if time.monotonic() > deadline or daemon.proc.poll() is not None:
                raise SystemExit("scale_pbxs: the daemon never became ready:\n" + "".join(daemon.lines[-20:]))
            time.sleep(0.1)
        time.sleep(args.ramp)
        samples: list[Sample] = []
        sender_cpu0 = [proc_cpu(p.pid) for p, _ in senders]
        s_t0 = time.monotonic()
        end = s_t0 + args.seconds
        while True:
            t = time.monotonic()
            metrics, took, size, n = scrape(daemon)
            samples.append(Sample(t, metrics, proc_cpu(daemon.proc.pid), proc_rss(daemon.proc.pid),
                                  pg.cpu_seconds() if pg is not None and store == "postgres" else 0.0, took))
            res.scrape_bytes, res.samples = size, n
            if pg is not None and store == "postgres":
                res.connections = max(res.connections, pg.connections(url.rsplit("/", 1)[1]))
            if t >= end:
                break
            time.sleep(max(0.0, min(args.interval, end - time.monotonic())))
        wall = time.monotonic() - s_t0
        if args.verbose:
            fams: dict[str, int] = {}
            for line in daemon.get("/metrics")[1].decode().splitlines():
                if line and not line.startswith("#"):
                    fam = re.split(r"[{ ]", line, maxsplit=1)[0]
                    fams[fam] = fams.get(fam, 0) + 1
            print("series", sorted(fams.items(), key=lambda kv: -kv[1])[:12], file=sys.stderr)
        res.sender_cpu = max((proc_cpu(p.pid) - c0) / wall * 100 for (p, _), c0 in zip(senders, sender_cpu0))
        for _p, pipe in senders:
            pipe.send("stop")
        got: dict[str, dict[str, Any]] = {}
        lates = []
        for _p, pipe in senders:
            if not pipe.poll(60):
                raise SystemExit("scale_pbxs: a simulator did not stop")
            reply = pipe.recv()
            got.update(reply["pbxs"])
            lates.append(reply["late_p99"])
        res.late_p99 = max(lates)
        # the daemon catches up, then its store
        c0 = time.monotonic()
        last: Sample | None = None
        while time.monotonic() - c0 < 120:
            metrics, *_ = scrape(daemon)
            last = Sample(time.monotonic(), metrics, 0.0, 0, 0.0, 0.0)
            if all(processed(last, n) >= got[n]["sent"] for n in names):
                break
            time.sleep(0.2)
        res.catch_up = time.monotonic() - c0
        while time.monotonic() - c0 < 240:
            metrics, *_ = scrape(daemon)
            if metrics.get(("onechance_store_queue_depth", ""), 0) == 0 and \
                    metrics.get(("onechance_store_spool_journeys", ""), 0) == 0:
                break
            time.sleep(0.2)
        res.load = os.getloadavg()[0]
        res.exit_code, res.shutdown = daemon.stop(150)
        if args.verbose:
            print("".join(line for line in daemon.lines if "INFO" not in line)[-6000:], file=sys.stderr)
            print("scrapes ms", [round(s.scrape * 1000) for s in samples], file=sys.stderr)
        for _p, pipe in senders:
            pipe.send("exit")
        # figures over the window
        first, final = samples[0], samples[-1]
        dt = final.t - first.t
        per = {n: (processed(final, n) - processed(first, n)) / dt for n in names}
        res.per_pbx = [per[n] for n in names]
        res.handled = sum(res.per_pbx)
        res.cpu = (final.cpu - first.cpu) / dt * 100
        res.us_per_event = (final.cpu - first.cpu) / max(1.0, res.handled * dt) * 1e6
        res.rss = max(s.rss for s in samples)
        res.pg_cpu = (final.pg_cpu - first.pg_cpu) / dt * 100
        res.live = median([sum(v for (k, _p), v in s.metrics.items() if k == "onechance_calls_in_progress")
                           for s in samples])
        res.journeys_per_s = (final.metrics.get(("onechance_store_journeys_written_total", ""), 0)
                              - first.metrics.get(("onechance_store_journeys_written_total", ""), 0)) / dt
        res.store_queue = int(final.metrics.get(("onechance_store_queue_depth", ""), 0))
        res.drops = int(sum(v for (k, _p), v in final.metrics.items() if k == "onechance_ami_dropped_total"))
        res.reconnects = int(sum(v for (k, _p), v in final.metrics.items() if k == "onechance_ami_reconnects_total"))
        res.scrape_ms = median([s.scrape for s in samples]) * 1000
        lags: list[float] = []
        at_end = 0.0
        offered = 0.0
        calls = 0
        for n in names:
            g = got[n]
            stamps = array("d")
            stamps.frombytes(g["stamps"])
            if not stamps or g["t0"] is None:
                continue
            clock0, t0 = stamps[0], g["t0"]

            def clock(t: float, clock0: float = clock0, t0: float = t0) -> float:
                return clock0 + (t - t0) * speed

            for s in samples:
                done = processed(s, n)
                due = bisect.bisect_right(stamps, clock(s.t))
                lag = (clock(s.t) - stamps[done]) / speed if done < due and done < len(stamps) else 0.0
                lags.append(max(0.0, lag))
                if s is final:
                    at_end = max(at_end, lags[-1])
            offered += (bisect.bisect_right(stamps, clock(final.t)) - bisect.bisect_right(stamps, clock(first.t))) / dt
            lo, hi = clock(first.t), clock(final.t)
            calls += sum(1 for _cid, started, _e in g["truths"] if lo <= started < hi)
            # the journeys the daemon had to store
        res.offered = offered
        res.calls_per_hour = calls / dt * 3600
        res.lag = (pct(lags, 50), pct(lags, 99), max(lags) if lags else 0.0, at_end)
        rows = stored_rows(store, url, db_path)
        stored: dict[str, set[str]] = {}
        cut = set()
        for pbx, cid, reason in rows:
            stored.setdefault(pbx, set()).add(cid)
            if reason == "daemon_stopped":
                cut.add((pbx, cid))
        res.stored = len(rows)
        for n in names:
            g = got[n]
            stamps = array("d")
            stamps.frombytes(g["stamps"])
            begin, stop = stamps[0], stamps[-1]
            everything = {cid for cid, _s, _e in g["truths"]}
            expected = {cid for cid, started, ended in g["truths"]
                        if started < stop - 1.0 and (ended is None or ended > begin + 1.0)}
            mine = stored.get(n, set())
            res.expected += len(expected)
            res.missing += len(expected - mine)
            # a call in progress when the daemon logged in, or when it stopped, that is not a call of its own (a
            # phone's consultation for an attended transfer has its own Linkedid): the daemon cannot tell
            unknown = mine - everything
            if args.verbose:
                (work / f"truths-{n}.json").write_text(json.dumps(g["truths"]))
            if args.verbose and (expected - mine):
                gone = [t for t in g["truths"] if t[0] in expected - mine]
                print(n, "begin", begin, "stop", stop, "missing", gone[:10], file=sys.stderr)
            edge = {cid for cid in unknown if _id_epoch(cid) < begin or (n, cid) in cut}
            res.edge += len(edge)
            res.extra += len(unknown - edge)
        res.extra += sum(len(v) for k, v in stored.items() if k not in names)
    finally:
        if daemon is not None:
            daemon.kill()
        for p, _pipe in senders:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
        if pg is not None and store == "postgres":
            pg.drop_database(url)
        if args.verbose:
            print("kept", work, file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return res


def show(r: Result) -> None:
    lag = "/".join(f"{x:.2f}" for x in r.lag)
    verdict = "FALLS BEHIND" if r.behind else "keeps up"
    why = [f"{n} {what}" for n, what in ((r.drops, "events dropped"), (r.reconnects, "reconnects")) if n]
    if why:
        verdict += f" ({', '.join(why)})"
    print(f"{r.store:8s} {r.speed:5g}x {r.handled:9,.0f} {median(r.per_pbx):8,.0f} {r.offered:9,.0f} "
          f"{r.calls_per_hour:9,.0f} {r.live:6,.0f} {r.cpu:5.0f}% {r.us_per_event:6.1f} {r.rss / 2**20:6.0f} "
          f"{lag:>22s} {r.stored:7,d}/{r.expected:<7,d} {r.missing:4d} {r.extra:4d} {r.edge:4d} "
          f"{r.journeys_per_s:6.1f} {r.store_queue:6,d} "
          f"{r.pg_cpu:4.0f}% {r.sender_cpu:4.0f}% {r.late_p99:5.2f} {r.catch_up:6.1f} {r.shutdown:5.1f} "
          f"{r.exit_code!s:>4s} {r.scrape_ms:6.0f} {r.samples:6,d} {r.connections:3d} {r.load:5.2f}  {verdict}",
          flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pbxs", type=int, default=10, help="simulated PBXs (default 10)")
    ap.add_argument("--stores", default="sqlite,postgres", help="sqlite, postgres or both (default both)")
    ap.add_argument("--speeds", default="1,8,16,24,32,48", help="speeds, in order (default 1,8,16,24,32,48)")
    ap.add_argument("--seconds", type=float, default=30.0, help="measured seconds per round (default 30)")
    ap.add_argument("--ramp", type=float, default=5.0, help="seconds after the daemon is ready before measuring")
    ap.add_argument("--interval", type=float, default=5.0,
                    help="seconds between /metrics reads (default 5: each read costs the daemon a scrape)")
    ap.add_argument("--calls-per-hour", type=float, default=3000.0, help="arrivals per PBX at 1x (default 3000)")
    ap.add_argument("--queues", type=int, default=20, help="queues per PBX (default 20)")
    ap.add_argument("--operators", type=int, default=6, help="operators per queue (default 6)")
    ap.add_argument("--warm", type=float, default=300.0, help="seconds each PBX has run before (default 300)")
    ap.add_argument("--rtcp", action="store_true", help="RTCP reports in the streams too (the daemon's manager "
                                                        "login asks for no 'reporting' events: a real PBX sends none)")
    ap.add_argument("--senders", type=int, default=2, help="processes serving the simulated PBXs (default 2)")
    ap.add_argument("--max-seconds", type=float, default=2400.0, help="start no round after this (default 2400)")
    ap.add_argument("--quick", action="store_true", help="a short check: 3 PBXs, speeds 1 and 8, 10 s rounds")
    ap.add_argument("--verbose", action="store_true", help="print the daemon's warnings, the scrapes, the series by "
                                                           "family, the calls missing; keep each round's directory")
    args = ap.parse_args()
    if args.quick:
        args.pbxs, args.speeds, args.seconds, args.warm, args.queues = 3, "1,8", 10.0, 120.0, 8
    stores = [s for s in args.stores.split(",") if s]
    if not stores or any(s not in ("sqlite", "postgres") for s in stores):
        ap.error("--stores: sqlite, postgres or both (comma-separated)")
    try:
        speeds = [float(x) for x in args.speeds.split(",") if x]
    except ValueError:
        ap.error("--speeds: numbers separated by commas")
    if not speeds or any(not 0 < s <= 1000 for s in speeds):
        ap.error("--speeds: each in (0, 1000]")
    if not 1 <= args.pbxs <= 200 or not 1 <= args.senders <= 16:
        ap.error("--pbxs must be in [1, 200] and --senders in [1, 16]")
    if not 2 <= args.seconds <= 600 or not 0 <= args.warm <= 7200 or not 0.2 <= args.interval <= 10:
        ap.error("--seconds in [2, 600], --warm in [0, 7200], --interval in [0.2, 10]")
    deadline = Deadline(args.max_seconds)
    print(f"machine: {machine()}")
    print(f"{args.pbxs} PBXs of {args.queues} queues x {args.operators} operators, {args.calls_per_hour:g} calls/hour "
          f"each at 1x, {'with' if args.rtcp else 'no'} RTCP, {args.warm:g} s warm; {args.seconds:g} s measured per "
          f"round; {args.senders} simulator processes")
    print("\nstore    speed  events/s  per PBX   offered calls/h   live   cpu  us/ev  RSS MB   lag s p50/p99/max/end"
          "  stored/expected miss xtra edge  jrn/s  store   pg  sims  late  catch  stop exit scrape series  db  load")
    behind: set[str] = set()
    results: list[Result] = []
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(BenchCluster()) if "postgres" in stores else None
        for speed in speeds:
            for store in stores:
                if store in behind:
                    continue
                if deadline.passed:
                    print(f"(--max-seconds reached: {store} at {speed:g}x and later not run)")
                    continue
                r = one_round(store, speed, args, pg)
                results.append(r)
                show(r)
                if r.behind:
                    behind.add(store)
    for store in stores:
        fit = [(r.handled, r.cpu / 100) for r in results if r.store == store and not r.behind]
        if len(fit) >= 2 and len({round(x) for x, _ in fit}) >= 2:
            n = len(fit)
            mx, my = sum(x for x, _ in fit) / n, sum(y for _, y in fit) / n
            b = sum((x - mx) * (y - my) for x, y in fit) / sum((x - mx) ** 2 for x, _ in fit)
            a = my - b * mx
            cap = (1 - a) / b if b > 0 else float("inf")
            print(f"{store}: daemon CPU = {a * 100:.1f}% of a core + {b * 1e6:.1f} us per event (fit over {n} rounds "
                  f"that kept up): one core handles about {cap:,.0f} events/s")
    lost = [r for r in results if r.missing or r.extra]
    print(f"\n{len(results)} rounds; journeys missing or extra in {len(lost)}; load average now "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
