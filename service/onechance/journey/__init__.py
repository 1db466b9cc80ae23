"""Call journeys: the model and the pure tracker that builds it from AMI events."""

from .model import (
    ALERT_KINDS,
    LOST_OUTCOMES,
    Journey,
    JourneyUpdate,
    OperatorLeg,
    Outcome,
    QueueVisit,
    Transfer,
    UpdateKind,
    VisitResult,
)
from .tracker import JourneyTracker, QueueRules, TrackerSettings

__all__ = [
    "ALERT_KINDS",
    "LOST_OUTCOMES",
    "Journey",
    "JourneyTracker",
    "JourneyUpdate",
    "OperatorLeg",
    "Outcome",
    "QueueRules",
    "QueueVisit",
    "TrackerSettings",
    "Transfer",
    "UpdateKind",
    "VisitResult",
]
