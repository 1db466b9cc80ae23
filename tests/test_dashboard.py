"""deploy/grafana/dashboards/onechance.json, tested for real: a Prometheus (Debian package) scrapes
``onechance demo`` every second, and every query of every panel -- with the dashboard's variables substituted
the way Grafana does -- must parse and return data (a finite value), as must the variables' own queries.

Grafana itself is not installed here: the JSON's structure is checked directly (ids, grid, data source,
variables), its queries against the documented metrics and the PromQL cookbook of docs/metrics.md.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from pathlib import Path
from typing import Any

from .daemonproc import daemon
from .test_deploy_monitoring import Prometheus, cookbook, metrics_table, prometheus, scrape_config

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "onechance.json"
SCRAPE = 1  # seconds: the test's scrape interval
STEP = 2  # seconds: the range queries' step (Grafana's $__interval)
RATE_INTERVAL = f"{max(STEP + SCRAPE, 4 * SCRAPE)}s"  # Grafana's $__rate_interval for that step and scrape


def board() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def all_panels(b: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    out = []
    for p in b["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def query_panels(b: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in all_panels(b) if p.get("targets")]


def variables(b: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in b["templating"]["list"]}


def variable_query(v: dict[str, Any]) -> str:
    q = v["query"]
    return str(q["query"] if isinstance(q, dict) else q)


# ---- the JSON --------------------------------------------------------------------------------------------
def test_the_dashboard_is_well_formed():
    b = board()
    assert b["uid"] == "onechance" and b["title"] and b["schemaVersion"] >= 36
    panels = all_panels(b)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells: dict[tuple[int, int], str] = {}
    for p in panels:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{p['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = p["title"]
    for p in query_panels(b):
        assert p["title"] and p.get("description"), f"panel {p['id']} needs a title and a description"
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        for t in p["targets"]:
            assert t["datasource"] == p["datasource"] and t["expr"].strip(), p["title"]
        assert len({t["refId"] for t in p["targets"]}) == len(p["targets"]), p["title"]
    v = variables(b)
    assert v["datasource"]["type"] == "datasource" and v["datasource"]["query"] == "prometheus"
    assert v["pbx"]["type"] == v["queue"]["type"] == "query"
    assert variable_query(v["pbx"]).startswith("label_values(") and "$pbx" in variable_query(v["queue"])
    assert v["window"]["type"] == "custom" and v["window"]["current"]["value"] in v["window"]["query"].split(",")


def test_the_panels_query_documented_metrics_and_the_cookbook_definitions():
    documented = metrics_table()
    exprs = {p["title"]: [t["expr"] for t in p["targets"]] for p in query_panels(board())}
    for title, queries in exprs.items():
        for expr in queries:
            for name in re.findall(r"(?<![:\w])(onechance_[a-z_]+)", expr):
                family = re.sub(r"_(total|sum|count|bucket)$", "", name)
                assert family in documented or name in documented, f"{title}: {name} is not in docs/metrics.md"
    # the figures over the selected range are the cookbook's queries, filtered by the variables
    book = cookbook()

    def plain(expr: str) -> str:
        expr = expr.replace('pbx=~"$pbx", queue=~"$queue", ', "").replace('{pbx=~"$pbx", queue=~"$queue"}', "")
        expr = expr.replace('pbx=~"$pbx", first_queue=~"$queue"', "").replace("{}", "")
        return " ".join(expr.replace("[$__range]", "[1h]").split())

    for title, figure in (("Service level", "service level"), ("Service level 2", "service level 2"),
                          ("ASA", "ASA"), ("Abandon rate", "abandon rate"), ("Lost callers", "lost callers"),
                          ("Bounced calls", "bounced calls")):
        assert plain(exprs[title][0]) == " ".join(book[figure].split()), title
    assert plain(exprs["Recovery rate"][0]) == " ".join(book["recovery rate"].replace("[1d]", "[1h]").split())
    assert plain(exprs["Alerts not getting through"][0]) == " ".join(
        book["alerts not getting through"].replace("[15m]", "[1h]").split())


# ---- every panel against a real Prometheus scraping onechance demo --------------------------------------
def grafana_regex(values: list[str]) -> str:
    """A multi-value variable as Grafana interpolates it into a Prometheus regex matcher (All = every value)."""
    escaped = [re.sub(r"([\\^$.|?*+()\[\]{}])", r"\\\1", v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def substitute(expr: str, values: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        assert name in values, f"unknown variable ${name} in {expr}"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


async def label_values(prom: Prometheus, query: str) -> list[str]:
    """Grafana's ``label_values(selector, label)``: the label's values on the matching series."""
    m = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
    assert m, query
    return sorted(await prom.api(f"label/{m.group(2)}/values", **{"match[]": m.group(1)}))


def finite(values: list[Any]) -> bool:
    return any(math.isfinite(float(v[1])) for v in values)


async def evaluate(prom: Prometheus, b: dict[str, Any], start: float) -> tuple[dict[str, list[str]], list[str]]:
    """The variables' values, and the panel queries that return no data now (title, query, why)."""
    now = time.time()
    v = variables(b)
    values = {"__range": f"{math.ceil(now - start)}s", "__rate_interval": RATE_INTERVAL, "__interval": f"{STEP}s",
              "window": v["window"]["current"]["value"]}
    options: dict[str, list[str]] = {}
    for name in ("pbx", "queue"):  # in order: queue's query uses $pbx
        options[name] = await label_values(prom, substitute(variable_query(v[name]), values))
        if not options[name]:
            return options, [f"variable {name}: no values"]
        values[name] = grafana_regex(options[name])
    missing = []
    for p in query_panels(b):
        for t in p["targets"]:
            expr = substitute(t["expr"], values)
            if t.get("instant"):
                result = await prom.query(expr, now)
                ok = any(finite([r["value"]]) for r in result)
            else:
                result = await prom.query_range(expr, start, now, STEP)
                ok = any(finite(r["values"]) for r in result)
            if not ok:
                missing.append(f"{p['title']} [{t['refId']}]: {expr} -> {'NaN only' if result else 'no data'}")
    return options, missing


async def test_every_panel_query_returns_data_from_onechance_demo(tmp_path):
    b = board()
    async with daemon("--speed", "20", command="demo") as d:
        async with prometheus(tmp_path / "prom", scrape_config({"onechance": d.port}, interval=f"{SCRAPE}s")) as prom:
            start = time.time()
            await prom.wait_for('up{job="onechance"} == 1', "the first scrape of onechance demo")
            # the demo needs time to produce every kind of data: answered, abandoned and bounced calls, lost
            # callers reached again (the time to callback), alert deliveries
            deadline = time.monotonic() + 150
            while True:
                options, missing = await evaluate(prom, b, start)
                if not missing or time.monotonic() > deadline:
                    break
                await asyncio.sleep(2)
        await d.stop()
    assert missing == [], "panels without data:\n" + "\n".join(missing)
    assert options["pbx"] == ["demo"]
    assert len(options["queue"]) >= 2
