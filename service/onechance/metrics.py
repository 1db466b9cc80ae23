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

import math
import platform
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.openmetrics.exposition import escape_label_name, escape_metric_name
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

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

__all__ = ["CONTENT_TYPE", "UNRESOLVED_REASONS", "CallMetrics", "Exposition", "LiveCollector", "PbxView", "TextFamily",
           "build_info", "go_float", "wait_buckets"]

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


# ---- the exposition -----------------------------------------------------------------------------------
#: what ``/metrics`` answers: the Prometheus text format
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_OM_SUFFIXES = ("_created", "_gsum", "_gcount")
_TYPE_NAMES = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram", "unknown": "untyped"}
_PREFIX_CACHE_LIMIT = 200_000  # label sets remembered (they are bounded: queue and operator names are)


def go_float(value: float) -> str:
    """A sample value as Prometheus (Go) writes it: ``prometheus_client.utils.floatToGoString``."""
    d = float(value)
    if d == math.inf:
        return "+Inf"
    if d == -math.inf:
        return "-Inf"
    if d != d:
        return "NaN"
    s = repr(d)
    dot = s.find(".")
    if d > 0 and dot > 6:  # Go switches to exponents sooner than Python
        mantissa = f"{s[0]}.{s[1:dot]}{s[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return s


def _label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r'\"')


def _prefix(name: str, labels: Iterable[tuple[str, str]]) -> str:
    """``name{a="x",b="y"} `` (labels sorted by name, as prometheus_client writes them)."""
    pairs = sorted(labels)
    if not pairs:
        return f"{escape_metric_name(name)} "
    inner = ",".join(f'{escape_label_name(k)}="{_label_value(v)}"' for k, v in pairs)
    return f"{escape_metric_name(name)}{{{inner}}} "


class TextFamily(Metric):
    """A metric family that writes its own exposition text (:meth:`text`, cached line by line by its
    collector); its ``samples`` are built from the same figures only when something asks for them
    (``get_sample_value``, ``generate_latest``)."""

    def __init__(self, name: str, documentation: str, typ: str, text: Callable[[], str],
                 samples: Callable[[], list[Sample]]) -> None:
        self._text = text
        self._make_samples = samples
        self._built: list[Sample] | None = None
        super().__init__(name, documentation, typ)

    @property
    def samples(self) -> list[Sample]:
        if self._built is None:
            self._built = self._make_samples()
        return self._built

    @samples.setter
    def samples(self, value: list[Sample]) -> None:
        self._built = value or None

    def text(self) -> str:
        return self._text()


class _Lines:
    """The sample lines of one family's label sets, each formatted again only when its value changed."""

    __slots__ = ("_cache", "labelnames", "name")

    def __init__(self, name: str, labelnames: Sequence[str]) -> None:
        self.name = name
        self.labelnames = tuple(labelnames)
        self._cache: dict[tuple[str, ...], tuple[float, str]] = {}

    def line(self, key: tuple[str, ...], value: float) -> str:
        hit = self._cache.get(key)
        if hit is not None and hit[0] == value:
            return hit[1]
        text = _prefix(self.name, zip(self.labelnames, key, strict=True)) + go_float(value) + "\n"
        self._cache[key] = (value, text)
        return text


class Exposition:
    """``/metrics``: a registry in the Prometheus text format (0.0.4), exactly as
    ``prometheus_client.generate_latest`` writes it, faster: a :class:`TextFamily` writes itself, and for the
    other families each label set's line is formatted again only when its value changed."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.renders = 0
        self._headers: dict[tuple[str, str, str], tuple[str, str]] = {}
        self._lines: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[float, str]] = {}

    def _header(self, metric: Metric) -> tuple[str, str]:
        """(``# HELP``/``# TYPE`` lines, the escaped family name)."""
        key = (metric.name, metric.type, metric.documentation)
        hit = self._headers.get(key)
        if hit is None:
            name = metric.name + ("_total" if metric.type == "counter" else "_info" if metric.type == "info" else "")
            escaped = escape_metric_name(name)
            doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
            hit = (f"# HELP {escaped} {doc}\n# TYPE {escaped} {_TYPE_NAMES.get(metric.type, metric.type)}\n",
                   escaped)
            self._headers[key] = hit
        return hit

    def _line(self, s: Sample) -> str:
        if s.timestamp is not None:  # (none of ours has one): not cached
            return _prefix(s.name, s.labels.items()) + go_float(s.value) + f" {int(float(s.timestamp) * 1000):d}\n"
        key = (s.name, tuple(s.labels.items()))
        hit = self._lines.get(key)
        if hit is not None and hit[0] == s.value:
            return hit[1]
        if len(self._lines) > _PREFIX_CACHE_LIMIT:
            self._lines.clear()
        text = _prefix(s.name, key[1]) + go_float(s.value) + "\n"
        self._lines[key] = (s.value, text)
        return text

    def render(self) -> bytes:
        self.renders += 1
        out: list[str] = []
        for metric in self.registry.collect():
            header, _escaped = self._header(metric)
            out.append(header)
            if isinstance(metric, TextFamily):
                out.append(metric.text())
                continue
            extra: dict[str, list[str]] = {}
            for s in metric.samples:
                suffix = next((x for x in _OM_SUFFIXES if s.name == metric.name + x), None)
                if suffix is None:
                    out.append(self._line(s))
                else:  # OpenMetrics-only samples: a gauge family of their own, after the family
                    extra.setdefault(suffix, []).append(self._line(s))
            for suffix, lines in sorted(extra.items()):
                name = escape_metric_name(metric.name + suffix)
                doc = metric.documentation.replace("\\", r"\\").replace("\n", r"\n")
                out.append(f"# HELP {name} {doc}\n# TYPE {name} gauge\n")
                out.extend(lines)
        return "".join(out).encode("utf-8")


class MetricsCache:
    """Renders at most ``per_second`` times a second: a client scraping more often than that (a flood) gets
    the last render again (at most one second old); a normal scraper always gets a fresh one."""

    def __init__(self, exposition: Exposition, per_second: int = 5,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.exposition = exposition
        self.per_second = per_second
        self.clock = clock
        self._recent: list[float] = []  # times of the renders of the last second
        self._last: bytes | None = None

    def get(self) -> bytes:
        now = self.clock()
        self._recent = [t for t in self._recent if now - t < 1.0]
        if self._last is not None and len(self._recent) >= self.per_second:
            return self._last
        self._recent.append(now)
        self._last = self.exposition.render()
        return self._last


class _Histogram:
    __slots__ = ("_text", "buckets", "count", "counts", "sum")

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0
        self._text: str | None = None

    def observe(self, value: float) -> None:
        self.sum += value
        self.count += 1
        self._text = None
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

    def text(self, name: str, labels: Sequence[tuple[str, str]]) -> str:
        """Its exposition lines (``_bucket``..., ``_count``, ``_sum``), kept until the next observation."""
        if self._text is None:
            buckets, total = self.samples()
            lines = [_prefix(f"{name}_bucket", [*labels, ("le", le)]) + go_float(v) + "\n" for le, v in buckets]
            lines.append(_prefix(f"{name}_count", labels) + go_float(buckets[-1][1]) + "\n")
            lines.append(_prefix(f"{name}_sum", labels) + go_float(total) + "\n")
            self._text = "".join(lines)
        return self._text


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
        # scrape caches: sorted label sets per family, formatted lines, histograms of label sets never observed
        self._sorted: dict[str, tuple[tuple[int, ...], list[tuple[str, ...]]]] = {}
        self._text_lines: dict[str, _Lines] = {}
        self._empty: dict[str, dict[tuple[str, ...], _Histogram]] = {}
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
    # Every family is a TextFamily: its text is written from lines cached per label set (a counter's line is
    # formatted again only when its value changed, a histogram's lines only after an observation), so a
    # scrape costs little more than joining strings; the samples are built only when something asks.

    def _queue_keys(self) -> list[tuple[str, str]]:
        return [(pbx, q) for pbx in self.catalog.pbxs() for q in self.catalog.queues(pbx)]

    def _keys(self, name: str, make: Callable[[], Iterable[tuple[str, ...]]], *sizes: int) -> list[tuple[str, ...]]:
        """The sorted label sets of a family, sorted again only when the sets it is made of grew (``sizes``:
        label sets only ever come, never go)."""
        hit = self._sorted.get(name)
        if hit is None or hit[0] != sizes:
            hit = (sizes, sorted(set(make())))
            self._sorted[name] = hit
        return hit[1]

    def _lines(self, name: str, labels: Sequence[str]) -> _Lines:
        lines = self._text_lines.get(name)
        if lines is None:
            lines = self._text_lines[name] = _Lines(name, labels)
        return lines

    def _counter(self, name: str, doc: str, labels: list[str], keys: list[tuple[str, ...]],
                 counts: Mapping[Any, float]) -> TextFamily:
        lines = self._lines(name + "_total", labels)

        def text() -> str:
            get, line = counts.get, lines.line
            return "".join([line(key, get(key, 0)) for key in keys])

        def samples() -> list[Sample]:
            family = CounterMetricFamily(name, doc, labels=labels)
            for key in keys:
                family.add_metric(list(key), counts.get(key, 0))
            return family.samples

        return TextFamily(name, doc, "counter", text, samples)

    def _histograms(self, name: str, doc: str, labels: list[str], keys: list[tuple[str, ...]],
                    hists: Mapping[Any, _Histogram], buckets: Sequence[float]) -> TextFamily:
        empty = self._empty.get(name)
        if empty is None:
            empty = self._empty[name] = {}

        def hist(key: tuple[str, ...]) -> _Histogram:
            found = hists.get(key)
            if found is None:
                found = empty.get(key)
                if found is None:
                    found = empty[key] = _Histogram(buckets)
            return found

        def text() -> str:
            return "".join([hist(key).text(name, list(zip(labels, key, strict=True))) for key in keys])

        def samples() -> list[Sample]:
            family = HistogramMetricFamily(name, doc, labels=labels)
            for key in keys:
                bucket_values, total = hist(key).samples()
                family.add_metric(list(key), bucket_values, total)
            return family.samples

        return TextFamily(name, doc, "histogram", text, samples)

    def collect(self) -> Iterator[Metric]:
        queues = self._queue_keys()
        nq = len(queues)

        def by_queue(counts: dict[tuple[str, str], int] | dict[tuple[str, str], _Histogram],
                     extra: Iterable[tuple[str, str]] = ()) -> Callable[[], Iterable[tuple[str, ...]]]:
            return lambda: [*queues, *extra, *counts]

        def by_value(counts: dict[tuple[str, str, str], int] | dict[tuple[str, str, str], _Histogram],
                     keys: Iterable[tuple[str, str]], values: Sequence[str]) -> Callable[[], Iterable[tuple[str, ...]]]:
            return lambda: [*((pbx, q, v) for pbx, q in keys for v in values), *counts]

        yield self._counter("onechance_queue_entered", "Callers who entered a queue (offered), per visit; the "
                            "visited queue", ["pbx", "queue"],
                            self._keys("entered", by_queue(self._entered), nq, len(self._entered)), self._entered)
        yield self._counter("onechance_queue_left", "Queue visits by how they left the queue: answered, abandoned "
                            "(not short), short_abandoned, timeout, exited (a key), rejected (refused at the door), "
                            "transferred (redirected unanswered), unknown (not seen)", ["pbx", "queue", "result"],
                            self._keys("left", by_value(self._left, queues, LEFT_RESULTS), nq, len(self._left)),
                            self._left)
        yield self._counter("onechance_queue_within_sl", "Visits that left within the queue's service level "
                            "(Asterisk's whole-second rule), by result (answered, abandoned, timeout)",
                            ["pbx", "queue", "result"],
                            self._keys("within", by_value(self._within, queues, SL_RESULTS), nq, len(self._within)),
                            self._within)
        yield self._histograms("onechance_queue_wait_seconds", "Time callers waited in a queue before they were "
                               "answered, abandoned, timed out or left with a key", ["pbx", "queue", "result"],
                               self._wait_keys(queues), self._waits, self.buckets)
        yield self._histograms("onechance_queue_talk_seconds", "Talk time of each operator who answered through a "
                               "queue, per answered leg (AHT = sum / count)", ["pbx", "queue"],
                               self._keys("talk", by_queue(self._talk), nq, len(self._talk)), self._talk,
                               TALK_BUCKETS)
        pbxs = self.catalog.pbxs()
        firsts = [*queues, *((pbx, "") for pbx in pbxs)]
        yield self._counter("onechance_calls", "Calls ended, by the call's first queue ('' for none) and outcome",
                            ["pbx", "first_queue", "outcome"],
                            self._keys("calls", by_value(self._calls, firsts, OUTCOMES), len(firsts), len(self._calls)),
                            self._calls)
        yield self._counter("onechance_lost_calls", "Lost callers (inbound, abandoned but not short, timed out, "
                            "rejected, exited), by the call's first queue", ["pbx", "first_queue", "outcome"],
                            self._keys("lost", by_value(self._lost, queues, LOST), nq, len(self._lost)), self._lost)
        yield self._counter("onechance_recovered_calls", "Lost calls whose caller was reached again: inbound "
                            "(called again) or outbound (called back), by the lost call's first queue",
                            ["pbx", "first_queue", "how"],
                            self._keys("recovered", by_value(self._recovered, queues, RECOVERY_HOW), nq,
                                       len(self._recovered)), self._recovered)
        yield self._counter("onechance_bounced_calls", "Calls transferred at least the bounce threshold number of "
                            "times, by the call's first queue", ["pbx", "first_queue"],
                            self._keys("bounced", by_queue(self._bounced), nq, len(self._bounced)), self._bounced)
        yield self._counter("onechance_transfers", "Transfers of callers, by the queue the transferring "
                            "operator answered through, and kind", ["pbx", "queue", "kind"],
                            self._keys("transfers", by_value(self._transfers, queues, TRANSFER_KINDS), nq,
                                       len(self._transfers)), self._transfers)
        reasons = sorted(UNRESOLVED_REASONS)
        yield self._counter("onechance_calls_unresolved", "Calls closed as uncertain because their end could not be "
                            "seen (link lost, PBX restart, daemon stopped, max age), each call once", ["pbx", "reason"],
                            self._keys("unresolved", lambda: [(pbx, r) for pbx in pbxs for r in reasons], len(pbxs)),
                            self._unresolved)
        for name, doc, counts in (
            ("onechance_operator_calls", "Calls an operator answered (talked with the caller), by queue ('' for a "
             "direct call)", self._op_calls),
            ("onechance_operator_talk_seconds", "Talk time of an operator with callers, by queue", self._op_talk),
            ("onechance_operator_transfers", "Transfers an operator made, by the queue they answered through",
             self._op_transfers),
            ("onechance_operator_bounced", "Calls an operator passed on that became bounced by that transfer",
             self._op_bounced),
        ):
            yield self._counter(name, doc, ["pbx", "queue", "operator"],
                                self._keys(name, lambda counts=counts: list(counts), len(counts)),  # type: ignore[misc]
                                counts)

    def _wait_keys(self, queues: list[tuple[str, str]]) -> list[tuple[str, ...]]:
        return self._keys("waits", lambda: [*((pbx, q, r) for pbx, q in queues for r in WAIT_RESULTS), *self._waits],
                          len(queues), len(self._waits))


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
