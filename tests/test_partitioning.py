"""Partitioning the journey tables by month (``onechance db partition``, docs/database.md) on a real PostgreSQL 15.

Two databases at the head revision get the same calls through the writer: one stays as it is, the other is
partitioned half way (by the command, in a process of its own, while a daemon's writer keeps writing to it behind a
long query), then the rest is written to both, and ``import-queue-log`` and ``replay --store`` write into both.
Every row of every table, the API's queries and ``onechance report`` must then be the same in both, each call must
sit in the partition of its call id's month (or the default partition), and the documented procedures (adding months
while the default partition holds some of their calls, dropping a month, the printed SQL applied by hand) must do
what the documentation says. The calls come from the simulator at dates in several months (one run across a month's
end), a PBX with a ``systemname`` (ids that begin with it), real captures, and a call imported from queue_log.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from onechance.journey import CallRecord, JourneyUpdate
from onechance.replay import replay_files
from onechance.sim import BANNER, Centre, RateProfile, SimConfig
from onechance.sinks import CallFilter
from onechance.store import (
    JourneyWriter,
    StoreCallQuery,
    callback_worklist,
    get_call,
    list_calls,
    load_lost_calls,
    make_engine,
    upgrade,
)
from onechance.store.partition import (
    JOURNEY_TABLES,
    Month,
    PartitionError,
    inspect_layout,
    partition_database,
)
from onechance.store.queries import count_rows, operator_figures
from onechance.store.report import build_report, render
from onechance.store.rows import StoreItem

from .pg import PgServer, connect
from .storehelp import capture, dump

pytestmark = [pytest.mark.postgres, pytest.mark.fresh_database]

ONECHANCE = [sys.executable, "-m", "onechance.cli"]
EPOCH_ID = re.compile(r"^(\d{10})(\.|$)")


def at(text_: str) -> float:
    return datetime.fromisoformat(text_).replace(tzinfo=UTC).timestamp()


# (pbx, Asterisk systemname, start of the simulated stream, calls)
STREAMS = [
    ("alpha", "", "2026-09-14T09:00", 30),
    ("alpha", "", "2026-09-30T23:40", 30),  # calls that begin in September and end in October
    ("alpha", "", "2026-10-20T10:00", 30),
    ("alpha", "", "2026-12-03T10:00", 30),  # after the months made at first: in the default partition, then moved
    ("beta", "site7", "2026-10-05T10:00", 20),  # ids "site7-<epoch>.<n>": always in the default partition
]
CAPTURES = ("load_a", "abandon_then_callback", "attended_transfer", "bounced")  # 2026-11-22, PBX "gamma"


def _items(path: Path, pbx: str) -> list[StoreItem]:
    """What the daemon would submit for a stream: each update's record, and each recovery, in order."""
    out: list[StoreItem] = []
    replay_files([str(path)], pbx=pbx, on_update=lambda u: out.append(u.record if isinstance(u, JourneyUpdate) else u))
    return out


@pytest.fixture(scope="module")
def items(tmp_path_factory: pytest.TempPathFactory) -> list[StoreItem]:
    base = tmp_path_factory.mktemp("partition-streams")
    out: list[StoreItem] = []
    for i, (pbx, system_name, start, n) in enumerate(STREAMS):
        cfg = SimConfig.default(seed=40 + i, start=at(start), system_name=system_name,
                                rate=RateProfile(per_hour=(90.0,) * 24))
        path = base / f"{i}.ami"
        path.write_bytes(BANNER + Centre(cfg, pbx_name=pbx).run(calls=n))
        out.extend(_items(path, pbx))
    for name in CAPTURES:
        out.extend(_items(Path(capture(name)), "gamma"))
    # a call imported from queue_log: its id begins with "ql:"
    last = next(i for i in reversed(out) if isinstance(i, CallRecord) and i.pbx == "gamma")
    out.append(dataclasses.replace(last, call_id=f"ql:{last.call_id}"))
    return out


def _month_of_id(call_id: str) -> Month | None:
    m = EPOCH_ID.match(call_id)
    return Month.of(int(m.group(1))) if m else None


async def _write(url: str, items: list[StoreItem], spool: Path) -> None:
    """Through the daemon's writer (batches, coalescing, the upsert, the recoveries' updates)."""
    engine = make_engine(url)
    writer = JourneyWriter(engine, spool, CollectorRegistry(), flush_interval=0.02, batch_size=50)
    try:
        await writer.start()
        for item in items:
            writer.submit(item)
        assert await writer.flush(timeout=60)
        await writer.close()
        assert writer.spooled == 0
    finally:
        await engine.dispose()


async def _fresh(url: str) -> None:
    engine = make_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


async def _sql(url: str, statement: str, **params: Any) -> list[Any]:
    engine = make_engine(url)
    try:
        async with engine.begin() as conn:
            result = await conn.execute(text(statement), params)
            return list(result.all()) if result.returns_rows else []
    finally:
        await engine.dispose()


def _env(url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECHANCE_")}
    env.update(ONECHANCE_DATABASE__URL=url, TZ="UTC", ONECHANCE_DATA_DIR=str(data_dir))
    return env


def _cli(url: str, data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """An ``onechance`` command on the database at ``url`` (its data directory, for a spool: ``data_dir``)."""
    return subprocess.run([*ONECHANCE, *args], capture_output=True, text=True, env=_env(url, data_dir), timeout=120,
                          check=False)


async def _placement(url: str) -> dict[str, list[tuple[str, str]]]:
    """Per journey table: (call_id, partition) of every row."""
    out = {}
    for table in JOURNEY_TABLES:
        out[table.name] = [(r[0], r[1]) for r in await _sql(url, f"SELECT call_id, tableoid::regclass::text FROM "
                                                              f"{table.name}")]
    return out


def _expected_partition(table: str, call_id: str, months: set[Month]) -> str:
    month = _month_of_id(call_id)
    return f"{table}_{month.suffix}" if month in months else f"{table}_default"


async def _assert_placed(url: str, months: set[Month]) -> dict[str, int]:
    """Every row of every journey table is in its call id's month, or in the default partition; returns the
    rows per partition of ``calls``."""
    placement = await _placement(url)
    for table, rows in placement.items():
        wrong = [(cid, part) for cid, part in rows if part != _expected_partition(table, cid, months)]
        assert not wrong, f"{table}: rows in the wrong partition: {wrong[:5]}"
    per: dict[str, int] = {}
    for _cid, part in placement["calls"]:
        per[part] = per.get(part, 0) + 1
    return per


async def _reads(engine: AsyncEngine) -> dict[str, Any]:
    """What the API, the worklist, the tracker's restart and the reports read, for comparison."""
    oct_from, oct_to = at("2026-10-01T00:00"), at("2026-11-01T00:00")
    out: dict[str, Any] = {
        "all": await list_calls(engine, limit=10000),
        "oldest_first": await list_calls(engine, limit=40, offset=7, newest_first=False),
        "october": await list_calls(engine, since=oct_from, until=oct_to, limit=10000),
        "abandoned": await list_calls(engine, outcome="abandoned,timeout", limit=10000),
        "support": await list_calls(engine, queue="support", limit=10000),
        "beta": await list_calls(engine, pbx="beta", limit=10000),
        "lost": await list_calls(engine, lost=True, limit=10000),
        "bounced": await list_calls(engine, bounced=True, limit=10000),
        "worklist": await callback_worklist(engine),
        "lost_watch": [dataclasses.astuple(x) for x in await load_lost_calls(engine, since=0.0)],
        "operators": sorted(dataclasses.astuple(x) for x in await operator_figures(engine, 0.0, 4e9)),
        "counts": await count_rows(engine),
    }
    assert out["all"] and out["october"] and out["beta"] and out["lost"] and out["worklist"], "test data too thin"
    some = out["all"][::17]
    out["one_by_one"] = [await get_call(engine, c["call_id"], c["pbx"]) for c in some]
    out["by_id_only"] = [await get_call(engine, c["call_id"]) for c in some]
    query = StoreCallQuery(engine)
    middle = out["all"][len(out["all"]) // 2]
    flt = CallFilter(limit=25, after=(middle["started_at"], middle["call_id"], middle["pbx"]))
    out["api_page"] = await query.list_calls(flt)
    out["api_count"] = await query.count_calls(CallFilter(lost=True))
    keys = [(c["pbx"], c["call_id"]) for c in some]
    out["api_versions"] = sorted((k, dataclasses.astuple(v)) for k, v in
                                 (await query.stored_versions(keys, CallFilter(lost=True))).items())
    out["api_calls"] = sorted((await query.stored_calls(keys)).items())
    for by in ("day", "month"):
        report = await build_report(engine, at("2026-09-01T00:00"), at("2027-01-01T00:00"), by=by, tz=UTC,
                                    operator_figures=True)
        out[f"report_{by}"] = json.loads(render(report, "json"))
    return out


async def test_partitioned_database_holds_and_answers_exactly_what_the_plain_one_does(
        pg_url: str, pg_server: PgServer, items: list[StoreItem], tmp_path: Path) -> None:
    plain, parted, by_hand = pg_url, pg_server.create_database(), pg_server.create_database()
    try:
        for url in (plain, parted, by_hand):
            await _fresh(url)
            await _sql(url, "GRANT SELECT ON calls TO PUBLIC")  # a reader's privilege survives the conversion
        half = len(items) // 2
        for i, url in enumerate((plain, by_hand)):
            await _write(url, items[:half], tmp_path / f"spool{i}")
        engines = {url: make_engine(url) for url in (plain, parted, by_hand)}
        # the partitioned database is written by one writer all along, as by a daemon that keeps running
        live = JourneyWriter(engines[parted], tmp_path / "live-spool", CollectorRegistry(), flush_interval=0.02,
                             batch_size=50)
        try:
            await live.start()
            for item in items[:half]:
                live.submit(item)
            assert await live.flush(timeout=60)
            first_half = await dump(engines[plain])
            assert first_half["calls"] and await dump(engines[parted]) == first_half

            # -- the command converts the database (the months asked for, and a default partition each) while
            # a long query holds the tables: it waits for it, and the writer's next batch waits behind it
            reader = await connect(parted)
            await reader.execute("BEGIN; SELECT count(*) FROM calls")
            conversion = subprocess.Popen([*ONECHANCE, "db", "partition", "--from", "2026-09", "--until", "2026-11"],
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                          env=_env(parted, tmp_path))
            waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND mode = 'AccessExclusiveLock'"
            for _ in range(600):
                if await reader.fetchval(waiting):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the conversion never waited for the tables")
            for item in items[half:]:
                live.submit(item)
            await asyncio.sleep(0.3)  # the writer's batch is sent: it waits behind the conversion
            assert live.queue_depth < len({(i.pbx, i.call_id) for i in items[half:] if isinstance(i, CallRecord)})
            await reader.execute("COMMIT")
            await reader.close()
            out, err = conversion.communicate(timeout=120)
            assert conversion.returncode == 0, err
            assert "partitioned by month" in out and "2026-09 to 2026-11 (3)" in out, out
            assert await live.flush(timeout=60)
            await live.close()
            assert live.spooled == 0 and not (tmp_path / "live-spool" / "rejected.jsonl").exists()
            async with engines[parted].connect() as conn:
                layout = await inspect_layout(conn)
            three = {Month(2026, 9), Month(2026, 10), Month(2026, 11)}
            assert layout.partitioned and all(layout.months[t.name] == three for t in JOURNEY_TABLES)
            assert all(layout.defaults.values())
            assert ("PUBLIC", "SELECT") in layout.grants["calls"]

            # -- the rest of the calls into the plain database too; then the commands that write: the same rows
            await _write(plain, items[half:], tmp_path / "spool-rest")
            for url in (plain, parted):
                for args in (("import-queue-log", capture("load_a").replace(".ami", ".queue_log"), "--pbx", "delta"),
                             ("replay", capture("bounced"), "--store", "--pbx", "epsilon")):
                    done = _cli(url, tmp_path, *args)
                    assert done.returncode == 0, done.stderr
            assert await dump(engines[parted]) == await dump(engines[plain])
            per = await _assert_placed(parted, three)
            december = [i for i in items if isinstance(i, CallRecord) and _month_of_id(i.call_id) == Month(2026, 12)]
            assert december and per["calls_default"] > len({i.call_id for i in december})  # with site7-, ql: ids
            assert all(per.get(f"calls_{m.suffix}", 0) > 0 for m in three)

            # -- the API's queries and the reports read the same
            reads = await _reads(engines[plain])
            assert await _reads(engines[parted]) == reads
            args = ("report", "--from", "2026-09-01", "--to", "2026-12-31", "--by", "month", "--operators",
                    "--format", "json", "--tz", "UTC")
            shown = {url: _cli(url, tmp_path, *args) for url in (plain, parted)}
            assert all(r.returncode == 0 for r in shown.values()), [r.stderr for r in shown.values()]
            assert json.loads(shown[plain].stdout)["rows"]
            assert shown[parted].stdout == shown[plain].stdout

            # -- a key lookup reads one partition only
            oct_id = next(c["call_id"] for c in reads["october"] if c["pbx"] == "alpha")
            assert re.fullmatch(r"[0-9.]+", oct_id)
            plan = "\n".join(r[0] for r in await _sql(
                parted, f"EXPLAIN SELECT * FROM calls WHERE pbx = 'alpha' AND call_id = '{oct_id}'"))
            assert "calls_y2026m10" in plan and not re.search(r"calls_(y2026m09|y2026m11|default)\b", plan), plan

            # -- later months: made, with the calls the default partition held for them moved in
            moved = len({r[0] for r in await _sql(parted, "SELECT call_id FROM calls_default WHERE call_id ~ '^1'")})
            result = await partition_database(engines[parted], last=Month(2027, 1))
            assert result.created == [Month(2026, 12), Month(2027, 1)] and not result.converted
            assert result.moved == moved > 0
            five = three | {Month(2026, 12), Month(2027, 1)}
            assert result.months == sorted(five)
            assert await dump(engines[parted]) == await dump(engines[plain])
            per = await _assert_placed(parted, five)
            assert per["calls_y2026m12"] == moved and per["calls_default"] == result.in_default > 0
            assert await _reads(engines[parted]) == reads
            again = await partition_database(engines[parted], last=Month(2027, 1))
            assert (again.created, again.moved, again.statements) == ([], 0, [])

            # -- a month dropped the documented way = its calls deleted from the plain database
            sept = Month(2026, 9)
            await _sql(parted, "DROP TABLE transfers_y2026m09, operator_legs_y2026m09, queue_visits_y2026m09")
            await _sql(parted, "ALTER TABLE calls DETACH PARTITION calls_y2026m09")
            await _sql(parted, "DROP TABLE calls_y2026m09")
            gone = await _sql(plain, "DELETE FROM calls WHERE call_id >= :a AND call_id < :b RETURNING call_id",
                              a=str(sept.start), b=str(sept.end))
            assert gone
            assert await dump(engines[parted]) == await dump(engines[plain])

            # -- the printed SQL, applied by hand, does what the command does; printing changes nothing
            printed = _cli(by_hand, tmp_path, "db", "partition", "--from", "2026-09", "--until", "2026-11", "--sql")
            assert printed.returncode == 0, printed.stderr
            script = printed.stdout
            assert script.startswith("BEGIN;") and script.rstrip().endswith("COMMIT;")
            assert (await _sql(by_hand, "SELECT relkind::text FROM pg_class WHERE relname = 'calls'"))[0][0] == "r"
            raw = await connect(by_hand)  # as psql would: the script in one go, its own transaction
            try:
                await raw.execute(script)
            finally:
                await raw.close()
            async with engines[by_hand].connect() as conn:
                hand = await inspect_layout(conn)
            assert hand.partitioned and hand.months == layout.months and hand.grants == layout.grants
            assert await dump(engines[by_hand]) == first_half
            await _assert_placed(by_hand, three)
        finally:
            for engine in engines.values():
                await engine.dispose()

        # -- `onechance db downgrade base` still removes everything
        down = _cli(parted, tmp_path, "db", "downgrade", "base")
        assert down.returncode == 0, down.stderr
        left = await _sql(parted, "SELECT relname FROM pg_class WHERE relname LIKE 'calls%' AND relkind IN ('r', 'p')")
        assert left == []
    finally:
        pg_server.drop_database(parted)
        pg_server.drop_database(by_hand)


async def test_partition_refuses_what_it_cannot_do(pg_url: str, tmp_path: Path) -> None:
    # a database behind the head revision
    engine = make_engine(pg_url)
    try:
        await upgrade(engine, "0001")
        with pytest.raises(PartitionError, match=r"at revision 0001, not .*onechance db upgrade"):
            await partition_database(engine)
        await upgrade(engine)
        with pytest.raises(PartitionError, match="first month 2026-12 is after the last one 2026-11"):
            await partition_database(engine, first=Month(2026, 12), last=Month(2026, 11))
        with pytest.raises(PartitionError, match="more than 600"):
            await partition_database(engine, first=Month(2001, 10), last=Month(2060, 1))
        # tables a long query holds: given up after --lock-timeout, in one line
        reader = await connect(pg_url)
        try:
            await reader.execute("BEGIN; SELECT count(*) FROM calls")
            held = _cli(pg_url, tmp_path, "db", "partition", "--lock-timeout", "0.5")
            await reader.execute("COMMIT")
        finally:
            await reader.close()
        assert held.returncode == 1 and held.stderr.count("\n") == 1, held.stderr
        assert held.stderr == ("onechance db partition: could not lock the journey tables within 0.5 s (a long "
                               "query or an open transaction holds them); nothing changed, try again\n")
        # none of that changed anything
        async with engine.connect() as conn:
            assert (await inspect_layout(conn)).plain
        # partly partitioned tables are not guessed at
        await _sql(pg_url, "DROP TABLE transfers")
        await _sql(pg_url, "CREATE TABLE transfers (pbx varchar(64), call_id varchar(64)) PARTITION BY RANGE (call_id)")
        with pytest.raises(PartitionError, match=r"partly partitioned: calls \(not partitioned\).*transfers "
                                                 r"\(partitioned\)"):
            await partition_database(engine)
    finally:
        await engine.dispose()
    # the command: one line, the exit status
    bad = _cli(pg_url, tmp_path, "db", "partition", "--from", "2026-13")
    assert (bad.returncode, bad.stderr.strip()) == (
        2, "onechance db partition: --from: bad month '2026-13' (YYYY-MM, e.g. 2026-11)")
    lite = _cli(f"sqlite+aiosqlite:///{tmp_path / 'one.db'}", tmp_path, "db", "upgrade")
    assert lite.returncode == 0, lite.stderr
    lite = _cli(f"sqlite+aiosqlite:///{tmp_path / 'one.db'}", tmp_path, "db", "partition")
    assert lite.returncode == 2 and lite.stderr.count("\n") == 1, lite.stderr
    assert "partitioning is for PostgreSQL" in lite.stderr


def test_months_bound_call_ids_as_text_like_their_epochs() -> None:
    """The bounds of a month are its first epoch second and the next month's, as 10-digit text: every
    Linkedid of a second inside the month sorts between them, every other outside."""
    nov = Month.parse("2026-11")
    assert (nov.start, nov.end, nov.suffix, str(nov)) == (at("2026-11-01T00:00"), at("2026-12-01T00:00"),
                                                          "y2026m11", "2026-11")
    assert Month(2026, 12).next() == Month(2027, 1) and Month(2026, 11).plus(14) == Month(2028, 1)
    assert Month.of(at("2026-11-30T23:59:59")) == nov and Month.of(at("2026-12-01T00:00")) == Month(2026, 12)
    for second in (nov.start - 1, nov.start, nov.start + 1, nov.end - 1, nov.end, nov.end + 1):
        for tail in ("", ".0", ".123", ".99999"):
            call_id = f"{int(second)}{tail}"
            assert (str(nov.start) <= call_id < str(nov.end)) == (nov.start <= second < nov.end), call_id
    for bad in ("2026-1", "2026-00", "26-11", "2001-09", "2286-11"):
        with pytest.raises(PartitionError):
            Month.parse(bad)
