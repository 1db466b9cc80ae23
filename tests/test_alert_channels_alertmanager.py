"""The Alertmanager channel against a real Alertmanager (Debian's prometheus-alertmanager) on loopback:
alerts appear with the documented labels and annotations and never a caller's number in a label, a re-post
is the same alert, a resolution resolves it, a digest posts every alert, and Alertmanager notifies its own
receivers with our annotations.  docs/alerts.md's example route passes amtool and routes our alerts."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from onechance.alerts.channels import AlertmanagerChannel, build_channel
from onechance.alerts.channels.alertmanager import alerts_endpoint
from onechance.alerts.model import DeliveryFailed
from onechance.config import AlertsSettings, ChannelSettings

from .alerthelp import T0, Receiver, alertmanager, make_alert, notice

ROOT = Path(__file__).resolve().parent.parent
PUBLIC = "https://onechance.example.com"
NUMBER_DIGITS = ("37251234567", "51234567", "5123 4567", "1234567")


def channel(url: str, **kw: Any) -> AlertmanagerChannel:
    ch = build_channel(ChannelSettings(name="am", kind="alertmanager", url=url, **kw),
                       AlertsSettings(public_url=PUBLIC, timezone="Europe/Tallinn"))
    assert isinstance(ch, AlertmanagerChannel)
    return ch


def parse_time(text: str) -> float:
    # Alertmanager answers with nanoseconds; fromisoformat takes at most microseconds
    text = re.sub(r"(\.\d{6})\d+", r"\1", text).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


def by_call(alerts: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {a["labels"].get("call_id", ""): a for a in alerts}


async def test_an_alert_appears_with_its_labels_and_annotations_and_no_number_in_labels():
    async with alertmanager() as am:
        ch = channel(am.url)
        assert ch.resolves is True
        alert = make_alert()
        await ch.send(notice(alert))
        (got,) = await am.wait_alerts(lambda a: len(a) == 1)
        await ch.aclose()
    assert got["labels"] == {"alertname": "OnechanceLostCaller", "severity": "critical", "pbx": "main",
                             "queue": "support", "kind": "abandoned", "call_id": "1714630401.1207"}
    for value in got["labels"].values():
        assert not any(d in value for d in NUMBER_DIGITS), f"a caller number in a label: {value}"
    ann = got["annotations"]
    assert ann["summary"] == "Lost caller in support: abandoned"
    assert ann["description"] == ("Lost caller +372 5123 4567 (Jaan Kivi): abandoned after 42 s in support, 09:14. "
                                  f"Call back: {PUBLIC}/callbacks")
    assert (ann["caller"], ann["caller_name"], ann["wait_seconds"]) == ("+372 5123 4567", "Jaan Kivi", "42")
    assert ann["callback_url"] == f"{PUBLIC}/callbacks"
    assert ann["call_url"] == got["generatorURL"] == f"{PUBLIC}/api/calls/1714630401.1207?pbx=main"
    assert parse_time(got["startsAt"]) == pytest.approx(T0, abs=0.001)
    assert got["status"]["state"] == "active"


async def test_masking_reaches_the_annotations():
    async with alertmanager() as am:
        ch = channel(am.url, mask_caller=True)
        await ch.send(notice(make_alert(caller_name="+37251234567")))  # a "name" that is the number
        (got,) = await am.wait_alerts(lambda a: len(a) == 1)
        await ch.aclose()
    everything = " ".join([*got["labels"].values(), *got["annotations"].values()])
    assert not any(d in everything for d in NUMBER_DIGITS), everything
    assert got["annotations"]["caller"] == "+372 512* **67" and got["annotations"]["caller_name"] == ""


async def test_kinds_have_their_alertname_and_severity():
    alerts = [make_alert("timeout", call_id="t"), make_alert("rejected", call_id="r"),
              make_alert("exited", call_id="e", exit_key="1"), make_alert("bounced", call_id="b"),
              make_alert("long_wait", call_id="w", queue="")]
    async with alertmanager() as am:
        ch = channel(am.url + "/")
        await ch.send(notice(*alerts, kind="digest"))
        got = by_call(await am.wait_alerts(lambda a: len(a) == 5))
        await ch.aclose()
    assert {k: (a["labels"]["alertname"], a["labels"]["severity"], a["labels"]["kind"]) for k, a in got.items()} == {
        "t": ("OnechanceLostCaller", "critical", "timeout"),
        "r": ("OnechanceLostCaller", "critical", "rejected"),
        "e": ("OnechanceLostCaller", "critical", "exited"),
        "b": ("OnechanceBouncedCall", "warning", "bounced"),
        "w": ("OnechanceLongWait", "warning", "long_wait"),
    }
    assert "queue" not in got["w"]["labels"], "an empty queue is left out, not an empty label"
    assert "left the queue for voicemail (key 1)" in got["e"]["annotations"]["description"]


async def test_a_repost_is_the_same_alert_and_a_resolution_resolves_it():
    async with alertmanager() as am:
        ch = channel(am.url, repeat_interval=60)
        alert, other = make_alert(), make_alert("timeout", call_id="other")
        await ch.send(notice(alert, other, kind="digest"))
        first = by_call(await am.wait_alerts(lambda a: len(a) == 2))
        ends = parse_time(first[alert.call_id]["endsAt"])
        await ch.send(notice(alert, key="repost"))  # the engine re-posts while the caller waits for a callback
        again = by_call(await am.wait_alerts(lambda a: len(a) == 2))
        assert again[alert.call_id]["fingerprint"] == first[alert.call_id]["fingerprint"]
        assert parse_time(again[alert.call_id]["endsAt"]) >= ends
        await ch.send(notice(alert, kind="resolved"))  # the caller was reached
        left = await am.wait_alerts(lambda a: alert.call_id not in by_call(a))
        assert list(by_call(left)) == ["other"], "only the resolved alert goes"
        resolved = await am.alerts(active="false", silenced="false", inhibited="false", unprocessed="false")
        assert alert.call_id not in by_call(resolved)
        await ch.aclose()


async def test_open_alerts_live_three_repeat_intervals_unless_reposted():
    async with alertmanager() as am:
        ch = channel(am.url, repeat_interval=100)
        await ch.send(notice(make_alert(decided_at=T0)))
        (got,) = await am.wait_alerts(lambda a: len(a) == 1)
        await ch.aclose()
    assert parse_time(got["endsAt"]) == pytest.approx(time.time() + 300, abs=30)


async def test_alertmanager_notifies_its_receivers_with_our_annotations_and_the_resolution():
    async with Receiver() as rx, alertmanager(webhook_url=rx.url("/am")) as am:
        ch = channel(am.url, mask_caller=True)
        alert = make_alert()
        await ch.send(notice(alert))
        await rx.wait_for(1, timeout=20)
        await ch.send(notice(alert, kind="resolved"))
        resolved = await _wait_status(rx, "resolved")
        await ch.aclose()
    firing = rx.requests[0].json()
    assert firing["status"] == "firing"
    (a,) = firing["alerts"]
    assert a["labels"]["alertname"] == "OnechanceLostCaller" and a["labels"]["call_id"] == alert.call_id
    assert a["annotations"]["description"].startswith("Lost caller +372 512* **67 (Jaan Kivi): abandoned")
    assert a["generatorURL"] == f"{PUBLIC}/api/calls/1714630401.1207?pbx=main"
    assert resolved["alerts"][0]["status"] == "resolved"
    assert resolved["alerts"][0]["labels"] == a["labels"]


async def _wait_status(rx: Receiver, status: str, timeout: float = 20.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for req in rx.requests:
            body = req.json()
            if body.get("status") == status:
                return body  # type: ignore[no-any-return]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no {status} notification from Alertmanager within {timeout} s")


async def test_a_wrong_path_is_a_permanent_failure_from_the_real_alertmanager():
    async with alertmanager() as am:
        ch = channel(am.url + "/no/such/prefix")
        with pytest.raises(DeliveryFailed) as exc:
            await ch.send(notice(make_alert()))
        await ch.aclose()
    assert exc.value.retryable is False and str(exc.value).startswith("HTTP 404")


async def test_a_stopped_alertmanager_is_retryable():
    async with alertmanager() as am:
        url = am.url
    ch = channel(url, timeout=2.0)
    with pytest.raises(DeliveryFailed) as exc:
        await ch.send(notice(make_alert()))
    await ch.aclose()
    assert exc.value.retryable and str(exc.value).startswith(f"cannot connect to {url}")


async def test_the_fixture_leaves_no_process_behind():
    async with alertmanager() as am:
        proc = am.proc
        assert proc.poll() is None
    assert proc.poll() is not None


def test_the_endpoint_is_api_v2_alerts():
    assert alerts_endpoint("http://am:9093") == "http://am:9093/api/v2/alerts"
    assert alerts_endpoint("http://host/alertmanager/") == "http://host/alertmanager/api/v2/alerts"
    assert alerts_endpoint("http://am:9093/api/v2/alerts") == "http://am:9093/api/v2/alerts"


# ---- the documented route ----------------------------------------------------------------------------------
def documented_config(tmp_path: Path, hooks: str = "https://hooks.example.com") -> Path:
    """docs/alerts.md's Alertmanager config; the Slack URL file in tmp_path, webhooks at ``hooks``."""
    text = (ROOT / "docs" / "alerts.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", text, flags=re.S) if "receivers:" in b]
    assert block.count("https://hooks.example.com") == 3
    (tmp_path / "slack.url").write_text(f"{hooks}/slack\n", encoding="utf-8")
    block = block.replace("/etc/alertmanager/slack.url", str(tmp_path / "slack.url"))
    path = tmp_path / "alertmanager.yml"
    path.write_text(block.replace("https://hooks.example.com", hooks), encoding="utf-8")
    return path


def amtool() -> str:
    path = shutil.which("amtool")
    if path is None:
        pytest.fail("amtool is not on PATH: install the Debian package prometheus-alertmanager")
    return path


def test_the_documented_route_passes_amtool_and_routes_our_alerts(tmp_path):
    config = documented_config(tmp_path)
    r = subprocess.run([amtool(), "check-config", str(config)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr
    for labels, receiver in [
        (["alertname=OnechanceLostCaller", "severity=critical", "pbx=main", "queue=support", "call_id=1795.1"],
         "callbacks"),
        (["alertname=OnechanceLongWait", "severity=warning", "pbx=main", "queue=support", "call_id=1795.2"],
         "callbacks"),
        (["alertname=OnechanceQueueLosingCallers", "severity=critical", "pbx=main", "queue=support"], "oncall"),
        (["alertname=OnechanceQueueAbandonRateHigh", "severity=warning", "pbx=main", "queue=support"], "team"),
    ]:
        r = subprocess.run([amtool(), "config", "routes", "test", f"--config.file={config}",
                            f"--verify.receivers={receiver}", *labels], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (labels, r.stdout + r.stderr)


async def test_the_documented_inhibit_rule_keeps_one_callers_alert_from_hiding_anothers(tmp_path):
    """A lost caller (critical) must not suppress another caller's long wait (warning) in the same queue, and a
    queue-wide critical alert of onechance's Prometheus rules silences the queue's warnings but never a caller's
    alert."""
    async with Receiver() as rx:
        config = documented_config(tmp_path, hooks=f"http://127.0.0.1:{rx.port}")
        async with alertmanager(config_file=config) as am:
            ch = channel(am.url)
            await ch.send(notice(make_alert("abandoned", call_id="lost"), make_alert("long_wait", call_id="waiting"),
                                 kind="digest"))
            got = by_call(await am.wait_alerts(lambda a: len(a) == 2))
            assert got["waiting"]["status"]["state"] == "active", got["waiting"]["status"]
            queue = {"pbx": "main", "queue": "support"}
            async with aiohttp.ClientSession() as s:
                rules_alerts = [
                    {"labels": {"alertname": "OnechanceQueueAbandonRateHigh", "severity": "warning", **queue}},
                    {"labels": {"alertname": "OnechanceQueueLosingCallers", "severity": "critical", **queue}},
                ]
                async with s.post(f"{am.url}/api/v2/alerts", json=rules_alerts) as resp:
                    assert resp.status == 200

            def state(alerts: list[dict], name: str) -> str:
                return next((a["status"]["state"] for a in alerts if a["labels"]["alertname"] == name), "")

            alerts = await am.wait_alerts(lambda a: state(a, "OnechanceQueueAbandonRateHigh") == "suppressed")
            got = by_call(alerts)
            assert got["waiting"]["status"]["state"] == "active" and got["lost"]["status"]["state"] == "active"
            await ch.aclose()
