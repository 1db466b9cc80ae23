#!/usr/bin/env python3
"""Shutdown under load: SIGTERM (or SIGKILL) to ``onechance run`` with thousands of calls in progress.

All on 127.0.0.1: the fake PBX (``onechance.demo.DemoPbx``) plays the call simulator (``onechance.sim``) as fast
as the daemon reads, a big centre whose callers wait long (20 queues, 80 operators, patience and queue timeout
2 h) so that calls in progress pile up; ``onechance run`` as a separate process with its SQLite store.  Once
``--live`` calls are in progress (``onechance_calls_in_progress``), with the PBX still streaming:

* ``--signal TERM`` (default): SIGTERM; prints the time to exit, the exit code and the daemon's own account
  (``shutdown: N journeys stored, M spooled for the next start, K lost``), then starts the daemon again on the
  same data directory until its spool is written back and counts the rows: every call closed at the stop
  (``daemon_stopped``) is there, every row is a call the PBX made (none invented);
* ``--signal KILL``: SIGKILL after ``--kill-after`` seconds of the captures' PBX at 40 times its peak rate,
  paced (``--speed`` 10) so that the daemon keeps up and the PBX's clock is the daemon's: the window of what a
  crash loses.  After a restart: the calls that had ended before the kill but are not stored, and how long
  (in real seconds) before the kill the oldest of them ended, to compare with ``database.flush_interval``
  (``--no-alerts``: an alert makes the store write everything waiting at once; without alerts only the flush
  interval decides, the longest window).

Every wait is bounded (``--max-seconds`` for the load phase).

usage: bench/shutdown.py [--live 10000] [--signal TERM|KILL] [--rounds 3] [--timeout 10] [--speed S]
       [--kill-after 20] [--flush-interval 0.5] [--max-seconds 300]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "service"))
sys.path.insert(0, str(ROOT))

from tests.durability import (  # noqa: E402
    DaemonProcess,
    busy_config,
    daemon_env,
    restart_and_drain,
    sim_config,
    sim_pbx,
    stored_calls,
    truths,
)

SHUTDOWN_LINE = re.compile(r"shutdown: (\d+) journeys stored, (\d+) spooled for the next start, (\d+) (?:lost|LOST)")
CLOSED_LINE = re.compile(r"(\d+) call\(s\) in progress closed as uncertain \(daemon stopped\)")


async def one_round(args: argparse.Namespace, seed: int) -> dict[str, object]:
    data = Path(tempfile.mkdtemp(prefix="onechance-bench-shutdown-"))
    kill = args.signal == "KILL"
    # SIGKILL: the captures' PBX, 40 times its peak rate, paced, so that calls end all the time
    config = sim_config(seed=seed, scale=40) if kill else busy_config(seed=seed)
    pbx = sim_pbx(10**9, config=config, speed=args.speed if args.speed is not None else (10.0 if kill else 0.0))
    await pbx.start()
    extra = {"ONECHANCE_JOURNEY__ALERT_KINDS": "[]"} if args.no_alerts else {}
    d = DaemonProcess(daemon_env(data, pbx.port, ONECHANCE_DAEMON__SHUTDOWN_TIMEOUT=str(args.timeout),
                                 ONECHANCE_DATABASE__FLUSH_INTERVAL=str(args.flush_interval),
                                 ONECHANCE_DATABASE__RETRY_INTERVAL="5", **extra))
    await d.start()
    out: dict[str, object] = {"seed": seed}
    try:
        began = time.monotonic()
        deadline = began + args.max_seconds
        while True:
            m = await d.metrics()
            live = sum(v for (n, _l), v in m.items() if n == "onechance_calls_in_progress")
            if (kill and time.monotonic() - began >= args.kill_after) or (not kill and live >= args.live):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"only {live:.0f} calls in progress after {args.max_seconds} s")
            await asyncio.sleep(0.2)
        out["live"] = int(live)
        out["backlog"] = int(sum(v for (n, _l), v in m.items() if n == "onechance_ami_queue_depth"))
        kill_clock = pbx.now()
        t0 = time.monotonic()
        d.send(signal.SIGTERM if args.signal == "TERM" else signal.SIGKILL)
        code = await d.wait(timeout=args.timeout * 6 + 30)
        out["seconds"] = round(time.monotonic() - t0, 2)
        out["exit"] = code
    finally:
        d.kill()
        with contextlib.suppress(ConnectionError):  # its player was writing to the daemon that went away
            await pbx.stop()
    made = {t["call_id"]: t for t in truths(pbx)}
    if args.signal == "TERM":
        line = SHUTDOWN_LINE.search(d.log)
        closed = CLOSED_LINE.search(d.log)
        out["stored_at_stop"], out["spooled_at_stop"], out["lost"] = (
            (int(line.group(1)), int(line.group(2)), int(line.group(3))) if line else ("?", "?", "?"))
        out["closed_at_stop"] = int(closed.group(1)) if closed else 0
    else:
        out["lost"] = "-"
    await restart_and_drain(data, timeout=120)
    rows = stored_calls(data / "onechance.db")
    out["rows"] = len(rows)
    out["invented"] = sum(1 for c in rows if c not in made)
    if args.signal == "TERM":
        out["rows_daemon_stopped"] = sum(1 for r in rows.values() if r["closed_reason"] == "daemon_stopped")
    else:
        # ended before the kill, by the PBX's clock, and not stored: the window a crash loses
        gone = [kill_clock - t["ended_at"] for t in made.values()
                if t["ended_at"] is not None and t["ended_at"] <= kill_clock and t["call_id"] not in rows]
        speed = pbx.speed or 1.0
        out["ended_before_kill"] = sum(1 for t in made.values() if t["ended_at"] is not None
                                       and t["ended_at"] <= kill_clock)
        if args.verbose:
            ages = sorted((kill_clock - t["ended_at"]) / speed for t in made.values()
                          if t["ended_at"] is not None and t["ended_at"] <= kill_clock)
            print("youngest ended calls (s before the kill):", [round(a, 2) for a in ages[:8]],
                  "after the kill:", sum(1 for t in made.values() if (t["ended_at"] or 0) > kill_clock))
        out["ended_not_stored"] = len(gone)
        out["oldest_lost_s"] = round(max(gone) / speed, 3) if gone else 0.0
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--live", type=int, default=10000, help="calls in progress when the signal is sent")
    parser.add_argument("--signal", choices=("TERM", "KILL"), default="TERM")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=10.0, help="daemon.shutdown_timeout (s)")
    parser.add_argument("--flush-interval", type=float, default=0.5, help="database.flush_interval (s)")
    parser.add_argument("--speed", type=float, default=None,
                        help="PBX pace (0: as fast as the daemon reads; default 0, and 10 with --signal KILL)")
    parser.add_argument("--verbose", action="store_true", help="--signal KILL: the ages of the last calls ended")
    parser.add_argument("--no-alerts", action="store_true",
                        help="raise no alert (journey.alert_kinds = []): an alert makes the store write at once, "
                             "so without them only flush_interval decides (the longest window)")
    parser.add_argument("--kill-after", type=float, default=20.0, help="--signal KILL: seconds of traffic first")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="longest load phase")
    args = parser.parse_args()
    results = [asyncio.run(one_round(args, seed)) for seed in range(1, args.rounds + 1)]
    keys = list(results[0])
    print(" | ".join(keys))
    for r in results:
        print(" | ".join(str(r.get(k, "")) for k in keys))
    if args.signal == "TERM":
        secs = [float(r["seconds"]) for r in results]  # type: ignore[arg-type]
        print(f"time to exit: median {statistics.median(secs):.2f} s, max {max(secs):.2f} s "
              f"(shutdown_timeout {args.timeout:g} s); exit codes {[r['exit'] for r in results]}")


if __name__ == "__main__":
    main()
