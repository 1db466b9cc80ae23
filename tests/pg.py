"""A real PostgreSQL 15 for the store tests (never a mock), in a cluster of the test session's own.

:class:`PgCluster` is ``initdb`` run into a temporary directory (binaries from
``/usr/lib/postgresql/15/bin``, or ``ONECHANCE_TEST_PG_BINDIR``), listening on a free port of 127.0.0.1
only, with its unix socket in that directory and settings that trade durability for speed (``fsync``,
``synchronous_commit`` and ``full_page_writes`` off).  initdb and postgres refuse to run as root: when
the tests run as root, the directory belongs to the ``postgres`` OS user and every PostgreSQL binary
runs as that user (``runuser -u postgres --``).  The tests connect over TCP as the role
``onechance_test`` (``LOGIN CREATEDB``, password authentication).  The machine's own clusters
(``pg_lsclusters``) are never touched.

A cluster is stopped and its directory removed when the session ends (pytest tears the session down on
Ctrl-C too), at interpreter exit, and, should pytest itself be killed, by a watchdog process that waits
for pytest's end on a pipe: no postgres process outlives the tests.

``ONECHANCE_TEST_PG_URL`` (``postgresql+asyncpg://user:password@host:port/db``, a role allowed to create
databases) is used instead for the ordinary store tests.  A test that stops and starts the server always
gets a cluster of the suite's own: :meth:`PgServer.stop` refuses any other server.
"""

from __future__ import annotations

import asyncio
import atexit
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy.engine import make_url

BINDIR = os.environ.get("ONECHANCE_TEST_PG_BINDIR", "/usr/lib/postgresql/15/bin")
OS_USER = "postgres"  # who runs the cluster when the tests run as root
SUPERUSER = "postgres"  # the cluster's bootstrap superuser (unix socket only, never over TCP)
TEST_ROLE = "onechance_test"
TEST_PASSWORD = "onechance_test"
HOW_TO = (
    "install PostgreSQL 15 (`apt-get install postgresql-15`: the tests run their own cluster with the binaries "
    "in /usr/lib/postgresql/15/bin, or in ONECHANCE_TEST_PG_BINDIR; as root they run it as the `postgres` user), "
    "or set ONECHANCE_TEST_PG_URL=postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB for a role that may create "
    "databases"
)
SETTINGS = """
listen_addresses = '127.0.0.1'
port = {port}
unix_socket_directories = '{socket_dir}'
fsync = off
synchronous_commit = off
full_page_writes = off
"""
# Waits for the end of the test session (EOF on its stdin: pytest exited, however it exited), then stops
# the cluster if it still runs and removes its directory.  Started in a session of its own, so that
# neither Ctrl-C nor a signal to pytest's process group reaches it.
WATCHDOG = """
import shutil, subprocess, sys
sys.stdin.buffer.read()
try:
    subprocess.run(sys.argv[2:], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120, check=False)
finally:
    shutil.rmtree(sys.argv[1], ignore_errors=True)
"""
T = TypeVar("T")


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


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _one_line(text: str) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())


@dataclass
class PgCluster:
    """A PostgreSQL cluster of the test session's own, in ``base`` (``data/``, ``socket/``, ``postgres.log``)."""

    base: Path
    port: int
    bindir: Path
    os_user: str | None  # run the binaries as this user (we are root), None: as ourselves
    watchdog: subprocess.Popen[bytes] | None = None
    removed: bool = False

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def socket_dir(self) -> Path:
        return self.base / "socket"

    @property
    def log(self) -> Path:
        return self.base / "postgres.log"

    @property
    def url(self) -> str:
        """The test role's URL for the ``postgres`` database."""
        return f"postgresql+asyncpg://{TEST_ROLE}:{TEST_PASSWORD}@127.0.0.1:{self.port}/postgres"

    @classmethod
    def create(cls) -> PgCluster:
        """initdb, start, create the test role.  Raises :class:`PgUnavailable` (and leaves nothing behind)
        when any step fails."""
        bindir = Path(BINDIR)
        for tool in ("initdb", "pg_ctl", "postgres"):
            if not (bindir / tool).is_file():
                raise PgUnavailable(f"no {bindir / tool}")
        os_user = None
        if os.geteuid() == 0:
            if not shutil.which("runuser"):
                raise PgUnavailable("running as root and no `runuser` to run PostgreSQL as another user")
            try:
                owner = pwd.getpwnam(OS_USER)
            except KeyError:
                raise PgUnavailable(f"running as root, and no {OS_USER!r} OS user to run PostgreSQL as") from None
            os_user = OS_USER
        base = Path(tempfile.mkdtemp(prefix="onechance-pg-"))
        cluster = cls(base=base, port=_free_port(), bindir=bindir, os_user=os_user)
        atexit.register(cluster.remove)
        try:
            cluster.socket_dir.mkdir()
            if os_user is not None:
                for path in (base, cluster.socket_dir):
                    os.chown(path, owner.pw_uid, owner.pw_gid)
            cluster._start_watchdog()
            cluster._initdb()
            for attempt in range(3):  # the free port may be taken between _free_port() and the start
                try:
                    cluster.start()
                    break
                except PgUnavailable:
                    if attempt == 2 or "already in use" not in cluster.log_tail():
                        raise
                    cluster.port = _free_port()
                    cluster._write_settings()
            run_sync(cluster._create_test_role())
        except BaseException:
            cluster.remove()
            raise
        return cluster

    def _as_owner(self, args: list[str]) -> list[str]:
        return args if self.os_user is None else ["runuser", "-u", self.os_user, "--", *args]

    def _run(self, tool: str, *args: str, timeout: float = 90.0) -> None:
        cmd = self._as_owner([str(self.bindir / tool), *args])
        try:
            res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
                                 check=False, cwd="/")
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PgUnavailable(f"`{' '.join(cmd)}`: {exc}") from exc
        if res.returncode != 0:
            raise PgUnavailable(
                f"`{' '.join(cmd)}` failed: {_one_line(res.stderr or res.stdout)}"
                + (f"; server log: {self.log_tail()}" if self.log.exists() else "")
            )

    def _stop_command(self, mode: str) -> list[str]:
        return self._as_owner([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60",
                               "stop"])

    def _start_watchdog(self) -> None:
        self.watchdog = subprocess.Popen(
            [sys.executable, "-c", WATCHDOG, str(self.base), *self._stop_command("immediate")],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            cwd="/",
        )

    def _initdb(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth-local=trust",
                  "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions")
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write("\ninclude = 'onechance-test.conf'\n")
        self._write_settings()

    def _write_settings(self) -> None:
        (self.data / "onechance-test.conf").write_text(SETTINGS.format(port=self.port, socket_dir=self.socket_dir))
        if self.os_user is not None:
            owner = pwd.getpwnam(self.os_user)
            os.chown(self.data / "onechance-test.conf", owner.pw_uid, owner.pw_gid)

    async def _create_test_role(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(host=str(self.socket_dir), port=self.port, user=SUPERUSER, database="postgres",
                                     timeout=10)
        try:
            await conn.execute(f"CREATE ROLE {TEST_ROLE} LOGIN CREATEDB PASSWORD '{TEST_PASSWORD}'")
        finally:
            await conn.close()

    def log_tail(self, lines: int = 5) -> str:
        try:
            return _one_line("\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]))
        except OSError:
            return ""

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Really stop the server (``pg_ctl stop -m fast``: clients are disconnected)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def running(self) -> bool:
        cmd = self._as_owner([str(self.bindir / "pg_ctl"), "-D", str(self.data), "status"])
        res = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False, cwd="/")
        return res.returncode == 0

    def remove(self) -> None:
        """Stop the server (if it runs) and delete the cluster's directory.  Safe to call more than once."""
        if self.removed:
            return
        self.removed = True
        atexit.unregister(self.remove)
        try:
            if (self.data / "postmaster.pid").exists():
                subprocess.run(self._stop_command("immediate"), stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=120, check=False, cwd="/")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
            if self.watchdog is not None:
                assert self.watchdog.stdin is not None
                self.watchdog.stdin.close()  # nothing left to do for it: it exits
                try:
                    self.watchdog.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    self.watchdog.kill()
                    self.watchdog.wait(timeout=10)


async def connect(url: str) -> Any:
    """An asyncpg connection to ``url`` (a SQLAlchemy-style URL)."""
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


async def execute(url: str, statement: str) -> None:
    """One statement on a connection of its own (``CREATE``/``DROP DATABASE`` may run in no transaction)."""
    conn = await connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def _ping(url: str) -> None:
    await execute(url, "SELECT 1")


async def _may_create(url: str) -> bool:
    conn = await connect(url)
    try:
        return bool(await conn.fetchval("SELECT rolcreatedb OR rolsuper FROM pg_roles WHERE rolname = current_user"))
    finally:
        await conn.close()


async def drop_onechance_tables(url: str) -> None:
    """Drop the onechance tables (and the migrations' version table) of a database, nothing else."""
    from onechance.store.models import VERSION_TABLE, metadata

    conn = await connect(url)
    try:
        await conn.execute("DROP TABLE IF EXISTS " + ", ".join(f'"{t}"' for t in [*metadata.tables, VERSION_TABLE])
                           + " CASCADE")
    finally:
        await conn.close()


@dataclass
class PgServer:
    """A PostgreSQL server for tests: where it is, and the cluster behind it when the suite runs it."""

    url: str  # postgresql+asyncpg URL of a database the test role can connect to
    cluster: PgCluster | None  # the suite's own cluster; None: someone else's server (ONECHANCE_TEST_PG_URL)
    can_create: bool = True
    created: set[str] = field(default_factory=set)

    def stop(self) -> None:
        """Really stop the server.  Only a cluster the suite started itself."""
        if self.cluster is None:
            raise PgUnavailable("refusing to stop a PostgreSQL server the tests did not start")
        self.cluster.stop()

    def start(self) -> None:
        """Start the server (when the suite runs it and it is stopped) and wait until it accepts connections."""
        if self.cluster is not None and not self.cluster.running():
            self.cluster.start()
        run_sync(_ping(self.url))

    def ensure_running(self) -> None:
        if self.cluster is not None:
            self.start()

    def create_database(self) -> str:
        """A fresh empty database; returns its URL.  (A role that may not create databases gets its own
        database back, without the onechance tables.)"""
        self.ensure_running()
        if not self.can_create:
            run_sync(drop_onechance_tables(self.url))
            return self.url
        name = f"oc_test_{uuid.uuid4().hex[:16]}"
        run_sync(execute(self.url, f'CREATE DATABASE "{name}"'))
        self.created.add(name)
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def drop_database(self, url: str) -> None:
        name = make_url(url).database
        if name not in self.created:
            return
        self.ensure_running()
        run_sync(execute(self.url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.created.discard(name)

    def close(self) -> None:
        """The end of the session: the suite's own cluster is stopped and removed (someone else's server
        keeps running; the databases made on it are dropped by their fixtures)."""
        if self.cluster is not None:
            self.cluster.remove()


def own_server() -> PgServer:
    """A new cluster of the suite's own; :class:`PgUnavailable` with a reason when it cannot be had."""
    cluster = PgCluster.create()
    server = PgServer(url=cluster.url, cluster=cluster)
    try:
        run_sync(_ping(server.url))
    except Exception as exc:
        cluster.remove()
        raise PgUnavailable(f"the test cluster does not answer: {type(exc).__name__}: {exc}") from exc
    return server


def server_at(url: str) -> PgServer:
    """The server of ``ONECHANCE_TEST_PG_URL``; :class:`PgUnavailable` when it cannot be reached."""
    try:
        u = make_url(url)
        if u.drivername in ("postgresql", "postgres"):
            url = u.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)
        run_sync(_ping(url))
        return PgServer(url=url, cluster=None, can_create=run_sync(_may_create(url)))
    except Exception as exc:
        raise PgUnavailable(f"ONECHANCE_TEST_PG_URL: {type(exc).__name__}: {exc}") from exc
