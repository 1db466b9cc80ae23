#!/usr/bin/env python3
"""Coverage-guided fuzzing of the AMI framer and the journey tracker with atheris (libFuzzer), issue 12.

The inputs and the invariants are ``tests/fuzzhelp.py``'s (one definition, shared with the quick version in
``tests/test_fuzz_quick.py``): structured inputs (windows of the real messages of ``tests/data/*.ami``, mutated:
ids, timestamps nan/inf/huge/negative/jumping, repeated and missing headers, control characters, NULs, bare
CR/LF, messages repeated, dropped, moved, cut short; chunk boundaries, ticks, live arrival times) and raw bytes.
Every input runs through the framer (with the tracker's event filter, and without) and a fresh tracker (``feed``,
``tick``, ``flush``, ``close_all``); any exception, or a broken invariant (a record that is not strict JSON or has
an undocumented outcome, a control character in a record, other chunks giving other records, the filter changing
a record, live calls beyond the ids fed, ...), is a crash: libFuzzer stops and writes the input to the work
directory's ``artifacts/``.

This process starts one fuzzing process (``--child``: atheris with the onechance modules instrumented for
coverage), follows its output and prints the figures at the end: runs, seconds, exec/s, coverage (libFuzzer's
``cov``: edges of onechance's code reached, ``ft``: features), peak RSS, and RSS at 10 % of the runs and at the
end (memory stays flat: each input gets a fresh framer and tracker, nothing may accumulate).  Exit status 0 when
no input crashed.

usage: bench/fuzz.py [--runs 1000000] [--max-seconds 600] [--seed 1] [--timeout 30] [--rss-limit-mb 2048]
                     [--keep DIR] [--quiet]
       bench/fuzz.py --reproduce FILE   (run one saved input through the harness, uninstrumented)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "service"))
sys.path.insert(0, str(ROOT))

MAX_LEN = 16384
SAMPLE_LINE = re.compile(r"^onechance-fuzz: runs=(\d+) rss_kb=(\d+)$")
STATUS_LINE = re.compile(r"^#(\d+)\s+(\w+)\s.*?cov: (\d+) ft: (\d+)(?: corp: (\d+)/)?.*?rss: (\d+)Mb")
DONE_LINE = re.compile(r"^Done (\d+) runs in (\d+) second")
STAT_LINE = re.compile(r"^stat::(\w+):\s+(\d+)")
ARTIFACT_LINE = re.compile(r"Test unit written to (\S+)")


def rss_kb() -> int:
    """This process's resident set size now (not its peak)."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


# ---- the fuzzing process ------------------------------------------------------------------------------------
def child(every: int, sample_seconds: float, libfuzzer_args: list[str]) -> None:
    try:
        import atheris  # type: ignore[import-untyped]
    except ImportError:
        sys.exit("bench/fuzz.py: atheris is not installed (pip install -e '.[dev]')")
    with atheris.instrument_imports(include=["onechance"]):
        from tests.fuzzhelp import Harness

    harness = Harness()
    state = {"runs": 0, "last": time.monotonic()}

    def target(data: bytes) -> None:
        harness(data)
        state["runs"] += 1
        now = time.monotonic()
        if state["runs"] % every == 0 or now - state["last"] >= sample_seconds:
            state["last"] = now
            print(f"onechance-fuzz: runs={state['runs']} rss_kb={rss_kb()}", file=sys.stderr, flush=True)

    print(f"onechance-fuzz: runs=0 rss_kb={rss_kb()}", file=sys.stderr, flush=True)
    atheris.Setup([sys.argv[0], *libfuzzer_args], target)
    atheris.Fuzz()


# ---- this process: seeds, the child, the figures -----------------------------------------------------------
@dataclass
class Figures:
    runs: int = 0
    seconds: float = 0.0
    exec_per_s: float = 0.0  # over the whole run, start-up included
    libfuzzer_exec_per_s: int = 0  # libFuzzer's own average
    cov: int = 0
    ft: int = 0
    corpus: int = 0
    peak_rss_mb: int = 0
    samples: list[tuple[int, int]] = field(default_factory=list)  # (runs, rss_kb)
    artifacts: list[str] = field(default_factory=list)
    crashed: bool = False
    status: int = 0

    def read(self, line: str) -> None:
        if m := SAMPLE_LINE.match(line):
            self.samples.append((int(m[1]), int(m[2])))
        elif m := STATUS_LINE.match(line):
            self.cov, self.ft = int(m[3]), int(m[4])
            if m[5]:
                self.corpus = int(m[5])
            self.peak_rss_mb = max(self.peak_rss_mb, int(m[6]))
        elif m := DONE_LINE.match(line):
            self.runs = int(m[1])
        elif m := STAT_LINE.match(line):
            if m[1] == "number_of_executed_units":
                self.runs = int(m[2])
            elif m[1] == "average_exec_per_sec":
                self.libfuzzer_exec_per_s = int(m[2])
            elif m[1] == "peak_rss_mb":
                self.peak_rss_mb = max(self.peak_rss_mb, int(m[2]))
        elif m := ARTIFACT_LINE.search(line):
            self.artifacts.append(m[1])
        if "Uncaught Python exception" in line or "ERROR: libFuzzer" in line:
            self.crashed = True

    def peak_rss(self) -> float:
        """MB: libFuzzer's peak (whole MB, rounded down) or the highest sample, whichever is higher."""
        return max(float(self.peak_rss_mb), max((kb / 1024 for _, kb in self.samples), default=0.0))

    def rss_at(self, fraction: float) -> tuple[int, int]:
        """The sample nearest to ``fraction`` of the runs done (runs, kB)."""
        goal = fraction * self.runs
        return min(self.samples, key=lambda s: abs(s[0] - goal))

    def report(self) -> list[str]:
        lines = [
            f"fuzz: runs: {self.runs}",
            f"fuzz: seconds: {self.seconds:.1f}",
            f"fuzz: exec/s: {self.libfuzzer_exec_per_s} (libFuzzer's average; {self.exec_per_s:.1f} over the whole "
            f"{self.seconds:.1f} s, start-up included)",
            f"fuzz: coverage: {self.cov} edges (cov), {self.ft} features (ft), corpus {self.corpus} inputs",
            f"fuzz: peak RSS: {self.peak_rss():.1f} MB",
        ]
        if self.samples:
            (r10, k10), (r_end, k_end) = self.rss_at(0.10), self.samples[-1]
            lines.append(f"fuzz: RSS at 10% of the runs: {k10 / 1024:.1f} MB (run {r10}); at the end: "
                         f"{k_end / 1024:.1f} MB (run {r_end}); growth {(k_end - k10) / 1024:+.1f} MB")
        failed = self.crashed or self.status != 0
        lines.append(f"fuzz: crashes: {1 if failed else 0}")
        return lines


def write_seeds(corpus_dir: Path) -> int:
    from tests.fuzzhelp import Corpus, seeds

    n = 0
    for name, data in seeds(Corpus.load()):
        (corpus_dir / f"seed-{name}").write_bytes(data)
        n += 1
    return n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=1_000_000, help="inputs to run at most (default 1,000,000)")
    parser.add_argument("--max-seconds", type=int, default=600, help="seconds to run at most (default 600)")
    parser.add_argument("--seed", type=int, default=1, help="libFuzzer's random seed (default 1)")
    parser.add_argument("--timeout", type=int, default=30, help="seconds one input may take (default 30)")
    parser.add_argument("--rss-limit-mb", type=int, default=2048, help="memory at which libFuzzer stops (2048)")
    parser.add_argument("--keep", type=Path, help="work directory to keep (the corpus grown, any crash input)")
    parser.add_argument("--quiet", action="store_true", help="print only the figures, not libFuzzer's progress")
    parser.add_argument("--reproduce", type=Path, help="run one saved input through the harness and exit")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--every", type=int, default=1000, help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.every, args.max_seconds / 200, args.rest)
        return 0
    if args.reproduce is not None:
        from tests.fuzzhelp import Harness

        Harness()(args.reproduce.read_bytes())
        print(f"fuzz: {args.reproduce}: no crash, every invariant holds")
        return 0
    if args.runs < 1 or args.max_seconds < 1:
        parser.error("--runs and --max-seconds must be positive")

    work = args.keep or Path(tempfile.mkdtemp(prefix="onechance-fuzz-"))
    corpus_dir, artifacts = work / "corpus", work / "artifacts"
    corpus_dir.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(exist_ok=True)
    seeds = write_seeds(corpus_dir)
    libfuzzer = [f"-runs={args.runs}", f"-max_total_time={args.max_seconds}", f"-seed={args.seed}",
                 f"-timeout={args.timeout}", f"-rss_limit_mb={args.rss_limit_mb}", f"-max_len={MAX_LEN}",
                 "-print_final_stats=1", "-reload=0", f"-artifact_prefix={artifacts}/", str(corpus_dir)]
    every = max(1, args.runs // 100)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", f"--every={every}",
           f"--max-seconds={args.max_seconds}", "--", *libfuzzer]
    print(f"fuzz: {seeds} seed inputs from {ROOT / 'tests' / 'data'}; work directory {work}", flush=True)
    figures = Figures()
    started = time.monotonic()
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
                          cwd=ROOT) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.rstrip("\n")
            figures.read(line)
            if not args.quiet and not SAMPLE_LINE.match(line):
                print(line, flush=True)
    figures.status = proc.returncode
    figures.seconds = time.monotonic() - started
    figures.exec_per_s = figures.runs / figures.seconds if figures.seconds else 0.0
    if figures.status != 0 and not figures.crashed:
        print(f"fuzz: the fuzzing process ended with status {figures.status}", file=sys.stderr)
    for line in figures.report():
        print(line)
    if figures.crashed or figures.status != 0:
        for path in figures.artifacts:
            print(f"fuzz: crash input: {path} (rerun: bench/fuzz.py --reproduce {path})")
        print(f"fuzz: work directory kept: {work}")
        return 1
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
