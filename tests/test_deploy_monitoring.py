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
from .servers import process as serve
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


#: the receiver of deploy/alertmanager/alertmanager.yml for each severity of the rules
RECEIVER = {"critical": "oncall", "warning": "team"}


def routed_to(*labels: str) -> str:
    r = run(tool("amtool", "prometheus-alertmanager"), "config", "routes", "test", f"--config.file={ALERTMANAGER_YML}",
            *labels)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout.strip()


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "pbx=main", "queue=support"], "oncall"),
        (["severity=warning", "pbx=main", "queue=support"], "team"),
        (["alertname=Other"], "default"),
        # onechance's own per-call alerts (docs/alerts.md: the alertmanager channel): to the callback team,
        # never paged, whatever their severity
        (["alertname=OnechanceLostCaller", "severity=critical", "pbx=main", "queue=support", "kind=abandoned",
          "call_id=1795368840.142"], "callbacks"),
        (["alertname=OnechanceLongWait", "severity=warning", "pbx=main", "queue=support", "kind=long_wait",
          "call_id=1795368840.142"], "callbacks"),
    ],
)
def test_alerts_are_routed_by_severity(labels, receiver):
    assert routed_to(*labels) == receiver


def rules() -> list[dict[str, Any]]:
    return [r for g in load_yaml(RULES_YML.read_text(encoding="utf-8"))["groups"] for r in g["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [r for r in rules() if "alert" in r]


def test_every_alert_of_the_rules_reaches_the_receiver_of_its_severity():
    assert len(alerts()) >= 8
    for a in alerts():
        severity = a["labels"]["severity"]
        assert routed_to(f"alertname={a['alert']}", f"severity={severity}", "pbx=main", "queue=support") == \
            RECEIVER[severity], a["alert"]


def test_promtool_unit_tests_of_the_rules_pass():
    """deploy/prometheus/onechance-rules.test.yml: every recording rule's value and every alert firing (and not
    firing: pending, too few calls, another queue), with its labels and rendered annotations."""
    tests = RULES_YML.with_name("onechance-rules.test.yml")
    r = run(tool("promtool", "prometheus"), "test", "rules", str(tests))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout
    tested = set(re.findall(r"alertname: (\w+)", tests.read_text(encoding="utf-8")))
    assert tested == {a["alert"] for a in alerts()}, "every alert needs a promtool test"
    text = tests.read_text(encoding="utf-8")
    untested = [r["record"] for r in rules() if "record" in r and r["record"] not in text]
    assert untested == [], f"recording rules without a promtool test: {untested}"


def test_the_rules_follow_the_monitoring_mixin_conventions():
    documented = metrics_table()
    for r in rules():
        if "record" in r:
            # level:metric:operations, the metric named after what it aggregates
            assert re.fullmatch(r"pbx_queue:onechance_[a-z0-9_]+:[a-z0-9_]+", r["record"]), r["record"]
        else:
            assert re.fullmatch(r"Onechance(?:[A-Z][a-z0-9]*)+", r["alert"]), r["alert"]
            assert r["labels"]["severity"] in RECEIVER, r["alert"]
            assert set(r["annotations"]) >= {"summary", "description"}, r["alert"]
            assert r.get("for"), f"{r['alert']}: no `for`"
        for name in re.findall(r"(?<![:\w])(onechance_[a-z_]+)", r["expr"]):
            family = re.sub(r"_(total|sum|count|bucket)$", "", name)
            assert family in documented or name in documented, f"{name} is not in docs/metrics.md"


def test_docs_monitoring_lists_every_alert_with_its_severity_and_for():
    doc = (ROOT / "docs" / "monitoring.md").read_text(encoding="utf-8")
    table = {m.group(1): (m.group(2), m.group(3))
             for m in re.finditer(r"^\| `(Onechance\w+)` \| (\w+) \| .+ \| (\w+) \|$", doc, re.M)}
    assert table == {a["alert"]: (a["labels"]["severity"], a["for"]) for a in alerts()}
    documented = set()
    for m in re.finditer(r"^\| `(onechance_\w+):(\w+)`((?:, `:\w+`)*) \|", doc, re.M):
        for op in [m.group(2), *re.findall(r"`:(\w+)`", m.group(3))]:
            documented.add(f"pbx_queue:{m.group(1)}:{op}")
    assert documented == {r["record"] for r in rules() if "record" in r}


def metrics_table() -> set[str]:
    """The metric families of docs/metrics.md's table (counters without _total)."""
    out = set()
    for m in re.finditer(r"^\| `(onechance_[a-z_]+)` \| (counter|gauge|histogram) \|",
                         (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8"), re.M):
        out.add(m.group(1).removesuffix("_total") if m.group(2) == "counter" else m.group(1))
    return out


def cookbook() -> dict[str, str]:
    """docs/metrics.md's PromQL cookbook: figure (the text before any parenthesis) -> query."""
    text = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8").split("## PromQL cookbook", 1)[1]
    out = {}
    for line in text.splitlines():
        m = re.match(r"^\| (.+) \| `([^`]+)` \|$", line)
        if m:
            out[m.group(1).split(" (")[0].strip()] = m.group(2).replace("\\|", "|")
    return out


@pytest.mark.parametrize(
    ("record", "figure"),
    [
        ("pbx_queue:onechance_queue_offered:increase{}", "offered"),
        ("pbx_queue:onechance_queue_answered:increase{}", "answered"),
        ("pbx_queue:onechance_queue_service_level:ratio{}", "service level"),
        ("pbx_queue:onechance_queue_service_level2:ratio{}", "service level 2"),
        ("pbx_queue:onechance_queue_abandon_rate:ratio{}", "abandon rate"),
        ("pbx_queue:onechance_queue_asa_seconds:mean{}", "ASA"),
        ("pbx_queue:onechance_queue_aht_seconds:mean{}", "AHT"),
    ],
)
def test_the_recording_rules_are_the_documented_queries(record, figure):
    """One definition: each recorded figure is docs/metrics.md's cookbook query, per PBX and queue."""
    exprs = {r["record"]: " ".join(r["expr"].split()) for r in rules() if "record" in r}
    documented = cookbook()[figure].replace("by (queue)", "by (pbx, queue)")
    for window in ("5m", "1h"):
        assert exprs[record.format(window)] == " ".join(documented.replace("[1h]", f"[{window}]").split())


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
        # the panels use the dashboard's data source variable, whose default is the provisioned Prometheus
        uids = {t["datasource"]["uid"] for p in board["panels"] for t in p.get("targets", []) if "datasource" in t}
        assert uids == {"${datasource}"}, f"{path.name} uses datasources {uids}"
        (var,) = [v for v in board["templating"]["list"] if v["name"] == "datasource"]
        assert var["type"] == "datasource" and var["query"] == source["type"]
        assert var["current"]["value"] == source["uid"]


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
    with tempfile.TemporaryDirectory(prefix="onechance-proc-") as tmp:
        async with serve(argv, ready_url, Path(tmp) / "log", timeout) as proc:
            yield proc


class Prometheus:
    """A real Prometheus on loopback (see :func:`prometheus`): its HTTP API, answers checked."""

    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base

    async def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/<path>``: its ``data``; a failed query (parse error...) raises with Prometheus' error."""
        async with self.session.get(f"{self.base}/api/v1/{path}", params=params) as resp:
            body = await resp.json()
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    async def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """An instant query (at ``at``, epoch seconds, or now): the result's series."""
        params = {"query": expr} if at is None else {"query": expr, "time": repr(at)}
        data = await self.api("query", **params)
        assert data["resultType"] == "vector", (expr, data["resultType"])
        return list(data["result"])

    async def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        data = await self.api("query_range", query=expr, start=repr(start), end=repr(end), step=repr(step))
        return list(data["result"])

    async def values(self, expr: str, by: str, at: float | None = None) -> dict[str, float]:
        """An instant query's values keyed by one label."""
        return {r["metric"].get(by, ""): float(r["value"][1]) for r in await self.query(expr, at)}

    async def wait_for(self, expr: str, what: str, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Poll ``expr`` until it returns something (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            result = await self.query(expr)
            if result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what} ({expr})")
            await asyncio.sleep(0.2)


def scrape_config(targets: dict[str, int], *, interval: str = "1s", rules: bool = True) -> dict[str, Any]:
    """A Prometheus configuration scraping ``job -> 127.0.0.1:port`` every ``interval``, evaluating
    onechance-rules.yml (copied next to it) as often."""
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": ["onechance-rules.yml"] if rules else [],
        "scrape_configs": [{"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                           for job, port in targets.items()],
    }


@asynccontextmanager
async def prometheus(workdir: Path, config: dict[str, Any]) -> AsyncIterator[Prometheus]:
    """The Debian package's Prometheus with ``config`` (and the shipped rules file beside it) on a free
    loopback port, its TSDB in ``workdir``; stopped on leaving."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "prometheus.yml").write_text(json.dumps(config), encoding="utf-8")  # JSON is YAML
    (workdir / "onechance-rules.yml").write_text(RULES_YML.read_text(encoding="utf-8"), encoding="utf-8")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    argv = [tool("prometheus", "prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"]
    async with process(argv, f"{base}/-/ready"), aiohttp.ClientSession() as session:
        yield Prometheus(session, base)


def alertmanager_argv(config: Path, port: int, storage: Path) -> list[str]:
    return [tool("prometheus-alertmanager", "prometheus-alertmanager"), f"--config.file={config}",
            f"--storage.path={storage}", f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="]


async def test_alertmanager_routes_to_the_webhooks_and_inhibits_warnings_under_a_critical(tmp_path):
    """The rules' alerts and onechance's per-call alerts, posted to the real Alertmanager with the shipped
    configuration: criticals go to the oncall webhook, warnings to the team webhook, per-call alerts to the
    callbacks webhook; a queue's critical silences that queue's warnings, an AMI link down silences the
    warnings of its PBX; per-call alerts neither silence nor are silenced."""
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
    assert text.count("https://hooks.example.com/") == 4
    text = text.replace("https://hooks.example.com/", f"http://127.0.0.1:{hook_port}/")
    text = re.sub(r"group_wait: \d+s", "group_wait: 1s", text)  # the only timing change
    config = tmp_path / "alertmanager.yml"
    config.write_text(text, encoding="utf-8")
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    def alert(name: str, severity: str, pbx: str, queue: str = "", **extra: str) -> dict[str, Any]:
        labels = {"alertname": name, "severity": severity, "pbx": pbx, **({"queue": queue} if queue else {}), **extra}
        return {"labels": labels, "annotations": {"summary": name}}

    posted = [
        alert("OnechanceQueueLosingCallers", "critical", "main", "support"),
        alert("OnechanceQueueAbandonRateHigh", "warning", "main", "support"),  # silenced by the critical
        alert("OnechanceQueueAbandonRateHigh", "warning", "main", "sales"),
        alert("OnechanceLostCaller", "critical", "main", "sales", kind="abandoned", call_id="1795368840.142"),
        alert("OnechanceLongWait", "warning", "main", "support", kind="long_wait", call_id="1795368850.150"),
        alert("OnechanceAmiLinkDown", "critical", "backup"),
        alert("OnechanceQueueServiceLevelLow", "warning", "backup", "billing"),  # silenced: its PBX is not seen
    ]
    expected = {
        ("oncall", "OnechanceQueueLosingCallers", "main", "support"),
        ("team", "OnechanceQueueAbandonRateHigh", "main", "sales"),
        ("callbacks", "OnechanceLostCaller", "main", "sales"),
        ("callbacks", "OnechanceLongWait", "main", "support"),
        ("oncall", "OnechanceAmiLinkDown", "backup", ""),
    }

    def sent() -> set[tuple[str, str, str, str]]:
        return {(name, a["labels"]["alertname"], a["labels"]["pbx"], a["labels"].get("queue", ""))
                for name, body in received for a in body["alerts"]}

    try:
        async with process(alertmanager_argv(config, port, tmp_path / "am"), f"{base}/-/ready"), \
                aiohttp.ClientSession() as s:
            async with s.post(f"{base}/api/v2/alerts", json=posted) as resp:
                assert resp.status == 200, await resp.text()
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and sent() != expected:
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)  # anything else would have come with them
            async with s.get(f"{base}/api/v2/alerts") as resp:
                state = {(a["labels"]["alertname"], a["labels"]["pbx"], a["labels"].get("queue", "")): a["status"]
                         for a in await resp.json()}
    finally:
        await runner.cleanup()
    assert len(state) == len(posted)
    suppressed = {key for key, st in state.items() if st["state"] == "suppressed"}
    assert suppressed == {("OnechanceQueueAbandonRateHigh", "main", "support"),
                          ("OnechanceQueueServiceLevelLow", "backup", "billing")}
    assert all(state[key]["inhibitedBy"] for key in suppressed)
    assert sent() == expected


async def test_prometheus_scrapes_onechance_loads_the_rules_and_finds_alertmanager(tmp_path):
    """prometheus.yml as shipped (targets moved to loopback, 1 s intervals) with `onechance demo`: every target
    up, the rules loaded and healthy, the recording rules fed by the demo's calls, Alertmanager found."""
    prometheus = tool("prometheus", "prometheus")
    am_port, prom_port = free_port(), free_port()
    am_config = tmp_path / "alertmanager.yml"
    am_config.write_text(ALERTMANAGER_YML.read_text(encoding="utf-8"), encoding="utf-8")
    async with daemon("--speed", "20", command="demo") as d:
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
            prom = Prometheus(s, base)
            deadline = time.monotonic() + 60
            health: dict[str, str] = {}
            offered: dict[str, float] = {}
            managers: list[str] = []
            while time.monotonic() < deadline:
                targets = (await prom.api("targets"))["activeTargets"]
                health = {t["labels"]["job"]: t["health"] for t in targets}
                offered = await prom.values('pbx_queue:onechance_queue_offered:increase5m{pbx="demo"}', "queue")
                managers = [a["url"] for a in (await prom.api("alertmanagers"))["activeAlertmanagers"]]
                if set(health.values()) == {"up"} and sum(offered.values()) > 0 and managers:
                    break
                await asyncio.sleep(0.2)
            series = await prom.query('count({job="onechance"})')
            groups = (await prom.api("rules"))["groups"]
        await d.stop()
    assert health == {"onechance": "up", "prometheus": "up", "alertmanager": "up"}, health
    assert sum(offered.values()) > 0, offered
    assert managers == [f"http://127.0.0.1:{am_port}/api/v2/alerts"]
    assert series and float(series[0]["value"][1]) > 10, "onechance's /metrics should yield many series"
    assert sorted(g["name"] for g in groups) == sorted(g["name"] for g in load_yaml(RULES_YML.read_text())["groups"])
    assert sum(len(g["rules"]) for g in groups) == len(rules())
    assert all(r["health"] == "ok" and not r.get("lastError") for g in groups for r in g["rules"])
