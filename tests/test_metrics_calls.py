"""Metrics on a fresh registry each time: what one finished call adds, per-queue thresholds, the live
collector, and no global registry."""

from __future__ import annotations

import asyncio
import time

import prometheus_client
from prometheus_client import CollectorRegistry

from onechance.ami.items import AmiEvent
from onechance.ami.parser import AmiFramer
from onechance.config import Settings
from onechance.journey import CallPolicy, JourneyTracker, QueueRule
from onechance.metrics import CallMetrics, LiveCollector, build_info
from onechance.pipeline import PbxPipeline
from onechance.replay import replay_files

from .truthcheck import DATA


def _replay(name: str, registry: CollectorRegistry, policy: CallPolicy | None = None,
            service_level: float = 20.0) -> CallMetrics:
    policy = policy or CallPolicy.with_defaults(service_level_seconds=service_level)
    metrics = CallMetrics(registry, policy)
    replay_files([str(DATA / f"{name}.ami")], policy, pbx="x", on_update=metrics.handle)
    return metrics


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, {"pbx": "x", **labels}) or 0.0


def test_a_short_abandon():
    reg = CollectorRegistry()
    _replay("short_abandon", reg)
    assert _value(reg, "onechance_calls_total", queue="support", outcome="abandoned") == 1
    assert _value(reg, "onechance_queue_abandoned_total", queue="support", short="true") == 1
    assert _value(reg, "onechance_queue_abandoned_total", queue="support", short="false") == 0
    assert _value(reg, "onechance_lost_calls_total", queue="support", outcome="abandoned") == 0
    assert _value(reg, "onechance_queue_wait_seconds_count", queue="support") == 1
    assert _value(reg, "onechance_queue_wait_seconds_bucket", queue="support", le="5.0") == 1


def test_the_short_abandon_threshold_is_per_queue():
    reg = CollectorRegistry()
    policy = CallPolicy(QueueRule(), {"support": QueueRule(short_abandon_seconds=1.0)})
    _replay("short_abandon", reg, policy)
    assert _value(reg, "onechance_queue_abandoned_total", queue="support", short="false") == 1
    assert _value(reg, "onechance_lost_calls_total", queue="support", outcome="abandoned") == 1


def test_transfers_count_under_the_queue_the_caller_came_from():
    reg = CollectorRegistry()
    _replay("bounced", reg)
    (j,) = replay_files([str(DATA / "bounced.ami")]).journeys
    assert [t.kind for t in j.transfers] == ["blind", "blind", "blind"]
    assert _value(reg, "onechance_transfers_total", queue="support", kind="blind") == 1
    assert _value(reg, "onechance_transfers_total", queue="sales", kind="blind") == 1
    assert _value(reg, "onechance_transfers_total", queue="billing", kind="blind") == 1
    assert _value(reg, "onechance_bounced_calls_total", queue="support") == 1
    assert _value(reg, "onechance_calls_total", queue="support", outcome="answered") == 1


def test_service_level_per_answered_visit():
    reg = CollectorRegistry()
    _replay("ring_no_answer", reg, service_level=20.0)  # answered after ~16 s
    assert _value(reg, "onechance_queue_answered_total", queue="support", within_service_level="true") == 1
    reg = CollectorRegistry()
    _replay("ring_no_answer", reg, service_level=10.0)
    assert _value(reg, "onechance_queue_answered_total", queue="support", within_service_level="false") == 1


def test_recovered_and_rejected():
    reg = CollectorRegistry()
    _replay("abandon_then_callback", reg)
    assert _value(reg, "onechance_recovered_calls_total", queue="support") == 1
    reg = CollectorRegistry()
    _replay("join_empty", reg)
    assert _value(reg, "onechance_calls_total", queue="empty", outcome="rejected") == 1
    assert _value(reg, "onechance_lost_calls_total", queue="empty", outcome="rejected") == 1
    assert _value(reg, "onechance_queue_wait_seconds_count", queue="empty") == 0  # never queued


def test_calls_closed_by_a_lost_link_are_unresolved_not_outcomes():
    reg = CollectorRegistry()
    metrics = CallMetrics(reg)
    tracker = JourneyTracker(pbx="x")
    msgs = AmiFramer().feed((DATA / "answered.ami").read_bytes())
    for msg in msgs[: len(msgs) // 2]:
        for u in tracker.feed(msg):
            metrics.handle(u)
    for u in tracker.close_all(2e9, "link_lost"):
        metrics.handle(u)
    assert _value(reg, "onechance_calls_unresolved_total", reason="link_lost") == 1
    assert reg.get_sample_value("onechance_calls_total", {"pbx": "x", "queue": "support",
                                                          "outcome": "answered"}) is None


def test_live_collector_reads_the_tracker_at_scrape_time():
    reg = CollectorRegistry()
    tracker = JourneyTracker(pbx="x")
    pipeline = PbxPipeline(tracker, asyncio.Queue(), [], name="x", queues=["billing"])
    reg.register(LiveCollector(lambda: [pipeline]))
    msgs = AmiFramer().feed((DATA / "answered.ami").read_bytes())
    joined = None
    for msg in msgs:
        # received 3 s ago, nothing since: the pipeline learns from the events' Timestamp that the PBX's clock
        # now says 3 s after the join
        pipeline.handle(AmiEvent(msg, time.time() - 3.0))
        if msg.event == "QueueCallerJoin":
            joined = float(msg["Timestamp"])
            break
    assert joined is not None
    assert reg.get_sample_value("onechance_queue_callers", {"pbx": "x", "queue": "support"}) == 1
    oldest = reg.get_sample_value("onechance_queue_oldest_wait_seconds", {"pbx": "x", "queue": "support"})
    assert 3.0 <= oldest < 4.0
    assert reg.get_sample_value("onechance_queue_callers", {"pbx": "x", "queue": "billing"}) == 0
    assert reg.get_sample_value("onechance_calls_in_progress", {"pbx": "x"}) == 1
    for msg in msgs[msgs.index(next(m for m in msgs if m.event == "QueueCallerJoin")) + 1:]:
        pipeline.handle(AmiEvent(msg, time.time()))
    assert reg.get_sample_value("onechance_queue_callers", {"pbx": "x", "queue": "support"}) == 0
    assert reg.get_sample_value("onechance_queue_oldest_wait_seconds", {"pbx": "x", "queue": "support"}) == 0
    assert reg.get_sample_value("onechance_calls_in_progress", {"pbx": "x"}) == 0


def test_nothing_is_registered_globally(tmp_path):
    from onechance.compose import build_app

    build_app(Settings(http={"listen": "127.0.0.1:0"}, data_dir=tmp_path, ami={"host": "127.0.0.1",
                                                                              "secret": "x"}))
    reg = CollectorRegistry()
    build_info(reg)
    assert any(m.name == "onechance_build_info" for m in reg.collect())
    names = {m.name for m in prometheus_client.REGISTRY.collect()}
    assert not any(n.startswith("onechance") for n in names)
