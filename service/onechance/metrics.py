"""Prometheus metrics: what a supervisor asks, queryable directly (see ``docs/metrics.md`` for every name and
the PromQL cookbook).

Everything lives in one :class:`~prometheus_client.CollectorRegistry` created by the composition root and
passed in (no global registry, no module state).  Three collectors:

* :class:`CallMetrics` (a sink) counts **queue visits** as they leave their queue (``queue`` is the visited
  queue) and **calls** when they end (``first_queue`` is the call's first queue), per operator too;
* :class:`LiveCollector` reads the live state at scrape time: callers waiting, the oldest wait, calls in
  progress, queue members by state, AMI link state and counters;
* the store, the alert outbox and the worklist register their own.

Every label set a supervisor's query needs exists from the start with 0 (each PBX's queues -- configured,
listed by ``QueueStatus``, or seen -- times every result), so ``increase()`` and ratios work from the first
call.  Labels are PBX names, queue names (bounded: see :mod:`onechance.queues`), operator names (bounded),
results and kinds: never a caller number, a Uniqueid or a channel.

One service-level rule everywhere: the call policy's (Asterisk's whole-second test); the counters
``onechance_queue_within_sl_total`` use it, and the wait histograms have a bucket at each configured
threshold.
"""

from __future__ import annotations

import platform
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from . import __version__
from .journey import (
    CallPolicy,
    JourneyTracker,
    JourneyUpdate,
    Outcome,
    Recovered,
    TransferKind,
    Update,
    UpdateKind,
    VisitRecord,
    VisitResult,
)
from .members import MemberState, QueueMembers
from .queues import OTHER, QueueCatalog

__all__ = ["UNRESOLVED_REASONS", "CallMetrics", "LiveCollector", "PbxView", "build_info", "wait_buckets"]

BASE_WAIT_BUCKETS = (1, 2, 3, 5, 10, 15, 20, 30, 45, 60, 90, 120, 180, 300, 600)
TALK_BUCKETS = (10, 30, 60, 120, 180, 300, 600, 900, 1800, 3600)
#: ``closed_reason`` values meaning "the end of the call was not seen": not counted as outcomes
UNRESOLVED_REASONS = frozenset({"link_lost", "pbx_restart", "daemon_stopped", "max_age"})
#: how a visit left its queue, as ``onechance_queue_left_total`` says it
LEFT_RESULTS = ("answered", "abandoned", "short_abandoned", "timeout", "exited", "rejected", "transferred",
                "unknown")
WAIT_RESULTS = ("answered", "abandoned", "timeout", "exited")
SL_RESULTS = ("answered", "abandoned", "timeout")  # Asterisk's two formulas use these
OUTCOMES = tuple(str(o) for o in Outcome if o != Outcome.IN_PROGRESS)
LOST = ("abandoned", "timeout", "rejected", "exited")
RECOVERY_HOW = ("inbound", "outbound")
TRANSFER_KINDS = tuple(str(k) for k in TransferKind)
OPERATOR_LIMIT = 500  # operator label values per PBX; past it: "other"


def wait_buckets(policy: CallPolicy) -> tuple[float, ...]:
    """The wait histogram's buckets: short waits resolved (1, 2, 3 s) and one bucket exactly at each
    configured service-level threshold."""
    thresholds = {policy.default.service_level_seconds, *(r.service_level_seconds for r in policy.queues.values())}
    return tuple(sorted({*map(float, BASE_WAIT_BUCKETS), *thresholds}))


class _Histogram:
    __slots__ = ("buckets", "count", "counts", "sum")

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.sum += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break

    def samples(self) -> tuple[list[tuple[str, float]], float]:
        out = []
        cumulative = 0
        for bound, n in zip(self.buckets, self.counts, strict=True):
            cumulative += n
            out.append((_le(bound), float(cumulative)))
        out.append(("+Inf", float(self.count)))
        return out, self.sum


def _le(bound: float) -> str:
    return str(float(bound))


def _visit_result(v: VisitRecord, policy: CallPolicy) -> str | None:
    """How a visit left its queue (None: still waiting)."""
    r = v.result
    if r == VisitResult.WAITING:
        return None
    if r == VisitResult.ABANDONED:
        return "short_abandoned" if policy.is_short_abandon(v.queue, v.wait_seconds) else "abandoned"
    if r == VisitResult.LEFT:
        return "transferred"  # left without an answer, a hang-up or a key: redirected elsewhere
    return str(r)


class CallMetrics(Collector):
    """Visit and call counters (a sink; collected at scrape time from plain counts)."""

    def __init__(self, registry: CollectorRegistry, policy: CallPolicy, catalog: QueueCatalog) -> None:
        self.policy = policy
        self.catalog = catalog
        self.buckets = wait_buckets(policy)
        self._entered: dict[tuple[str, str], int] = {}
        self._left: dict[tuple[str, str, str], int] = {}
        self._within: dict[tuple[str, str, str], int] = {}
        self._waits: dict[tuple[str, str, str], _Histogram] = {}
        self._talk: dict[tuple[str, str], _Histogram] = {}
        self._calls: dict[tuple[str, str, str], int] = {}
        self._lost: dict[tuple[str, str, str], int] = {}
        self._bounced: dict[tuple[str, str], int] = {}
        self._recovered: dict[tuple[str, str, str], int] = {}
        self._transfers: dict[tuple[str, str, str], int] = {}
        self._unresolved: dict[tuple[str, str], int] = {}
        self._op_calls: dict[tuple[str, str, str], int] = {}
        self._op_talk: dict[tuple[str, str, str], float] = {}
        self._op_transfers: dict[tuple[str, str, str], int] = {}
        self._op_bounced: dict[tuple[str, str, str], int] = {}
        self._operators: dict[str, set[str]] = {}
        # visits counted so far of each live call (a visit leaves once; the call's end counts the rest)
        self._counted: dict[tuple[str, str], set[tuple[str, float]]] = {}
        self._unresolved_seen: OrderedDict[tuple[str, str, float], None] = OrderedDict()
        registry.register(self)

    # ---- the sink --------------------------------------------------------------------------------------------
    def handle(self, update: Update) -> None:
        if isinstance(update, Recovered):
            key = (update.pbx, self.catalog.label(update.pbx, update.queue), update.how)
            self._recovered[key] = self._recovered.get(key, 0) + 1
            return
        r = update.record
        pbx = r.pbx
        if update.kind == UpdateKind.QUEUED:
            queue = self.catalog.label(pbx, str((update.detail or {}).get("queue") or ""))
            self._entered[(pbx, queue)] = self._entered.get((pbx, queue), 0) + 1
        elif update.kind == UpdateKind.MERGED:  # its visits are the other call's now, counted already
            counted = self._counted.pop((pbx, r.call_id), set())
            into = str((update.detail or {}).get("into") or "")
            self._counted.setdefault((pbx, into), set()).update(counted)
            return
        self._visits_left(update)
        if update.kind == UpdateKind.ENDED:
            self._ended(update)

    def _visits_left(self, update: JourneyUpdate) -> None:
        r = update.record
        counted = self._counted.setdefault((r.pbx, r.call_id), set())
        for v in (*r.queues, *r.consultations):
            key = (v.callid, v.joined_at)
            if key in counted:
                continue
            result = _visit_result(v, self.policy)
            if result is None:
                continue
            counted.add(key)
            queue = self.catalog.label(r.pbx, v.queue)
            lkey = (r.pbx, queue, result)
            self._left[lkey] = self._left.get(lkey, 0) + 1
            base = "abandoned" if result == "short_abandoned" else result
            if base in WAIT_RESULTS and v.left_at is not None:
                hkey = (r.pbx, queue, base)
                hist = self._waits.get(hkey)
                if hist is None:
                    hist = self._waits[hkey] = _Histogram(self.buckets)
                hist.observe(v.wait_seconds)
            if base in SL_RESULTS and self.policy.within_service_level(v.queue, v.joined_at, v.left_at):
                wkey = (r.pbx, queue, base)
                self._within[wkey] = self._within.get(wkey, 0) + 1

    def _ended(self, update: JourneyUpdate) -> None:
        r = update.record
        pbx = r.pbx
        self._counted.pop((pbx, r.call_id), None)
        if r.closed_reason in UNRESOLVED_REASONS:
            seen = (pbx, r.call_id, r.started_at)
            if seen not in self._unresolved_seen:  # a call closed at several gaps is one unresolved call
                self._unresolved_seen[seen] = None
                if len(self._unresolved_seen) > 100000:
                    self._unresolved_seen.popitem(last=False)
                key = (pbx, r.closed_reason)
                self._unresolved[key] = self._unresolved.get(key, 0) + 1
            return
        first = self.catalog.label(pbx, r.first_queue)
        outcome = str(r.outcome)
        self._calls[(pbx, first, outcome)] = self._calls.get((pbx, first, outcome), 0) + 1
        if r.lost:
            self._lost[(pbx, first, outcome)] = self._lost.get((pbx, first, outcome), 0) + 1
        if r.bounced:
            self._bounced[(pbx, first)] = self._bounced.get((pbx, first), 0) + 1
        for leg in r.legs:
            queue = self.catalog.label(pbx, leg.queue or "")
            op = self._operator(pbx, leg.operator)
            self._op_calls[(pbx, queue, op)] = self._op_calls.get((pbx, queue, op), 0) + 1
            self._op_talk[(pbx, queue, op)] = self._op_talk.get((pbx, queue, op), 0.0) + leg.talk_seconds
            if leg.queue:
                hist = self._talk.get((pbx, queue))
                if hist is None:
                    hist = self._talk[(pbx, queue)] = _Histogram(TALK_BUCKETS)
                hist.observe(leg.talk_seconds)
        bounce_at = self.policy.rule(r.first_queue).bounce_transfers
        for n, t in enumerate(r.transfers, start=1):
            queue = self.catalog.label(pbx, r.transfer_queue(t) or "")
            tkey = (pbx, queue, str(t.kind))
            self._transfers[tkey] = self._transfers.get(tkey, 0) + 1
            if t.from_:
                op = self._operator(pbx, t.from_)
                self._op_transfers[(pbx, queue, op)] = self._op_transfers.get((pbx, queue, op), 0) + 1
                if r.bounced and n == bounce_at:  # the transfer that made it a bounced call
                    self._op_bounced[(pbx, queue, op)] = self._op_bounced.get((pbx, queue, op), 0) + 1

    def _operator(self, pbx: str, name: str) -> str:
        known = self._operators.setdefault(pbx, set())
        if name in known:
            return name
        if len(known) >= OPERATOR_LIMIT:
            return OTHER
        known.add(name)
        return name

    # ---- scrape --------------------------------------------------------------------------------------------
    def _queue_keys(self) -> list[tuple[str, str]]:
        return [(pbx, q) for pbx in self.catalog.pbxs() for q in self.catalog.queues(pbx)]

    def collect(self) -> Iterator[Metric]:
        queues = self._queue_keys()
        entered = CounterMetricFamily("onechance_queue_entered", "Callers who entered a queue (offered), per "
                                      "visit; the visited queue", labels=["pbx", "queue"])
        for key in sorted(set(queues) | set(self._entered)):
            entered.add_metric(list(key), self._entered.get(key, 0))
        yield entered
        yield self._family("onechance_queue_left", "Queue visits by how they left the queue: answered, abandoned "
                           "(not short), short_abandoned, timeout, exited (a key), rejected (refused at the "
                           "door), transferred (redirected unanswered), unknown (not seen)", ["pbx", "queue", "result"],
                           self._left, queues, LEFT_RESULTS)
        yield self._family("onechance_queue_within_sl", "Visits that left within the queue's service level "
                           "(Asterisk's whole-second rule), by result (answered, abandoned, timeout)",
                           ["pbx", "queue", "result"], self._within, queues, SL_RESULTS)
        waits = HistogramMetricFamily("onechance_queue_wait_seconds", "Time callers waited in a queue before they "
                                      "were answered, abandoned, timed out or left with a key",
                                      labels=["pbx", "queue", "result"])
        empty = _Histogram(self.buckets)
        for pbx, queue in queues:
            for result in WAIT_RESULTS:
                if (pbx, queue, result) not in self._waits:
                    buckets, total = empty.samples()
                    waits.add_metric([pbx, queue, result], buckets, total)
        for (pbx, queue, result), hist in sorted(self._waits.items()):
            buckets, total = hist.samples()
            waits.add_metric([pbx, queue, result], buckets, total)
        yield waits
        talk = HistogramMetricFamily("onechance_queue_talk_seconds", "Talk time of each operator who answered "
                                     "through a queue, per answered leg (AHT = sum / count)", labels=["pbx", "queue"])
        empty_talk = _Histogram(TALK_BUCKETS)
        for key in sorted(set(queues) | set(self._talk)):
            buckets, total = self._talk.get(key, empty_talk).samples()
            talk.add_metric(list(key), buckets, total)
        yield talk
        firsts = [*queues, *((pbx, "") for pbx in self.catalog.pbxs())]
        yield self._family("onechance_calls", "Calls ended, by the call's first queue ('' for none) and outcome",
                           ["pbx", "first_queue", "outcome"], self._calls, firsts, OUTCOMES)
        yield self._family("onechance_lost_calls", "Lost callers (inbound, abandoned but not short, timed out, "
                           "rejected, exited), by the call's first queue", ["pbx", "first_queue", "outcome"],
                           self._lost, queues, LOST)
        yield self._family("onechance_recovered_calls", "Lost calls whose caller was reached again: inbound "
                           "(called again) or outbound (called back), by the lost call's first queue",
                           ["pbx", "first_queue", "how"], self._recovered, queues, RECOVERY_HOW)
        bounced = CounterMetricFamily("onechance_bounced_calls", "Calls transferred at least the bounce threshold "
                                      "number of times, by the call's first queue", labels=["pbx", "first_queue"])
        for key in sorted(set(queues) | set(self._bounced)):
            bounced.add_metric(list(key), self._bounced.get(key, 0))
        yield bounced
        yield self._family("onechance_transfers", "Transfers of callers, by the queue the transferring operator "
                           "answered through, and kind", ["pbx", "queue", "kind"], self._transfers, queues,
                           TRANSFER_KINDS)
        unresolved = CounterMetricFamily("onechance_calls_unresolved", "Calls closed as uncertain because their end "
                                         "could not be seen (link lost, PBX restart, daemon stopped, max age), each "
                                         "call once", labels=["pbx", "reason"])
        for pbx in self.catalog.pbxs():
            for reason in sorted(UNRESOLVED_REASONS):
                unresolved.add_metric([pbx, reason], self._unresolved.get((pbx, reason), 0))
        yield unresolved
        for name, doc, counts in (
            ("onechance_operator_calls", "Calls an operator answered (talked with the caller), by queue ('' for a "
             "direct call)", self._op_calls),
            ("onechance_operator_talk_seconds", "Talk time of an operator with callers, by queue", self._op_talk),
            ("onechance_operator_transfers", "Transfers an operator made, by the queue they answered through",
             self._op_transfers),
            ("onechance_operator_bounced", "Calls an operator passed on that became bounced by that transfer",
             self._op_bounced),
        ):
            family = CounterMetricFamily(name, doc, labels=["pbx", "queue", "operator"])
            for okey in sorted(counts):
                family.add_metric(list(okey), counts[okey])
            yield family

    @staticmethod
    def _family(name: str, doc: str, labels: list[str], counts: dict[tuple[str, str, str], int],
                queues: Iterable[tuple[str, str]], values: Sequence[str]) -> CounterMetricFamily:
        family = CounterMetricFamily(name, doc, labels=labels)
        keys = {(pbx, q, v) for pbx, q in queues for v in values} | set(counts)
        for key in sorted(keys):
            family.add_metric(list(key), counts.get(key, 0))
        return family


class PbxView(Protocol):
    """What the live collector reads of one followed PBX (the pipeline provides it)."""

    name: str
    tracker: JourneyTracker
    members: QueueMembers
    sink_errors: dict[str, int]

    def pbx_now(self) -> float: ...

    def link_counters(self) -> dict[str, float]: ...


_LINK_COUNTERS = {
    "reconnects": "AMI reconnection attempts after the first connection",
    "events": "AMI events received",
    "bad_messages": "Malformed AMI messages skipped",
    "login_failures": "AMI logins refused by the PBX",
    "resyncs": "Resynchronisations (CoreShowChannels + QueueStatus) after a login",
    "watchdog_timeouts": "Links declared dead: nothing at all from the PBX, not even a pong, for ping_timeout",
    "slow_pongs": "Pings answered late while the PBX kept sending events (busy, not dead: the link stays up)",
    "dropped": "AMI events dropped because the consumer queue was full (each forces a resync)",
    "clock_jumps": "AMI event timestamps not trusted: a jump beyond journey.max_clock_jump from the recent events "
                   "or the arrival time (the previous trusted time is used)",
}


class LiveCollector(Collector):
    """Gauges and link counters computed at scrape time from the trackers, members and links."""

    def __init__(self, views: Callable[[], Sequence[PbxView]], catalog: QueueCatalog) -> None:
        self._views = views
        self.catalog = catalog

    def collect(self) -> Iterator[Metric]:
        callers = GaugeMetricFamily("onechance_queue_callers", "Callers waiting in each queue now",
                                    labels=["pbx", "queue"])
        oldest = GaugeMetricFamily("onechance_queue_oldest_wait_seconds",
                                   "How long the longest-waiting caller of each queue has waited (0: nobody)",
                                   labels=["pbx", "queue"])
        members = GaugeMetricFamily("onechance_queue_members", "Queue members (operators) by state: available, "
                                    "in_call, ringing, paused, unavailable", labels=["pbx", "queue", "state"])
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
            waiting: dict[str, list[float]] = {}
            for queue, joins in tracker.waiting_by_queue().items():
                waiting.setdefault(self.catalog.label(view.name, queue), []).extend(joins)
            counts = view.members.counts()
            for queue in sorted(set(waiting) | set(self.catalog.queues(view.name))):
                joins = waiting.get(queue, [])
                callers.add_metric([view.name, queue], len(joins))
                oldest.add_metric([view.name, queue], max(0.0, now - min(joins)) if joins else 0.0)
            by_state: dict[tuple[str, MemberState], int] = {}
            for (queue, state), n in counts.items():
                key = (self.catalog.label(view.name, queue), state)
                by_state[key] = by_state.get(key, 0) + n
            for queue in sorted(set(self.catalog.queues(view.name)) | {q for q, _s in by_state}):
                for state in MemberState:
                    members.add_metric([view.name, queue, str(state)], by_state.get((queue, state), 0))
            live.add_metric([view.name], len(tracker.calls))
            errors.add_metric([view.name], tracker.errors)
            for sink, count in sorted(view.sink_errors.items()):
                sink_errors.add_metric([view.name, sink], count)
            link = view.link_counters()
            up.add_metric([view.name], link.get("up", 0.0))
            depth.add_metric([view.name], link.get("queue_depth", 0.0))
            for name, counter in counters.items():
                counter.add_metric([view.name], link.get(name, 0.0))
        yield callers
        yield oldest
        yield members
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
