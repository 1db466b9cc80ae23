"""The metric names and labels documented in docs/metrics.md are exactly what ``/metrics`` exports: dashboards,
recording rules and alerts depend on them."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from .livehelp import api_for, fake_pbx, running, settings_for, settled

DOC = Path(__file__).parent.parent / "docs" / "metrics.md"
ROW = re.compile(r"^\| `(onechance_[a-z_]+)` \| (counter|gauge|histogram) \| ([a-z_, ]*?) ?\|")


def documented() -> dict[str, tuple[str, frozenset[str]]]:
    """Metric family -> (type, labels) from the metrics table of the docs."""
    out = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = ROW.match(line)
        if m:
            name, kind, labels = m.groups()
            family = name.removesuffix("_total") if kind == "counter" else name
            out[family] = (kind, frozenset(x.strip() for x in labels.split(",") if x.strip()))
    return out


def test_the_docs_have_a_metrics_table():
    assert len(documented()) >= 45


async def test_every_documented_metric_is_exported_with_its_labels_and_nothing_else():
    docs = documented()
    async with fake_pbx("bounced") as pbx, running(settings_for([("p", pbx.port)])) as app:
        await settled(app, "p", pbx)
        async with api_for(app) as api:
            status, text = await api.get("/metrics")
            assert status == 200
    exported: dict[str, tuple[str, set[str]]] = {}
    for family in text_string_to_metric_families(text):
        if not family.name.startswith("onechance_"):
            continue
        labels: set[str] = set()
        for sample in family.samples:
            labels |= set(sample.labels) - {"le"}
        exported[family.name] = (family.type, labels)
    undocumented = sorted(set(exported) - set(docs))
    assert undocumented == [], f"exported but not in docs/metrics.md: {undocumented}"
    for name, (kind, labels) in docs.items():
        assert name in exported, f"documented but not exported: {name}"
        got_kind, got_labels = exported[name]
        assert got_kind == kind, (name, got_kind, kind)
        assert got_labels <= labels, (name, got_labels, labels)  # a family with no sample yet has no labels
        if got_labels:
            assert got_labels == labels, (name, got_labels, labels)


async def test_every_known_queue_and_sink_starts_at_zero():
    """A quiet queue shows 0, not "no data": the callback figures of a configured queue nobody called, and every
    sink's error counter, exist from the start."""
    async with fake_pbx("answered") as pbx, running(settings_for([("p", pbx.port)],
                                                                 queues={"quiet": {}})) as app:
        await settled(app, "p", pbx)
        async with api_for(app) as api:
            metrics = await api.metrics()
    for name in ("onechance_callbacks_pending", "onechance_callback_oldest_seconds",
                 "onechance_time_to_callback_seconds_count"):
        assert metrics.get((name, (("pbx", "p"), ("queue", "quiet")))) == 0, name
    for how in ("inbound", "outbound", "manual", "expired"):
        labels = (("how", how), ("pbx", "p"), ("queue", "quiet"))
        assert metrics.get(("onechance_callbacks_resolved_total", labels)) == 0
    sinks = {dict(labels)["sink"] for (name, labels) in metrics if name == "onechance_sink_errors_total"}
    assert {"StoreSink", "Worklist", "AlertRaiser", "CallMetrics"} <= sinks
    assert all(v == 0 for (name, _), v in metrics.items() if name == "onechance_sink_errors_total")
