#!/usr/bin/env python3
"""Replay throughput: onechance (parse + track) against panoramisk 1.4's own parser, same bytes, same run.

Builds a stream of at least ``--mb`` MB from the load_a capture with ../shared/tools/scale_capture.py (fresh call
ids and later timestamps per copy), then, in ``--rounds`` interleaved rounds (each round runs every contender once,
in a rotating order, so all see the same machine speed), times in this process, on the CPU clock:

* the floor: ``bytes.split`` of the stream into messages and lines (no decoding, no dict);
* panoramisk 1.4: ``AMIProtocol.data_received`` on 64 KiB chunks (decode, split, ``Message.from_line``);
  message handling is stubbed out, so this is its parse rate alone;
* onechance parse: ``AmiFramer`` with the tracker's event filter, as ``onechance replay`` and the daemon run it
  (events nobody reads are skipped on the raw bytes, and still counted);
* onechance replay: the same framer + ``JourneyTracker.feed`` (parse *and* track, every call record built).

Prints per round events/s of each and the ratios within the round, then the median [min-max] of each over the
rounds, and the CPU per call of parse + track (the stream's calls: journeys the tracker ended).
Goals (issue 11): replay >= 3x panoramisk's parse; <= 500 us of CPU per call.
usage: bench/replay_throughput.py [--mb 50] [--rounds 5] [--capture PATH] [--keep PATH]
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "service"))

from onechance.ami.parser import AmiFramer, EventFilter  # noqa: E402
from onechance.journey import JourneyTracker, UpdateKind  # noqa: E402

CHUNK = 64 * 1024


def build_stream(capture: Path, mb: float, scale_tool: Path, keep: Path | None) -> Path:
    copies = max(1, int(mb * 1024 * 1024 // capture.stat().st_size) + 1)
    out = keep or Path(tempfile.mkdtemp(prefix="onechance-bench-")) / f"scaled_{copies}.ami"
    if out.exists() and out.stat().st_size >= mb * 1024 * 1024:
        return out
    if not scale_tool.exists():
        sys.exit(f"bench: {scale_tool} not found (the shared tools live in ../shared/tools)")
    subprocess.run([sys.executable, str(scale_tool), str(capture), str(copies), str(out)], check=True)
    return out


def chunks(data: bytes) -> list[bytes]:
    return [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]


def bench_panoramisk(parts: list[bytes]) -> int:
    from panoramisk.ami_protocol import AMIProtocol

    class Counting(AMIProtocol):
        n = 0

        def handle_message(self, message):  # parse only: no routing, no dispatch
            self.n += 1

    class Transport:
        def write(self, data): ...
        def close(self): ...

    proto = Counting()
    proto.connection_made(Transport())
    proto.encoding = "utf8"  # what panoramisk.Manager sets
    for part in parts:
        proto.data_received(part)
    return proto.n


def _tracker() -> tuple[JourneyTracker, EventFilter]:
    tracker = JourneyTracker()
    interest = tracker.interest()
    return tracker, EventFilter(interest.events, interest.conditions)


def bench_onechance(parts: list[bytes]) -> tuple[int, int]:
    """Parse + track, as ``onechance replay``: (events, calls ended)."""
    tracker, event_filter = _tracker()
    framer = AmiFramer(event_filter=event_filter)
    feed = tracker.feed
    ended = 0
    for part in parts:
        for msg in framer.iter_feed(part):
            for update in feed(msg):
                if getattr(update, "kind", None) is UpdateKind.ENDED:
                    ended += 1
    for update in tracker.flush():
        if getattr(update, "kind", None) is UpdateKind.ENDED:
            ended += 1
    return framer.messages, ended


def bench_parser_only(parts: list[bytes]) -> int:
    _tracker_unused, event_filter = _tracker()
    framer = AmiFramer(event_filter=event_filter)
    for part in parts:
        for _ in framer.iter_feed(part):
            pass
    return framer.messages


def bench_split_floor(parts: list[bytes]) -> int:
    """The floor: split the bytes into messages and lines, nothing else (no decoding, no dict)."""
    n = 0
    tail = b""
    for part in parts:
        blocks = (tail + part).split(b"\r\n\r\n")
        tail = blocks.pop()
        for block in blocks:
            block.split(b"\r\n")
        n += len(blocks)
    return n


def timed(fn, *args):
    gc.collect()
    t0 = time.process_time()
    result = fn(*args)
    return time.process_time() - t0, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=50.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--capture", type=Path, default=ROOT / "tests" / "data" / "load_a.ami")
    ap.add_argument("--scale-tool", type=Path, default=ROOT.parent / "shared" / "tools" / "scale_capture.py")
    ap.add_argument("--keep", type=Path, default=None, help="write/reuse the scaled stream at this path")
    args = ap.parse_args()

    path = build_stream(args.capture, args.mb, args.scale_tool, args.keep)
    data = path.read_bytes()
    parts = chunks(data)
    mb = len(data) / 1e6
    print(f"stream: {path} {mb:.1f} MB, {len(parts)} chunks of {CHUNK // 1024} KiB, python {sys.version.split()[0]}")

    contenders = {"floor": bench_split_floor, "panoramisk": bench_panoramisk, "parse": bench_parser_only,
                  "replay": bench_onechance}
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    ratios: dict[str, list[float]] = {"replay/panoramisk": [], "parse/panoramisk": [], "replay/floor": []}
    per_call: list[float] = []
    counts: dict[str, int] = {}
    names = list(contenders)
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        got: dict[str, float] = {}
        for name in order:
            seconds, result = timed(contenders[name], parts)
            events = result[0] if isinstance(result, tuple) else result
            counts[name] = events
            got[name] = events / seconds
            if name == "replay":
                calls = result[1]
                counts["calls"] = calls
                per_call.append(seconds / calls * 1e6)
        for name, rate in got.items():
            rates[name].append(rate)
        ratios["replay/panoramisk"].append(got["replay"] / got["panoramisk"])
        ratios["parse/panoramisk"].append(got["parse"] / got["panoramisk"])
        ratios["replay/floor"].append(got["replay"] / got["floor"])
        print(f"round {r + 1}: " + "  ".join(f"{n} {got[n]:,.0f}/s" for n in names)
              + f"  replay/panoramisk {ratios['replay/panoramisk'][-1]:.2f}x  per call {per_call[-1]:.0f} us",
              flush=True)

    def spread(values: list[float], fmt: str) -> str:
        return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"

    print(f"events: panoramisk {counts['panoramisk']:,}, onechance {counts['replay']:,} (every message counted, "
          f"skipped ones too); calls ended: {counts['calls']:,}")
    labels = {"floor": "bytes.split floor", "panoramisk": "panoramisk 1.4 parse", "parse": "onechance parse",
              "replay": "onechance replay (parse + track)"}
    for name in names:
        print(f"{labels[name]:<36} {spread(rates[name], '{:,.0f}')} events/s (CPU)")
    for name, values in ratios.items():
        print(f"ratio {name:<30} {spread(values, '{:.2f}')}x")
    print(f"CPU per call, parse + track: {spread(per_call, '{:.0f}')} us (goal <= 500 us)")
    print(f"ratio replay / panoramisk parse: {statistics.median(ratios['replay/panoramisk']):.2f}x (goal >= 3x)")
    if args.keep is None:
        shutil.rmtree(path.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
