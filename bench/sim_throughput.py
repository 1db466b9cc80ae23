#!/usr/bin/env python3
"""Simulator throughput: how fast ``onechance.sim`` writes AMI traffic, next to how fast the tracker reads it.

For each setup (the captures' PBX in the sip and local styles, with and without RTCP reports; a big centre
of 60 queues and 360 operators at peak hour; three PBXs of the big kind), generates for ``--seconds``
seconds (each) with ``Centre.chunks()`` and prints messages/s and MB/s, measured both on the wall clock
and on this process's CPU time (steadier on a busy machine), and the most calls live at once.  Then the
bytes of the first setup go through onechance's parser and tracker (``AmiFramer`` + ``JourneyTracker.feed``)
for the same time, so the two rates can be compared: the simulator should not be what a benchmark of
onechance measures.

usage: bench/sim_throughput.py [--seconds 5] [--only NAME]
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "service"))

from onechance.ami.parser import AmiFramer  # noqa: E402
from onechance.journey import JourneyTracker  # noqa: E402
from onechance.sim import Centre, RateProfile, SimConfig  # noqa: E402

PEAK = 1_800_000_000 - 1_800_000_000 % 86400 + 10 * 3600.0  # 10:00 UTC, the busiest hour of the profile


@dataclass
class Result:
    name: str
    messages: int
    size: int
    wall: float
    cpu: float
    calls: int
    peak_live: int
    data: bytes


def generate(name: str, make: Callable[[], list[Centre]], seconds: float, keep: int = 0) -> Result:
    """Run the centres (round robin, a chunk each) for ``seconds``; keep up to ``keep`` bytes of the output."""
    centres = make()
    streams = [c.chunks() for c in centres]
    kept: list[bytes] = []
    kept_size = messages = size = peak = 0
    gc.collect()
    w0, c0 = time.perf_counter(), time.process_time()
    rounds = 0
    while time.perf_counter() - w0 < seconds:
        for s in streams:
            chunk = next(s)
            messages += chunk.count(b"\r\n\r\n")
            size += len(chunk)
            if kept_size < keep:
                kept.append(chunk)
                kept_size += len(chunk)
        rounds += 1
        if rounds % 200 == 0:
            peak = max(peak, sum(c.live_calls for c in centres))
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return Result(name, messages, size, wall, cpu, sum(c.calls_started for c in centres), peak, b"".join(kept))


def track(data: bytes, seconds: float) -> tuple[int, float]:
    """Messages/s of parser + tracker over ``data`` (a prefix of it if it takes longer than ``seconds``)."""
    framer = AmiFramer()
    tracker = JourneyTracker()
    chunk = 64 * 1024
    n = 0
    gc.collect()
    c0 = time.process_time()
    for i in range(0, len(data), chunk):
        for msg in framer.iter_feed(data[i : i + chunk]):
            tracker.feed(msg)
            n += 1
        if time.process_time() - c0 > seconds:
            break
    return n, time.process_time() - c0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds per measurement (default 5)")
    ap.add_argument("--only", help="run only the setup of this name")
    args = ap.parse_args()
    if not 0 < args.seconds <= 600:
        ap.error("--seconds must be in (0, 600]")
    default = dict(start=PEAK, rate=RateProfile(scale=6))
    big = dict(start=PEAK, rate=RateProfile(scale=400), queues=60, operators_per_queue=6)
    setups: list[tuple[str, Callable[[], list[Centre]]]] = [
        ("sip, rtcp", lambda: [Centre(SimConfig.default(seed=1, **default), keep_truths=False)]),
        ("sip, no rtcp", lambda: [Centre(SimConfig.default(seed=1, rtcp=False, **default), keep_truths=False)]),
        ("local", lambda: [Centre(SimConfig.default(seed=1, style="local", **default), keep_truths=False)]),
        ("60 queues, 360 operators", lambda: [Centre(SimConfig.large(seed=2, **big), keep_truths=False)]),
        ("3 PBXs x 60 queues", lambda: [Centre(SimConfig.large(seed=3 + i, system_name=f"pbx{i}", **big),
                                               pbx_name=f"pbx{i}", keep_truths=False) for i in range(3)]),
    ]
    if args.only:
        setups = [s for s in setups if s[0] == args.only]
        if not setups:
            ap.error(f"--only: no setup named {args.only!r}")
    print(f"{'setup':28s} {'messages':>10s} {'MB':>7s} {'msg/s wall':>11s} {'msg/s cpu':>10s} {'MB/s cpu':>9s} "
          f"{'calls':>7s} {'live':>6s}")
    first: Result | None = None
    for name, make in setups:
        r = generate(name, make, args.seconds, keep=64 * 1024 * 1024 if first is None else 0)
        first = first or r
        print(f"{name:28s} {r.messages:10d} {r.size / 1e6:7.1f} {r.messages / r.wall:11,.0f} "
              f"{r.messages / r.cpu:10,.0f} {r.size / r.cpu / 1e6:9.1f} {r.calls:7d} {r.peak_live:6d}")
    assert first is not None
    n, cpu = track(first.data, args.seconds)
    sim_rate = first.messages / first.cpu
    print(f"\ntracker (AmiFramer + JourneyTracker.feed) on the '{first.name}' bytes: {n / cpu:,.0f} msg/s cpu; "
          f"the simulator writes {sim_rate / (n / cpu):.1f}x as fast")
    return 0


if __name__ == "__main__":
    sys.exit(main())
