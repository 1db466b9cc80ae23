"""Fixtures of the store tests (imported by ``conftest.py``): a real SQLite file and a real
PostgreSQL database per test; see ``tests/pg.py`` for the PostgreSQL cluster the session runs.

``own_pg_server`` / ``own_pg_url`` are for tests that stop the server or change it (a role's password):
a cluster the suite started itself, even when ``ONECHANCE_TEST_PG_URL`` names another server.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from onechance.store import make_engine

from .pg import HOW_TO, PgServer, PgUnavailable, own_server, server_at


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


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database (asyncpg URL), dropped after the test."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file of the test's own, not created yet."""
    return f"sqlite+aiosqlite:///{tmp_path / 'db' / 'onechance.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest) -> str:
    """Each backend in turn: a SQLite file, then a PostgreSQL database."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = make_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()
