"""No secret is ever shown: not in a log line, a traceback, ``check-config``'s or ``db current``'s output, nor
``/metrics``, whatever its source (the AMI secret, the API token, a database password in the URL's userinfo
or its query string or a password file, a webhook URL with its token in the path or the query, a signing
key); a config file readable by others that holds secrets is warned about; ``http.token_file`` and
``database.password_file`` take secrets from files (systemd ``LoadCredential=``, container secrets)."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from onechance.redact import mask_url, redact, secret_values

from .daemonproc import ONECHANCE, clean_env
from .durability import SECRET, DaemonProcess, daemon_env, sim_pbx, value, wait_handled
from .pg import run_sync

DB_PASSWORD = "Pg-Pa55w0rd-in-Query-7f3a"
USERINFO_PASSWORD = "Us3rinfo-Pa55-91c2"
TOKEN = "api-T0ken-5e1d-not-to-log"
HOOK_PATH_TOKEN = "XoXbHookPathT0ken77"
HOOK_QUERY_TOKEN = "hookQueryT0ken-3b9"
HOOK_SECRET = "hmac-Sign1ng-Key-c0ffee"
ALL = (SECRET, DB_PASSWORD, USERINFO_PASSWORD, TOKEN, HOOK_PATH_TOKEN, HOOK_QUERY_TOKEN, HOOK_SECRET)


def assert_clean(text: str, where: str) -> None:
    for secret in ALL:
        assert secret not in text, f"{secret!r} in {where}"


def test_mask_url_hides_the_password_and_every_query_value_that_may_be_one():
    assert mask_url("postgresql+asyncpg://u:pw@db.example:5432/oc?password=x&sslmode=require&timeout=3") == \
        "postgresql+asyncpg://u:********@db.example:5432/oc?password=********&sslmode=require&timeout=3"
    assert mask_url("postgresql://u@h/db?sslpassword=k&application_name=a&whatever=z") == \
        "postgresql://u@h/db?sslpassword=********&application_name=a&whatever=********"
    assert mask_url("sqlite+aiosqlite:///var/lib/onechance/onechance.db") == \
        "sqlite+aiosqlite:///var/lib/onechance/onechance.db"
    line = f"GET /services/T0/B0/{HOOK_PATH_TOKEN} failed"
    assert redact(line, [HOOK_PATH_TOKEN]) == "GET /services/T0/B0/*** failed"
    assert redact("x=" + "p%40ss%2Fw0rd", ["p@ss/w0rd"]) == "x=***"  # its URL-encoded form too


def write_config(path: Path, *, db_url: str, hook_url: str, mode: int = 0o644, extra: str = "") -> Path:
    path.write_text("\n".join([
        "[ami]", 'host = "127.0.0.1"', f'secret = "{SECRET}"',
        "[http]", f'token = "{TOKEN}"',
        "[database]", f'url = "{db_url}"',
        "[[alerts.channels]]", 'name = "ops"', 'kind = "webhook"', f'url = "{hook_url}"', f'secret = "{HOOK_SECRET}"',
        extra,
    ]) + "\n", encoding="utf-8")
    path.chmod(mode)
    return path


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ONECHANCE, *args], capture_output=True, text=True, timeout=60, env=env or clean_env())


def hook_url(port: int = 9) -> str:
    return f"http://127.0.0.1:{port}/services/T000/B000/{HOOK_PATH_TOKEN}?token={HOOK_QUERY_TOKEN}"


def test_check_config_shows_no_secret_and_warns_about_a_config_readable_by_others(tmp_path):
    db = f"postgresql+asyncpg://onechance:{USERINFO_PASSWORD}@db.example/oc?password={DB_PASSWORD}&sslmode=require"
    conf = write_config(tmp_path / "onechance.toml", db_url=db, hook_url=hook_url())
    r = run_cli("check-config", "--config", str(conf))
    assert r.returncode == 0, r.stderr
    assert_clean(r.stdout + r.stderr, "check-config")
    assert "postgresql+asyncpg://onechance:********@db.example/oc?password=********&sslmode=require" in r.stdout
    warning = [line for line in r.stderr.splitlines() if "readable by other users" in line]
    assert warning == [f"onechance check-config: warning: config file {conf} is readable by other users (mode 0644) "
                       "and holds secrets (ami.secret, http.token, alerts.channels.url, alerts.channels.secret, "
                       "database.url (a password)): `chmod 600` it (or 640 with a group of its own), or move them "
                       "to files (ami.secret_file, http.token_file, database.password_file, alerts.channels url_file "
                       "and secret_file)"], r.stderr
    conf.chmod(0o600)
    r = run_cli("check-config", "--config", str(conf))
    assert r.returncode == 0 and "readable by other users" not in r.stderr, r.stderr
    plain = tmp_path / "plain.toml"
    plain.write_text('[ami]\nhost = "127.0.0.1"\nsecret_file = "/run/credentials/onechance.service/ami"\n')
    plain.chmod(0o644)
    r = run_cli("check-config", "--config", str(plain))
    assert "readable by other users" not in r.stderr, r.stderr


def test_a_bad_database_url_is_reported_without_its_secrets(tmp_path):
    r = run_cli("db", "current", env=clean_env(
        ONECHANCE_DATABASE__URL=f"mysql://u:{USERINFO_PASSWORD}@h/db?password={DB_PASSWORD}"))
    assert r.returncode == 2 and "unsupported database 'mysql'" in r.stderr, r.stderr
    assert_clean(r.stdout + r.stderr, "db current")
    r = run_cli("db", "current", env=clean_env(ONECHANCE_DATABASE__URL=f"not a url :// @{DB_PASSWORD}"))
    assert r.returncode == 2, r.stderr
    assert_clean(r.stdout + r.stderr, "db current")


@pytest.fixture
def pg_role(own_pg_server):
    """A role of its own (password DB_PASSWORD) and a database it owns, on the suite's own cluster."""
    cluster = own_pg_server.cluster
    assert cluster is not None
    name = "oc_secret_test"

    async def setup(sql: list[str]) -> None:
        import asyncpg

        conn = await asyncpg.connect(host=str(cluster.socket_dir), port=cluster.port, user="postgres",
                                     database="postgres", timeout=10)
        try:
            for statement in sql:
                await conn.execute(statement)
        finally:
            await conn.close()

    run_sync(setup([f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"DROP ROLE IF EXISTS {name}",
                    f"CREATE ROLE {name} LOGIN PASSWORD '{DB_PASSWORD}'", f"CREATE DATABASE {name} OWNER {name}"]))
    yield f"postgresql+asyncpg://{name}@127.0.0.1:{cluster.port}/{name}"
    run_sync(setup([f"DROP DATABASE IF EXISTS {name} WITH (FORCE)", f"DROP ROLE IF EXISTS {name}"]))


def test_db_commands_never_print_a_password_given_in_the_query_string(pg_role, tmp_path):
    url = f"{pg_role}?password={DB_PASSWORD}"
    for action in ("upgrade", "current"):
        r = run_cli("db", action, env=clean_env(ONECHANCE_DATABASE__URL=url))
        assert r.returncode == 0, r.stderr
        assert "at revision" in r.stdout and "?password=***" in r.stdout, r.stdout
        assert_clean(r.stdout + r.stderr, f"db {action}")
    # wrong password, server down: the errors do not show it either
    r = run_cli("db", "current", env=clean_env(ONECHANCE_DATABASE__URL=f"{pg_role}?password={DB_PASSWORD}x"))
    assert r.returncode == 1 and "database unavailable" in r.stderr, r.stderr
    assert_clean(r.stdout + r.stderr, "db current")
    r = run_cli("db", "current", env=clean_env(
        ONECHANCE_DATABASE__URL=f"postgresql://u:{USERINFO_PASSWORD}@127.0.0.1:1/x?password={DB_PASSWORD}"))
    assert r.returncode == 1, r.stderr
    assert_clean(r.stdout + r.stderr, "db current")


def test_password_file_and_token_file(pg_role, tmp_path):
    """``database.password_file`` and ``http.token_file`` (as systemd's LoadCredential= gives them): the
    database is reached with the file's password, check-config shows neither; a missing file is one line."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "db").write_text(DB_PASSWORD + "\n")
    (creds / "token").write_text(TOKEN + "\n")
    env = clean_env(ONECHANCE_DATABASE__URL=pg_role, ONECHANCE_DATABASE__PASSWORD_FILE=str(creds / "db"),
                    ONECHANCE_HTTP__TOKEN_FILE=str(creds / "token"))
    r = run_cli("db", "upgrade", env=env)
    assert r.returncode == 0, r.stderr
    assert_clean(r.stdout + r.stderr, "db upgrade")
    r = run_cli("check-config", env=env)
    assert r.returncode == 0, r.stderr
    assert '"token": "********"' in r.stdout and str(creds / "token") in r.stdout
    assert_clean(r.stdout + r.stderr, "check-config")
    (creds / "db").unlink()
    r = run_cli("check-config", env=env)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1] == \
        f"onechance check-config: database.password_file {creds / 'db'}: No such file or directory", r.stderr
    r = run_cli("check-config", env=clean_env(ONECHANCE_HTTP__TOKEN_FILE=str(creds / "none")))
    assert r.returncode == 2 and f"http.token_file {creds / 'none'}: No such file or directory" in r.stderr, r.stderr
    r = run_cli("check-config", env=clean_env(ONECHANCE_HTTP__TOKEN_FILE=str(creds / "token"),
                                              ONECHANCE_HTTP__TOKEN="x"))
    assert r.returncode == 2 and "set either http.token or http.token_file, not both" in r.stderr, r.stderr
    r = run_cli("check-config", env=clean_env(ONECHANCE_DATABASE__URL="postgresql://u:p@h/db",
                                              ONECHANCE_DATABASE__PASSWORD_FILE=str(creds / "token")))
    assert r.returncode == 2 and "either in database.url or in database.password_file" in r.stderr, r.stderr


class EchoingReceiver:
    """A webhook receiver that refuses every alert with a 500 whose body repeats the request line (with the
    token of its URL): the daemon's error messages then carry the secrets."""

    def __init__(self) -> None:
        self.requests = 0
        self.port = 0
        self._runner: web.AppRunner | None = None

    async def _hook(self, request: web.Request) -> web.Response:
        self.requests += 1
        return web.Response(status=500, text=f"cannot take {request.method} {request.path_qs} "
                                             f"signed {request.headers.get('X-Onechance-Signature', '')}")

    async def __aenter__(self) -> EchoingReceiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._hook)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def test_the_daemon_logs_no_secret_whatever_its_source(pg_role, tmp_path):
    """The daemon at DEBUG, every secret configured: the AMI secret, the token (from a file), the database
    password (from a file), a webhook URL with tokens that the receiver echoes back in its errors, a signing
    key; requests with the token in oversized headers; then the database stopped and removed of its password
    (errors from asyncpg).  Not one secret in the whole log, /metrics or /readyz."""
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "db").write_text(DB_PASSWORD)
    (creds / "token").write_text(TOKEN)
    async with EchoingReceiver() as receiver:
        conf = tmp_path / "onechance.toml"
        conf.write_text("\n".join([
            "[[alerts.channels]]", 'name = "ops"', 'kind = "webhook"', f'url = "{hook_url(receiver.port)}"',
            f'secret = "{HOOK_SECRET}"', "retry_min = 0.1", "retry_max = 0.2", "storm_limit = 100000",
        ]) + "\n")
        conf.chmod(0o600)
        pbx = sim_pbx(150)
        await pbx.start()
        d = DaemonProcess(daemon_env(tmp_path / "data", pbx.port, ONECHANCE_LOG_LEVEL="DEBUG",
                                     ONECHANCE_DATABASE__URL=pg_role,
                                     ONECHANCE_DATABASE__PASSWORD_FILE=str(creds / "db"),
                                     ONECHANCE_HTTP__TOKEN_FILE=str(creds / "token")), args=("--config", str(conf)))
        await d.start()
        try:
            await wait_handled(d, pbx)
            await d.wait_for(lambda m: value(m, "onechance_store_up") == 1, what="the store up")
            for _ in range(100):
                if receiver.requests >= 5:
                    break
                await asyncio.sleep(0.1)
            assert receiver.requests >= 5
            # the token in a request the HTTP server refuses for its size, and in an ordinary one
            headers = {"Authorization": f"Bearer {TOKEN}", "X-Pad": "y" * 70000}
            async with aiohttp.ClientSession() as s:
                for h in (headers, {"Authorization": f"Bearer {TOKEN}x"}):
                    try:
                        async with s.get(d.base + f"/api/calls?token={TOKEN}", headers=h) as resp:
                            await resp.read()
                    except aiohttp.ClientError:
                        pass
            status, metrics_text = await d.get("/metrics")
            assert status == 200
            _status, ready_text = await d.get("/readyz")
        finally:
            code = await d.stop(signal.SIGTERM)
            await pbx.stop()
    assert code == 0, d.log[-3000:]
    assert "refused" in d.log or "HTTP 500" in d.log, d.log[-3000:]  # the receiver's answers were logged
    assert_clean(d.log, "the daemon's log")
    assert_clean(metrics_text, "/metrics")
    assert_clean(ready_text, "/readyz")


def test_every_configured_secret_is_known_to_the_log_redaction(tmp_path):
    from onechance.config import load_settings

    (tmp_path / "db").write_text(DB_PASSWORD)
    conf = write_config(tmp_path / "c.toml", db_url="postgresql://u@h/db", hook_url=hook_url(), mode=0o600)
    os.environ["ONECHANCE_DATABASE__PASSWORD_FILE"] = str(tmp_path / "db")
    try:
        settings = load_settings(conf)
    finally:
        del os.environ["ONECHANCE_DATABASE__PASSWORD_FILE"]
    known = secret_values(settings)
    for secret in (SECRET, DB_PASSWORD, TOKEN, HOOK_PATH_TOKEN, HOOK_QUERY_TOKEN, HOOK_SECRET):
        assert secret in known, secret
    assert not any(s in ("u", "h", "db", "/db") for s in known)
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600
