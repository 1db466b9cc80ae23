"""Shared pytest fixtures."""

import pytest

# ---- store: real SQLite and PostgreSQL databases (tests/store_fixtures.py, tests/pg.py) ----------------
from .store_fixtures import (  # noqa: F401
    FRESH,
    db_url,
    engine,
    own_pg_server,
    own_pg_url,
    pg_server,
    pg_shared_url,
    pg_url,
    registry,
    sqlite_shared_path,
    sqlite_url,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"{FRESH}: the store fixtures give this test a database of its own, empty (not the shared one)"
    )
# ---- end of store fixtures -----------------------------------------------------------------------------
