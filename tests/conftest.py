"""Shared pytest fixtures."""

# ---- store: real SQLite and PostgreSQL databases (tests/store_fixtures.py, tests/pg.py) ----------------
from .store_fixtures import db_url, engine, own_pg_server, own_pg_url, pg_server, pg_url, registry, sqlite_url  # noqa: F401
# ---- end of store fixtures -----------------------------------------------------------------------------
