"""The call policy: the one place where a call's outcome, short abandon, loss and alerts are decided.

Everything that judges a call -- the tracker (when to say "bounced", whom to watch for a callback), the
call record every sink reads, the metrics, the reports -- asks a :class:`CallPolicy`.  Its per-queue rules come
from the settings (``[journey]`` defaults, ``[queues.<name>]`` overrides) through :meth:`CallPolicy.from_settings`,
so ``onechance run``, ``onechance replay`` and ``replay --store`` judge the same call the same way.

Rules, in short (``docs/journey.md`` has the reasoning):

* **outcome**: the last queue visit ended ``abandoned``, ``timeout``, ``rejected`` or ``exited`` and nobody
  talked to the caller after it joined that queue -> that result; else an operator talked with the caller ->
  ``answered``; else ``unanswered``; ``in_progress`` while the call is live;
* **short abandon**: abandoned after less than the queue's ``short_abandon_seconds`` (the queue of the visit the
  caller hung up in);
* **lost**: an inbound call (from outside) abandoned (not short), timed out, rejected or exited: a one-chance
  caller to call back;
* **alerts**: the lost outcome's kind and ``bounced``, each when the queue's rule lets that kind alert;
  ``long_wait`` is raised per visit while waiting (see :meth:`CallPolicy.long_wait_due`);
* **service level**: Asterisk's own whole-second test, ``floor(left) - floor(joined) <= threshold``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, TypeVar

from .model import CALLER_GROUP, Direction, Journey, Outcome, QueueVisit, VisitResult

if TYPE_CHECKING:
    from ..config import Settings

_T = TypeVar("_T")

__all__ = ["DEFAULT_ALERT_KINDS", "LOST_OUTCOMES", "AlertKind", "CallPolicy", "QueueRule", "Verdict"]


class AlertKind(StrEnum):
    ABANDONED = "abandoned"  # hung up while waiting, not a short abandon
    TIMEOUT = "timeout"  # the queue gave up
    REJECTED = "rejected"  # the queue refused the caller
    EXITED = "exited"  # left the queue with a key (e.g. to voicemail)
    BOUNCED = "bounced"  # transferred again and again (raised while the call is live)
    LONG_WAIT = "long_wait"  # still waiting past the queue's long-wait threshold (raised while waiting)


#: outcomes that make a call lost, short abandons excepted
LOST_OUTCOMES = frozenset({Outcome.ABANDONED, Outcome.TIMEOUT, Outcome.REJECTED, Outcome.EXITED})
_OUTCOME_ALERT = {
    Outcome.ABANDONED: AlertKind.ABANDONED,
    Outcome.TIMEOUT: AlertKind.TIMEOUT,
    Outcome.REJECTED: AlertKind.REJECTED,
    Outcome.EXITED: AlertKind.EXITED,
}
_VISIT_OUTCOME = {
    VisitResult.ABANDONED: Outcome.ABANDONED,
    VisitResult.TIMEOUT: Outcome.TIMEOUT,
    VisitResult.REJECTED: Outcome.REJECTED,
    VisitResult.EXITED: Outcome.EXITED,
}
#: the kinds that alert unless a queue says otherwise (long_wait needs a threshold to mean anything)
DEFAULT_ALERT_KINDS = frozenset(AlertKind) - {AlertKind.LONG_WAIT}


@dataclass(frozen=True, slots=True)
class QueueRule:
    """How calls of one queue are judged."""

    short_abandon_seconds: float = 5.0
    service_level_seconds: float = 20.0
    bounce_transfers: int = 2
    alert_kinds: frozenset[AlertKind] = DEFAULT_ALERT_KINDS
    long_wait_seconds: float | None = None  # None: no long_wait alert
    mute: bool = False  # alerts are recorded, never sent
    hours: str | None = None  # business-hours schedule: outside it alerts are held back (or sent elsewhere)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the policy says of a call now."""

    outcome: Outcome
    short_abandon: bool
    lost: bool
    alerts: tuple[AlertKind, ...]


@dataclass(frozen=True, slots=True)
class CallPolicy:
    """Per-queue rules with a default; immutable, shared by every tracker and sink of a daemon."""

    default: QueueRule = QueueRule()
    queues: Mapping[str, QueueRule] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings) -> CallPolicy:
        """The policy of ``[journey]`` and ``[queues.<name>]``."""
        j = settings.journey
        default = QueueRule(
            short_abandon_seconds=j.short_abandon_seconds,
            service_level_seconds=j.service_level_seconds,
            bounce_transfers=j.bounce_transfers,
            alert_kinds=(frozenset(AlertKind(k) for k in j.alert_kinds) if j.alert_kinds is not None
                         else DEFAULT_ALERT_KINDS),
            long_wait_seconds=j.long_wait_seconds,
            mute=j.mute,
            hours=j.hours,
        )
        queues = {}
        for name, q in settings.queues.items():
            queues[name] = QueueRule(
                short_abandon_seconds=_pick(q.short_abandon_seconds, default.short_abandon_seconds),
                service_level_seconds=_pick(q.service_level_seconds, default.service_level_seconds),
                bounce_transfers=_pick(q.bounce_transfers, default.bounce_transfers),
                alert_kinds=(frozenset(AlertKind(k) for k in q.alert_kinds) if q.alert_kinds is not None
                             else default.alert_kinds),
                long_wait_seconds=_pick(q.long_wait_seconds, default.long_wait_seconds),
                mute=_pick(q.mute, default.mute),
                hours=_pick(q.hours, default.hours),
            )
        return cls(default, queues)

    @classmethod
    def with_defaults(cls, **defaults: object) -> CallPolicy:
        """A policy with the same rule for every queue (``QueueRule`` fields as keywords)."""
        return cls(QueueRule(**defaults))  # type: ignore[arg-type]

    # ---- rules ---------------------------------------------------------------------------------------------
    def rule(self, queue: str | None) -> QueueRule:
        if queue:
            found = self.queues.get(queue)
            if found is not None:
                return found
        return self.default

    def configured_queues(self) -> Iterable[str]:
        return self.queues.keys()

    @property
    def watches_long_waits(self) -> bool:
        """Whether any queue raises long_wait at all (the tracker then checks waits on each tick)."""
        return any(r.long_wait_seconds is not None and AlertKind.LONG_WAIT in r.alert_kinds
                   for r in (self.default, *self.queues.values()))

    def is_short_abandon(self, queue: str, wait_seconds: float) -> bool:
        return wait_seconds < self.rule(queue).short_abandon_seconds

    def within_service_level(self, queue: str, joined_at: float, left_at: float | None) -> bool:
        """Asterisk's test (app_queue's whole-second ``holdtime <= servicelevel``)."""
        if left_at is None:
            return False
        return math.floor(left_at) - math.floor(joined_at) <= self.rule(queue).service_level_seconds

    def bounce_reached(self, first_queue: str, transfers: int) -> bool:
        return transfers >= self.rule(first_queue).bounce_transfers

    def alerts_enabled(self, queue: str, kind: AlertKind) -> bool:
        return kind in self.rule(queue).alert_kinds

    def long_wait_due(self, visit: QueueVisit, now: float) -> bool:
        """A visit still waiting past its queue's long-wait threshold that has not raised it yet."""
        if visit.long_wait_raised or visit.result != VisitResult.WAITING or visit.left_at is not None:
            return False
        rule = self.rule(visit.queue)
        if rule.long_wait_seconds is None or AlertKind.LONG_WAIT not in rule.alert_kinds:
            return False
        return now - visit.joined_at >= rule.long_wait_seconds

    # ---- verdicts ------------------------------------------------------------------------------------------
    def outcome(self, journey: Journey, *, provisional: bool = False) -> Outcome:
        """The call's outcome (``in_progress`` while live, unless ``provisional``: as if it ended now)."""
        if journey.ended_at is None and not provisional:
            return Outcome.IN_PROGRESS
        last: QueueVisit | None = None
        for v in reversed(journey.visits):
            if v.group == CALLER_GROUP:
                last = v
                break
        talked_after_last = False
        talked = False
        for leg in journey.legs:
            start = leg.caller_talk_start
            if start is None:
                continue
            talked = True
            if last is not None and start >= last.joined_at:
                talked_after_last = True
                break
        if last is not None and not talked_after_last:
            unanswered = _VISIT_OUTCOME.get(last.result)
            if unanswered is not None:
                return unanswered
        if talked:
            return Outcome.ANSWERED
        if last is not None and last.result == VisitResult.WAITING:
            return Outcome.ABANDONED  # still waiting when the call ended: the caller hung up
        return Outcome.UNANSWERED

    def verdict(self, journey: Journey) -> Verdict:
        outcome = self.outcome(journey)
        short = False
        last_queue = ""
        if outcome == Outcome.ABANDONED:
            for v in reversed(journey.visits):
                if v.group == CALLER_GROUP:
                    last_queue = v.queue
                    short = v.left_at is not None and self.is_short_abandon(v.queue, v.wait_seconds)
                    break
        elif outcome in LOST_OUTCOMES:
            for v in reversed(journey.visits):
                if v.group == CALLER_GROUP:
                    last_queue = v.queue
                    break
        # only a caller from outside is lost: an extension abandoning a queue (a phone's consultation call,
        # a colleague) is not a one-chance caller
        lost = outcome in LOST_OUTCOMES and not short and journey.direction == Direction.INBOUND
        alerts: list[AlertKind] = []
        # a call the tracker closed itself (link lost, daemon stopped, max age) never raises "abandoned":
        # its end was not seen
        if lost and not (outcome == Outcome.ABANDONED and journey.closed_reason is not None):
            kind = _OUTCOME_ALERT[outcome]
            if self.alerts_enabled(last_queue, kind):
                alerts.append(kind)
        if journey.bounced and self.alerts_enabled(journey.first_queue, AlertKind.BOUNCED):
            alerts.append(AlertKind.BOUNCED)
        return Verdict(outcome, short, lost, tuple(alerts))



def _pick(value: _T | None, default: _T) -> _T:
    return default if value is None else value
