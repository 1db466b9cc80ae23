"""Which channels an alert goes to, and whether it is sent or only recorded.

* a channel takes the alerts its filters match (``kinds``, ``queues``, ``pbx``; unset: all);
* the alert's queue may be muted: every delivery is recorded ``suppressed`` (nothing is sent);
* the queue may have business hours (``hours``, a named ``[alerts.hours.<name>]`` schedule): outside them the
  deliveries are recorded ``suppressed``, unless the schedule names an ``outside`` channel, which then takes
  the alert (whatever its filters) and is the only one to send it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..config import ChannelSettings, HoursSettings
from ..journey import CallPolicy
from .hours import BusinessHours
from .model import Alert, DeliveryState

__all__ = ["Route", "Router"]


@dataclass(frozen=True, slots=True)
class Route:
    channel: str
    state: DeliveryState  # PENDING (to send) or SUPPRESSED (recorded only)
    reason: str | None = None  # why suppressed: "muted", "outside business hours"


def _matches(channel: ChannelSettings, alert: Alert) -> bool:
    return ((channel.kinds is None or str(alert.kind) in channel.kinds)
            and (channel.queues is None or alert.queue in channel.queues)
            and (channel.pbx is None or alert.pbx in channel.pbx))


class Router:
    def __init__(self, policy: CallPolicy, channels: Sequence[ChannelSettings],
                 hours: Mapping[str, HoursSettings]) -> None:
        self.policy = policy
        self.channels = list(channels)
        self.hours = {name: BusinessHours(h) for name, h in hours.items()}

    def routes(self, alert: Alert) -> list[Route]:
        rule = self.policy.rule(alert.queue)
        matching = [c.name for c in self.channels if _matches(c, alert)]
        if rule.mute:
            return [Route(name, DeliveryState.SUPPRESSED, "muted") for name in matching]
        schedule = self.hours.get(rule.hours) if rule.hours is not None else None
        if schedule is not None and not schedule.open_at(alert.decided_at):
            outside = schedule.outside
            routes = [Route(name, DeliveryState.SUPPRESSED, "outside business hours")
                      for name in matching if name != outside]
            if outside is not None:
                routes.append(Route(outside, DeliveryState.PENDING))
            return routes
        return [Route(name, DeliveryState.PENDING) for name in matching]
