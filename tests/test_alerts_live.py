"""Alerts end to end: the shared captures played by a fake PBX over TCP to the daemon, the alerts delivered to
real peers on loopback (a signed webhook receiver, Alertmanager 0.25, Apprise's JSON target), and delivery
exactly once per alert and channel across a receiver outage and a daemon restart (SIGTERM and SIGKILL)."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from onechance.replay import replay_files

from .alerthelp import Receiver, alertmanager
from .daemonproc import daemon
from .livehelp import FAST_AMI, SECRET, api_for, fake_pbx, running, settings_for, settled, wait_until
from .test_alert_channels import documented_verify
from .truthcheck import DATA, load_truth, scenarios

HOOK_SECRET = "whsec-live-0b1c2d3e-do-not-log"


def truth_alerts(name: str) -> list[tuple[str, str]]:
    """(caller, kind) of every alert the truth file of ``name`` expects."""
    return sorted((c["caller"], kind) for c in load_truth(name)["calls"] for kind in c.get("alerts", []))


def webhook(url: str, **kw: Any) -> dict[str, Any]:
    return {"name": "hook", "kind": "webhook", "url": url, "secret": HOOK_SECRET, "storm_limit": 1000,
            "retry_min": 0.05, "retry_max": 0.3, **kw}


def pace(name: str, least_gap: float = 2.0) -> float:
    """The speed to play ``name`` at: as fast as possible, unless a lost caller is reached again in it; then
    slow enough that the reaching comes ``least_gap`` seconds after the alert, as it would at real speed (an
    alert whose caller is reached before it could be sent is cancelled, not sent)."""
    gaps = [j.recovered_at - j.ended_at for j in replay_files([str(DATA / f"{name}.ami")]).journeys
            if j.lost and j.recovered_at is not None and j.ended_at is not None]
    return max(gap for gap in gaps) / least_gap if gaps and min(gaps) > 0 else 0.0


async def quiet_for(rx: Receiver, seconds: float) -> None:
    """Nothing more arrives for ``seconds`` (a late duplicate would)."""
    while True:
        count = len(rx.requests)
        await asyncio.sleep(seconds)
        if len(rx.requests) == count:
            return


@pytest.mark.parametrize("name", scenarios())
async def test_a_live_replay_delivers_exactly_the_alerts_of_the_truth_file_signed(name):
    want = truth_alerts(name)
    verify = documented_verify()
    async with Receiver() as rx, fake_pbx(name, speed=pace(name)) as pbx:
        settings = settings_for([("main", pbx.port)], alerts={"channels": [webhook(rx.url())]})
        async with running(settings) as app:
            await settled(app, "main", pbx)
            if want:
                await rx.wait_for(len(want), timeout=30)
            await quiet_for(rx, 0.5)
            async with api_for(app) as api:
                listed = (await api.json("/api/alerts", params={"limit": "1000"}))["alerts"]
    assert sorted((a["caller"], a["kind"]) for a in listed) == want
    bodies = [r.json() for r in rx.requests]
    assert sorted((b["caller"], b["kind"]) for b in bodies) == want
    for r, b in zip(rx.requests, bodies, strict=True):
        assert verify(HOOK_SECRET, r.headers, r.body), f"bad signature on {b['kind']} {b['call_id']}"
        assert r.key and r.headers["Content-Type"].startswith("application/json")
        assert b["pbx"] == "main" and b["version"] == 1
    assert len(rx.per_key()) == len(want), "one idempotency key per alert"


async def test_the_alerts_of_a_call_carry_its_journey():
    """The abandoned caller of ``transfer_then_abandon`` was passed from support to sales: the payload says so."""
    async with Receiver() as rx, fake_pbx("transfer_then_abandon") as pbx:
        settings = settings_for([("main", pbx.port)], alerts={"channels": [webhook(rx.url())]})
        async with running(settings) as app:
            await settled(app, "main", pbx)
            (req,) = await rx.wait_for(1, timeout=30)
    body = req.json()
    assert (body["kind"], body["queue"]) == ("abandoned", "sales")
    assert body["transfers"] and body["wait_seconds"] > 0 and body["decided_at"] >= body["started_at"]
    assert body["call_link"].endswith(f"/api/calls/{body['call_id']}?pbx=main")


async def test_apprise_json_target_gets_one_message_per_alert():
    want = truth_alerts("load_a")
    assert want
    async with Receiver() as rx, fake_pbx("load_a") as pbx:
        url = f"json://127.0.0.1:{rx.port}/apprise"
        settings = settings_for([("main", pbx.port)], alerts={"channels": [
            {"name": "chat", "kind": "apprise", "url": url, "storm_limit": 1000, "retry_min": 0.05,
             "retry_max": 0.3}]})
        async with running(settings) as app:
            await settled(app, "main", pbx)
            await rx.wait_for(len(want), timeout=60)
            await quiet_for(rx, 0.5)
    assert len(rx.requests) == len(want)
    texts = [r.json()["message"] for r in rx.requests]
    for caller, kind in want:
        if kind == "bounced":
            continue
        assert any(caller[-4:] in t.replace(" ", "").replace("-", "") for t in texts), (caller, kind)
    assert all(r.path == "/apprise" for r in rx.requests)


# ---- exactly once across an outage and a restart ---------------------------------------------------------
def _config(path: Path, pbx_port: int, hook_url: str) -> Path:
    lines = [
        "[[pbx]]", 'name = "main"', 'host = "127.0.0.1"', f"port = {pbx_port}", 'username = "onechance"',
        f'secret = "{SECRET}"', *(f"{k} = {v}" for k, v in FAST_AMI.items()),
        "[daemon]", "shutdown_timeout = 5.0",
        "[[alerts.channels]]", 'name = "hook"', 'kind = "webhook"', f'url = "{hook_url}"',
        f'secret = "{HOOK_SECRET}"', "storm_limit = 1000", "retry_min = 0.05", "retry_max = 0.3",
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
async def test_a_receiver_outage_and_a_restart_delay_but_neither_lose_nor_repeat_a_delivery(tmp_path, sig):
    """The receiver answers 503 to everything while ``load_a`` is played; the daemon is stopped (SIGTERM) or
    killed (SIGKILL) with every alert still undelivered, the receiver recovers, the daemon starts again on the
    same data directory: every alert is then delivered successfully exactly once."""
    want = truth_alerts("load_a")
    data = tmp_path / "data"
    async with Receiver(default=503) as rx, fake_pbx("load_a") as pbx:
        config = _config(tmp_path / "onechance.toml", pbx.port, rx.url())
        async with daemon("--config", str(config), ONECHANCE_DATA_DIR=str(data)) as first:
            # every alert was tried at least once (so it was durable), none went through
            await wait_until(lambda: len({r.key for r in rx.requests}) == len(want), timeout=60,
                             what="a first attempt of every alert")
            await wait_until(lambda: len(rx.requests) > 2 * len(want), timeout=30, what="retries")
            await first.stop(sig)
        if sig == signal.SIGTERM:
            assert first.returncode == 0, first.log
        failed = len(rx.requests)
        rx.default = 200
        async with daemon("--config", str(config), ONECHANCE_DATA_DIR=str(data)) as second:
            await wait_until(lambda: sum(1 for r in rx.requests[failed:]) >= len(want), timeout=60,
                             what="the deliveries after the restart")
            await quiet_for(rx, 1.0)
            async with aiohttp.ClientSession() as s, s.get(second.base + "/api/alerts",
                                                          params={"limit": "1000"}) as resp:
                listed = (await resp.json())["alerts"]
            await second.stop(signal.SIGTERM)
        assert second.returncode == 0, second.log
    delivered = rx.requests[failed:]
    keys = [r.key for r in delivered]
    assert len(keys) == len(set(keys)) == len(want), "each alert exactly once after the outage"
    assert set(keys) == {r.key for r in rx.requests[:failed]}, "the same alerts, the same idempotency keys"
    assert sorted((r.json()["caller"], r.json()["kind"]) for r in delivered) == want
    assert len(listed) == len(want)
    assert {a["deliveries"]["hook"]["state"] for a in listed} == {"sent"}, listed[:2]
    if sig == signal.SIGTERM:  # a clean stop stores the failed attempts too (a kill may lose the last ones)
        assert all(a["deliveries"]["hook"]["attempts"] > 1 for a in listed)


# ---- Alertmanager ----------------------------------------------------------------------------------------
def _lost(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [a for a in alerts if a["labels"].get("alertname") == "OnechanceLostCaller"]


async def test_alertmanager_shows_the_lost_caller_until_the_operator_calls_back():
    """``outbound_callback``, played at 5x: the abandoned caller appears in Alertmanager as soon as the call
    ends, stays while waiting for a call back, and resolves when the operator's call to that number is
    answered."""
    caller = next(c["caller"] for c in load_truth("outbound_callback")["calls"] if c.get("alerts"))
    async with alertmanager() as am, fake_pbx("outbound_callback", speed=5.0) as pbx:
        settings = settings_for([("main", pbx.port)], alerts={"channels": [
            {"name": "am", "kind": "alertmanager", "url": am.url, "repeat_interval": 1.0, "retry_min": 0.05,
             "retry_max": 0.3}]})
        async with running(settings) as app:
            active = await am.wait_alerts(lambda a: len(_lost(a)) == 1, timeout=30)
            assert not pbx.finished.is_set(), "the alert must be there before the call back"
            (alert,) = _lost(active)
            assert alert["labels"]["pbx"] == "main" and alert["labels"]["severity"] == "critical"
            assert caller not in json.dumps(alert["labels"]), "no caller number in labels"
            assert alert["generatorURL"].endswith("?pbx=main")
            await asyncio.sleep(2.5)  # re-posted meanwhile (repeat_interval 1 s): still active
            assert len(_lost(await am.alerts())) == 1
            await settled(app, "main", pbx)
            await am.wait_alerts(lambda a: not _lost(a), timeout=20)
            async with api_for(app) as api:
                assert (await api.json("/api/callbacks"))["callbacks"] == []


async def test_alertmanager_alert_resolves_when_the_entry_is_closed_by_hand():
    async with alertmanager() as am, fake_pbx("abandoned") as pbx:
        settings = settings_for([("main", pbx.port)], alerts={"channels": [
            {"name": "am", "kind": "alertmanager", "url": am.url, "retry_min": 0.05, "retry_max": 0.3}]})
        async with running(settings) as app:
            await settled(app, "main", pbx)
            await am.wait_alerts(lambda a: len(_lost(a)) == 1, timeout=20)
            async with api_for(app) as api:
                (entry,) = (await api.json("/api/callbacks"))["callbacks"]
                async with api.session.post(f"{api.base}/api/callbacks/{entry['id']}/done",
                                            json={"reason": "reached", "note": "called from a mobile"}) as resp:
                    assert resp.status == 200, await resp.text()
            started = time.monotonic()
            await am.wait_alerts(lambda a: not _lost(a), timeout=20)
            assert time.monotonic() - started < 10
