"""What an alert is, what a channel sends, and the channel interface."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal, Protocol

from ..journey import AlertKind, CallRecord

__all__ = [
    "PAYLOAD_VERSION",
    "Alert",
    "Channel",
    "DeliveryFailed",
    "DeliveryState",
    "Notice",
    "alert_id",
]

#: the version of the webhook payload (``payload["version"]``); bumped on incompatible changes
PAYLOAD_VERSION = 1
_NAMESPACE = uuid.UUID("8f3c2f0e-8d4b-4b2a-9a57-0c5e2a1b7d31")


def alert_id(pbx: str, call_id: str, kind: str) -> str:
    """The alert's id: the same call and kind always give the same id (a restart never re-raises another)."""
    return uuid.uuid5(_NAMESPACE, f"{pbx}\x00{call_id}\x00{kind}").hex


class DeliveryState(StrEnum):
    PENDING = "pending"  # to be sent (again)
    SENT = "sent"  # delivered once: never again
    FAILED = "failed"  # the channel refused it for good (a 4xx that retrying cannot change)
    EXPIRED = "expired"  # not delivered within the channel's max_age
    SUPPRESSED = "suppressed"  # recorded, not sent: the queue is muted or it came outside business hours
    CANCELLED = "cancelled"  # the caller was reached before it could be sent


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert: a call, the kind it raised, and the call as it was when the alert was decided."""

    id: str
    kind: AlertKind
    record: CallRecord
    queue: str  # the queue the alert is about ('' for none)
    decided_at: float  # PBX time of the deciding event
    raised_at: float  # local wall clock when onechance decided it (delivery latency is measured from here)

    @property
    def pbx(self) -> str:
        return self.record.pbx

    @property
    def call_id(self) -> str:
        return self.record.call_id


@dataclass(frozen=True, slots=True)
class Notice:
    """What one delivery sends: an alert, a digest of several (storm guard), or the resolution of an alert
    (the caller was reached: Alertmanager marks it resolved)."""

    kind: Literal["alert", "digest", "resolved"]
    alerts: tuple[Alert, ...]
    idempotency_key: str  # the same for every attempt of this delivery: a retry after a lost response shows
    # the receiver it has seen it already


class DeliveryFailed(Exception):
    """A delivery attempt failed; ``retryable`` says whether trying again may succeed (a timeout, a 5xx, a
    refused connection) or not (a 4xx other than 408/429: the request itself is wrong)."""

    def __init__(self, reason: str, retryable: bool = True, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retryable = retryable
        #: seconds the receiver asked us to wait before trying again (HTTP ``Retry-After``), None: not said
        self.retry_after = retry_after


class Channel(Protocol):
    """A delivery channel (webhook, Alertmanager, Apprise).  ``send`` runs on the event loop and must not block
    it (Apprise runs in a thread); it raises :class:`DeliveryFailed`, never anything else."""

    name: str

    @property
    def resolves(self) -> bool:
        """Whether it wants ``resolved`` notices (and open alerts re-posted every ``repeat_interval``)."""
        ...

    async def send(self, notice: Notice) -> None: ...

    async def aclose(self) -> None: ...


def caller_masked(number: str) -> str:
    """``+3725550107`` -> ``+372555***07``: enough to recognise, not enough to dial."""
    digits = [i for i, ch in enumerate(number) if ch.isdigit()]
    if len(digits) <= 4:
        return "*" * len(number)
    hide = set(digits[-5:-2])
    return "".join("*" if i in hide else ch for i, ch in enumerate(number))


def summary_fields(alert: Alert) -> dict[str, Any]:
    """Facts about an alert every rendering uses (raw values: channels format them)."""
    r = alert.record
    return {
        "id": alert.id,
        "kind": str(alert.kind),
        "pbx": r.pbx,
        "call_id": r.call_id,
        "queue": alert.queue,
        "caller": r.caller,
        "caller_name": r.caller_name,
        "wait_seconds": r.wait_seconds,
        "operators": r.operators,
        "transfers": [t.to_json() for t in r.transfers],
        "started_at": r.started_at,
        "decided_at": alert.decided_at,
    }
