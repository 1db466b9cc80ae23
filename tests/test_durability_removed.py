"""A database file or a spool directory removed under the running daemon: it is noticed, reported (metric,
``/readyz``, one log line), the journeys go to the spool (written back into a spool directory created again),
and the calls that ended after the removal all survive a restart."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import time

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

FIRST_HOLD, SECOND_HOLD = 4000, 15000


def calls_after(pbx, clock: float) -> set[str]:
    """Calls of the PBX (up to where it is now) that ended after ``clock`` or are still in progress."""
    now = pbx.now()
    return {t["call_id"] for t in truths(pbx)
            if t["started_at"] <= now and (t["ended_at"] is None or t["ended_at"] > clock)}


async def start_held(tmp_path, **env: str):
    pbx = sim_pbx(400)
    pbx.plan = {FIRST_HOLD: Hold(), SECOND_HOLD: Hold()}
    await pbx.start()
    d = DaemonProcess(daemon_env(tmp_path, pbx.port, **env))
    await d.start()
    await wait_handled(d, pbx)
    return pbx, d


async def go_on(pbx, d) -> None:
    pbx.release()
    await asyncio.sleep(0.2)
    await wait_handled(d, pbx)


async def test_a_removed_database_file_is_reported_and_nothing_ended_afterwards_is_lost(tmp_path):
    """``rm onechance.db*`` while the daemon writes: store down on /metrics and /readyz (with the reason), one
    ERROR line, the journeys go to the spool meanwhile (a 30 s retry), then into a new file; after a restart
    every call that ended after the removal is stored."""
    pbx, d = await start_held(tmp_path, ONECHANCE_DATABASE__RETRY_INTERVAL="30")
    try:
        await d.wait_for(lambda m: value(m, "onechance_store_queue_depth") == 0
                         and value(m, "onechance_store_up") == 1, what="the first calls written")
        assert len(stored_calls(tmp_path / "onechance.db")) > 10
        removed_at = pbx.now()
        for path in tmp_path.glob("onechance.db*"):
            path.unlink()
        await d.wait_for(lambda m: value(m, "onechance_store_up") == 0, timeout=10, what="the store reported down")
        status, body = await d.get("/readyz")
        assert status == 503, body
        reason = json.loads(body)["reason"]
        assert "store: database unavailable" in reason and "was removed while in use" in reason, reason
        await go_on(pbx, d)
        m = await d.metrics()
        assert value(m, "onechance_store_up") == 0 and value(m, "onechance_store_spool_journeys") > 0
        want = calls_after(pbx, removed_at)
        code = await d.stop(signal.SIGTERM)
    finally:
        d.kill()
        await pbx.stop()
    assert code == 0, d.log[-3000:]
    assert d.log.count("was removed while in use") == 1, d.log[-3000:]
    await restart_and_drain(tmp_path)
    rows = stored_calls(tmp_path / "onechance.db")
    missing = want - set(rows)
    assert not missing, f"{len(missing)} of {len(want)} calls that ended after the removal are lost"


async def test_a_removed_data_directory_is_recreated_and_the_daemon_goes_on_storing(tmp_path):
    """``rm -r data/`` (the database and the spool together): a new directory, database and spool are made
    at the next try (a short retry here) and the daemon goes on storing; nothing ended afterwards is lost."""
    data = tmp_path / "data"
    pbx, d = await start_held(data)
    try:
        await d.wait_for(lambda m: value(m, "onechance_store_queue_depth") == 0
                         and value(m, "onechance_store_up") == 1, what="the first calls written")
        removed_at = pbx.now()
        shutil.rmtree(data)
        # reported: one ERROR line (onechance_store_up is 0 only until the next try, 0.3 s here: /metrics, rendered
        # at most 5 times a second, may never show it)
        deadline = time.monotonic() + 10
        while "was removed while in use" not in d.log:
            assert time.monotonic() < deadline, f"the removal was not reported:\n{d.log[-3000:]}"
            await asyncio.sleep(0.05)
        await go_on(pbx, d)
        await d.wait_for(lambda m: value(m, "onechance_store_up") == 1 and value(m, "onechance_store_queue_depth") == 0
                         and value(m, "onechance_store_spool_journeys") == 0, timeout=30, what="a new database")
        status, _ = await d.get("/readyz")
        assert status == 200
        want = calls_after(pbx, removed_at)
        code = await d.stop(signal.SIGTERM)
    finally:
        d.kill()
        await pbx.stop()
    assert code == 0, d.log[-3000:]
    assert "a new database file" in d.log and "spool directory" in d.log, d.log[-3000:]
    rows = stored_calls(data / "onechance.db")
    missing = want - set(rows)
    assert not missing, f"{len(missing)} of {len(want)} calls that ended after the removal are lost"


async def test_a_spool_directory_removed_while_it_holds_journeys_loses_none_of_them(tmp_path):
    """The database is down (every journey in the spool) and the spool directory is removed: it is created
    again with every journey it held; the next start (with a database) stores every call."""
    unreachable = "postgresql+asyncpg://nobody:pw@127.0.0.1:1/nothing"
    pbx, d = await start_held(tmp_path, ONECHANCE_DATABASE__URL=unreachable)
    try:
        await d.wait_for(lambda m: value(m, "onechance_store_spool_journeys") > 10
                         and value(m, "onechance_store_queue_depth") == 0, what="journeys in the spool")
        shutil.rmtree(tmp_path / "spool")
        await go_on(pbx, d)
        want = calls_after(pbx, 0.0)
        await d.wait_for(lambda m: value(m, "onechance_store_queue_depth") == 0, what="the last calls spooled")
        code = await d.stop(signal.SIGTERM)
    finally:
        d.kill()
        await pbx.stop()
    assert code == 0, d.log[-3000:]
    assert "was removed: recreated it" in d.log, d.log[-3000:]
    await restart_and_drain(tmp_path)
    rows = stored_calls(tmp_path / "onechance.db")
    missing = want - set(rows)
    assert not missing, f"{len(missing)} of {len(want)} calls lost"
