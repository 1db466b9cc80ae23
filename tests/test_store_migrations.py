"""Schema migrations, up and down, on SQLite and PostgreSQL; the ``onechance db`` commands."""

from __future__ import annotations

import sqlite3

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from onechance.cli import main
from onechance.store import current_revision, downgrade, head_revision, make_engine, upgrade
from onechance.store.models import VERSION_TABLE, metadata

# Migration tests start from nothing: each gets a database of its own, never the shared one.
pytestmark = pytest.mark.fresh_database

TABLES = {"calls", "queue_visits", "operator_legs", "transfers", "alerts", "alert_deliveries", "callbacks",
          "callback_calls", "callback_attempts"}


async def table_names(engine: AsyncEngine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def test_upgrade_creates_the_schema_and_downgrade_removes_it(engine):
    assert await current_revision(engine) is None
    await upgrade(engine)
    assert await current_revision(engine) == head_revision()
    assert await table_names(engine) == TABLES | {VERSION_TABLE}  # no plain "alembic_version"
    await upgrade(engine)  # nothing to do the second time
    assert await current_revision(engine) == head_revision()

    await downgrade(engine, "base")
    assert await table_names(engine) == {VERSION_TABLE}
    assert await current_revision(engine) is None

    await upgrade(engine)  # and up again
    assert await table_names(engine) == TABLES | {VERSION_TABLE}


async def test_migrations_build_exactly_the_models(engine):
    """The migration scripts and models.py describe the same schema (no autogenerate diff)."""
    await upgrade(engine)

    def diff(conn):
        ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE, "compare_type": True})
        return compare_metadata(ctx, metadata)

    async with engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_constraints_and_indexes_are_named(engine):
    await upgrade(engine)

    def describe(conn):
        insp = inspect(conn)
        return {
            t: (
                insp.get_pk_constraint(t)["name"],
                sorted(i["name"] for i in insp.get_indexes(t)),
                sorted((fk["name"], fk["options"].get("ondelete")) for fk in insp.get_foreign_keys(t)),
            )
            for t in TABLES
        }

    async with engine.connect() as conn:
        info = await conn.run_sync(describe)
    if engine.dialect.name == "postgresql":  # SQLite does not keep primary key names
        assert info["calls"][0] == "pk_calls"
        assert info["queue_visits"][0] == "pk_queue_visits"
    assert info["calls"][1] == [
        "ix_calls_caller_key_started_at",
        "ix_calls_caller_started_at",
        "ix_calls_first_queue_started_at",
        "ix_calls_outcome_started_at",
        "ix_calls_started_at",
        "ix_calls_worklist",
    ]
    assert "ix_queue_visits_queue_joined_at" in info["queue_visits"][1]
    assert "ix_transfers_from_queue_at" in info["transfers"][1]
    assert "ix_alerts_decided_at" in info["alerts"][1]
    assert "ix_alert_deliveries_state_next_attempt_at" in info["alert_deliveries"][1]
    assert "uq_callbacks_open_caller" in info["callbacks"][1]
    for child in ("queue_visits", "operator_legs", "transfers"):
        assert info[child][2] == [(f"fk_{child}_calls", "CASCADE")]
    assert info["alert_deliveries"][2] == [("fk_alert_deliveries_alerts", "CASCADE")]
    assert info["callback_calls"][2] == [("fk_callback_calls_callbacks", "CASCADE")]
    assert info["callback_attempts"][2] == [("fk_callback_attempts_callbacks", "CASCADE")]


async def test_a_database_written_by_revision_0001_upgrades_with_its_calls_intact(engine):
    """A site upgrading onechance: its calls (JSON of the 0001 era, without the newer fields) survive the
    upgrade and read back with every field of today's record; the new tables are there and empty; a
    recovery recorded then is kept; downgrading to 0001 gives the old schema back with the calls."""
    from sqlalchemy import text

    from onechance.store import get_call

    await upgrade(engine, "0001")
    old_json = {  # a call as onechance 0.1 (schema 0001) stored it
        "call_id": "1795368608.0", "pbx": "", "caller": "+3725550101", "caller_name": "Сергей Смирнов",
        "started_at": 1795368608.89, "ended_at": 1795368630.0, "outcome": "abandoned", "short_abandon": False,
        "queues": [{"queue": "support", "wait_seconds": 20.1, "result": "abandoned", "operator": None,
                    "joined_at": 1795368609.39, "left_at": 1795368629.49, "callid": "1795368608.1"}],
        "consultations": [], "operators": [], "legs": [], "transfers": [], "wait_seconds": 20.1,
        "talk_seconds": 0.0, "bounced": False, "alerts": ["abandoned"], "recovered": True,
        "recovered_by": "1795368700.5", "recovered_at": 1795368710.0, "uncertain": False, "hangup_by": "caller",
        "closed_reason": None, "updated_at": 1795368710.0,
    }
    async with engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO calls (pbx, call_id, caller, caller_name, started_at, ended_at, updated_at, outcome, lost, "
            "short_abandon, bounced, uncertain, recovered, recovered_by, recovered_at, first_queue, last_queue, "
            "queue_count, transfer_count, wait_seconds, talk_seconds, hangup_by, journey, stored_at) VALUES "
            "('', '1795368608.0', '+3725550101', 'x', 1795368608.89, 1795368630.0, 1795368710.0, 'abandoned', "
            ":t, :f, :f, :f, :t, '1795368700.5', 1795368710.0, 'support', 'support', 1, 0, 20.1, 0, 'caller', "
            ":journey, 0)"), {"t": True, "f": False, "journey": __import__("json").dumps(old_json)})
        await conn.execute(text(
            "INSERT INTO queue_visits (pbx, call_id, seq, queue, joined_at, result, consultation, caller_visit, "
            "short_abandon) VALUES ('', '1795368608.0', 0, 'support', 1795368609.39, 'abandoned', :f, :t, :f)"),
            {"t": True, "f": False})
        await conn.execute(text(
            "INSERT INTO alerts (pbx, call_id, kind, channel, created_at) VALUES "
            "('', '1795368608.0', 'abandoned', 'webhook', 1)"))
    await upgrade(engine)
    assert await current_revision(engine) == head_revision()
    got = await get_call(engine, "1795368608.0")
    assert got is not None
    assert got["queues"][0]["queue"] == "support" and got["outcome"] == "abandoned"
    assert got["recovered"] is True and got["recovered_by"] == "1795368700.5"
    assert got["direction"] == "inbound" and got["callee"] is None and got["lost"] is True  # from its column
    async with engine.connect() as conn:
        counts = {t: (await conn.execute(text(f"SELECT count(*) FROM {t}"))).scalar()
                  for t in ("calls", "queue_visits", "alerts", "alert_deliveries", "callbacks")}
        lost = (await conn.execute(text("SELECT lost, direction FROM calls"))).one()
    assert counts == {"calls": 1, "queue_visits": 1, "alerts": 0, "alert_deliveries": 0, "callbacks": 0}
    assert bool(lost[0]) is True and lost[1] == "inbound"  # the typed columns keep what 0001 stored
    await downgrade(engine, "0001")
    assert await current_revision(engine) == "0001"
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM calls"))).scalar() == 1
        cols = await conn.run_sync(lambda c: {col["name"] for col in inspect(c).get_columns("alerts")})
    assert "channel" in cols


async def test_sqlite_runs_in_wal_mode_with_foreign_keys(sqlite_url):
    engine = make_engine(sqlite_url)
    try:
        await upgrade(engine)
        async with engine.connect() as conn:
            assert (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar() == "wal"
            assert (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar() == 1
    finally:
        await engine.dispose()
    path = sqlite_url.split(":///", 1)[1]
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"  # persistent in the file


# ---- the command line ----------------------------------------------------------------------------------
@pytest.fixture
def env(monkeypatch, tmp_path):
    """A clean environment for the CLI: no config file, data directory in tmp_path."""
    monkeypatch.delenv("ONECHANCE_CONFIG", raising=False)
    monkeypatch.setenv("ONECHANCE_DATA_DIR", str(tmp_path / "data"))
    return monkeypatch


def test_db_commands(env, db_url, capsys):
    env.setenv("ONECHANCE_DATABASE__URL", db_url)
    if db_url.startswith("sqlite"):
        assert main(["db", "current"]) == 1
        assert "no database at" in capsys.readouterr().err
    assert main(["db", "upgrade"]) == 0
    out = capsys.readouterr().out
    assert f"at revision {head_revision()} (head)" in out
    url = make_url(db_url)
    if url.password is None:  # SQLite: the file, as configured
        assert db_url in out
    else:  # PostgreSQL: the server and database, never the password in clear
        assert f"{url.username}:***@{url.host}:{url.port}/{url.database}" in out
        assert f":{url.password}@" not in out
    assert main(["db", "current"]) == 0
    assert "(head)" in capsys.readouterr().out
    assert main(["db", "downgrade", "base"]) == 0
    assert "base" in capsys.readouterr().out
    assert main(["db", "current"]) == 0
    assert "no onechance schema" in capsys.readouterr().out
    assert main(["db", "upgrade", head_revision()]) == 0


def test_default_database_is_sqlite_in_the_data_directory(env, tmp_path, capsys):
    env.delenv("ONECHANCE_DATABASE__URL", raising=False)
    assert main(["db", "upgrade"]) == 0
    assert (tmp_path / "data" / "onechance.db").exists()
    assert "sqlite+aiosqlite:///" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://u:secret@host/db", "unsupported database 'mysql'"),
        ("not a url", "bad database URL"),
        ("postgresql+asyncpg://u:secret@host", "needs a database name"),
    ],
)
def test_a_bad_database_url_is_a_one_line_error(env, capsys, url, message):
    env.setenv("ONECHANCE_DATABASE__URL", url)
    assert main(["db", "upgrade"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "secret" not in err


def test_an_unreachable_database_is_a_one_line_error(env, capsys):
    env.setenv("ONECHANCE_DATABASE__URL", "postgresql+asyncpg://u:secret@127.0.0.1:1/db")
    assert main(["db", "upgrade"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("onechance db upgrade: database unavailable:")
    assert err.count("\n") == 1 and "secret" not in err


@pytest.mark.postgres
def test_a_libpq_style_sslmode_in_the_url_is_understood(env, pg_url, capsys):
    """``postgresql://...?sslmode=prefer``, as libpq, psql and hosting providers write it (asyncpg
    calls it ``ssl``)."""
    env.setenv("ONECHANCE_DATABASE__URL", pg_url.replace("postgresql+asyncpg://", "postgresql://") + "?sslmode=prefer")
    assert main(["db", "upgrade"]) == 0, capsys.readouterr().err
    assert "sslmode=prefer" in capsys.readouterr().out  # the URL as configured (password hidden)
