"""Nothing lost, nothing duplicated: the database going away in the middle of a replay (SQLite locked
by another process, PostgreSQL really stopped and started: a cluster the suite started itself), and a
daemon killed with SIGKILL while its journeys wait in the spool."""

from __future__ import annotations

import asyncio
import os
import select
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from onechance.store import JourneyWriter, WriterState, make_engine, upgrade

from .storehelp import assert_store_holds, capture, final_journeys, final_records, update_stream, wait_drained

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = ("load_a", "bounced", "attended_transfer")


def writer_for(engine, tmp_path, registry) -> JourneyWriter:
    return JourneyWriter(engine, tmp_path / "spool", registry, batch_size=20, flush_interval=0.01,
                         retry_interval=0.1, max_retry_interval=0.5)


async def replay_through(writer: JourneyWriter, updates: list[dict], outage_start, outage_end) -> int:
    """Submit updates like the daemon's consumer; break the database for the middle third.  Returns how
    many journeys went to the spool during the outage."""
    third = len(updates) // 3
    spooled_during_outage = 0
    for i, u in enumerate(updates):
        writer.submit(u)
        if i % 10 == 0:
            await asyncio.sleep(0.002)  # the consumer yields now and then, as the daemon does
        if i == third:
            await outage_start()
        if i == 2 * third:
            # the outage must have been seen: writes failed and journeys went to the spool
            for _ in range(500):
                if writer.state == WriterState.UNAVAILABLE and writer.spooled:
                    break
                await asyncio.sleep(0.01)
            assert writer.state == WriterState.UNAVAILABLE, writer.status()
            spooled_during_outage = writer.spooled
            await outage_end()
    return spooled_during_outage


async def test_sqlite_locked_in_the_middle_of_a_replay(tmp_path, registry):
    path = tmp_path / "onechance.db"
    engine = make_engine(f"sqlite+aiosqlite:///{path}?timeout=0.1")
    await upgrade(engine)
    updates = update_stream(*CAPTURES)
    writer = writer_for(engine, tmp_path, registry)
    await writer.start()
    blocker = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)

    async def lock() -> None:  # another process takes the write lock: "database is locked"
        await asyncio.to_thread(blocker.execute, "BEGIN EXCLUSIVE")

    async def unlock() -> None:
        await asyncio.to_thread(blocker.execute, "ROLLBACK")

    try:
        spooled = await replay_through(writer, updates, lock, unlock)
        assert spooled > 0
        await wait_drained(writer)
    finally:
        blocker.close()
        await writer.close()
    await assert_store_holds(engine, final_journeys(*CAPTURES))
    assert registry.get_sample_value("onechance_store_write_failures_total", {"reason": "unavailable"}) >= 1
    await engine.dispose()


@pytest.mark.postgres
async def test_postgresql_stopped_and_started_in_the_middle_of_a_replay(own_pg_server, own_pg_url, tmp_path, registry):
    engine = make_engine(own_pg_url)
    await upgrade(engine)
    updates = update_stream(*CAPTURES)
    writer = writer_for(engine, tmp_path, registry)
    await writer.start()
    try:
        spooled = await replay_through(
            writer,
            updates,
            lambda: asyncio.to_thread(own_pg_server.stop),
            lambda: asyncio.to_thread(own_pg_server.start),
        )
        assert spooled > 0
        await wait_drained(writer)
    finally:
        own_pg_server.ensure_running()  # whatever happened, leave the server up for the other tests
        await writer.close()
    await assert_store_holds(engine, final_journeys(*CAPTURES))
    await engine.dispose()


def test_journeys_spooled_by_a_killed_daemon_are_written_after_restart(db_url, tmp_path):
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("ONECHANCE_")
    } | {
        "ONECHANCE_DATA_DIR": str(tmp_path / "data"),
        "ONECHANCE_DATABASE__SPOOL_DIR": str(tmp_path / "spool"),
        "ONECHANCE_DATABASE__RETRY_INTERVAL": "0.2",
        "ONECHANCE_DATABASE__URL": "postgresql+asyncpg://nobody:secret@127.0.0.1:1/unreachable",
    }
    daemon = subprocess.Popen(
        [sys.executable, "-m", "tests.store_driver", "spool", *(capture(n) for n in CAPTURES)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert daemon.stdout is not None
        # wait at most a minute for the driver's report, so a driver that never prints fails the test
        ready, _, _ = select.select([daemon.stdout], [], [], 60)
        line = daemon.stdout.readline() if ready else ""
        assert line.startswith("SPOOLED "), (line, daemon.stderr.read() if daemon.poll() is not None else "")
        assert int(line.split()[1]) > 0
    finally:
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=30)
    assert daemon.returncode == -signal.SIGKILL
    assert list((tmp_path / "spool").glob("spool-*.jsonl"))

    env["ONECHANCE_DATABASE__URL"] = db_url
    restarted = subprocess.run(
        [sys.executable, "-m", "tests.store_driver", "drain"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False,
    )
    assert restarted.returncode == 0, restarted.stderr
    assert restarted.stdout.strip() == "DRAINED"
    assert list((tmp_path / "spool").glob("spool-*.jsonl")) == []

    async def check() -> None:
        engine = make_engine(db_url)
        try:
            await assert_store_holds(engine, final_journeys(*CAPTURES))
        finally:
            await engine.dispose()

    asyncio.run(check())


@pytest.mark.postgres
@pytest.mark.parametrize("refusal", ["lock timeout", "password changed"])
async def test_a_server_refusing_for_its_own_reasons_is_waited_out_not_blamed_on_the_journeys(
    refusal, own_pg_url, tmp_path, registry
):
    """PostgreSQL refuses the writes for reasons that have nothing to do with the journeys: a lock held
    too long by another session (``lock_timeout``), or the role's password changed before the daemon's
    settings.  The journeys wait in the spool and are written once the server accepts them again; none
    ends up in rejected.jsonl."""
    u = make_url(own_pg_url)
    admin = await asyncpg.connect(host=u.host, port=u.port, user=u.username, password=u.password,
                                  database=u.database)
    await admin.execute(f'ALTER DATABASE "{u.database}" SET lock_timeout = \'100ms\'')
    engine = make_engine(own_pg_url)
    await upgrade(engine)
    journeys = final_records("answered", "abandoned", "bounced")
    writer = writer_for(engine, tmp_path, registry)
    await writer.start()
    assert await writer.wait_ready(timeout=30)
    locked = admin.transaction()
    try:
        if refusal == "lock timeout":
            await locked.start()
            await admin.execute("LOCK TABLE calls IN ACCESS EXCLUSIVE MODE")
        else:
            await admin.execute("ALTER ROLE CURRENT_USER PASSWORD 'rotated-by-the-dba'")
            await engine.dispose()  # new connections from now on, as after a server restart
        for j in journeys:
            writer.submit(j)
        assert not await writer.flush(timeout=10)
        assert writer.state == WriterState.UNAVAILABLE and writer.spooled == len(journeys), writer.status()
    finally:
        if refusal == "lock timeout":
            await locked.rollback()
        else:
            await admin.execute(f"ALTER ROLE CURRENT_USER PASSWORD '{u.password}'")
    await wait_drained(writer)
    await writer.close()
    await assert_store_holds(engine, journeys)
    assert not (tmp_path / "spool" / "rejected.jsonl").exists()
    assert not registry.get_sample_value("onechance_store_write_failures_total", {"reason": "rejected"})
    await engine.dispose()
    await admin.close()
