"""Business hours: a weekly schedule in a named time zone, plus holiday dates."""

from __future__ import annotations

from datetime import date, datetime
from zoneinfo import ZoneInfo

from ..config import HoursSettings

__all__ = ["BusinessHours"]


class BusinessHours:
    """Whether a moment is inside the schedule."""

    def __init__(self, settings: HoursSettings) -> None:
        self.zone = ZoneInfo(settings.timezone)
        self.weekly = settings.weekly()
        self.holidays: frozenset[date] = frozenset(settings.holidays)
        self.outside = settings.outside  # a channel to use outside hours (None: record only)

    def open_at(self, ts: float) -> bool:
        local = datetime.fromtimestamp(ts, self.zone)
        if local.date() in self.holidays:
            return False
        minute = local.hour * 60 + local.minute
        return any(start <= minute < end for start, end in self.weekly[local.weekday()])
