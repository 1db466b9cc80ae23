"""Call journeys: the pure tracker that follows calls, the policy that judges them, the records sinks read."""

from .model import Direction, EndedBy, LegKind, Outcome, Side, TransferKind, UpdateKind, VisitResult
from .policy import DEFAULT_ALERT_KINDS, LOST_OUTCOMES, AlertKind, CallPolicy, QueueRule, Verdict
from .record import CallJson, CallRecord, LegRecord, TransferRecord, VisitRecord, record_of
from .tracker import JourneyTracker, TrackerSettings, lost_calls_of
from .updates import JourneyUpdate, LostCall, Recovered, Update

__all__ = [
    "DEFAULT_ALERT_KINDS",
    "LOST_OUTCOMES",
    "AlertKind",
    "CallJson",
    "CallPolicy",
    "CallRecord",
    "Direction",
    "EndedBy",
    "JourneyTracker",
    "JourneyUpdate",
    "LegKind",
    "LegRecord",
    "LostCall",
    "Outcome",
    "QueueRule",
    "Recovered",
    "Side",
    "TrackerSettings",
    "TransferKind",
    "TransferRecord",
    "Update",
    "UpdateKind",
    "Verdict",
    "VisitRecord",
    "VisitResult",
    "lost_calls_of",
    "record_of",
]
