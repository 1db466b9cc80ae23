"""The journey writer on real databases: idempotent upserts, coalescing, overflow, refusals, metrics."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json
import os
import select
import sqlite3
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from onechance.cli import main
from onechance.journey import CallRecord, Outcome
from onechance.store import JourneyWriter, WriterState, downgrade, make_engine, store_journeys, upgrade

from .storehelp import assert_store_holds, capture, dump, final_records, stored_journeys, update_stream, wait_drained

UNREACHABLE = "postgresql+asyncpg://nobody:secret@127.0.0.1:1/nothing"
ROOT = Path(__file__).resolve().parent.parent


def new_writer(engine, tmp_path, registry=None, **kw) -> JourneyWriter:
    kw.setdefault("flush_interval", 0.02)
    kw.setdefault("retry_interval", 0.1)
    kw.setdefault("max_retry_interval", 0.5)
    return JourneyWriter(engine, tmp_path / "spool", registry or CollectorRegistry(), **kw)


async def dump_url(url: str) -> dict:
    engine = make_engine(url)
    try:
        return await dump(engine)
    finally:
        await engine.dispose()


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels or None) or 0.0


async def test_load_a_replayed_twice_gives_the_same_rows(engine, tmp_path):
    journeys = final_records("load_a")
    for _ in range(2):
        writer = new_writer(engine, tmp_path)
        await writer.start()
        for j in journeys:
            writer.submit(j)
        await wait_drained(writer)
        await writer.close()
        if _ == 0:
            first = await dump(engine)
    assert await dump(engine) == first
    await assert_store_holds(engine, journeys)


async def test_every_update_of_a_replay_leaves_the_final_records(engine, tmp_path, registry):
    """The daemon submits each call many times (every update); the database ends with the final
    version of each, and the stored JSON is exactly ``replay --json``'s."""
    updates = update_stream("load_a", "bounced", "attended_transfer", "abandon_then_callback")
    finals = final_records("load_a", "bounced", "attended_transfer", "abandon_then_callback")
    assert len(updates) > 3 * len(finals)
    writer = new_writer(engine, tmp_path, registry, batch_size=25)
    await writer.start()
    for i, u in enumerate(updates):
        writer.submit(u)
        if i % 40 == 0:
            await writer.flush()
    await wait_drained(writer)
    await writer.close()
    await assert_store_holds(engine, finals)
    assert sample(registry, "onechance_store_journeys_written_total") >= len(finals)
    assert sample(registry, "onechance_store_write_seconds_count") >= 1
    assert sample(registry, "onechance_store_write_failures_total", reason="unavailable") == 0


async def test_updates_of_one_call_coalesce_into_one_write(engine, tmp_path, registry):
    updates = [u for u in update_stream("bounced")]
    assert len(updates) > 5
    await upgrade(engine)
    writer = new_writer(engine, tmp_path, registry, flush_interval=30)
    await writer.start()
    for u in updates:
        writer.submit(u)
    assert writer.queue_depth == 1
    await wait_drained(writer)
    await writer.close()
    assert sample(registry, "onechance_store_journeys_written_total") == 1
    await assert_store_holds(engine, final_records("bounced"))


async def test_an_older_version_never_overwrites_a_newer_one(engine, tmp_path):
    newest = final_records("abandon_then_callback")[0]
    assert newest.recovered is True
    older = dataclasses.replace(newest, recovered=False, recovered_by=None, recovered_at=None, recovered_how=None,
                                updated_at=newest.updated_at - 10, outcome=Outcome.UNANSWERED)
    await upgrade(engine)
    await store_journeys(engine, [newest], stored_at=1.0)
    await store_journeys(engine, [older], stored_at=2.0)  # late, e.g. from an old spool
    writer = new_writer(engine, tmp_path)
    await writer.start()
    writer.submit(newest)
    writer.submit(older)  # in the same batch
    await wait_drained(writer)
    await writer.close()
    assert (await stored_journeys(engine))[("", newest.call_id)] == newest.to_json()


async def test_journeys_of_several_pbxs_with_the_same_call_id_are_separate_rows(engine, tmp_path):
    a = final_records("answered", pbx="hq")
    b = final_records("answered", pbx="branch")
    await upgrade(engine)
    await store_journeys(engine, a + b, stored_at=1.0)
    await assert_store_holds(engine, a + b)


async def test_a_refused_journey_is_set_aside_and_does_not_block_the_others(engine, tmp_path, registry):
    good = final_records("answered", "abandoned", "bounced")
    broken = dataclasses.replace(good[0], call_id="")  # cannot be mapped: a call needs an id
    bad = [broken]
    if engine.dialect.name == "postgresql":  # PostgreSQL enforces VARCHAR(64): refused by the database
        bad.append(dataclasses.replace(good[1], call_id="x" * 100))
    writer = new_writer(engine, tmp_path, registry)
    await writer.start()
    for j in [*bad, *good]:
        writer.submit(j)
    await wait_drained(writer)
    await writer.close()
    await assert_store_holds(engine, good)
    rejected = [json.loads(line) for line in (tmp_path / "spool" / "rejected.jsonl").read_text().splitlines()]
    assert sorted(r["journey"]["call_id"] for r in rejected) == sorted(j.call_id for j in bad)
    assert sample(registry, "onechance_store_write_failures_total", reason="rejected") == len(bad)
    assert writer.state == WriterState.CLOSED


async def test_a_full_queue_overflows_to_the_spool_not_to_the_floor(engine, tmp_path, registry):
    journeys = final_records("load_a")
    writer = new_writer(engine, tmp_path, registry, queue_size=5, flush_interval=30)
    await writer.start()
    for j in journeys:  # no await in between: the background task cannot write meanwhile
        writer.submit(j)
    assert writer.queue_depth == 5
    assert writer.spooled == len(journeys) - 5
    assert sample(registry, "onechance_store_spool_journeys") == len(journeys) - 5
    assert sample(registry, "onechance_store_spool_bytes") > 0
    await wait_drained(writer)
    await writer.close()
    await assert_store_holds(engine, journeys)
    assert sample(registry, "onechance_store_spool_journeys") == 0


async def test_metrics_are_on_the_given_registry(engine, tmp_path, registry):
    writer = new_writer(engine, tmp_path, registry)
    names = {m.name for m in registry.collect()}
    assert {
        "onechance_store_queue_depth",
        "onechance_store_spool_bytes",
        "onechance_store_spool_journeys",
        "onechance_store_write_seconds",
        "onechance_store_write_failures",
        "onechance_store_journeys_written",
        "onechance_store_journeys_spooled",
        "onechance_store_up",
    } <= names
    assert not inspect.iscoroutinefunction(writer.submit)
    await writer.start()
    assert await writer.wait_ready(timeout=30)
    assert sample(registry, "onechance_store_up") == 1
    await writer.close()


async def test_ready_reflects_the_database(tmp_path, registry):
    engine = make_engine(UNREACHABLE)
    writer = new_writer(engine, tmp_path, registry)
    try:
        await writer.start()
        writer.submit(final_records("answered")[0])
        assert not await writer.flush(timeout=10)
        assert writer.state == WriterState.UNAVAILABLE and not writer.ready
        assert writer.spooled == 1
        assert "secret" not in (writer.last_error or "")
        assert sample(registry, "onechance_store_up") == 0
        assert sample(registry, "onechance_store_write_failures_total", reason="unavailable") >= 1
    finally:
        await writer.close()
        await engine.dispose()


async def test_close_while_the_database_is_down_spools_everything_for_the_next_start(engine, tmp_path):
    journeys = final_records("load_a")
    down = make_engine(UNREACHABLE)
    writer = new_writer(down, tmp_path, retry_interval=60)
    await writer.start()
    for j in journeys:
        writer.submit(j)
    await writer.close()
    await down.dispose()
    assert writer.spooled == len(journeys)

    writer = new_writer(engine, tmp_path)  # the next start, with the database back
    await writer.start()
    await wait_drained(writer)
    await writer.close()
    await assert_store_holds(engine, journeys)


@pytest.mark.fresh_database  # no schema yet
async def test_without_auto_upgrade_journeys_wait_in_the_spool_for_the_schema(engine, tmp_path):
    journeys = final_records("answered", "abandoned")
    writer = new_writer(engine, tmp_path, auto_upgrade=False)
    await writer.start()
    for j in journeys:
        writer.submit(j)
    assert not await writer.flush(timeout=10)
    assert "onechance db upgrade" in (writer.last_error or "")
    assert writer.spooled == len(journeys)
    await upgrade(engine)
    await wait_drained(writer)
    await writer.close()
    await assert_store_holds(engine, journeys)


def test_replay_store_twice_prints_the_same_and_stores_once(db_url, monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("ONECHANCE_CONFIG", raising=False)
    monkeypatch.setenv("ONECHANCE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ONECHANCE_DATABASE__URL", db_url)
    assert main(["replay", capture("load_a"), "--json"]) == 0
    plain = capsys.readouterr().out
    dumps = []
    for _ in range(2):
        assert main(["replay", capture("load_a"), "--json", "--store"]) == 0
        out, err = capsys.readouterr()
        assert out == plain  # --store does not change what replay prints
        assert "stored 60 journeys" in err
        dumps.append(asyncio.run(dump_url(db_url)))
    assert dumps[0] == dumps[1]
    assert len(dumps[0]["calls"]) == 60


def test_replay_store_with_the_database_down_says_where_the_journeys_are(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("ONECHANCE_CONFIG", raising=False)
    monkeypatch.setenv("ONECHANCE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ONECHANCE_DATABASE__URL", UNREACHABLE)
    monkeypatch.setenv("ONECHANCE_DATABASE__RETRY_INTERVAL", "60")
    assert main(["replay", capture("bounced"), "--store"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("onechance replay: database unavailable (")
    assert "1 journeys kept in the spool" in err and str(tmp_path / "data" / "spool") in err
    assert "secret" not in err


async def test_the_writer_runs_as_a_daemon_service_behind_a_store_sink(engine, tmp_path):
    """The daemon's wiring: ``services=[writer]`` (run/aclose, in the daemon's task) and ``StoreSink(writer)``:
    every call's end and every recovery, and the database holds what ``replay`` prints."""
    from onechance.replay import replay_files
    from onechance.store import StoreSink

    writer = new_writer(engine, tmp_path)
    service = asyncio.create_task(writer.run())
    sink = StoreSink(writer)
    result = replay_files([capture(n) for n in ("load_a", "abandon_then_callback")], on_update=sink.handle)
    await wait_drained(writer)
    await writer.aclose()
    await asyncio.wait_for(service, 10)
    assert any(r.recovered for r in result.journeys)
    await assert_store_holds(engine, [j for j in result.journeys if j.ended_at is not None])


async def test_a_schema_dropped_under_a_running_writer_is_rebuilt_not_a_reason_to_refuse(engine, tmp_path, registry):
    journeys = final_records("load_a")
    writer = new_writer(engine, tmp_path, registry)
    await writer.start()
    assert await writer.wait_ready(timeout=30)
    await downgrade(engine, "base")  # someone drops the tables while the daemon runs
    for j in journeys:
        writer.submit(j)
    await wait_drained(writer)
    await writer.close()
    await assert_store_holds(engine, journeys)
    assert sample(registry, "onechance_store_write_failures_total", reason="unavailable") >= 1
    assert sample(registry, "onechance_store_write_failures_total", reason="rejected") == 0
    assert not (tmp_path / "spool" / "rejected.jsonl").exists()


_VERSIONS = [v for v in update_stream("bounced", "attended_transfer", "abandon_then_callback", "transfer_then_abandon")
             if isinstance(v, CallRecord)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_order_and_batching_of_versions_leaves_the_newest(sqlite_url, data):
    """Versions of calls arriving in any order (an old spool, a replay, a retry), in any batches:
    the database always ends with the newest version of each call."""
    order = data.draw(st.permutations(range(len(_VERSIONS))))
    cuts = sorted(data.draw(st.sets(st.integers(1, len(_VERSIONS) - 1), max_size=6)))
    versions = [_VERSIONS[i] for i in order]
    batches = [versions[a:b] for a, b in zip([0, *cuts], [*cuts, len(versions)], strict=True)]
    newest: dict[str, CallRecord] = {}
    for v in _VERSIONS:
        if v.call_id not in newest or v.updated_at >= newest[v.call_id].updated_at:
            newest[v.call_id] = v

    async def run() -> None:
        engine = make_engine(sqlite_url)
        try:
            await upgrade(engine)
            async with engine.begin() as conn:
                await conn.exec_driver_sql("DELETE FROM calls")
            for batch in batches:
                await store_journeys(engine, batch, stored_at=0.0)
            await assert_store_holds(engine, list(newest.values()))
        finally:
            await engine.dispose()

    asyncio.run(run())


async def test_a_journey_submitted_to_an_idle_writer_is_written_within_the_flush_interval(engine, tmp_path):
    """A quiet PBX: the writer has had nothing to do for a while when a call ends.  The journey is in
    the database after about ``flush_interval``, without anyone asking for a flush."""
    journeys = final_records("answered")
    writer = new_writer(engine, tmp_path, flush_interval=0.1)
    await writer.start()
    assert await writer.wait_ready(timeout=30)
    for j in journeys:
        await asyncio.sleep(0.25)  # idle longer than the flush interval
        writer.submit(j)
        for _ in range(100):
            if ("", j.call_id) in await stored_journeys(engine):
                break
            await asyncio.sleep(0.05)
        assert ("", j.call_id) in await stored_journeys(engine), writer.status()
    await writer.close()
    await assert_store_holds(engine, journeys)


def _line(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """The child's next line of output (at most ``timeout`` seconds: a silent child fails the test)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


async def test_close_that_times_out_mid_write_keeps_the_batch_in_flight(tmp_path, registry):
    """The database hangs (SQLite locked by another process, long busy timeout) while a batch is being
    written and the shutdown cannot wait: the batch in flight goes to the spool with the rest, and the
    next start writes it.  Twice: ``close(timeout)`` expires; ``close()`` itself is cancelled (a second
    SIGTERM), in a daemon process of its own, since the daemon then exits and only that releases the spool."""
    path = tmp_path / "onechance.db"
    url = f"sqlite+aiosqlite:///{path}?timeout=1"
    engine = make_engine(url)
    journeys = final_records("load_a")
    await upgrade(engine)

    async def next_start_writes_them() -> None:
        writer = new_writer(engine, tmp_path)
        await writer.start()
        await wait_drained(writer)
        await writer.close()
        await assert_store_holds(engine, journeys)
        async with engine.begin() as conn:
            await conn.exec_driver_sql("DELETE FROM calls")

    try:
        # close(timeout) expires
        writer = new_writer(engine, tmp_path, registry)
        await writer.start()
        assert await writer.wait_ready(timeout=10)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            for j in journeys:
                writer.submit(j)
            for _ in range(100):  # the batch has left the queue: it is being written
                if writer.queue_depth == 0:
                    break
                await asyncio.sleep(0.01)
            assert writer.queue_depth == 0 and writer.spooled == 0
            await writer.close(timeout=0.3)
            assert writer.spooled == len(journeys)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await next_start_writes_them()

        # close() cancelled, in a daemon process
        env = {k: v for k, v in os.environ.items() if not k.startswith("ONECHANCE_")} | {
            "ONECHANCE_DATA_DIR": str(tmp_path / "data"),
            "ONECHANCE_DATABASE__SPOOL_DIR": str(tmp_path / "spool"),
            "ONECHANCE_DATABASE__URL": url,
        }
        daemon = subprocess.Popen([sys.executable, "-m", "tests.store_driver", "cancel-close", capture("load_a")],
                                  cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
        try:
            assert _line(daemon) == "READY\n", daemon.stderr.read() if daemon.poll() is not None else ""
            blocker = sqlite3.connect(path, isolation_level=None)
            blocker.execute("BEGIN EXCLUSIVE")
            try:
                assert daemon.stdin is not None
                daemon.stdin.write("go\n")
                daemon.stdin.flush()
                assert _line(daemon) == "IN_FLIGHT 0 0\n"
                assert _line(daemon) == f"SPOOLED {len(journeys)}\n"
                _out, err = await asyncio.to_thread(daemon.communicate, None, 60)
            finally:
                blocker.execute("ROLLBACK")
                blocker.close()
            assert daemon.returncode == 0, err
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.communicate(timeout=10)
        await next_start_writes_them()

        # close() cancelled in this process: the spool is released all the same, the next writer opens it
        writer = new_writer(engine, tmp_path, registry=CollectorRegistry())
        await writer.start()
        assert await writer.wait_ready(timeout=10)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            for j in journeys:
                writer.submit(j)
            closing = asyncio.ensure_future(writer.close())
            await asyncio.sleep(0.2)
            closing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await closing
            assert writer.spooled == len(journeys)
            await writer.close()  # closed already: returns
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        await next_start_writes_them()
    finally:
        await engine.dispose()


async def test_a_journey_submitted_while_the_database_is_down_reaches_the_spool_within_the_flush_interval(
    tmp_path,
):
    """The database has been down for a while and the next retry is far away: a call that ends now is
    on disk after about ``flush_interval`` (a crash must not lose it), not at the next retry."""
    journeys = final_records("answered", "abandoned")
    down = make_engine(UNREACHABLE)
    writer = new_writer(down, tmp_path, flush_interval=0.05, retry_interval=60, max_retry_interval=60)
    try:
        await writer.start()
        writer.submit(journeys[0])
        assert not await writer.flush(timeout=10)
        assert writer.state == WriterState.UNAVAILABLE and writer.spooled == 1
        await asyncio.sleep(0.2)
        writer.submit(journeys[1])
        for _ in range(100):
            if writer.spooled == 2:
                break
            await asyncio.sleep(0.02)
        assert writer.spooled == 2 and writer.queue_depth == 0, writer.status()
    finally:
        await writer.close()
        await down.dispose()


@pytest.mark.parametrize("segment_bytes", [16 * 1024 * 1024, 4000])
async def test_spooling_never_fsyncs_on_the_event_loop(tmp_path, segment_bytes):
    """While the database is down, every flush interval appends the waiting journeys to the spool and
    fsyncs them.  The fsync (tens of milliseconds on a busy disk, seconds on a sick one) runs in a
    worker thread: the event loop, which reads AMI and serves HTTP, never waits for the disk -- also when
    small segments are sealed and new ones created (their directory entry fsync'd) all the time."""
    journeys = final_records("load_a")
    down = make_engine(UNREACHABLE)
    writer = new_writer(down, tmp_path, flush_interval=0.01, retry_interval=60, max_retry_interval=60,
                        segment_bytes=segment_bytes)
    on_loop: list[str] = []
    in_workers: list[str] = []

    def watch(frame, event, arg) -> None:  # profiles this thread (the event loop's) only
        if event == "c_call" and arg is os.fsync:
            on_loop.append(frame.f_code.co_name)

    def watch_workers(frame, event, arg) -> None:  # profiles the threads started from now on
        if event == "c_call" and arg is os.fsync:
            in_workers.append(threading.current_thread().name)

    threading.setprofile(watch_workers)
    # a default executor of the test's own: its worker threads start after the watch, so they are watched
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(thread_name_prefix="spool-fsync"))
    try:
        await writer.start()
        writer.submit(journeys[0])
        assert not await writer.flush(timeout=10)  # unavailable; the spool segment exists
        assert writer.spooled == 1
        before = len(in_workers)
        sys.setprofile(watch)
        try:
            for j in journeys[1:]:
                writer.submit(j)
                await asyncio.sleep(0.001)
            for _ in range(200):
                if writer.spooled == len(journeys):
                    break
                await asyncio.sleep(0.01)
        finally:
            sys.setprofile(None)
        assert writer.spooled == len(journeys)
        assert on_loop == []
        assert len(in_workers) > before, "the spool was not fsync'd at all while it grew"
    finally:
        threading.setprofile(None)
        await writer.close()
        await down.dispose()


async def test_persist_returns_once_the_facts_are_in_the_spool_without_waiting_for_the_database(tmp_path):
    """An alert must be durable before its first delivery, but nothing waits for the database: persist()
    returns once the facts are fsync'd in the spool, even while the database is locked; the writer stores them
    as soon as it can, and a newer version submitted meanwhile is not undone by the spooled older one."""
    from onechance.store import list_alerts
    from onechance.store.facts import AlertRow, DeliveryRow

    path = tmp_path / "onechance.db"
    engine = make_engine(f"sqlite+aiosqlite:///{path}?timeout=30")
    await upgrade(engine)
    writer = new_writer(engine, tmp_path)
    alert = AlertRow(id="a1", pbx="p", call_id="1.1", kind="abandoned", queue="support", caller="+3725550107",
                     decided_at=100.0, created_at=100.5, state="open", resolved_at=None, payload={}, updated_at=1.0)
    pending = DeliveryRow(alert_id="a1", channel="hook", state="pending", attempts=0, next_attempt_at=None,
                          last_attempt_at=None, sent_at=None, resolved_sent_at=None, last_error=None,
                          idempotency_key="k1", updated_at=1.0)
    sent = dataclasses.replace(pending, state="sent", attempts=1, sent_at=2.0, updated_at=2.0)
    try:
        await writer.start()
        assert await writer.wait_ready(timeout=10)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        try:
            await asyncio.wait_for(writer.persist([alert, pending]), 5)  # the database cannot take it now
            spooled = "".join(p.read_text(encoding="utf-8") for p in (tmp_path / "spool").glob("spool-*.jsonl"))
            assert '"a1"' in spooled and '"k1"' in spooled
            writer.submit(sent)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        assert await writer.flush(timeout=30)
        ((row, deliveries),) = await list_alerts(engine)
        assert row.id == "a1" and [(d.state, d.attempts) for d in deliveries] == [("sent", 1)]
        assert not list((tmp_path / "spool").glob("spool-*.jsonl")) or writer.spooled == 0
    finally:
        await writer.close()
        await engine.dispose()
