"""What bench/scale_pbxs.py and bench/scale_writers.py share: a PostgreSQL 15 cluster of the bench's own (with
production durability: fsync and synchronous commits on), CPU and memory read from /proc, the machine, medians.

The cluster is the test suite's (tests/pg.py: initdb into a temporary directory, 127.0.0.1 and a free port only,
run as the ``postgres`` user when we are root, stopped and removed at exit, by a watchdog even if we are killed),
with the test settings' ``fsync = off`` and ``synchronous_commit = off`` turned back on: what a journey costs to
write durably.  No system PostgreSQL is ever touched.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "service"))
sys.path.insert(0, str(ROOT))

from tests.pg import PgCluster, connect, execute  # noqa: E402

__all__ = ["ROOT", "BenchCluster", "Deadline", "clean_env", "connect", "machine", "median", "proc_cpu", "proc_rss",
           "spread"]

TICK = os.sysconf("SC_CLK_TCK")
DURABLE = """
fsync = on
synchronous_commit = on
full_page_writes = on
max_connections = 200
"""


class BenchCluster:
    """A PostgreSQL 15 cluster for one bench run (``with BenchCluster() as pg``)."""

    def __init__(self, durable: bool = True) -> None:
        self.cluster = PgCluster.create()
        if durable:
            conf = self.cluster.data / "onechance-bench.conf"
            conf.write_text(DURABLE)
            with (self.cluster.data / "postgresql.conf").open("a") as f:
                f.write("\ninclude = 'onechance-bench.conf'\n")
            if self.cluster.os_user is not None:
                owner = pwd.getpwnam(self.cluster.os_user)
                os.chown(conf, owner.pw_uid, owner.pw_gid)
            self.cluster.stop()
            self.cluster.start()
        self.durable = durable

    def __enter__(self) -> BenchCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cluster.remove()

    @property
    def url(self) -> str:
        return self.cluster.url

    def url_of(self, database: str) -> str:
        return self.cluster.url.rsplit("/", 1)[0] + "/" + database

    def create_database(self) -> str:
        """A fresh database owned by the bench's role, at the head revision; returns its URL."""
        name = f"oc_bench_{uuid.uuid4().hex[:12]}"
        asyncio.run(execute(self.url, f'CREATE DATABASE "{name}"'))
        url = self.url_of(name)
        subprocess.run([sys.executable, "-m", "onechance.cli", "db", "upgrade"], check=True, capture_output=True,
                       env={**clean_env(), "ONECHANCE_DATABASE__URL": url}, timeout=120)
        return url

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        asyncio.run(execute(self.url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def connections(self, database: str, application: str = "onechance") -> int:
        """Connections open to ``database`` by ``application`` (its ``application_name``)."""

        async def count() -> int:
            conn = await connect(self.url)
            try:
                return int(await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND "
                                               "application_name = $2", database, application))
            finally:
                await conn.close()

        return asyncio.run(count())

    def postmaster(self) -> int:
        return int((self.cluster.data / "postmaster.pid").read_text().split()[0])

    def backends(self, database: str) -> dict[int, float]:
        """CPU seconds so far of each backend serving ``database`` (by pid)."""
        pm = self.postmaster()
        out = {}
        for pid in _pids():
            if _ppid(pid) != pm:
                continue
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if f" {database} " in f" {cmd} ":
                out[pid] = proc_cpu(pid)
        return out

    def cpu_seconds(self) -> float:
        """CPU time of the server so far: the postmaster and every process it started (the backends of the
        connections, the WAL writer, the checkpointer...), those that ended included (their time is in the
        postmaster's children counters once they are reaped)."""
        pm = self.postmaster()
        total = proc_cpu(pm, children=True)
        for pid in _pids():
            if pid != pm and _ppid(pid) == pm:
                total += proc_cpu(pid)
        return total


def clean_env() -> dict[str, str]:
    """Our environment without any ONECHANCE_* setting."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECHANCE_")}
    env["PYTHONPATH"] = str(ROOT / "service") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()  # fields from the 3rd (state) on: the name may hold spaces


def _ppid(pid: int) -> int:
    fields = _stat(pid)
    return int(fields[1]) if fields else -1


def proc_cpu(pid: int, children: bool = False) -> float:
    """User + system CPU seconds of a process (and of its reaped children)."""
    fields = _stat(pid)
    if not fields:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime
    return ticks / TICK


def proc_rss(pid: int) -> int:
    """Resident memory of a process, bytes (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def machine() -> str:
    """The CPU model and count, and the load average now (one line)."""
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{os.cpu_count()} x {model}; load average {load}; Python {sys.version.split()[0]}"


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def spread(values: Sequence[float]) -> str:
    """``median (min-max)`` of a few rounds."""
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:,.0f}"
    return f"{median(values):,.0f} ({min(values):,.0f}-{max(values):,.0f})"


class Deadline:
    """A time limit for a whole bench run: rounds not begun when it has passed are skipped (and said so)."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    @property
    def passed(self) -> bool:
        return time.monotonic() >= self.end
