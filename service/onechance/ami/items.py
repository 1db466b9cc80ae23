"""What an AMI link hands to its consumer, in stream order, and the link's states and errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from .parser import AmiMessage

__all__ = [
    "AmiError",
    "AmiEvent",
    "AmiEvents",
    "LinkDead",
    "LinkDown",
    "LinkItem",
    "LinkLost",
    "LinkState",
    "LinkStopped",
    "LoginRefused",
    "Snapshot",
]


class LinkState(StrEnum):
    STARTING = "starting"
    CONNECTING = "connecting"
    LOGGING_IN = "logging_in"
    RESYNCING = "resyncing"
    READY = "ready"
    LOGIN_FAILED = "login_failed"
    DOWN = "down"
    STOPPED = "stopped"


@dataclass(slots=True)
class AmiEvent:
    """One AMI event as read from the socket; ``arrival`` is the local wall-clock time of the read."""

    msg: AmiMessage
    arrival: float


@dataclass(slots=True)
class AmiEvents:
    """The events of one socket read, in stream order; ``arrival`` is the local wall-clock time of the read.
    (One item per read, not per event: the hand-over to the consumer costs the same for 1 event or 500.)"""

    msgs: list[AmiMessage]
    arrival: float


@dataclass(slots=True)
class LinkDown:
    """The event stream stopped: everything that happens until the next :class:`Snapshot` is unseen.

    ``at`` is the wall-clock time the PBX was last heard from; ``reason`` is ``link_lost`` (socket
    closed or silent) or ``pbx_restart`` (Asterisk announced a shutdown)."""

    at: float
    reason: str


@dataclass(slots=True)
class Snapshot:
    """What the PBX reported as live right after a (re)connect: the items of ``CoreShowChannels``
    (``CoreShowChannel``) and of ``QueueStatus`` (``QueueParams``, ``QueueMember``, ``QueueEntry``).

    It is queued at the very point of the stream where the ``QueueStatus`` list ended, so events read
    before it happened before the lists were taken.  ``complete`` is False when a list was refused."""

    channels: list[AmiMessage] = field(default_factory=list)
    params: list[AmiMessage] = field(default_factory=list)
    members: list[AmiMessage] = field(default_factory=list)
    entries: list[AmiMessage] = field(default_factory=list)
    arrival: float = 0.0  # local time the QueueStatus list ended (where the snapshot sits in the stream)
    clock_offset: float | None = None  # PBX clock minus local clock, from a Ping answered just before
    complete: bool = True
    channels_complete: bool = True  # False when CoreShowChannels was refused (what hung up is not known)


@dataclass(slots=True)
class LinkStopped:
    """The link was stopped on purpose (daemon shutdown): nothing follows."""


LinkItem = AmiEvents | AmiEvent | LinkDown | Snapshot | LinkStopped


class AmiError(Exception):
    """An AMI session problem; the message is one readable line and never contains the secret."""


class LinkLost(AmiError):
    """The connection closed while an action was waiting for its response."""


class LinkDead(AmiError):
    """The watchdog gave up: the PBX sent nothing at all, not even an answer to Ping."""


class LoginRefused(AmiError):
    """The PBX refused the username or secret."""
