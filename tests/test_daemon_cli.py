"""``onechance run`` and ``onechance check-config`` as an installer runs them: real processes."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import time
from pathlib import Path

import aiohttp

from .daemonproc import ONECHANCE, Daemon, clean_env, daemon, get_json
from .livehelp import SECRET, fake_pbx, wait_until


def _check_config(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ONECHANCE, "check-config", *args], capture_output=True, text=True, env=clean_env(**env),
                          timeout=30)


def test_check_config_masks_secrets_from_the_environment():
    r = _check_config(ONECHANCE_AMI__HOST="pbx.example", ONECHANCE_AMI__PORT="5039",
                      ONECHANCE_AMI__USERNAME="onechance", ONECHANCE_AMI__SECRET=SECRET,
                      ONECHANCE_HTTP__LISTEN="0.0.0.0:9700", ONECHANCE_HTTP__TOKEN="tok-very-secret")
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout + r.stderr and "tok-very-secret" not in r.stdout
    cfg = json.loads(r.stdout)
    assert cfg["ami"]["host"] == "pbx.example" and cfg["ami"]["port"] == 5039
    assert cfg["ami"]["secret"] == "********" and cfg["http"]["token"] == "********"
    assert cfg["http"]["listen"] == "0.0.0.0:9700"
    assert cfg["followed_pbxs"] == ["default"]


def test_check_config_reads_several_pbxs_and_queue_settings_from_toml(tmp_path: Path):
    secret_file = tmp_path / "ami.secret"
    secret_file.write_text(SECRET + "\n")
    conf = tmp_path / "onechance.toml"
    conf.write_text(f"""
[http]
listen = "127.0.0.1:9648"

[[pbx]]
name = "tallinn"
host = "10.0.0.1"
username = "onechance"
secret_file = "{secret_file}"

[[pbx]]
name = "tartu"
host = "10.0.0.2"
port = 5039
username = "onechance"
secret = "{SECRET}"

[queues.support]
short_abandon_seconds = 3
service_level_seconds = 30
bounce_transfers = 3
""")
    r = _check_config("--config", str(conf))
    assert r.returncode == 0, r.stderr
    assert SECRET not in r.stdout
    cfg = json.loads(r.stdout)
    assert cfg["followed_pbxs"] == ["tallinn", "tartu"]
    assert cfg["queues"]["support"] == {"short_abandon_seconds": 3.0, "service_level_seconds": 30.0,
                                        "bounce_transfers": 3, "alert_kinds": None, "long_wait_seconds": None,
                                        "mute": None, "hours": None}
    r = _check_config(ONECHANCE_CONFIG=str(conf))
    assert r.returncode == 0 and json.loads(r.stdout)["followed_pbxs"] == ["tallinn", "tartu"]


def test_config_errors_are_one_readable_message_and_exit_2(tmp_path: Path):
    cases = [
        ({"ONECHANCE_AMI__PORT": "not-a-port"}, "ami.port"),
        ({"ONECHANCE_HTTP__LISTEN": "nowhere"}, "http.listen"),
        ({"ONECHANCE_HTTP__TOKEN": ""}, "http.token"),
        ({"ONECHANCE_AMI__HOST": "pbx.example"}, "no AMI secret"),
        ({"ONECHANCE_AMI__HOST": "pbx.example", "ONECHANCE_AMI__SECRET_FILE": str(tmp_path / "missing")},
         "secret_file"),
        ({"ONECHANCE_CONFIG": str(tmp_path / "absent.toml")}, "not found"),
        ({"ONECHANCE_PBX": f'[{{"name": "a", "host": "h", "secret": "{SECRET}"'}, 'field "pbx"'),
    ]
    for env, text in cases:
        for command in ("check-config", "run"):
            r = subprocess.run([*ONECHANCE, command], capture_output=True, text=True, env=clean_env(**env), timeout=30)
            assert r.returncode == 2, (env, command, r.stdout, r.stderr)
            assert text in r.stderr, (env, r.stderr)
            assert "Traceback" not in r.stderr and SECRET not in r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[[pbx]]\nname = 'a'\n[ami\n")
    r = _check_config("--config", str(bad))
    assert r.returncode == 2 and "not valid TOML" in r.stderr and "Traceback" not in r.stderr
    two = tmp_path / "two.toml"
    two.write_text("[[pbx]]\nname = 'a'\nhost = 'h'\nsecret = 'x'\n[[pbx]]\nname = 'b'\n")
    r = _check_config("--config", str(two))
    assert r.returncode == 2 and "needs a host" in r.stderr


def test_run_reports_an_unusable_listen_address_or_demo_capture_as_a_config_error(tmp_path: Path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        cases = [
            ("run", {"ONECHANCE_HTTP__LISTEN": f"127.0.0.1:{busy.getsockname()[1]}", "ONECHANCE_AMI__HOST": "x",
                     "ONECHANCE_AMI__SECRET": "s"}, "http.listen 127.0.0.1:"),
            ("demo", {"ONECHANCE_HTTP__LISTEN": "127.0.0.1:0", "ONECHANCE_DEMO__CAPTURE": str(tmp_path / "none.ami"),
                      "ONECHANCE_DATA_DIR": str(tmp_path)}, "demo.capture"),
        ]
        for command, env, text in cases:
            r = subprocess.run([*ONECHANCE, command], capture_output=True, text=True, env=clean_env(**env),
                               timeout=30)
            assert r.returncode == 2, (env, r.stderr)
            assert text in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_run_without_an_asterisk_is_a_config_error_and_a_mistyped_variable_is_named(tmp_path: Path):
    """A missing or mistyped host used to start the demo and write fake calls into the configured database."""
    r = subprocess.run([*ONECHANCE, "run"], capture_output=True, text=True, timeout=30,
                       env=clean_env(ONECHANCE_AMI_HOST="10.0.0.5", ONECHANCE_DATA_DIR=str(tmp_path)))
    assert r.returncode == 2, r.stderr
    assert "warning: unknown environment variable ONECHANCE_AMI_HOST (did you mean ONECHANCE_AMI__HOST?)" in r.stderr
    assert "no Asterisk to follow" in r.stderr and "onechance demo" in r.stderr
    assert not (tmp_path / "onechance.db").exists()
    conf = tmp_path / "c.toml"
    conf.write_text('[ami]\nport = 5038\nsecret = "x"\n', encoding="utf-8")  # a config without host
    r = subprocess.run([*ONECHANCE, "run", "--config", str(conf)], capture_output=True, text=True, timeout=30,
                       env=clean_env(ONECHANCE_DATA_DIR=str(tmp_path)))
    assert r.returncode == 2 and "no Asterisk to follow" in r.stderr


async def test_demo_plays_the_demo_pbx_in_its_own_data_directory_and_stops_cleanly_on_sigterm(tmp_path: Path):
    async with daemon(command="demo", ONECHANCE_DEMO__SPEED="40", ONECHANCE_DATA_DIR=str(tmp_path)) as d, \
            aiohttp.ClientSession() as s:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and (await get_json(s, d.base + "/readyz"))[0] != 200:
            await asyncio.sleep(0.1)
        calls = await d.calls_when(s, bool)
        assert calls and calls[0]["pbx"] == "demo"
        assert abs(calls[0]["started_at"] - time.time()) < 600  # the demo plays at the present time
        await d.stop(signal.SIGTERM)
    assert d.returncode == 0, d.log
    assert "onechance stopped" in d.log and "Traceback" not in d.log
    assert (tmp_path / "demo" / "onechance.db").exists() and not (tmp_path / "onechance.db").exists()


async def test_a_second_daemon_on_the_same_data_directory_is_a_config_error(tmp_path: Path):
    """Two daemons must never share a spool: the second stops at start with one line (exit 2), before it listens
    or connects, and the first goes on."""
    async with daemon(command="demo", ONECHANCE_DATA_DIR=str(tmp_path)) as first:
        r = subprocess.run([*ONECHANCE, "demo"], capture_output=True, text=True, timeout=30,
                           env=clean_env(ONECHANCE_DATA_DIR=str(tmp_path), ONECHANCE_HTTP__LISTEN="127.0.0.1:0"))
        assert r.returncode == 2, r.stderr
        assert f"onechance demo: spool directory {tmp_path / 'demo' / 'spool'} is in use by another onechance " \
               f"process (pid {first.proc.pid})" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and "open http://" not in r.stderr, r.stderr
        async with aiohttp.ClientSession() as s:
            assert (await get_json(s, first.base + "/healthz"))[0] == 200
        await first.stop(signal.SIGTERM)
    assert first.returncode == 0, first.log


async def test_run_follows_a_pbx_from_the_environment_and_sigint_stops_it():
    async with fake_pbx("answered", speed=0) as pbx:
        async with daemon(ONECHANCE_AMI__HOST="127.0.0.1", ONECHANCE_AMI__PORT=str(pbx.port),
                          ONECHANCE_AMI__USERNAME="onechance", ONECHANCE_AMI__SECRET=SECRET,
                          ONECHANCE_HTTP__TOKEN="t0k", ONECHANCE_LOG_LEVEL="DEBUG") as d:
            await wait_until(lambda: pbx.finished.is_set(), what="capture played")
            async with aiohttp.ClientSession(headers={"Authorization": "Bearer t0k"}) as s:
                calls = await d.calls_when(s, bool)
            assert [c["outcome"] for c in calls] == ["answered"] and calls[0]["pbx"] == "default"
            await d.stop(signal.SIGINT)
        assert d.returncode == 0, d.log
        assert "logged in to AMI" in d.log
        assert SECRET not in d.log  # not even at DEBUG
        assert "logoff" in pbx.actions


def test_the_sample_settings_file_is_valid(tmp_path: Path):
    sample = (Path(__file__).parent.parent / "asterisk-conf" / "onechance.toml").read_text(encoding="utf-8")
    secret = tmp_path / "ami.secret"
    secret.write_text(SECRET)
    conf = tmp_path / "onechance.toml"
    conf.write_text(sample.replace("/etc/onechance/ami.secret", str(secret)), encoding="utf-8")
    r = _check_config("--config", str(conf))
    assert r.returncode == 0, r.stderr
    cfg = json.loads(r.stdout)
    assert cfg["followed_pbxs"] == ["main"] and cfg["queues"]["support"]["short_abandon_seconds"] == 3
    assert SECRET not in r.stdout


async def test_a_second_signal_exits_at_once():
    """The first SIGTERM asks for a graceful drain; if that hangs (here the PBX never answers the Logoff the
    drain sends it), a second one hurries it: the calls are closed and spooled at once, and the process ends
    (130: neither the drain's 0 nor the 1 of calls lost)."""
    async with fake_pbx("answered", speed=0) as pbx:
        pbx.ignore_actions.add("logoff")
        async with daemon(ONECHANCE_AMI__HOST="127.0.0.1", ONECHANCE_AMI__PORT=str(pbx.port),
                          ONECHANCE_AMI__USERNAME="onechance", ONECHANCE_AMI__SECRET=SECRET) as d:
            await wait_until(lambda: pbx.finished.is_set(), what="capture played")
            async with aiohttp.ClientSession() as s:  # resynced (a stop in the middle of the resync logs off at once)
                deadline = time.monotonic() + 20
                while time.monotonic() < deadline and (await get_json(s, d.base + "/readyz"))[0] != 200:
                    await asyncio.sleep(0.05)
            d.proc.send_signal(signal.SIGTERM)
            await wait_until(lambda: "logoff" in pbx.actions, what="the drain's Logoff")
            assert d.proc.poll() is None, "the drain did not wait for the Logoff"
            await d.stop(signal.SIGTERM)
        assert d.returncode == 130, d.log
        assert "SIGTERM again: hurrying the stop" in d.log
        assert "0 lost" in d.log


async def test_the_demo_shows_everything_within_a_minute(tmp_path: Path):
    """What `make run` promises a newcomer, with the demo's own defaults (real time, the simulated centre):
    calls in progress on /api/live, metrics moving, a caller on /callbacks and an alert logged by the demo
    receiver, all within a minute (the simulated centre has been running before the daemon connects)."""
    async with daemon(command="demo", ONECHANCE_DATA_DIR=str(tmp_path)) as d, aiohttp.ClientSession() as s:
        started = time.monotonic()
        seen: dict[str, float] = {}
        events: list[float] = []
        while time.monotonic() - started < 60 and len(seen) < 4:
            _, live = await get_json(s, d.base + "/api/live")
            if live.get("calls"):
                seen.setdefault("live calls", time.monotonic() - started)
            _, callbacks = await get_json(s, d.base + "/api/callbacks")
            if callbacks.get("callbacks"):
                seen.setdefault("callers to call back", time.monotonic() - started)
            async with s.get(d.base + "/metrics") as resp:
                text = await resp.text()
            events.append(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                              if line.startswith("onechance_ami_events_total{")))
            if len(events) > 1 and events[-1] > events[0]:
                seen.setdefault("metrics moving", time.monotonic() - started)
            if any("demo receiver got an alert" in line for line in d.lines):
                seen.setdefault("an alert", time.monotonic() - started)
            d.lines.extend(await asyncio.get_running_loop().run_in_executor(None, _ready_lines, d))
            await asyncio.sleep(0.5)
        await d.stop(signal.SIGTERM)
    assert set(seen) == {"live calls", "callers to call back", "metrics moving", "an alert"}, (seen, d.log[-3000:])
    assert d.returncode == 0, d.log


def _ready_lines(d: Daemon) -> list[str]:
    """The daemon's log lines written so far (without blocking)."""
    import select

    out = []
    stream = d.proc.stderr
    while select.select([stream], [], [], 0)[0]:
        line = stream.readline()
        if not line:
            break
        out.append(line)
    return out
