"""Fixtures of the store tests (imported by ``conftest.py``): a real SQLite file and a real
PostgreSQL database per test; see ``tests/pg.py`` for how PostgreSQL is found or started."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from onechance.store import make_engine

from .pg import HOW_TO, PgServer, PgUnavailable, get_server

_pg_failure: list[str] = []


@pytest.fixture(scope="session")
def pg_server() -> PgServer:
    """The PostgreSQL server of the session.  Fails (never skips) the tests that need it when there is
    none."""
    if _pg_failure:
        pytest.fail(_pg_failure[0], pytrace=False)
    try:
        return get_server()
    except PgUnavailable as exc:
        _pg_failure.append(f"PostgreSQL is required and could not be used: {exc}. To fix: {HOW_TO}.")
    pytest.fail(_pg_failure[0], pytrace=False)


@pytest.fixture
def pg_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh, empty PostgreSQL database (asyncpg URL), dropped after the test."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
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
