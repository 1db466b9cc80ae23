"""The journey store: every journey in a database (SQLite by default, PostgreSQL in production).

Wiring in the daemon::

    engine = engine_from_settings(settings)               # StoreConfigError on a bad URL
    writer = JourneyWriter.from_settings(settings, engine, registry)
    await writer.start()          # or services=[writer] (run/aclose); upgrades the schema, drains the spool
    for j in await load_worklist(engine, since=now - settings.journey.recovery_window, pbx=name):
        tracker.remember_lost(j)  # may raise when the database is down at start: then skip it
    ...
    writer.submit(update.journey.to_dict())   # sync, never waits (SubmitSink(writer.submit) does this)
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
    StoredJourney,
    callback_worklist,
    get_call,
    journey_from_dict,
    list_calls,
    load_worklist,
)
from .report import QueueDay, daily_figures
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
    "StoreUnavailable",
    "StoredJourney",
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
    "journey_from_dict",
    "list_calls",
    "load_worklist",
    "make_engine",
    "mask_url",
    "normalize_url",
    "store_journeys",
    "upgrade",
]


def engine_from_settings(settings: Settings) -> AsyncEngine:
    """The engine for ``settings.database_url()`` (``ONECHANCE_DATABASE__URL``; default: a SQLite file
    in the data directory).  Raises :class:`StoreConfigError` with a one-line message."""
    return make_engine(settings.database_url())
