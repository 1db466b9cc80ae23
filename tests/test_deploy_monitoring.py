"""deploy/prometheus, deploy/alertmanager and deploy/grafana: the files pass the real tools' checks
(promtool, amtool from the Debian packages), and they work with the real binaries on loopback:
Prometheus scrapes a running onechance, loads the rules and finds Alertmanager; Alertmanager routes
alerts by severity to the webhooks and lets a critical alert silence the warnings of the same queue.

The running checks use copies of the files in which only the compose service addresses are replaced
by loopback ports and the waits are shortened; everything else is the files as shipped.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from .daemonproc import daemon
from .test_deploy_compose import ROOT, free_port, load_yaml, tool

PROMETHEUS_YML = ROOT / "deploy" / "prometheus" / "prometheus.yml"
RULES_YML = ROOT / "deploy" / "prometheus" / "onechance-rules.yml"
ALERTMANAGER_YML = ROOT / "deploy" / "alertmanager" / "alertmanager.yml"
GRAFANA = ROOT / "deploy" / "grafana"


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=120)


# ---- the tools' own checks -------------------------------------------------------------------------------
def test_promtool_accepts_the_prometheus_config_and_its_rules():
    promtool = tool("promtool", "prometheus")
    r = run(promtool, "check", "config", str(PROMETHEUS_YML))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "1 rule files found" in r.stdout + r.stderr, "prometheus.yml must load onechance-rules.yml"
    r = run(promtool, "check", "rules", str(RULES_YML))
    assert r.returncode == 0, r.stdout + r.stderr


def test_amtool_accepts_the_alertmanager_config():
    r = run(tool("amtool", "prometheus-alertmanager"), "check-config", str(ALERTMANAGER_YML))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "pbx=main", "queue=support"], "oncall"),
        (["severity=warning", "pbx=main", "queue=support"], "team"),
        (["alertname=Other"], "default"),
    ],
)
def test_alerts_are_routed_by_severity(labels, receiver):
    r = run(tool("amtool", "prometheus-alertmanager"), "config", "routes", "test",
            f"--config.file={ALERTMANAGER_YML}", f"--verify.receivers={receiver}", *labels)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_rules_file_is_a_marked_placeholder():
    text = RULES_YML.read_text(encoding="utf-8")
    assert "PLACEHOLDER" in text and "to be filled" in text
    rules = load_yaml(text)
    assert [r["record"] for g in rules["groups"] for r in g["rules"]] == ["job:up:sum"]
    assert "up" in rules["groups"][0]["rules"][0]["expr"]


# ---- Grafana provisioning -------------------------------------------------------------------------------
def test_grafana_provisioning_points_at_the_dashboards_and_prometheus():
    ds = load_yaml((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text(encoding="utf-8"))
    assert ds["apiVersion"] == 1
    (source,) = ds["datasources"]
    assert source["type"] == "prometheus" and source["access"] == "proxy" and source["isDefault"] is True
    prom = load_yaml(PROMETHEUS_YML.read_text(encoding="utf-8"))
    assert source["jsonData"]["timeInterval"] == prom["global"]["scrape_interval"]

    providers = load_yaml((GRAFANA / "provisioning" / "dashboards" / "onechance.yml").read_text(encoding="utf-8"))
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    compose = (ROOT / "docker-compose.yml").read_text(encoding="utf-8")
    mount = re.search(r"\./deploy/grafana/dashboards:([^:\s]+)", compose)
    assert mount and provider["options"]["path"] == mount.group(1), "the provider must read the mounted dashboards"

    dashboards = sorted((GRAFANA / "dashboards").glob("*.json"))
    assert dashboards, "no dashboard JSON in deploy/grafana/dashboards"
    for path in dashboards:
        board = json.loads(path.read_text(encoding="utf-8"))
        assert board["uid"] and board["title"] and isinstance(board["panels"], list)
        uids = {t["datasource"]["uid"] for p in board["panels"] for t in p.get("targets", []) if "datasource" in t}
        assert uids <= {source["uid"]}, f"{path.name} uses datasources {uids}, provisioned: {source['uid']}"
    placeholder = json.loads((GRAFANA / "dashboards" / "onechance.json").read_text(encoding="utf-8"))
    assert "PLACEHOLDER" in placeholder["description"], "the dashboard is a placeholder until the metrics settle"


# ---- the real binaries on loopback ----------------------------------------------------------------------
def rewrite_targets(config: Any, ports: dict[str, int]) -> Any:
    """Every "service:port" target of prometheus.yml -> 127.0.0.1:<the test's port for that service>."""

    def fix(target: str) -> str:
        host, _, _port = target.rpartition(":")
        assert host in ports, f"prometheus.yml target {target}: no such service in this test"
        return f"127.0.0.1:{ports[host]}"

    for job in config["scrape_configs"]:
        for sc in job["static_configs"]:
            sc["targets"] = [fix(t) for t in sc["targets"]]
    for am in config["alerting"]["alertmanagers"]:
        for sc in am["static_configs"]:
            sc["targets"] = [fix(t) for t in sc["targets"]]
    return config


@asynccontextmanager
async def process(argv: list[str], ready_url: str, timeout: float = 30.0) -> AsyncIterator[subprocess.Popen[bytes]]:
    """Start a server process, wait until ready_url answers 200 (bounded), stop it at the end."""
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as s:
            while True:
                if proc.poll() is not None:
                    log.seek(0)
                    raise AssertionError(f"{argv[0]} exited {proc.returncode}: {log.read().decode()[-2000:]}")
                try:
                    async with s.get(ready_url) as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    log.seek(0)
                    raise AssertionError(f"{argv[0]} not ready after {timeout} s: {log.read().decode()[-2000:]}")
                await asyncio.sleep(0.1)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        log.close()


def alertmanager_argv(config: Path, port: int, storage: Path) -> list[str]:
    return [tool("prometheus-alertmanager", "prometheus-alertmanager"), f"--config.file={config}",
            f"--storage.path={storage}", f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="]


async def test_alertmanager_routes_to_the_webhooks_and_inhibits_warnings_under_a_critical(tmp_path):
    """Two alerts about main/support (critical + warning) and a warning about main/sales: the critical
    goes to the oncall webhook, the sales warning to the team webhook, the support warning is suppressed
    by the critical and sent nowhere."""
    received: list[tuple[str, dict[str, Any]]] = []

    async def hook(request: web.Request) -> web.Response:
        received.append((request.match_info["name"], await request.json()))
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/onechance/{name}", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    hook_port = free_port()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()

    text = ALERTMANAGER_YML.read_text(encoding="utf-8")
    assert text.count("https://hooks.example.com/") == 3
    text = text.replace("https://hooks.example.com/", f"http://127.0.0.1:{hook_port}/")
    text = re.sub(r"group_wait: \d+s", "group_wait: 1s", text)  # the only timing change
    config = tmp_path / "alertmanager.yml"
    config.write_text(text, encoding="utf-8")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    try:
        async with process(alertmanager_argv(config, port, tmp_path / "am"), f"{base}/-/ready"), \
                aiohttp.ClientSession() as s:
            alerts = [
                {"labels": {"alertname": "QueueLosingCallers", "severity": "critical", "pbx": "main",
                            "queue": "support"}},
                {"labels": {"alertname": "AbandonRateHigh", "severity": "warning", "pbx": "main",
                            "queue": "support"}},
                {"labels": {"alertname": "AbandonRateHigh", "severity": "warning", "pbx": "main",
                            "queue": "sales"}},
            ]
            async with s.post(f"{base}/api/v2/alerts", json=alerts) as resp:
                assert resp.status == 200, await resp.text()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and {n for n, _ in received} != {"oncall", "team"}:
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # anything else would have come with them
            async with s.get(f"{base}/api/v2/alerts") as resp:
                state = {(a["labels"]["severity"], a["labels"]["queue"]): a["status"] for a in await resp.json()}
    finally:
        await runner.cleanup()
    assert state[("critical", "support")]["state"] == "active"
    assert state[("warning", "support")]["state"] == "suppressed"
    assert state[("warning", "support")]["inhibitedBy"], "the critical alert should inhibit the warning"
    assert state[("warning", "sales")]["state"] == "active"
    sent = {(name, a["labels"]["severity"], a["labels"]["queue"]) for name, body in received for a in body["alerts"]}
    assert sent == {("oncall", "critical", "support"), ("team", "warning", "sales")}


async def test_prometheus_scrapes_onechance_loads_the_rules_and_finds_alertmanager(tmp_path):
    prometheus = tool("prometheus", "prometheus")
    am_port, prom_port = free_port(), free_port()
    am_config = tmp_path / "alertmanager.yml"
    am_config.write_text(ALERTMANAGER_YML.read_text(encoding="utf-8"), encoding="utf-8")
    async with daemon(command="demo", ONECHANCE_DEMO__SPEED="0") as d:
        config = load_yaml(PROMETHEUS_YML.read_text(encoding="utf-8"))
        config = rewrite_targets(config, {"onechance": d.port, "alertmanager": am_port, "prometheus": prom_port})
        config["global"]["scrape_interval"] = config["global"]["evaluation_interval"] = "1s"  # the only timing change
        (tmp_path / "prometheus.yml").write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
        (tmp_path / "onechance-rules.yml").write_text(RULES_YML.read_text(encoding="utf-8"), encoding="utf-8")
        base = f"http://127.0.0.1:{prom_port}"
        argv = [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}"]
        async with process(alertmanager_argv(am_config, am_port, tmp_path / "am"),
                           f"http://127.0.0.1:{am_port}/-/ready"), \
                process(argv, f"{base}/-/ready"), aiohttp.ClientSession() as s:
            deadline = time.monotonic() + 30
            health: dict[str, str] = {}
            recorded: dict[str, float] = {}
            managers: list[str] = []
            while time.monotonic() < deadline:
                async with s.get(f"{base}/api/v1/targets") as resp:
                    targets = (await resp.json())["data"]["activeTargets"]
                health = {t["labels"]["job"]: t["health"] for t in targets}
                async with s.get(f"{base}/api/v1/query", params={"query": "job:up:sum"}) as resp:
                    result = (await resp.json())["data"]["result"]
                recorded = {r["metric"]["job"]: float(r["value"][1]) for r in result}
                async with s.get(f"{base}/api/v1/alertmanagers") as resp:
                    managers = [a["url"] for a in (await resp.json())["data"]["activeAlertmanagers"]]
                if set(health.values()) == {"up"} and recorded.get("onechance") == 1.0 and managers:
                    break
                await asyncio.sleep(0.2)
            async with s.get(f"{base}/api/v1/query", params={"query": 'count({job="onechance"})'}) as resp:
                series = (await resp.json())["data"]["result"]
            async with s.get(f"{base}/api/v1/rules") as resp:
                groups = (await resp.json())["data"]["groups"]
        await d.stop()
    assert health == {"onechance": "up", "prometheus": "up", "alertmanager": "up"}, health
    assert recorded.get("onechance") == 1.0, recorded
    assert managers == [f"http://127.0.0.1:{am_port}/api/v2/alerts"]
    assert series and float(series[0]["value"][1]) > 10, "onechance's /metrics should yield many series"
    assert [g["name"] for g in groups] == [g["name"] for g in load_yaml(RULES_YML.read_text())["groups"]]
    assert all(r["health"] == "ok" for g in groups for r in g["rules"])
