#!/usr/bin/env python3
"""Soak: ``onechance run`` through the faults it must survive, each counted call by call and alert by alert.

Everything on 127.0.0.1, the daemon a separate process as installed, its calls counted in its database at the
end (after a restart when the fault stopped it), its alerts counted at a webhook receiver of the run's own:

* ``ami``: a replay of the real captures (every ``tests/data/*.ami``, ``--passes`` times, each copy moved
  after the previous one with fresh call ids) through ``--cuts`` forced AMI disconnects (``Cut``: the TCP
  connection dropped, every other time in the middle of a message, which is then lost) and an Asterisk restart
  (``Restart``: ``Shutdown``, not listening for 0.5 s, an empty PBX, between two copies); the expected journeys
  are ``onechance replay`` of the messages the PBX delivered whole;
* ``postgres``: PostgreSQL (a cluster of the run's own, as ``tests/pg.py`` runs it) stopped for ``--pg-down``
  seconds while the simulated call centre (``onechance.sim``, 40 times the captures' peak rate, paced) goes on;
* ``webhook``: the webhook receiver down (connection refused) for ``--hook-down`` seconds under the same load;
* ``disk``: the disk full for ``--disk-full`` seconds under load (RLIMIT_FSIZE lowered to 0 on the daemon with
  prlimit(2): every write that grows a file fails with EFBIG, as ENOSPC would), then room again;
* ``sigterm``: SIGTERM while the PBX streams, then a new start that goes on following it.

For each fault: journeys sent (the calls the PBX made: the simulator's truths, or the replay's journeys),
stored (in the database at the end), lost (sent, not stored), duplicated (a call stored under two ids: the
same caller and start), invented (stored, never sent), and the alerts due (raised, and neither cancelled
because the caller was reached first nor muted): delivered exactly once (one 2xx answer of the receiver),
more than once, never.

usage: bench/soak.py [--only ami,postgres,webhook,disk,sigterm] [--passes 3] [--cuts 100] [--calls 600]
       [--speed 10] [--pg-down 60] [--hook-down 30] [--disk-full 20] [--max-seconds 900]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "service"))
sys.path.insert(0, str(ROOT))

from tests.durability import (  # noqa: E402
    SECRET,
    DaemonProcess,
    daemon_env,
    sim_config,
    sim_pbx,
    truths,
    value,
    wait_handled,
)

from onechance.demo import BANNER, Cut, DemoPbx, Restart, load_capture, shift_times  # noqa: E402
from onechance.replay import replay_files  # noqa: E402

DATA = ROOT / "tests" / "data"
FAULTS = ("ami", "postgres", "webhook", "disk", "sigterm")


# ---- the webhook receiver -------------------------------------------------------------------------------------
@dataclass
class Receiver:
    """Counts the alerts it accepted (2xx) by alert id; can be taken down (connection refused) and back up on the
    same port."""

    delivered: Counter[str] = field(default_factory=Counter)
    refused: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.json()
        ids = [a["id"] for a in body["alerts"]] if "alerts" in body else [body["id"]]
        for alert_id in ids:
            self.delivered[alert_id] += 1
        return web.Response(text="ok")

    async def up(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def down(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class Tap:
    """A pass-through TCP hop between the PBX and the daemon that keeps every byte the PBX delivered, per
    connection: what the daemon was given.  (A PBX that drops the connection resets it when the daemon's last
    action is still unread on its side: what was in flight is then lost in the kernel, never delivered, as it
    is with a real Asterisk going away.)"""

    def __init__(self, upstream: int) -> None:
        self.upstream = upstream
        self.port = 0
        self.connections: list[bytearray] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream)
        except OSError:
            writer.close()
            return
        got = bytearray()
        self.connections.append(got)

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, keep: bytearray | None) -> None:
            try:
                while data := await src.read(65536):
                    if keep is not None:
                        keep += data
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                with contextlib.suppress(Exception):
                    if keep is not None:
                        # towards the daemon: a FIN after everything, and the socket left open until the daemon
                        # closes it (closing it now, with the daemon's last action unread, would reset it and
                        # throw away what the daemon had not read yet)
                        dst.write_eof()
                    else:
                        dst.close()

        await asyncio.gather(pump(up_reader, writer, got), pump(reader, up_writer, None))
        with contextlib.suppress(Exception):
            writer.close()

    def delivered(self) -> bytes:
        """Every complete message delivered, connection after connection (one banner in front)."""
        out = [BANNER]
        for data in self.connections:
            body = bytes(data)
            if body.startswith(b"Asterisk Call Manager"):
                body = body.partition(b"\r\n")[2]
            end = body.rfind(b"\r\n\r\n")
            out.append(body[: end + 4] if end >= 0 else b"")
        return b"".join(out)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()


def write_config(path: Path, hook_port: int) -> Path:
    path.write_text("\n".join([
        "[[alerts.channels]]", 'name = "soak"', 'kind = "webhook"', f'url = "http://127.0.0.1:{hook_port}/hook"',
        'secret = "soak-secret"', "storm_limit = 1000000", "retry_min = 0.2", "retry_max = 2.0", "timeout = 2.0",
    ]) + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


# ---- counting ---------------------------------------------------------------------------------------------------
@dataclass
class Row:
    fault: str
    sent: int = 0
    stored: int = 0
    lost: int = 0
    duplicated: int = 0
    invented: int = 0
    details: list[str] = field(default_factory=list)  # the calls lost, duplicated or invented (--verbose)
    alerts: int = 0
    once: int = 0
    twice: int = 0
    never: int = 0
    seconds: float = 0.0
    note: str = ""

    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.invented or self.twice or self.never)


#: alerts whose delivery was rightly never made: the caller was reached first (cancelled), or muted (suppressed)
DUE = "SELECT DISTINCT alert_id FROM alert_deliveries WHERE state NOT IN ('cancelled', 'suppressed')"


def read_store(url_or_path: str | Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """Rows of ``calls`` (call_id -> caller, started_at) and the ids of the alerts due for delivery."""
    if isinstance(url_or_path, Path):
        import sqlite3

        with sqlite3.connect(url_or_path) as conn:
            calls = {r[0]: {"caller": r[1], "started_at": r[2]}
                     for r in conn.execute("SELECT call_id, caller, started_at FROM calls")}
            alerts = [r[0] for r in conn.execute(DUE)]
        return calls, alerts

    async def pg() -> tuple[dict[str, dict[str, Any]], list[str]]:
        from tests.pg import connect

        conn = await connect(str(url_or_path))
        try:
            calls = {r["call_id"]: {"caller": r["caller"], "started_at": r["started_at"]}
                     for r in await conn.fetch("SELECT call_id, caller, started_at FROM calls")}
            alerts = [r["alert_id"] for r in await conn.fetch(DUE)]
        finally:
            await conn.close()
        return calls, alerts

    from tests.pg import run_sync

    return run_sync(pg())


def count(row: Row, sent: dict[str, dict[str, Any]], stored: dict[str, dict[str, Any]], alerts: list[str],
          receiver: Receiver) -> Row:
    row.sent = len(sent)
    row.stored = len(set(sent) & set(stored))
    row.lost = len(set(sent) - set(stored))
    extra = set(stored) - set(sent)
    same = {(t.get("caller"), round(float(t["started_at"]))) for t in sent.values() if t.get("started_at")}
    row.duplicated = sum(1 for c in extra if (stored[c]["caller"], round(float(stored[c]["started_at"]))) in same)
    row.invented = len(extra) - row.duplicated
    row.details = ([f"lost {c} {sent[c]}" for c in sorted(set(sent) - set(stored))]
                   + [f"stored, not sent: {c} {stored[c]}" for c in sorted(extra)])
    row.alerts = len(alerts)
    row.once = sum(1 for a in alerts if receiver.delivered[a] == 1)
    row.twice = sum(1 for a in alerts if receiver.delivered[a] > 1)
    row.never = sum(1 for a in alerts if receiver.delivered[a] == 0)
    return row


async def settle(d: DaemonProcess, receiver: Receiver, timeout: float) -> None:
    """Everything written (memory and spool empty, store up) and every alert delivery finished."""
    def done(m: dict[Any, float]) -> bool:
        return (value(m, "onechance_store_up") == 1 and value(m, "onechance_store_queue_depth") == 0
                and value(m, "onechance_store_spool_journeys") == 0)

    await d.wait_for(done, timeout, "the store written")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # the deliveries: sent and retried until the receiver took them
        m = await d.metrics()
        retried = value(m, "onechance_alert_deliveries_total", channel="soak", result="retried")
        sent = value(m, "onechance_alert_deliveries_total", channel="soak", result="sent")
        raised = sum(v for (n, _l), v in m.items() if n == "onechance_alerts_total")
        if sent + sum(v for (n, lab), v in m.items() if n == "onechance_alert_deliveries_total"
                      and dict(lab).get("result") in ("failed", "expired", "suppressed", "cancelled")) >= raised:
            return
        await asyncio.sleep(0.2 if retried else 0.1)
    raise AssertionError(f"alert deliveries not finished within {timeout:g} s:\n{d.log[-3000:]}")


# ---- the faults -------------------------------------------------------------------------------------------------
def capture_stream(passes: int) -> tuple[list[bytes], list[int]]:
    """Every shared capture, ``passes`` times, each copy moved after the previous one (fresh ids, later times);
    the messages (each with its blank line) and the index where each copy starts."""
    files = sorted(DATA.glob("*.ami"))
    out: list[bytes] = []
    starts: list[int] = []
    last = 0.0
    n = 0
    for _ in range(passes):
        for path in files:
            recs = load_capture(path.read_bytes())
            stamps = [r.ts for r in recs if r.ts is not None]
            if not stamps:
                continue
            shift = max(0, int(last - stamps[0]) + 5)
            starts.append(n)
            for rec in recs:
                out.append(shift_times(rec, shift).raw + b"\r\n\r\n")
                n += 1
            last = max(stamps) + shift
    return out, starts


async def fault_ami(args: argparse.Namespace, work: Path) -> Row:
    row = Row("ami", note=f"{args.cuts} cuts + 1 Asterisk restart, {args.passes} passes of the captures")
    messages, starts = capture_stream(args.passes)
    total = len(messages)
    step = max(2, total // (args.cuts + 1))
    # every other cut tears a message (written half, the connection closed: that message is lost, as in a real
    # drop), the others fall between two messages; the restart comes between two copies (no call in progress)
    plan: dict[int, Any] = {i * step: Cut(gap=0, partial=i % 2 == 1) for i in range(1, args.cuts + 1)}
    middle = starts[len(starts) // 2]
    plan.pop(middle, None)
    plan[middle] = Restart(capture=None, down_for=0.5)
    path = work / "stream.ami"
    path.write_bytes(BANNER + b"".join(messages))
    pbx = DemoPbx(path, speed=0, chunks=(1, 4096), username="onechance", secret=SECRET, login_fail_delay=0.05)
    pbx.plan = plan
    receiver = Receiver()
    await receiver.up()
    await pbx.start()
    tap = Tap(pbx.port)
    await tap.start()
    d = DaemonProcess(daemon_env(work / "data", tap.port), args=("--config", str(write_config(work / "c.toml",
                                                                                              receiver.port))))
    t0 = time.monotonic()
    await d.start()
    try:
        await asyncio.wait_for(pbx.finished.wait(), args.max_seconds)
        await wait_handled(d, pbx, timeout=args.max_seconds)
        await settle(d, receiver, args.max_seconds)
        m = await d.metrics()
        errors = sum(v for (n, _l), v in m.items() if n in ("onechance_tracker_errors_total",
                                                               "onechance_sink_errors_total",
                                                               "onechance_ami_dropped_total"))
        row.note += (f" ({value(m, 'onechance_ami_reconnects_total', pbx='default'):.0f} reconnects"
                     f"{f', {errors:.0f} tracker/sink errors or drops' if errors else ''})")
        code = await d.stop()
        assert code == 0, d.log[-3000:]
    finally:
        d.kill()
        (work / "daemon.log").write_text(d.log)
        await tap.close()
        await pbx.stop()
        await receiver.down()
    row.seconds = round(time.monotonic() - t0, 1)
    # expected: the journeys of what the daemon was given (every message delivered whole); allowed besides: the
    # calls of the whole stream (a resync rebuilds a call whose first messages were lost in a reset)
    delivered = work / "delivered.ami"
    delivered.write_bytes(tap.delivered())
    expected = {j.call_id: {"caller": j.caller, "started_at": j.started_at}
                for j in replay_files([str(delivered)]).journeys}
    whole = {j.call_id: {"caller": j.caller, "started_at": j.started_at} for j in replay_files([str(path)]).journeys}
    never = len(set(whole) - set(expected))
    if never:
        row.note += f"; {never} of the {len(whole)} calls of the stream never reached the daemon (in a reset)"
    calls, alerts = read_store(work / "data" / "onechance.db")
    row = count(row, expected, {c: v for c, v in calls.items() if c not in set(whole) - set(expected)}, alerts,
                receiver)
    return row


async def loaded(args: argparse.Namespace, work: Path, row: Row, fault: Any, *, db_url: str | None = None) -> Row:
    """The simulated centre (``--calls`` calls, paced) through ``fault(d, pbx, receiver)``, run once the first
    calls are stored; then everything settled and counted."""
    pbx = sim_pbx(args.calls, config=sim_config(seed=7), speed=args.speed)
    receiver = Receiver()
    await receiver.up()
    await pbx.start()
    extra = {"ONECHANCE_DATABASE__URL": db_url} if db_url else {}
    conf = write_config(work / "c.toml", receiver.port)
    env = daemon_env(work / "data", pbx.port, ONECHANCE_DATABASE__RETRY_INTERVAL="1", **extra)
    d = DaemonProcess(env, args=("--config", str(conf)))
    t0 = time.monotonic()
    await d.start()
    try:
        await d.wait_for(lambda m: value(m, "onechance_store_journeys_written_total") > 20, args.max_seconds,
                         "the first calls stored")
        d = await fault(d, pbx, receiver) or d
        pbx.speed = 0  # the fault is over: the rest of the calls as fast as the daemon takes them
        await asyncio.wait_for(pbx.finished.wait(), args.max_seconds)
        await wait_handled(d, pbx, timeout=args.max_seconds)
        await settle(d, receiver, args.max_seconds)
        code = await d.stop()
        assert code == 0, d.log[-3000:]
    finally:
        d.kill()
        (work / "daemon.log").write_text(d.log)
        with contextlib.suppress(ConnectionError):
            await pbx.stop()
        await receiver.down()
    row.seconds = round(time.monotonic() - t0, 1)
    sent = {t["call_id"]: t for t in truths(pbx)}
    calls, alerts = read_store(db_url if db_url else work / "data" / "onechance.db")
    return count(row, sent, calls, alerts, receiver)


async def fault_postgres(args: argparse.Namespace, work: Path) -> Row:
    from tests.pg import PgServer, own_server

    given: PgServer | None = getattr(args, "pg_server", None)  # the tests pass their session's cluster
    server: PgServer = given or await asyncio.get_running_loop().run_in_executor(None, own_server)
    try:
        url = await asyncio.get_running_loop().run_in_executor(None, server.create_database)

        async def fault(d: DaemonProcess, pbx: DemoPbx, receiver: Receiver) -> None:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, server.stop)
            try:
                await d.wait_for(lambda m: value(m, "onechance_store_up") == 0, 30, "the store down")
                await asyncio.sleep(args.pg_down)
                m = await d.metrics()
                row.note = (f"PostgreSQL stopped {args.pg_down:g} s under load: "
                            f"{value(m, 'onechance_store_spool_journeys'):.0f} records spooled meanwhile")
            finally:
                await loop.run_in_executor(None, server.start)

        row = Row("postgres")
        return await loaded(args, work, row, fault, db_url=url)
    finally:
        if given is None:
            await asyncio.get_running_loop().run_in_executor(None, server.close)


async def fault_webhook(args: argparse.Namespace, work: Path) -> Row:
    row = Row("webhook", note=f"receiver down {args.hook_down:g} s under load")

    async def fault(d: DaemonProcess, pbx: DemoPbx, receiver: Receiver) -> None:
        await receiver.down()
        try:
            await asyncio.sleep(args.hook_down)
        finally:
            await receiver.up()
        m = await d.metrics()
        row.note += f" ({value(m, 'onechance_alert_deliveries_total', channel='soak', result='retried'):.0f} retries)"

    return await loaded(args, work, row, fault)


async def fault_disk(args: argparse.Namespace, work: Path) -> Row:
    row = Row("disk", note=f"disk full {args.disk_full:g} s under load (RLIMIT_FSIZE 0, then room again)")

    async def fault(d: DaemonProcess, pbx: DemoPbx, receiver: Receiver) -> None:
        resource.prlimit(d.pid, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
        try:
            await asyncio.sleep(args.disk_full)
            m = await d.metrics()
            row.note += f"; {value(m, 'onechance_store_queue_depth'):.0f} waited in memory"
        finally:
            resource.prlimit(d.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))

    return await loaded(args, work, row, fault)


async def fault_sigterm(args: argparse.Namespace, work: Path) -> Row:
    row = Row("sigterm", note="SIGTERM while the PBX streams; a new start follows it on")

    async def fault(d: DaemonProcess, pbx: DemoPbx, receiver: Receiver) -> DaemonProcess:
        await asyncio.sleep(1.0)
        code = await d.stop(signal.SIGTERM)
        assert code == 0, d.log[-3000:]
        shutdown = [line for line in d.log.splitlines() if "shutdown: " in line and "journeys stored" in line]
        row.note += f" ({shutdown[-1].split('shutdown: ', 1)[1].split(';')[0]})" if shutdown else ""
        again = DaemonProcess(d.env, args=d.args)
        await again.start()
        return again

    return await loaded(args, work, row, fault)


RUNNERS = {"ami": fault_ami, "postgres": fault_postgres, "webhook": fault_webhook, "disk": fault_disk,
           "sigterm": fault_sigterm}


async def run(args: argparse.Namespace) -> list[Row]:
    rows = []
    for name in args.only:
        work = Path(tempfile.mkdtemp(prefix=f"onechance-soak-{name}-"))
        rows.append(await RUNNERS[name](args, work))
    return rows


def table(rows: list[Row]) -> str:
    head = "| fault | sent | stored | lost | duplicated | invented | alerts | delivered once | twice+ | never | s | |"
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        lines.append(f"| {r.fault} | {r.sent} | {r.stored} | {r.lost} | {r.duplicated} | {r.invented} | {r.alerts} "
                     f"| {r.once} | {r.twice} | {r.never} | {r.seconds:g} | {r.note} |")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="onechance run through AMI cuts, an Asterisk restart, PostgreSQL "
                                            "stopped, the webhook receiver down, a full disk and SIGTERM")
    p.add_argument("--only", type=lambda s: [x for x in s.split(",") if x], default=list(FAULTS),
                   help=f"faults to run, comma-separated (default: all of {','.join(FAULTS)})")
    p.add_argument("--passes", type=int, default=3, help="ami: copies of the captures played")
    p.add_argument("--cuts", type=int, default=100, help="ami: forced disconnects")
    p.add_argument("--calls", type=int, default=600, help="the simulated calls of the other faults")
    p.add_argument("--speed", type=float, default=10.0, help="the simulator's pace (simulated s per real s)")
    p.add_argument("--pg-down", type=float, default=60.0, help="seconds PostgreSQL is stopped")
    p.add_argument("--hook-down", type=float, default=30.0, help="seconds the webhook receiver is down")
    p.add_argument("--disk-full", type=float, default=20.0, help="seconds the disk is full")
    p.add_argument("--max-seconds", type=float, default=900.0, help="longest wait of any phase")
    p.add_argument("--json", action="store_true", help="one JSON object per fault instead of the table")
    p.add_argument("--verbose", action="store_true", help="list the calls lost, duplicated or invented")
    return p


def main() -> None:
    args = parser().parse_args()
    unknown = set(args.only) - set(FAULTS)
    if unknown:
        raise SystemExit(f"unknown fault(s): {', '.join(sorted(unknown))} (known: {', '.join(FAULTS)})")
    rows = asyncio.run(run(args))
    if args.json:
        for r in rows:
            print(json.dumps(r.__dict__))
    else:
        print(table(rows))
    if args.verbose:
        for r in rows:
            for line in r.details:
                print(f"{r.fault}: {line}")
    if not all(r.ok() for r in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
