#!/usr/bin/env python3
"""Replay throughput: onechance (parse + track) against panoramisk 1.4's own parser, same bytes, same run.

Builds a stream of at least 50 MB from the load_a capture with ../shared/tools/scale_capture.py (fresh call
ids and later timestamps per copy), then times, in this process:

* panoramisk 1.4: ``AMIProtocol.data_received`` on 64 KiB chunks (decode, split, ``Message.from_line``);
  message handling is stubbed out, so this is its parse rate alone;
* onechance: ``AmiFramer`` + ``JourneyTracker.feed`` on the same chunks (parse *and* track), plus the
  parser alone for reference.

Each measurement is the best of ``--rounds`` runs.  Prints events/s, MB/s and the ratio (goal >= 1.25).
usage: bench/replay_throughput.py [--mb 50] [--rounds 3] [--capture PATH] [--keep PATH]
"""

from __future__ import annotations

import argparse
import gc
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "service"))

from onechance.ami.parser import AmiFramer  # noqa: E402
from onechance.journey import JourneyTracker  # noqa: E402

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


def bench_onechance(parts: list[bytes]) -> tuple[int, int]:
    framer = AmiFramer()
    tracker = JourneyTracker()
    feed = tracker.feed
    n = 0
    updates = 0
    for part in parts:
        for msg in framer.iter_feed(part):
            n += 1
            updates += len(feed(msg))
    return n, updates


def bench_parser_only(parts: list[bytes]) -> int:
    framer = AmiFramer()
    n = 0
    for part in parts:
        for _ in framer.iter_feed(part):
            n += 1
    return n


def best_of(rounds: int, fn, *args):
    best = None
    result = None
    for _ in range(rounds):
        gc.collect()
        t0 = time.perf_counter()
        result = fn(*args)
        dt = time.perf_counter() - t0
        best = dt if best is None or dt < best else best
    return best, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=float, default=50.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--capture", type=Path, default=ROOT / "tests" / "data" / "load_a.ami")
    ap.add_argument("--scale-tool", type=Path, default=ROOT.parent / "shared" / "tools" / "scale_capture.py")
    ap.add_argument("--keep", type=Path, default=None, help="write/reuse the scaled stream at this path")
    args = ap.parse_args()

    path = build_stream(args.capture, args.mb, args.scale_tool, args.keep)
    data = path.read_bytes()
    parts = chunks(data)
    mb = len(data) / 1e6
    print(f"stream: {path} {mb:.1f} MB, {len(parts)} chunks of {CHUNK // 1024} KiB, python {sys.version.split()[0]}")

    t_pano, n_pano = best_of(args.rounds, bench_panoramisk, parts)
    t_parse, n_parse = best_of(args.rounds, bench_parser_only, parts)
    t_one, (n_one, updates) = best_of(args.rounds, bench_onechance, parts)

    def line(label: str, t: float, n: int) -> str:
        return f"{label:<42} {n:>9} msgs  {t:7.2f} s  {n / t:>10,.0f} events/s  {mb / t:6.1f} MB/s"

    print(line("panoramisk 1.4 parse (data_received)", t_pano, n_pano))
    print(line("onechance parse only (AmiFramer)", t_parse, n_parse))
    print(line("onechance replay (parse + track)", t_one, n_one))
    print(f"journey updates emitted: {updates}")
    ratio = (n_one / t_one) / (n_pano / t_pano)
    print(f"ratio onechance replay / panoramisk parse: {ratio:.2f}x (goal >= 1.25x)")
    if args.keep is None:
        shutil.rmtree(path.parent, ignore_errors=True)


if __name__ == "__main__":
    main()
