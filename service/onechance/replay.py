"""Replay recorded AMI streams through the same parser and tracker as the live daemon."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .ami.parser import BANNER_PREFIX, AmiFramer
from .journey import Journey, JourneyTracker, JourneyUpdate, TrackerSettings

CHUNK = 256 * 1024


class JourneyLog:
    """Every journey a tracker reported, kept by object (a call id may come back after a PBX restart)."""

    def __init__(self) -> None:
        self._seen: dict[int, Journey] = {}

    def add(self, updates: Iterable[JourneyUpdate]) -> None:
        for update in updates:
            self._seen.setdefault(id(update.journey), update.journey)

    def ordered(self, tracker: JourneyTracker | None = None) -> list[Journey]:
        """The journeys in start order, with the calls still open in ``tracker`` (``in_progress``)."""
        if tracker is not None:
            for j in tracker.live():
                self._seen.setdefault(id(j), j)
        return sorted(self._seen.values(), key=lambda j: (j.started_at, j.call_id))


class ReplayError(Exception):
    """A capture that cannot be replayed (missing, not AMI, truncated).  The message is one line."""


@dataclass
class ReplayResult:
    journeys: list[Journey]
    events: int = 0
    bad_messages: int = 0
    tracker_errors: int = 0
    timed_events: int = 0  # none: Asterisk's manager.conf had timestampevents = no
    last_error: str | None = None
    files: list[str] = field(default_factory=list)


def _looks_like_ami(head: bytes) -> bool:
    text = head.lstrip()[:64]
    return (
        text.startswith(BANNER_PREFIX.encode())
        or text.startswith(b"Event:")
        or text.startswith(b"Response:")
    )


def replay_files(
    paths: Iterable[str],
    settings: TrackerSettings | None = None,
    pbx: str = "",
    on_update: Callable[[JourneyUpdate], None] | None = None,
    allow_truncated: bool = False,
) -> ReplayResult:
    """Run capture files, one after the other, through one tracker; return every journey seen,
    ordered by start time (calls still open at the end are reported ``in_progress``)."""
    tracker = JourneyTracker(settings, pbx=pbx)
    log = JourneyLog()
    result = ReplayResult(journeys=[])
    for path in paths:
        try:
            size = os.path.getsize(path)
            fh = open(path, "rb")
        except FileNotFoundError:
            raise ReplayError(f"{path}: no such file") from None
        except IsADirectoryError:
            raise ReplayError(f"{path}: is a directory") from None
        except OSError as exc:
            raise ReplayError(f"{path}: cannot read: {exc.strerror or exc}") from None
        framer = AmiFramer()
        with fh:
            head = fh.read(CHUNK)
            if size == 0 or not _looks_like_ami(head):
                raise ReplayError(f"{path}: not an AMI stream (no manager banner or AMI message at the start)")
            data = head
            while data:
                for msg in framer.iter_feed(data):
                    if "Timestamp" in msg.headers:
                        result.timed_events += 1
                    updates = tracker.feed(msg)
                    log.add(updates)
                    if on_update is not None:
                        for update in updates:
                            on_update(update)
                data = fh.read(CHUNK)
        clean = framer.finish()
        if framer.messages == 0:
            raise ReplayError(f"{path}: not an AMI stream (no complete AMI message)")
        if not clean and not allow_truncated:
            raise ReplayError(f"{path}: truncated AMI stream (the last message has no terminating blank line)")
        result.events += framer.messages
        result.bad_messages += framer.bad_messages
        result.files.append(path)
    result.tracker_errors = tracker.errors
    result.last_error = tracker.last_error
    result.journeys = log.ordered(tracker)
    return result
