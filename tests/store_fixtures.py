"""Fixtures of the store tests (imported by ``conftest.py``): real SQLite files and real PostgreSQL
databases; see ``tests/pg.py`` for the PostgreSQL cluster the session runs.

Creating and migrating a database for every test is slow, so by default the tests share one database per
backend and session, migrated to head once: ``db_url``, ``engine`` and ``pg_url`` give it back with every
onechance table emptied (``TRUNCATE ... CASCADE`` on PostgreSQL, ``DELETE`` on SQLite), after migrating
it again from scratch if a test before left a table missing or the schema anywhere but at head.  A test
marked ``@pytest.mark.fresh_database`` (migration tests, tests that need no schema at all) gets a
database created for it alone instead, empty, dropped afterwards.  ``sqlite_url`` is always a SQLite file
of the test's own that does not exist yet.

``own_pg_server`` / ``own_pg_url`` are for tests that stop the server or change it (a role's password):
a cluster the suite started itself, even when ``ONECHANCE_TEST_PG_URL`` names another server.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import closing
from pathlib import Path
from typing import NoReturn

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from onechance.store import head_revision, make_engine, upgrade
from onechance.store.models import VERSION_TABLE, metadata

from .pg import HOW_TO, PgServer, PgUnavailable, connect, drop_onechance_tables, own_server, run_sync, server_at

FRESH = "fresh_database"


def _fail(exc: PgUnavailable) -> NoReturn:
    pytest.fail(f"PostgreSQL is required and could not be used: {exc}. To fix: {HOW_TO}.", pytrace=False)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """The PostgreSQL server of the session: ``ONECHANCE_TEST_PG_URL``'s, else a cluster of the suite's
    own, started the first time a test asks for it.  Fails (never skips) the tests that need it when
    there is none (pytest keeps the failure: it is not retried for every test)."""
    url = os.environ.get("ONECHANCE_TEST_PG_URL")
    try:
        server = server_at(url) if url else own_server()
    except PgUnavailable as exc:
        _fail(exc)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def own_pg_server(request: pytest.FixtureRequest) -> Iterator[PgServer]:
    """A cluster the suite started itself (it may be stopped and started): the session's server unless
    ``ONECHANCE_TEST_PG_URL`` is set, then a private one."""
    if not os.environ.get("ONECHANCE_TEST_PG_URL"):
        yield request.getfixturevalue("pg_server")
        return
    try:
        server = own_server()
    except PgUnavailable as exc:
        _fail(exc)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def own_pg_url(own_pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty database on a cluster of the suite's own (asyncpg URL), dropped after the test."""
    url = own_pg_server.create_database()
    yield url
    own_pg_server.drop_database(url)


# ---- the shared databases: migrated once, emptied before each test -----------------------------------
def _onechance_tables() -> set[str]:
    return set(metadata.tables)


async def _migrate(url: str) -> None:
    engine = make_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


async def _empty_pg(url: str) -> bool:
    """Empty the onechance tables; False (nothing done) when they are not all there at head."""
    conn = await connect(url)
    try:
        await conn.execute("SET lock_timeout = '10s'")  # a lock left by a test: an error, not a hang
        tables = {r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
        if not _onechance_tables() | {VERSION_TABLE} <= tables:
            return False
        if await conn.fetchval(f'SELECT max(version_num) FROM "{VERSION_TABLE}"') != head_revision():
            return False
        await conn.execute("TRUNCATE " + ", ".join(f'"{t}"' for t in sorted(_onechance_tables()))
                           + " RESTART IDENTITY CASCADE")
        return True
    finally:
        await conn.close()


def _reset_pg(url: str) -> None:
    if not run_sync(_empty_pg(url)):
        run_sync(drop_onechance_tables(url))
        run_sync(_migrate(url))


def _empty_sqlite(path: Path) -> bool:
    """Empty the onechance tables; False (nothing done) when they are not all there at head."""
    if not path.exists():
        return False
    with closing(sqlite3.connect(path, timeout=10, isolation_level=None)) as db:
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not _onechance_tables() | {VERSION_TABLE} <= tables:
            return False
        if db.execute(f'SELECT max(version_num) FROM "{VERSION_TABLE}"').fetchone()[0] != head_revision():
            return False
        db.execute("BEGIN IMMEDIATE")
        for t in sorted(_onechance_tables()):
            db.execute(f'DELETE FROM "{t}"')
        if "sqlite_sequence" in tables:
            db.execute("DELETE FROM sqlite_sequence")
        db.execute("COMMIT")
    return True


def _reset_sqlite(path: Path) -> None:
    if not _empty_sqlite(path):
        for leftover in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            leftover.unlink(missing_ok=True)
        run_sync(_migrate(f"sqlite+aiosqlite:///{path}"))


@pytest.fixture(scope="session")
def pg_shared_url(pg_server: PgServer) -> Iterator[str]:
    """The session's PostgreSQL database for the tests that need no database of their own."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture(scope="session")
def sqlite_shared_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's SQLite file for the tests that need no database of their own."""
    return tmp_path_factory.mktemp("shared-sqlite") / "onechance.db"


def _fresh(request: pytest.FixtureRequest) -> bool:
    return request.node.get_closest_marker(FRESH) is not None


@pytest.fixture
def pg_url(request: pytest.FixtureRequest, pg_server: PgServer) -> Iterator[str]:
    """A PostgreSQL database (asyncpg URL) at head with empty tables: the session's shared one.  With
    ``@pytest.mark.fresh_database``: a database created for the test, empty (no schema), dropped after."""
    if not _fresh(request):
        url = request.getfixturevalue("pg_shared_url")
        _reset_pg(url)
        yield url
        return
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file of the test's own, not created yet."""
    return f"sqlite+aiosqlite:///{tmp_path / 'db' / 'onechance.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each backend in turn, SQLite then PostgreSQL: a database at head with empty tables (the session's
    shared one), or with ``@pytest.mark.fresh_database`` one of the test's own, not even created yet
    (SQLite) or empty (PostgreSQL)."""
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    if _fresh(request):
        return str(request.getfixturevalue("sqlite_url"))
    path = request.getfixturevalue("sqlite_shared_path")
    _reset_sqlite(path)
    return f"sqlite+aiosqlite:///{path}"


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()
