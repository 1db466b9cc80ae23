"""Every way ``onechance run`` can be stopped keeps every call it accepted: the calls that ended (stored, or
spooled for the next start) and the calls still in progress (closed as uncertain, ``daemon_stopped``), or it
says exactly how many it could not keep and exits non-zero.

Each test runs the daemon as a real process against the fake PBX playing the call simulator, holds the PBX
while calls are in progress, stops the daemon one way or another, starts it again on the same data directory
(its spool written back) and counts the rows."""

from __future__ import annotations

import asyncio
import re
import resource
import signal
from pathlib import Path

import pytest

from onechance.demo import Hold

from .durability import (
    DaemonProcess,
    daemon_env,
    restart_and_drain,
    sim_pbx,
    stored_calls,
    truths,
    value,
    wait_handled,
)

#: messages the PBX plays before it holds (about 60 calls ended, 90 in progress at the captures' PBX x40)
HOLD_AFTER = 15000


def expected(pbx) -> tuple[dict[str, dict], dict[str, dict]]:
    """(calls ended before the hold, calls in progress at the hold) of the PBX's truths."""
    clock = pbx.now()
    ended, live = {}, {}
    for t in truths(pbx):
        if t["started_at"] > clock:
            continue
        if t["ended_at"] is not None and t["ended_at"] <= clock:
            ended[t["call_id"]] = t
        else:
            live[t["call_id"]] = t
    return ended, live


def check_rows(rows: dict[str, dict], ended: dict[str, dict], live: dict[str, dict]) -> None:
    missing = sorted(set(ended) - set(rows))
    assert missing == [], f"{len(missing)} of {len(ended)} ended calls lost"
    missing_live = sorted(set(live) - set(rows))
    assert missing_live == [], f"{len(missing_live)} of {len(live)} calls in progress never recorded"
    for call_id in live:
        row = rows[call_id]
        assert row["uncertain"] and row["closed_reason"] == "daemon_stopped", (call_id, row)


async def run_until_held(data_dir: Path, calls: int = 400, hold_after: int = HOLD_AFTER, **env: str):
    pbx = sim_pbx(calls, hold_after=hold_after)
    await pbx.start()
    d = DaemonProcess(daemon_env(data_dir, pbx.port, **env))
    await d.start()
    await wait_handled(d, pbx)
    return pbx, d


@pytest.mark.parametrize("signals", [("SIGTERM",), ("SIGINT",), ("SIGHUP",), ("SIGTERM", "SIGTERM"),
                                     ("SIGINT", "SIGHUP")])
async def test_every_signal_keeps_every_call_ended_or_in_progress(signals, tmp_path):
    """The journeys wait in memory (a long flush interval, big batches: only the alerts' writes take them
    along) when the signal comes; a second signal 1 ms after the first hurries the stop but still spools them,
    and still closes the calls in progress."""
    pbx, d = await run_until_held(tmp_path, ONECHANCE_DATABASE__FLUSH_INTERVAL="30",
                                  ONECHANCE_DATABASE__BATCH_SIZE="100000")
    try:
        ended, live = expected(pbx)
        assert len(ended) >= 20 and len(live) >= 20, (len(ended), len(live))
        for i, name in enumerate(signals):
            if i:
                await asyncio.sleep(0.001)
            d.send(getattr(signal, name))
        code = await d.wait()
    finally:
        d.kill()
        await pbx.stop()
    assert code == (0 if len(signals) == 1 else 130), d.log
    assert "Traceback" not in d.log
    report = re.search(r"shutdown: (\d+) journeys? stored, (\d+) spooled for the next start, 0 lost", d.log)
    assert report, d.log[-3000:]
    await restart_and_drain(tmp_path)
    check_rows(stored_calls(tmp_path / "onechance.db"), ended, live)


async def test_sigterm_with_the_database_down_spools_everything_and_exits_0(tmp_path):
    """The database cannot be reached at all: the stop spools every call, the next start stores them."""
    unreachable = "postgresql+asyncpg://nobody:pw@127.0.0.1:1/nothing"
    pbx, d = await run_until_held(tmp_path, ONECHANCE_DATABASE__URL=unreachable)
    try:
        ended, live = expected(pbx)
        code = await d.stop(signal.SIGTERM)
    finally:
        d.kill()
        await pbx.stop()
    assert code == 0, d.log
    assert re.search(r"shutdown: 0 journeys stored, \d+ spooled for the next start, 0 lost", d.log), d.log[-3000:]
    # the next start, with a database this time (the same spool: <data_dir>/spool)
    await restart_and_drain(tmp_path)
    check_rows(stored_calls(tmp_path / "onechance.db"), ended, live)


async def test_sigterm_when_the_disk_is_full_says_how_many_calls_are_lost_and_exits_1(tmp_path):
    """The disk fills up under a running daemon (RLIMIT_FSIZE lowered to 0 on the process with prlimit(2):
    from then on the kernel refuses every write that would grow a file, EFBIG, as it refuses them with ENOSPC on
    a full disk; the SQLite file, its WAL and the spool all grow by appending).  Nothing can be kept: the stop
    says exactly how many calls are lost and exits 1; the count is right (checked after a start with room)."""
    pbx = sim_pbx(400)
    pbx.plan = {3000: Hold(), HOLD_AFTER: Hold()}  # at the first hold the disk fills up
    await pbx.start()
    d = DaemonProcess(daemon_env(tmp_path, pbx.port))
    await d.start()
    try:
        await wait_handled(d, pbx)
        await d.wait_for(lambda m: value(m, "onechance_store_queue_depth") == 0, what="the first calls written")
        before = set(stored_calls(tmp_path / "onechance.db"))
        resource.prlimit(d.pid, resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
        pbx.release()
        await asyncio.sleep(0.2)
        await wait_handled(d, pbx)
        ended, live = expected(pbx)
        code = await d.stop(signal.SIGTERM)
    finally:
        d.kill()
        await pbx.stop()
    assert code == 1, d.log[-3000:]
    m = re.search(r"shutdown: (\d+) journeys? stored, (\d+) spooled for the next start, (\d+) LOST", d.log)
    assert m, d.log[-3000:]
    lost = int(m.group(3))
    await restart_and_drain(tmp_path)
    rows = stored_calls(tmp_path / "onechance.db")
    missing = (set(ended) | set(live)) - set(rows)
    assert lost == len(missing) > 0, (lost, len(missing))
    assert before <= set(rows)


async def test_sigterm_just_after_the_database_came_back_stores_instead_of_waiting_out_the_backoff(
        own_pg_server, own_pg_url, tmp_path):
    """PostgreSQL stops under load (journeys go to the spool, the writer backs off for 30 s), comes back, and
    SIGTERM arrives while the writer still waits for its next try: the stop tries the database at once and
    stores everything there (spool included); nothing is left for the next start."""
    pbx = sim_pbx(400)
    pbx.plan = {3000: Hold(), HOLD_AFTER: Hold()}
    await pbx.start()
    d = DaemonProcess(daemon_env(tmp_path, pbx.port, ONECHANCE_DATABASE__URL=own_pg_url,
                                 ONECHANCE_DATABASE__RETRY_INTERVAL="30"))
    await d.start()
    try:
        await wait_handled(d, pbx)
        await d.wait_for(lambda m: value(m, "onechance_store_queue_depth") == 0
                         and value(m, "onechance_store_up") == 1, what="the first calls written")
        own_pg_server.stop()
        try:
            pbx.release()
            await asyncio.sleep(0.2)
            await wait_handled(d, pbx)
            await d.wait_for(lambda m: value(m, "onechance_store_up") == 0
                             and value(m, "onechance_store_spool_journeys") > 0, what="journeys in the spool")
        finally:
            own_pg_server.start()
        await asyncio.sleep(1.0)  # back, but the writer's next try is 30 s away
        ended, live = expected(pbx)
        code = await d.stop(signal.SIGTERM)
    finally:
        d.kill()
        await pbx.stop()
    assert code == 0, d.log[-3000:]
    m = re.search(r"shutdown: (\d+) journeys? stored, 0 spooled for the next start, 0 lost", d.log)
    assert m, d.log[-3000:]
    assert "the spool" in d.log and not list((tmp_path / "spool").glob("spool-*.jsonl"))
    check_rows(stored_calls(own_pg_url), ended, live)
