"""What the tracker reports to the sinks: journey updates (each with its call record) and recoveries."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .model import UpdateKind
from .record import CallRecord

__all__ = ["JourneyUpdate", "LostCall", "Recovered", "Update"]


@dataclass(frozen=True, slots=True)
class JourneyUpdate:
    """Something meaningful happened to a call; ``record`` is the call right after it (immutable)."""

    kind: UpdateKind
    record: CallRecord
    at: float
    detail: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Recovered:
    """A lost caller was reached again: ``by`` (a call id) answered that number, ``how`` is ``inbound`` (the
    caller called again) or ``outbound`` (an operator called back through the PBX)."""

    pbx: str
    call_id: str
    caller: str
    queue: str  # the lost call's first queue ('' for none)
    by: str
    at: float
    how: str


@dataclass(frozen=True, slots=True)
class LostCall:
    """An entry of the tracker's watch list: a lost call whose caller may still be reached again."""

    pbx: str
    call_id: str
    caller: str
    queue: str
    ended_at: float


Update = JourneyUpdate | Recovered
