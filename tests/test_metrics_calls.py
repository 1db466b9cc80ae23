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
from onechance.queues import QueueCatalog
from onechance.replay import replay_files

from .truthcheck import DATA


def _replay(name: str, registry: CollectorRegistry, policy: CallPolicy | None = None,
            service_level: float = 20.0, configured: tuple[str, ...] = ()) -> CallMetrics:
    policy = policy or CallPolicy.with_defaults(service_level_seconds=service_level)
    metrics = CallMetrics(registry, policy, QueueCatalog(configured))
    replay_files([str(DATA / f"{name}.ami")], policy, pbx="x", on_update=metrics.handle)
    return metrics


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, {"pbx": "x", **labels})


def test_a_short_abandon():
    reg = CollectorRegistry()
    _replay("short_abandon", reg)
    assert _value(reg, "onechance_calls_total", first_queue="support", outcome="abandoned") == 1
    assert _value(reg, "onechance_queue_entered_total", queue="support") == 1
    assert _value(reg, "onechance_queue_left_total", queue="support", result="short_abandoned") == 1
    assert _value(reg, "onechance_queue_left_total", queue="support", result="abandoned") == 0
    assert _value(reg, "onechance_lost_calls_total", first_queue="support", outcome="abandoned") == 0
    assert _value(reg, "onechance_queue_wait_seconds_count", queue="support", result="abandoned") == 1
    assert _value(reg, "onechance_queue_wait_seconds_bucket", queue="support", result="abandoned", le="3.0") == 1
    assert _value(reg, "onechance_queue_wait_seconds_bucket", queue="support", result="abandoned", le="2.0") == 0


def test_the_short_abandon_threshold_is_per_queue():
    reg = CollectorRegistry()
    policy = CallPolicy(QueueRule(), {"support": QueueRule(short_abandon_seconds=1.0)})
    _replay("short_abandon", reg, policy)
    assert _value(reg, "onechance_queue_left_total", queue="support", result="abandoned") == 1
    assert _value(reg, "onechance_lost_calls_total", first_queue="support", outcome="abandoned") == 1


def test_every_queue_and_result_starts_at_zero():
    """A configured queue nobody called yet, and every result of the queues seen, are there with 0: increase()
    and ratios work from the first call."""
    reg = CollectorRegistry()
    _replay("answered", reg, configured=("billing",))
    for queue in ("support", "billing"):
        assert _value(reg, "onechance_queue_entered_total", queue=queue) is not None
        for result in ("answered", "abandoned", "short_abandoned", "timeout", "exited", "rejected"):
            assert _value(reg, "onechance_queue_left_total", queue=queue, result=result) is not None
        assert _value(reg, "onechance_queue_wait_seconds_count", queue=queue, result="answered") is not None
        assert _value(reg, "onechance_lost_calls_total", first_queue=queue, outcome="timeout") is not None
    assert _value(reg, "onechance_queue_entered_total", queue="billing") == 0
    assert _value(reg, "onechance_queue_left_total", queue="support", result="answered") == 1


def test_wait_buckets_resolve_short_waits_and_sit_exactly_at_each_service_level():
    policy = CallPolicy(QueueRule(service_level_seconds=20), {"sales": QueueRule(service_level_seconds=45.5)})
    reg = CollectorRegistry()
    metrics = CallMetrics(reg, policy, QueueCatalog())
    assert metrics.buckets[:3] == (1.0, 2.0, 3.0)
    assert 20.0 in metrics.buckets and 45.5 in metrics.buckets


def test_transfers_count_under_the_queue_the_caller_came_from_and_the_operator_who_made_them():
    reg = CollectorRegistry()
    _replay("bounced", reg)
    (j,) = replay_files([str(DATA / "bounced.ami")]).journeys
    assert [t.kind for t in j.transfers] == ["blind", "blind", "blind"]
    assert _value(reg, "onechance_transfers_total", queue="support", kind="blind") == 1
    assert _value(reg, "onechance_transfers_total", queue="sales", kind="blind") == 1
    assert _value(reg, "onechance_transfers_total", queue="billing", kind="blind") == 1
    assert _value(reg, "onechance_bounced_calls_total", first_queue="support") == 1
    assert _value(reg, "onechance_calls_total", first_queue="support", outcome="answered") == 1
    first, second = j.transfers[0].from_, j.transfers[1].from_
    assert first and second
    # the second transfer made it a bounced call (threshold 2): its operator passed on a bounced call
    assert _value(reg, "onechance_operator_bounced_total", queue="sales", operator=second) == 1
    assert _value(reg, "onechance_operator_bounced_total", queue="support", operator=first) is None
    assert _value(reg, "onechance_operator_transfers_total", queue="support", operator=first) == 1
    legs = {leg.operator: leg for leg in j.legs}
    assert _value(reg, "onechance_operator_calls_total", queue="support", operator=first) == 1
    assert _value(reg, "onechance_operator_talk_seconds_total", queue="support", operator=first) == \
        legs[first].talk_seconds
    assert _value(reg, "onechance_queue_talk_seconds_count", queue="support") == \
        sum(1 for leg in j.legs if leg.queue == "support") == 2  # back in support at the end


def test_service_level_follows_asterisks_whole_second_rule():
    reg = CollectorRegistry()
    _replay("ring_no_answer", reg, service_level=20.0)  # answered after ~16 s
    assert _value(reg, "onechance_queue_within_sl_total", queue="support", result="answered") == 1
    reg = CollectorRegistry()
    _replay("ring_no_answer", reg, service_level=10.0)
    assert _value(reg, "onechance_queue_within_sl_total", queue="support", result="answered") == 0
    assert _value(reg, "onechance_queue_left_total", queue="support", result="answered") == 1
    (j,) = replay_files([str(DATA / "ring_no_answer.ami")]).journeys
    v = j.queues[0]
    whole = int(v.left_at) - int(v.joined_at)  # Asterisk counts whole seconds: 16.x s can be "17" or "16"
    reg = CollectorRegistry()
    _replay("ring_no_answer", reg, service_level=float(whole))
    assert _value(reg, "onechance_queue_within_sl_total", queue="support", result="answered") == 1
    reg = CollectorRegistry()
    _replay("ring_no_answer", reg, service_level=float(whole - 1))
    assert _value(reg, "onechance_queue_within_sl_total", queue="support", result="answered") == 0


def test_recovered_and_rejected():
    reg = CollectorRegistry()
    _replay("abandon_then_callback", reg)
    assert _value(reg, "onechance_recovered_calls_total", first_queue="support", how="inbound") == 1
    reg = CollectorRegistry()
    _replay("outbound_callback", reg)
    assert _value(reg, "onechance_recovered_calls_total", first_queue="support", how="outbound") == 1
    reg = CollectorRegistry()
    _replay("join_empty", reg)
    assert _value(reg, "onechance_calls_total", first_queue="empty", outcome="rejected") == 1
    assert _value(reg, "onechance_lost_calls_total", first_queue="empty", outcome="rejected") == 1
    assert _value(reg, "onechance_queue_left_total", queue="empty", result="rejected") == 1
    assert _value(reg, "onechance_queue_entered_total", queue="empty") == 0  # refused at the door
    assert _value(reg, "onechance_queue_wait_seconds_count", queue="empty", result="answered") == 0


def test_an_answered_visit_is_counted_when_answered_not_when_the_call_ends():
    reg = CollectorRegistry()
    metrics = CallMetrics(reg, CallPolicy(), QueueCatalog())
    tracker = JourneyTracker(pbx="x")
    for msg in AmiFramer().feed((DATA / "answered.ami").read_bytes()):
        for u in tracker.feed(msg):
            metrics.handle(u)
        if msg.event == "AgentConnect":
            break
    assert _value(reg, "onechance_queue_left_total", queue="support", result="answered") == 1
    assert _value(reg, "onechance_calls_total", first_queue="support", outcome="answered") == 0  # still talking


def test_calls_closed_by_a_lost_link_are_unresolved_not_outcomes_and_counted_once():
    reg = CollectorRegistry()
    metrics = CallMetrics(reg, CallPolicy(), QueueCatalog())
    tracker = JourneyTracker(pbx="x")
    msgs = AmiFramer().feed((DATA / "answered.ami").read_bytes())
    for msg in msgs[: len(msgs) // 2]:
        for u in tracker.feed(msg):
            metrics.handle(u)
    (ended,) = [u for u in tracker.close_all(2e9, "link_lost") if u.kind == "ended"]  # type: ignore[union-attr]
    metrics.handle(ended)
    metrics.handle(ended)  # closed again at a second gap after a resync took it up
    assert _value(reg, "onechance_calls_unresolved_total", reason="link_lost") == 1
    assert _value(reg, "onechance_calls_total", first_queue="support", outcome="answered") == 0


def test_live_collector_reads_the_tracker_at_scrape_time():
    reg = CollectorRegistry()
    tracker = JourneyTracker(pbx="x")
    pipeline = PbxPipeline(tracker, asyncio.Queue(), [], name="x", catalog=QueueCatalog(["billing"]))
    reg.register(LiveCollector(lambda: [pipeline], pipeline.catalog))
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
