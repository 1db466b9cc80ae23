"""The journey store: every journey in a database (SQLite by default, PostgreSQL in production).

Wiring in the daemon::

    engine = engine_from_settings(settings)               # StoreConfigError on a bad URL
    writer = JourneyWriter.from_settings(settings, engine, registry)
    await writer.start()          # or services=[writer] (run/aclose); upgrades the schema, drains the spool
    for lost in await load_lost_calls(engine, since=now - settings.journey.recovery_window, pbx=name):
        tracker.remember_lost(lost)  # may raise when the database is down at start: then skip it
    ...
    writer.submit(record)  # a CallRecord or a Recovered: sync, never waits (StoreSink does this)
    call_query = StoreCallQuery(engine)       # for GET /api/calls and /api/calls/{id}
    ...
    await writer.close(); await engine.dispose()

See ``docs/database.md`` for the schema and the definitions of the report figures.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .engine import (
    StoreConfigError,
    StoreError,
    StoreUnavailable,
    describe,
    is_unavailable,
    make_engine,
    mask_url,
    normalize_url,
)
from .migrate import current_revision, downgrade, head_revision, upgrade
from .queries import (
    StoreCallQuery,
    callback_worklist,
    get_call,
    list_alerts,
    list_calls,
    load_callbacks,
    load_live_deliveries,
    load_lost_calls,
    stored_call,
)
from .report import QueueDay, daily_figures
from .sink import StoreSink
from .spool import Spool, SpoolError
from .upsert import store_journeys
from .writer import JourneyWriter, WriterState

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from ..config import Settings

__all__ = [
    "JourneyWriter",
    "QueueDay",
    "Spool",
    "SpoolError",
    "StoreCallQuery",
    "StoreConfigError",
    "StoreError",
    "StoreSink",
    "StoreUnavailable",
    "WriterState",
    "callback_worklist",
    "current_revision",
    "daily_figures",
    "describe",
    "downgrade",
    "engine_from_settings",
    "get_call",
    "head_revision",
    "is_unavailable",
    "list_alerts",
    "list_calls",
    "load_callbacks",
    "load_live_deliveries",
    "load_lost_calls",
    "make_engine",
    "mask_url",
    "normalize_url",
    "store_journeys",
    "stored_call",
    "upgrade",
]


def engine_from_settings(settings: Settings) -> AsyncEngine:
    """The engine for ``settings.database_url()`` (``ONECHANCE_DATABASE__URL``; default: a SQLite file
    in the data directory).  Raises :class:`StoreConfigError` with a one-line message."""
    return make_engine(settings.database_url())
