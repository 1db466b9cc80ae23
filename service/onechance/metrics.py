"""Prometheus metrics: a sink that counts finished calls and a collector of live state.

Everything lives in one :class:`~prometheus_client.CollectorRegistry` created by the composition root and
passed in (no global registry, no module state).  Two kinds of metrics:

* **counters and histograms** (:class:`CallMetrics`, a sink) are updated once per call, when it ends,
  from its final journey: so a call's visits, transfers and outcome are counted exactly once, with what
  is known at the end (a consultation visit adopted by an attended transfer included);
* **state** (:class:`LiveCollector`) is read at scrape time from the trackers and links: callers waiting
  per queue, the oldest wait, calls in progress, AMI link state and counters.

Labels are PBX names, queue names, outcomes and kinds only: never a caller number, uniqueid or channel.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__
from .journey import CallPolicy, JourneyTracker, Recovered, Update, UpdateKind, VisitResult

__all__ = ["UNRESOLVED_REASONS", "WAIT_BUCKETS", "CallMetrics", "LiveCollector", "PbxView", "build_info"]

WAIT_BUCKETS = (5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600)
#: ``closed_reason`` values meaning "the end of the call was not seen": not counted as outcomes
UNRESOLVED_REASONS = frozenset({"link_lost", "pbx_restart", "daemon_stopped"})
_WAIT_RESULTS = frozenset({VisitResult.ANSWERED, VisitResult.ABANDONED, VisitResult.TIMEOUT, VisitResult.LEFT,
                           VisitResult.EXITED})


class CallMetrics:
    """Counts each call once, when it ends (a :class:`~onechance.sinks.Sink`)."""

    def __init__(self, registry: CollectorRegistry, policy: CallPolicy | None = None) -> None:
        self.policy = policy or CallPolicy()
        self.calls = Counter("onechance_calls", "Calls ended, by first queue ('' for direct calls) and outcome",
                             ["pbx", "queue", "outcome"], registry=registry)
        self.wait = Histogram("onechance_queue_wait_seconds",
                              "Time callers waited in a queue, per visit that ended (answered, abandoned, "
                              "timed out or left)", ["pbx", "queue"], buckets=WAIT_BUCKETS, registry=registry)
        self.abandoned = Counter("onechance_queue_abandoned",
                                 "Callers who hung up while waiting in a queue; short=true under the queue's "
                                 "short-abandon threshold", ["pbx", "queue", "short"], registry=registry)
        self.answered = Counter("onechance_queue_answered",
                                "Queue visits answered by an operator, within the queue's service level or not",
                                ["pbx", "queue", "within_service_level"], registry=registry)
        self.transfers = Counter("onechance_transfers",
                                 "Transfers of callers, by the queue the caller came from and kind",
                                 ["pbx", "queue", "kind"], registry=registry)
        self.bounced = Counter("onechance_bounced_calls",
                               "Calls transferred at least the bounce threshold number of times, by first queue",
                               ["pbx", "queue"], registry=registry)
        self.lost = Counter("onechance_lost_calls",
                            "Lost callers (abandoned but not short, timed out, rejected), by first queue",
                            ["pbx", "queue", "outcome"], registry=registry)
        self.recovered = Counter("onechance_recovered_calls",
                                 "Lost calls whose caller was answered later (call-back), by first queue",
                                 ["pbx", "queue"], registry=registry)
        self.unresolved = Counter("onechance_calls_unresolved",
                                  "Calls closed as uncertain because their end could not be seen (AMI link "
                                  "lost, PBX restart, daemon stopped); not counted in onechance_calls_total "
                                  "unless taken up again after a resync", ["pbx", "reason"], registry=registry)

    def handle(self, update: Update) -> None:
        if isinstance(update, Recovered):
            self.recovered.labels(update.pbx, update.queue).inc()
            return
        if update.kind != UpdateKind.ENDED:
            return
        r = update.record
        if r.closed_reason in UNRESOLVED_REASONS:
            self.unresolved.labels(r.pbx, r.closed_reason).inc()
            return
        pbx, first = r.pbx, r.first_queue
        outcome = str(r.outcome)
        self.calls.labels(pbx, first, outcome).inc()
        if r.lost:
            self.lost.labels(pbx, first, outcome).inc()
        if r.bounced:
            self.bounced.labels(pbx, first).inc()
        for v in r.queues:
            if v.result in _WAIT_RESULTS and v.left_at is not None:
                self.wait.labels(pbx, v.queue).observe(v.wait_seconds)
            if v.result == VisitResult.ABANDONED:
                short = self.policy.is_short_abandon(v.queue, v.wait_seconds)
                self.abandoned.labels(pbx, v.queue, "true" if short else "false").inc()
            elif v.result == VisitResult.ANSWERED:
                within = self.policy.within_service_level(v.queue, v.joined_at, v.left_at)
                self.answered.labels(pbx, v.queue, "true" if within else "false").inc()
        for t in r.transfers:
            before = [v for v in r.queues if v.joined_at <= t.at]
            self.transfers.labels(pbx, before[-1].queue if before else "", str(t.kind)).inc()


class PbxView(Protocol):
    """What the live collector reads of one followed PBX (the pipeline provides it)."""

    name: str
    tracker: JourneyTracker
    sink_errors: dict[str, int]

    def pbx_now(self) -> float: ...

    def link_counters(self) -> dict[str, float]: ...

    def known_queues(self) -> Iterable[str]: ...


_LINK_COUNTERS = {
    "reconnects": "AMI reconnection attempts after the first connection",
    "events": "AMI events received",
    "bad_messages": "Malformed AMI messages skipped",
    "login_failures": "AMI logins refused by the PBX",
    "resyncs": "Resynchronisations (CoreShowChannels + QueueStatus) after a login",
    "watchdog_timeouts": "Links declared dead: nothing at all from the PBX, not even a pong, for ping_timeout",
    "slow_pongs": "Pings answered late while the PBX kept sending events (busy, not dead: the link stays up)",
    "dropped": "AMI events dropped because the consumer queue was full (each forces a resync)",
}


class LiveCollector(Collector):
    """Gauges and link counters computed at scrape time from the trackers and links."""

    def __init__(self, views: Callable[[], Sequence[PbxView]]) -> None:
        self._views = views

    def collect(self) -> Iterator[Metric]:
        callers = GaugeMetricFamily("onechance_queue_callers", "Callers waiting in each queue now",
                                    labels=["pbx", "queue"])
        oldest = GaugeMetricFamily("onechance_queue_oldest_wait_seconds",
                                   "How long the longest-waiting caller of each queue has waited (0: nobody)",
                                   labels=["pbx", "queue"])
        live = GaugeMetricFamily("onechance_calls_in_progress", "Calls in progress now", labels=["pbx"])
        up = GaugeMetricFamily("onechance_ami_up", "1 when the AMI link is logged in and resynced",
                               labels=["pbx"])
        depth = GaugeMetricFamily("onechance_ami_queue_depth", "AMI messages waiting for the tracker",
                                  labels=["pbx"])
        errors = CounterMetricFamily("onechance_tracker_errors", "AMI events the tracker could not apply",
                                     labels=["pbx"])
        sink_errors = CounterMetricFamily("onechance_sink_errors", "Updates a sink (store, metrics, alerts...) "
                                          "failed to take", labels=["pbx", "sink"])
        counters = {key: CounterMetricFamily(f"onechance_ami_{key}", doc, labels=["pbx"])
                    for key, doc in _LINK_COUNTERS.items()}
        for view in self._views():
            tracker = view.tracker
            now = view.pbx_now()
            waiting = tracker.waiting_by_queue()
            for queue in sorted(set(waiting) | set(view.known_queues())):
                joins = waiting.get(queue, [])
                callers.add_metric([view.name, queue], len(joins))
                oldest.add_metric([view.name, queue], max(0.0, now - min(joins)) if joins else 0.0)
            live.add_metric([view.name], len(tracker.calls))
            errors.add_metric([view.name], tracker.errors)
            for sink, count in sorted(view.sink_errors.items()):
                sink_errors.add_metric([view.name, sink], count)
            link = view.link_counters()
            up.add_metric([view.name], link.get("up", 0.0))
            depth.add_metric([view.name], link.get("queue_depth", 0.0))
            for key, family in counters.items():
                family.add_metric([view.name], link.get(key, 0.0))
        yield callers
        yield oldest
        yield live
        yield up
        yield depth
        yield errors
        yield sink_errors
        yield from counters.values()


def build_info(registry: CollectorRegistry) -> None:
    """``onechance_build_info{version,python} 1``."""
    g = Gauge("onechance_build_info", "onechance version and Python version", ["version", "python"],
              registry=registry)
    g.labels(__version__, platform.python_version()).set(1)
