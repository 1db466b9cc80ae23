"""A real PostgreSQL for the store tests (never a mock).

``ONECHANCE_TEST_PG_URL`` (``postgresql+asyncpg://user:password@host:port/db``, a role allowed to
create databases) is used when set.  Otherwise the local PostgreSQL 15 cluster is started with
``pg_ctlcluster 15 main start`` (it is installed but stopped on the CI machines) and a test role is
created with ``psql`` run as the ``postgres`` user.  When no PostgreSQL can be had, the tests that need
one fail with a message saying how to provide it: a skipped database test never counts as a pass.

Each test gets a fresh database, dropped afterwards.  The server is left running at the end (other
test sessions on the machine may use it).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import threading
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.engine import make_url

PG_VERSION = os.environ.get("ONECHANCE_TEST_PG_VERSION", "15")
PG_CLUSTER = os.environ.get("ONECHANCE_TEST_PG_CLUSTER", "main")
TEST_ROLE = "onechance_test"
TEST_PASSWORD = "onechance_test"
HOW_TO = (
    "start it with `pg_ctlcluster 15 main start` (as root), or set ONECHANCE_TEST_PG_URL="
    "postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB for a role that may create databases"
)
T = TypeVar("T")
_counter = itertools.count(1)


class PgUnavailable(Exception):
    """No PostgreSQL could be started or reached."""


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion in a private thread and loop (safe inside pytest-asyncio)."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["result"] = asyncio.run(coro)
        except BaseException as exc:
            box["error"] = exc

    t = threading.Thread(target=target)
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def _cmd(args: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def _as_postgres(args: list[str]) -> list[str]:
    if os.geteuid() == 0 and shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *args]
    return ["sudo", "-n", "-u", "postgres", *args]


def _pg_ctl(action: str) -> None:
    ctl = ["pg_ctlcluster", PG_VERSION, PG_CLUSTER, action]
    if action == "stop":
        ctl += ["-m", "fast"]
    if os.geteuid() != 0:
        ctl = ["sudo", "-n", *ctl]
    res = _cmd(ctl, timeout=120)
    if res.returncode != 0:
        raise PgUnavailable(f"`{' '.join(ctl)}` failed: {(res.stderr or res.stdout).strip()}")


def _cluster_status() -> tuple[int, bool] | None:
    """(port, online) of the local cluster, None when there is none."""
    if not shutil.which("pg_lsclusters"):
        return None
    res = _cmd(["pg_lsclusters", "--no-header"])
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0] == PG_VERSION and parts[1] == PG_CLUSTER:
            return int(parts[2]), parts[3].startswith("online")
    return None


async def _connect(url: str) -> Any:
    import asyncpg

    u = make_url(url)
    return await asyncpg.connect(
        host=u.host or "127.0.0.1",
        port=u.port or 5432,
        user=u.username,
        password=u.password,
        database=u.database,
        timeout=10,
    )


async def _ping(url: str) -> None:
    conn = await _connect(url)
    try:
        await conn.execute("SELECT 1")
    finally:
        await conn.close()


@dataclass
class PgServer:
    """A PostgreSQL server for tests: where it is, and whether the tests may stop and start it."""

    url: str  # postgresql+asyncpg URL of a database the test role can connect to
    local_cluster: bool  # the local pg_ctlcluster-managed cluster (can be stopped and started)
    can_create: bool = True

    def stop(self) -> None:
        """Really stop the server (``pg_ctlcluster ... stop -m fast``)."""
        if not self.local_cluster:
            raise PgUnavailable("this test stops and starts PostgreSQL: it needs the local cluster "
                                "(unset ONECHANCE_TEST_PG_URL)")
        _pg_ctl("stop")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        if not self.local_cluster:
            return
        status = _cluster_status()
        if status is None or not status[1]:
            _pg_ctl("start")
        run_sync(_ping(self.url))

    def ensure_running(self) -> None:
        if self.local_cluster:
            self.start()

    def create_database(self) -> str:
        """A fresh empty database; returns its URL."""
        self.ensure_running()
        if not self.can_create:
            run_sync(_drop_onechance_tables(self.url))
            return self.url
        name = f"oc_test_{os.getpid()}_{next(_counter)}"

        async def create() -> None:
            conn = await _connect(self.url)
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        run_sync(create())
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        if url == self.url:
            return
        name = make_url(url).database
        self.ensure_running()

        async def drop() -> None:
            conn = await _connect(self.url)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()

        run_sync(drop())


async def _drop_onechance_tables(url: str) -> None:
    conn = await _connect(url)
    try:
        for table in ("alerts", "transfers", "operator_legs", "queue_visits", "calls",
                      "onechance_alembic_version"):
            await conn.execute(f"DROP TABLE IF EXISTS {table} CASCADE")
    finally:
        await conn.close()


async def _may_create(url: str) -> bool:
    conn = await _connect(url)
    try:
        return bool(await conn.fetchval("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"))
    finally:
        await conn.close()


def _start_local() -> PgServer:
    status = _cluster_status()
    if status is None:
        raise PgUnavailable(f"no PostgreSQL {PG_VERSION} cluster {PG_CLUSTER!r} here (pg_lsclusters)")
    port, online = status
    if not online:
        _pg_ctl("start")
    create_role = (
        "DO $$BEGIN "
        f"IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{TEST_ROLE}') THEN "
        f"CREATE ROLE {TEST_ROLE} LOGIN CREATEDB PASSWORD '{TEST_PASSWORD}'; "
        f"ELSE ALTER ROLE {TEST_ROLE} LOGIN CREATEDB PASSWORD '{TEST_PASSWORD}'; END IF; END$$;"
    )
    res = _cmd(_as_postgres(["psql", "-p", str(port), "-v", "ON_ERROR_STOP=1", "-q", "-c", create_role]))
    if res.returncode != 0:
        raise PgUnavailable(f"cannot create the test role with psql: {(res.stderr or res.stdout).strip()}")
    url = f"postgresql+asyncpg://{TEST_ROLE}:{TEST_PASSWORD}@127.0.0.1:{port}/postgres"
    run_sync(_ping(url))
    return PgServer(url=url, local_cluster=True)


def get_server() -> PgServer:
    """The PostgreSQL to test against; :class:`PgUnavailable` with a reason when there is none."""
    url = os.environ.get("ONECHANCE_TEST_PG_URL")
    try:
        if url:
            u = make_url(url)
            if u.drivername in ("postgresql", "postgres"):
                url = u.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
            run_sync(_ping(url))
            status = _cluster_status()
            local = (
                status is not None
                and (make_url(url).host or "") in ("127.0.0.1", "localhost", "::1")
                and (make_url(url).port or 5432) == status[0]
            )
            return PgServer(url=url, local_cluster=local, can_create=run_sync(_may_create(url)))
        return _start_local()
    except PgUnavailable:
        raise
    except Exception as exc:
        raise PgUnavailable(f"{type(exc).__name__}: {exc}") from exc
