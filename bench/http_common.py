"""What the HTTP benchmarks share: a stream that leaves N calls live, a fake AMI server playing it fast, the
daemon (``onechance run``) as a real process, and timing helpers.

The stream is the call simulator's (``onechance.sim``, a big centre of ``queues`` queues and six operators
each), reduced to the events the tracker reads (``JourneyTracker.handled_events``; ``VarSet`` only
``QUEUESTATUS``/``ATTENDEDTRANSFER``, ``Newexten`` only ``Queue``: the others change nothing), in which the
first ``finished`` calls play to their end and the next ``live`` calls never end (their ``Hangup`` events
are left out: they stay live, in whatever state they reached -- waiting, ringing, talking, transferred).
It is written once to a cache directory (``$ONECHANCE_BENCH_CACHE``, default ``/tmp/onechance-bench``).

Every server listens on 127.0.0.1 only; every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "service"))

from onechance.demo import BANNER, PbxState, SimSource  # noqa: E402
from onechance.journey import JourneyTracker  # noqa: E402
from onechance.sim import Centre, RateProfile, SimConfig  # noqa: E402

PEAK = 1_800_000_000 - 1_800_000_000 % 86400 + 10 * 3600.0  # 10:00 UTC, the busiest hour of the profile
TERMINATOR = b"\r\n\r\n"
TOKEN = "bench-token-not-a-secret"
SECRET = "bench-ami-secret"
CACHE = Path(os.environ.get("ONECHANCE_BENCH_CACHE", "/tmp/onechance-bench"))
_LINKEDID = re.compile(rb"\r\nLinkedid: [^\r]*?\.(\d+)\r\n")
_UNIQUEID = re.compile(rb"\r\nUniqueid: [^\r]*?\.(\d+)\r\n")
_TS = re.compile(rb"\r\nTimestamp: ([0-9.]+)\r\n")


# ---- the stream --------------------------------------------------------------------------------------
def sim_config(queues: int, seed: int) -> SimConfig:
    # about 10,000 arrivals an hour at peak: 15,000 calls take 1.5 h of PBX time (under journey.max_call_age)
    return SimConfig.large(queues=queues, rate=RateProfile(scale=100), rtcp=False, start=PEAK, seed=seed)


@dataclass(frozen=True)
class Stream:
    path: Path
    queues: int
    seed: int
    live: int
    finished: int
    messages: int
    size: int
    last_ts: float


def _keep(message: bytes, handled: frozenset[str]) -> bool:
    i = message.find(b"Event: ")
    if i < 0:
        return True
    event = message[i + 7: message.find(b"\r\n", i)].decode()
    if event not in handled:
        return False
    if event == "VarSet":
        return b"Variable: QUEUESTATUS\r\n" in message or b"Variable: ATTENDEDTRANSFER\r\n" in message
    if event == "Newexten":
        return b"Application: Queue\r\n" in message
    return True


def build_stream(live: int, finished: int, queues: int = 51, seed: int = 11) -> Stream:
    """The stream (cached): ``finished`` calls that end, then ``live`` calls that never do."""
    CACHE.mkdir(parents=True, exist_ok=True)
    stem = f"http-q{queues}-f{finished}-l{live}-s{seed}"
    path, meta = CACHE / f"{stem}.ami", CACHE / f"{stem}.json"
    if path.exists() and meta.exists():
        return Stream(path=path, **json.loads(meta.read_text()))
    print(f"building the stream {path} (once; about a minute per 10,000 calls)...", file=sys.stderr, flush=True)
    handled = JourneyTracker().handled_events()
    centre = Centre(sim_config(queues, seed), keep_truths=False)
    cutoff: int | None = None  # Uniqueid counter of the last channel before the held calls
    last_uid = 0
    messages = size = 0
    last_ts = 0.0
    tmp = path.with_suffix(".part")
    with tmp.open("wb") as out:
        out.write(BANNER)
        for message in centre.messages():
            if cutoff is None and centre.calls_started >= finished:
                cutoff = last_uid
            if centre.calls_started >= finished + live and cutoff is not None:
                break
            uid = _UNIQUEID.search(message)
            if uid is not None and message.startswith(b"Event: Newchannel\r\n"):
                last_uid = max(last_uid, int(uid.group(1)))
            if not _keep(message, handled):
                continue
            if cutoff is not None and message.startswith(b"Event: Hangup\r\n"):
                linked = _LINKEDID.search(message)
                if linked is not None and int(linked.group(1)) > cutoff:
                    continue  # a held call: it never ends
            ts = _TS.search(message)
            if ts is not None:
                last_ts = float(ts.group(1))
            out.write(message)
            messages += 1
            size += len(message)
    tmp.rename(path)
    info = {"queues": queues, "seed": seed, "live": live, "finished": finished, "messages": messages,
            "size": size, "last_ts": last_ts}
    meta.write_text(json.dumps(info))
    return Stream(path=path, **info)


# ---- a fake AMI server that plays the stream as fast as the client reads --------------------------------
class FakeAmi:
    """Banner, Login, Ping, CoreShowChannels (none), QueueStatus (the centre's queues and members); after the
    first QueueStatus (the daemon's resync) the stream, whole messages at a time, as fast as it is read."""

    def __init__(self, stream: Stream, chunk: int = 256 * 1024) -> None:
        self.stream = stream
        self.chunk = chunk
        self.state = PbxState()
        self.state.configure(SimSource(sim_config(stream.queues, stream.seed)).queues())
        self.port = 0
        self.sent = 0  # bytes of the stream written
        self.finished = asyncio.Event()
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.now = PEAK

    async def __aenter__(self) -> FakeAmi:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        lock = asyncio.Lock()
        writer.write(BANNER)
        player: asyncio.Task[None] | None = None
        try:
            while True:
                action: dict[str, str] = {}
                while True:
                    line = await reader.readline()
                    if not line:
                        return
                    text = line.decode("utf-8", "replace").rstrip("\r\n")
                    if not text:
                        if action:
                            break
                        continue
                    key, _sep, value = text.partition(":")
                    action.setdefault(key.strip().lower(), value.strip())
                name = action.get("action", "").lower()
                head = f"ActionID: {action['actionid']}\r\n" if "actionid" in action else ""
                if name == "login":
                    ok = action.get("secret") == SECRET
                    out = (f"Response: {'Success' if ok else 'Error'}\r\n{head}Message: Authentication "
                           f"{'accepted' if ok else 'failed'}\r\n\r\n")
                    if ok:
                        out += "Event: FullyBooted\r\nPrivilege: system,all\r\nStatus: Fully Booted\r\n\r\n"
                    await self._send(writer, lock, out.encode())
                elif name == "ping":
                    await self._send(writer, lock, f"Response: Success\r\n{head}Ping: Pong\r\n"
                                                   f"Timestamp: {self.now:.6f}\r\n\r\n".encode())
                elif name in ("coreshowchannels", "queuestatus"):
                    items = self.state.queue_status(self.now) if name == "queuestatus" else []
                    complete = "QueueStatusComplete" if name == "queuestatus" else "CoreShowChannelsComplete"
                    parts = [f"Response: Success\r\n{head}EventList: start\r\nMessage: will follow\r\n\r\n"]
                    for item in items:
                        event = item.pop("Event")
                        parts.append(f"Event: {event}\r\n{head}"
                                     + "".join(f"{k}: {v}\r\n" for k, v in item.items()) + "\r\n")
                    parts.append(f"Event: {complete}\r\n{head}EventList: Complete\r\nListItems: {len(items)}\r\n\r\n")
                    await self._send(writer, lock, "".join(parts).encode())
                    if name == "queuestatus" and player is None:
                        player = asyncio.create_task(self._play(writer, lock))
                        self._tasks.add(player)
                        player.add_done_callback(self._tasks.discard)
                elif name == "logoff":
                    await self._send(writer, lock, f"Response: Goodbye\r\n{head}\r\n".encode())
                    return
                else:
                    await self._send(writer, lock, f"Response: Error\r\n{head}Message: unknown\r\n\r\n".encode())
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            if player is not None:
                player.cancel()
            writer.close()

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, lock: asyncio.Lock, data: bytes) -> None:
        async with lock:
            writer.write(data)
            await writer.drain()

    async def _play(self, writer: asyncio.StreamWriter, lock: asyncio.Lock) -> None:
        rest = b""
        with self.stream.path.open("rb") as f:
            f.read(len(BANNER))
            while True:
                block = f.read(self.chunk)
                if not block:
                    break
                data = rest + block
                cut = data.rfind(TERMINATOR) + len(TERMINATOR)
                data, rest = data[:cut], data[cut:]
                ts = data.rfind(b"\r\nTimestamp: ")
                if ts >= 0:
                    self.now = float(data[ts + 13: data.find(b"\r\n", ts + 13)])
                await self._send(writer, lock, data)
                self.sent += len(data)
        self.finished.set()


# ---- the daemon as a process ---------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Daemon:
    """``onechance run`` in a process of its own (``source``: another checkout's ``service`` directory, to
    compare a version with this one in the same run)."""

    name: str
    ami_port: int
    source: Path | None = None
    http: dict[str, Any] = field(default_factory=dict)
    nofile: int | None = None  # the open-files limit of the process (None: this one's)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    log: Path | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    def start(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix=f"onechance-bench-{self.name}-"))
        self.port = free_port()
        http = {"listen": f"127.0.0.1:{self.port}", "token": TOKEN, **self.http}
        lines = ["[ami]", 'name = "bench"', 'host = "127.0.0.1"', f"port = {self.ami_port}",
                 'username = "bench"', f'secret = "{SECRET}"', "ping_timeout = 30", "", "[http]"]
        lines += [f"{k} = {json.dumps(v)}" for k, v in http.items()]
        lines += ["", "[daemon]", "shutdown_timeout = 20"]
        config = self.workdir / "onechance.toml"
        config.write_text("\n".join(lines) + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("ONECHANCE_")}
        env["ONECHANCE_DATA_DIR"] = str(self.workdir / "data")
        env["ONECHANCE_LOG_LEVEL"] = "WARNING"
        if self.source is not None:
            env["PYTHONPATH"] = str(self.source)
        self.log = self.workdir / "daemon.log"
        nofile = self.nofile

        def limits() -> None:
            if nofile is not None:
                import resource

                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, max(nofile, resource.getrlimit(
                    resource.RLIMIT_NOFILE)[1])))

        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "onechance.cli", "run", "--config", str(config)],
                                         env=env, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                                         preexec_fn=limits)

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log is not None and self.log.exists() else ""

    # /proc figures
    def cpu(self) -> float:
        """CPU seconds (user + system) the daemon used so far."""
        assert self.proc is not None
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def loop_cpu(self) -> float:
        """CPU seconds of the daemon's main thread (its event loop), to the nanosecond (``schedstat``)."""
        assert self.proc is not None
        return int(Path(f"/proc/{self.proc.pid}/schedstat").read_text().split()[0]) / 1e9

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def fds(self) -> int:
        assert self.proc is not None
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))


async def metric(session: aiohttp.ClientSession, d: Daemon, name: str) -> float:
    """The sum of a metric's samples (every label set)."""
    async with session.get(d.base + "/metrics") as resp:
        text = await resp.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def wait_loaded(session: aiohttp.ClientSession, d: Daemon, ami: FakeAmi, timeout: float = 600) -> float:
    """Wait until the daemon answers, the stream is sent and every event handled; the calls in progress."""
    deadline = time.monotonic() + timeout
    while True:
        if d.proc is not None and d.proc.poll() is not None:
            raise SystemExit(f"{d.name}: the daemon exited ({d.proc.returncode}):\n{d.log_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise SystemExit(f"{d.name}: not loaded within {timeout:g} s")
        with contextlib.suppress(aiohttp.ClientError, OSError):
            if ami.finished.is_set():
                depth = await metric(session, d, "onechance_ami_queue_depth")
                events = await metric(session, d, "onechance_ami_events_total")
                await asyncio.sleep(1.0)
                again = await metric(session, d, "onechance_ami_events_total")
                if depth == 0 and again == events and events >= ami.stream.messages * 0.99:
                    # and the store caught up (its queue and spool empty), at most 120 s more
                    for _ in range(240):
                        store = (await metric(session, d, "onechance_store_queue_depth")
                                 + await metric(session, d, "onechance_store_spool_journeys"))
                        if store == 0:
                            break
                        await asyncio.sleep(0.5)
                    return await metric(session, d, "onechance_calls_in_progress")
        await asyncio.sleep(0.5)


@contextlib.asynccontextmanager
async def loaded_daemons(stream: Stream, sources: Sequence[tuple[str, Path | None]],
                         http: dict[str, Any] | None = None, nofile: int | None = None) -> AsyncIterator[list[Daemon]]:
    """One daemon per ``(name, source)``, each fed the stream by a fake AMI of its own, loaded."""
    async with contextlib.AsyncExitStack() as stack:
        daemons: list[Daemon] = []
        amis: list[FakeAmi] = []
        for name, source in sources:
            ami = await stack.enter_async_context(FakeAmi(stream))
            d = Daemon(name, ami.port, source, dict(http or {}), nofile)
            d.start()
            stack.callback(_report_stop, d)
            daemons.append(d)
            amis.append(ami)
        session = await stack.enter_async_context(aiohttp.ClientSession())
        for d, ami in zip(daemons, amis, strict=True):
            t0 = time.monotonic()
            live = await wait_loaded(session, d, ami)
            print(f"{d.name}: {live:.0f} calls in progress, loaded in {time.monotonic() - t0:.0f} s, "
                  f"RSS {d.rss_mb():.0f} MB", file=sys.stderr, flush=True)
        yield daemons


def _report_stop(d: Daemon) -> None:
    code = d.stop()
    if code not in (0, None):
        print(f"{d.name}: exit code {code} (log: {d.log})", file=sys.stderr)
    elif d.workdir is not None:
        shutil.rmtree(d.workdir, ignore_errors=True)


# ---- timing ----------------------------------------------------------------------------------------------
@dataclass
class Timed:
    status: int
    seconds: float
    size: int


async def timed_get(session: aiohttp.ClientSession, url: str, headers: dict[str, str] | None = None,
                    timeout: float = 120) -> Timed:
    t0 = time.perf_counter()
    try:
        async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            body = await resp.read()
            return Timed(resp.status, time.perf_counter() - t0, len(body))
    except (aiohttp.ClientError, OSError, TimeoutError):
        return Timed(0, time.perf_counter() - t0, 0)


class Prober:
    """GET ``path`` over and over (``interval`` s apart) on a connection of its own: its latencies while
    something else runs show how long the daemon's event loop was held."""

    def __init__(self, d: Daemon, path: str = "/healthz", interval: float = 0.01) -> None:
        self.d, self.path, self.interval = d, path, interval
        self.latencies: list[float] = []
        self.failures = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        connector = aiohttp.TCPConnector(limit=1)
        async with aiohttp.ClientSession(connector=connector) as session:
            while True:
                r = await timed_get(session, self.d.base + self.path, timeout=30)
                if r.status == 200:
                    self.latencies.append(r.seconds)
                else:
                    self.failures += 1
                    self.latencies.append(r.seconds)
                await asyncio.sleep(self.interval)

    async def __aenter__(self) -> Prober:
        self._task = asyncio.create_task(self._run())
        await asyncio.sleep(0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def pct(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) by nearest rank; nan for none."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def summary(values: Sequence[float], scale: float = 1000.0) -> str:
    """``median [p10-p90]`` (milliseconds by default)."""
    if not values:
        return "-"
    return f"{statistics.median(values) * scale:.1f} [{pct(values, 0.1) * scale:.1f}-{pct(values, 0.9) * scale:.1f}]"


def chunks(seq: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), n):
        yield seq[i: i + n]


def export_revision(rev: str) -> Path:
    """``service/`` of a git revision of this checkout, exported to the cache (for ``--compare REV``)."""
    out = CACHE / f"rev-{rev}"
    if not (out / "service" / "onechance").exists():
        out.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "service"], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(out)], input=archive, check=True)
    return out / "service"
