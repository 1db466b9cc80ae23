"""Database URLs, engines and the errors that mean "the database is unavailable".

SQLite (aiosqlite, WAL mode, foreign keys on) is the default; PostgreSQL goes through asyncpg.  Plain
``sqlite:///`` and ``postgresql://`` URLs are accepted and given their async driver.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

SQLITE = "sqlite+aiosqlite"
POSTGRES = "postgresql+asyncpg"
_DRIVERS = {
    "sqlite": SQLITE,
    SQLITE: SQLITE,
    "postgresql": POSTGRES,
    "postgres": POSTGRES,
    POSTGRES: POSTGRES,
}
#: SQLSTATE classes/codes that mean "try again later": connection exception, operator intervention
#: (admin shutdown, cannot connect now, statement_timeout or a canceled query), insufficient resources,
#: transaction rollback (deadlock...), system error, lock_timeout; and the server's own settings, not the
#: journeys': login refused (password changed, pg_hba), no such database, privilege revoked
_RETRYABLE_SQLSTATE_PREFIXES = ("08", "57", "53", "40", "58", "55P03", "28", "3D000", "42501")


class StoreError(Exception):
    """A store problem worth a one-line message (bad URL, database unavailable...)."""


class StoreConfigError(StoreError):
    """The database URL or settings are unusable."""


class StoreUnavailable(StoreError):
    """The database cannot be reached or used right now; try again later."""


def mask_url(url: str | URL) -> str:
    """The URL with its password hidden, and the value of every query parameter that may be one (``?password=``,
    ``?sslpassword=``...: :func:`onechance.redact.mask_url`), for messages and logs."""
    from ..redact import mask_url as mask

    try:
        text = url if isinstance(url, str) else url.render_as_string(hide_password=False)
        make_url(text)
    except Exception:
        return "<unparsable database URL>"
    return mask(text, "***")


def normalize_url(url: str) -> URL:
    """Parse a database URL and give it its async driver; :class:`StoreConfigError` when unusable."""
    if not url or not url.strip():
        raise StoreConfigError("empty database URL")
    try:
        parsed = make_url(url.strip())
    except exc.ArgumentError:
        raise StoreConfigError(
            "bad database URL (not shown: it may hold a password): expected sqlite+aiosqlite:///PATH or "
            "postgresql+asyncpg://USER:PASSWORD@HOST/DB"
        ) from None
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise StoreConfigError(
            f"unsupported database {parsed.drivername!r} in {mask_url(parsed)}: use sqlite+aiosqlite:///PATH "
            "or postgresql+asyncpg://USER:PASSWORD@HOST/DB"
        )
    parsed = parsed.set(drivername=driver)
    if driver == SQLITE and not parsed.database:
        raise StoreConfigError(f"{mask_url(parsed)}: a SQLite URL needs a file path (sqlite+aiosqlite:///PATH)")
    if driver == POSTGRES and not parsed.database:
        raise StoreConfigError(f"{mask_url(parsed)}: a PostgreSQL URL needs a database name")
    if driver == POSTGRES and "sslmode" in parsed.query:
        # libpq's name (psql, hosting providers' URLs); asyncpg takes the same values as ``ssl``
        mode = parsed.query["sslmode"]
        parsed = parsed.difference_update_query(["sslmode"])
        if "ssl" not in parsed.query:
            parsed = parsed.update_query_dict({"ssl": mode})
    return parsed


def is_sqlite(engine: AsyncEngine) -> bool:
    return engine.dialect.name == "sqlite"


def sqlite_file(engine: AsyncEngine) -> Path | None:
    """The file of a SQLite engine (None for PostgreSQL, ``:memory:`` and ``file:`` URIs)."""
    if not is_sqlite(engine):
        return None
    db = engine.url.database or ""
    if not db or db == ":memory:" or db.startswith("file:"):
        return None
    return Path(db).expanduser().absolute()


class FileWatch:
    """Notices a SQLite database file removed or replaced under a running process (``rm -r data/``, ``rm
    onechance.db*``, a backup moved over it): SQLite would go on writing into the deleted file, and every
    write since would vanish at the next restart.  :meth:`remember` the file's and its directory's
    (device, inode) once the database answered; :meth:`changed` says what happened to them since."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._ids: tuple[tuple[int, int], tuple[int, int]] | None = None

    @staticmethod
    def _ids_of(path: Path) -> tuple[tuple[int, int], tuple[int, int]]:
        f, d = os.stat(path), os.stat(path.parent)
        return (f.st_dev, f.st_ino), (d.st_dev, d.st_ino)

    @property
    def known(self) -> bool:
        return self._ids is not None

    def remember(self) -> None:
        try:
            self._ids = self._ids_of(self.path)
        except OSError:
            self._ids = None

    def forget(self) -> None:
        self._ids = None

    def changed(self) -> str | None:
        """None while the file and its directory are the ones remembered (or nothing is remembered)."""
        if self._ids is None:
            return None
        try:
            file_id, dir_id = self._ids_of(self.path)
        except FileNotFoundError:
            where = self.path.parent if not self.path.parent.exists() else self.path
            return f"the database file {self.path} was removed while in use ({where} is gone)"
        except OSError as exc:
            return f"the database file {self.path} cannot be reached: {exc.strerror or exc}"
        if dir_id != self._ids[1]:
            return f"the directory of the database file {self.path} was replaced while in use"
        if file_id != self._ids[0]:
            return f"the database file {self.path} was replaced while in use"
        return None


def make_engine(url: str | URL, *, echo: bool = False, connect_timeout: float = 5.0) -> AsyncEngine:
    """An async engine for ``url``.  SQLite files get their directory created, WAL mode, foreign keys
    and a busy timeout; PostgreSQL connections are checked before use (the server may have restarted)."""
    parsed = normalize_url(str(url) if isinstance(url, str) else url.render_as_string(hide_password=False))
    kwargs: dict[str, Any] = {"echo": echo}
    if parsed.drivername == SQLITE:
        db = parsed.database or ""
        if db != ":memory:" and not db.startswith("file:"):
            try:
                Path(db).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreConfigError(f"{mask_url(parsed)}: cannot create its directory: {e.strerror or e}") from None
        if "timeout" not in parsed.query:
            kwargs["connect_args"] = {"timeout": connect_timeout}
    else:
        connect_args: dict[str, Any] = {"server_settings": {"application_name": "onechance"}}
        if "timeout" not in parsed.query:
            connect_args["timeout"] = connect_timeout
        kwargs.update(
            connect_args=connect_args,
            pool_pre_ping=True,
            pool_size=5,
            max_overflow=5,
            pool_timeout=connect_timeout,
        )
    try:
        engine = create_async_engine(parsed, **kwargs)
    except (exc.ArgumentError, exc.NoSuchModuleError, ImportError, TypeError) as e:
        raise StoreConfigError(f"{mask_url(parsed)}: {e}") from None
    if parsed.drivername == SQLITE:
        event.listen(engine.sync_engine, "connect", _sqlite_on_connect)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def _sqlstate(err: BaseException | None) -> str:
    for attr in ("sqlstate", "pgcode"):
        code = getattr(err, attr, None)
        if isinstance(code, str):
            return code
    return ""


def is_unavailable(err: BaseException) -> bool:
    """Whether an exception means the database is unreachable or unusable for now (retry later),
    rather than something wrong with the data written."""
    if isinstance(err, StoreUnavailable):
        return True
    if isinstance(err, (OSError, ConnectionError, TimeoutError, asyncio.TimeoutError)):
        return True
    if isinstance(err, (exc.DisconnectionError, exc.TimeoutError)):
        return True
    if isinstance(err, exc.DBAPIError):
        if err.connection_invalidated:
            return True
        if isinstance(err, (exc.OperationalError, exc.InterfaceError)):
            return True
        orig = err.orig
        if isinstance(orig, (OSError, ConnectionError, TimeoutError)):
            return True
        code = _sqlstate(orig) or _sqlstate(getattr(orig, "__cause__", None))
        if code.startswith(_RETRYABLE_SQLSTATE_PREFIXES):
            return True
        cause = getattr(orig, "__cause__", None)
        if cause is not None and _is_asyncpg_connection_error(cause):
            return True
        return _is_asyncpg_connection_error(orig)
    # asyncpg's errors while connecting are raised as they are, not wrapped in a DBAPIError
    return _sqlstate(err).startswith(_RETRYABLE_SQLSTATE_PREFIXES) or _is_asyncpg_connection_error(err)


def is_schema_missing(err: BaseException) -> bool:
    """Whether an error says the tables or columns are not there (schema dropped or not upgraded):
    a state to wait out and repair by upgrading, not a problem of the data written."""
    if not isinstance(err, exc.DBAPIError):
        return False
    orig = err.orig
    code = _sqlstate(orig) or _sqlstate(getattr(orig, "__cause__", None))
    if code in ("42P01", "42703"):  # undefined table, undefined column
        return True
    text = str(orig).lower()
    return "no such table" in text or "no such column" in text or "has no column named" in text


def _is_asyncpg_connection_error(err: BaseException | None) -> bool:
    if err is None:
        return False
    try:
        import asyncpg
    except ImportError:  # pragma: no cover
        return False
    return isinstance(
        err,
        (
            asyncpg.PostgresConnectionError,
            asyncpg.CannotConnectNowError,
            asyncpg.InterfaceError,
            asyncpg.exceptions.OperatorInterventionError,
            asyncpg.exceptions.InsufficientResourcesError,
        ),
    )


def describe(err: BaseException) -> str:
    """A one-line description of a database error, without SQL or parameters."""
    if isinstance(err, exc.DBAPIError) and err.orig is not None:
        inner: BaseException = err.orig
        cause = getattr(inner, "__cause__", None)
        if cause is not None and str(cause):
            inner = cause
        text = f"{type(inner).__name__}: {inner}"
    else:
        text = f"{type(err).__name__}: {err}"
    line = " ".join(text.split())
    return line if len(line) <= 300 else line[:297] + "..."
