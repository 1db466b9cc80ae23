#!/usr/bin/env python3
"""Memory per live call, and how memory and CPU grow with the number of live calls.

Calls are held open: copies of ``tests/data/load_a.ami`` (each copy with call ids of its own and later
timestamps, 60 calls) with every ``Hangup``, ``HangupRequest`` and ``SoftHangupRequest`` left out, so each call
stays live in the state its last event left it (waiting, ringing, talking, transferred...).  The stream goes
through the daemon's own parsing and tracking (``AmiFramer`` with the tracker's ``EventFilter``,
``PbxPipeline`` with no sink) and ``tracemalloc`` measures what stays allocated once the stream is read (the
parser's transient objects are gone by then): bytes per live call.  Then the same at 1x, 4x, 16x, 64x the base
number of live calls: bytes per call and CPU per event must stay flat (no super-linear structure), and one
``tick`` (what the daemon does every second: long waits, over-age calls) and one sweep are timed.

usage: bench/ingest_memory.py [--base 160] [--scales 1,4,16,64] [--at 1000,10000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import re
import sys
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "service"))

from onechance.ami.items import AmiEvents  # noqa: E402
from onechance.ami.parser import AmiFramer  # noqa: E402
from onechance.journey import JourneyTracker  # noqa: E402
from onechance.pipeline import PbxPipeline  # noqa: E402

ID = re.compile(rb"\b(1\d{9}\.\d+)\b")
TS = re.compile(rb"(\r\nTimestamp: )(\d+\.\d+)")
HANGUPS = (b"Event: Hangup\r\n", b"Event: HangupRequest\r\n", b"Event: SoftHangupRequest\r\n")
CALLS_PER_COPY = 60


def held_open(capture: Path) -> list[bytes]:
    """The capture's messages without its hang-ups (every call stays live)."""
    body = capture.read_bytes().partition(b"\r\n")[2]
    return [b for b in body.split(b"\r\n\r\n") if b.strip() and not b.startswith(HANGUPS)]


def stream(blocks: list[bytes], copies: int, span: float = 10.0) -> Iterator[bytes]:
    """``copies`` copies, each with ids of its own and ``span`` seconds later (64 KiB chunks)."""
    out: list[bytes] = []
    size = 0
    for i in range(copies):
        tag = b"%06d" % i
        shift = i * span
        for b in blocks:
            b = ID.sub(lambda m, tag=tag: m.group(1) + tag, b)
            if shift:
                b = TS.sub(lambda m, shift=shift: m.group(1) + b"%.6f" % (float(m.group(2)) + shift), b)
            out.append(b + b"\r\n\r\n")
            size += len(out[-1])
            if size >= 65536:
                yield b"".join(out)
                out, size = [], 0
    if out:
        yield b"".join(out)


def measure(blocks: list[bytes], calls: int, trace: bool) -> dict[str, float]:
    copies = max(1, calls // CALLS_PER_COPY)
    chunks = list(stream(blocks, copies))
    tracker = JourneyTracker()
    pipeline = PbxPipeline(tracker, asyncio.Queue(), [], name="bench")
    framer = AmiFramer(event_filter=pipeline.event_filter)
    gc.collect()
    if trace:
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
    t0 = time.process_time()
    arrival = time.time()
    for chunk in chunks:
        msgs = list(framer.iter_feed(chunk))
        pipeline.handle(AmiEvents(msgs, arrival))
    cpu = time.process_time() - t0
    del chunks
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - before if trace else 0.0
    if trace:
        tracemalloc.stop()
    live = len(tracker.calls)
    t0 = time.perf_counter()
    tracker.tick(tracker.clock.reference or 0.0)
    tick = time.perf_counter() - t0
    t0 = time.perf_counter()
    tracker._sweep(tracker.clock.reference or 0.0)  # one sweep, however rare (every minute of PBX time)
    sweep = time.perf_counter() - t0
    return {"live": live, "events": framer.messages, "cpu_per_event": cpu / max(1, framer.messages),
            "bytes": held, "bytes_per_call": held / max(1, live), "tick": tick, "sweep": sweep}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--base", type=int, default=160, help="live calls at 1x")
    ap.add_argument("--scales", default="1,4,16,64")
    ap.add_argument("--at", default="1000,10000", help="live calls for the per-call memory figure")
    ap.add_argument("--capture", type=Path, default=ROOT / "tests" / "data" / "load_a.ami")
    args = ap.parse_args()
    blocks = held_open(args.capture)
    print(f"python {sys.version.split()[0]}; {args.capture.name} held open ({len(blocks)} messages per "
          f"{CALLS_PER_COPY} calls)")
    for n in (int(x) for x in args.at.split(",")):
        r = measure(blocks, n, trace=True)
        print(f"{r['live']:>7} live calls: {r['bytes'] / 1e6:8.1f} MB held, {r['bytes_per_call']:7.0f} bytes per live "
              "call (tracemalloc)")
    print("growth (CPU without tracemalloc; memory with it):")
    base = None
    for k in (int(x) for x in args.scales.split(",")):
        r = measure(blocks, args.base * k, trace=False)
        m = measure(blocks, args.base * k, trace=True)
        base = base or r["cpu_per_event"]
        print(f"  {k:>3}x {r['live']:>7} live calls: {r['cpu_per_event'] * 1e6:6.2f} us CPU per event "
              f"({r['cpu_per_event'] / base:4.2f}x of 1x), {m['bytes_per_call']:6.0f} bytes per call, "
              f"tick {r['tick'] * 1e3:7.2f} ms, sweep {r['sweep'] * 1e3:7.2f} ms")


if __name__ == "__main__":
    main()
