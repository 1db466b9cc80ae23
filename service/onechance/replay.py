"""Replay recorded AMI streams through the same parser and tracker as the live daemon."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from .ami.parser import BANNER_PREFIX, AmiFramer, EventFilter
from .journey import CallPolicy, CallRecord, JourneyTracker, Recovered, TrackerSettings, Update, UpdateKind

CHUNK = 256 * 1024

_Key = tuple[str, str, float]


class JourneyLog:
    """The newest record of every call a tracker reported, with recoveries applied.  Calls are told apart
    by PBX, call id and start (a call id may come back after a PBX restart)."""

    def __init__(self) -> None:
        self._records: dict[_Key, CallRecord] = {}
        self._latest: dict[tuple[str, str], _Key] = {}

    def handle(self, update: Update) -> None:
        """As a sink."""
        self.add((update,))

    def add(self, updates: Iterable[Update]) -> None:
        for update in updates:
            if isinstance(update, Recovered):
                key = self._latest.get((update.pbx, update.call_id))
                if key is not None:
                    self._records[key] = self._records[key].with_recovery(update.by, update.at, update.how)
                continue
            self.put(update.record, merged=update.kind == UpdateKind.MERGED)

    def put(self, record: CallRecord, merged: bool = False) -> None:
        key = (record.pbx, record.call_id, record.started_at)
        if merged:  # part of another call now: not a call of its own
            self._records.pop(key, None)
            return
        old = self._records.get(key)
        if old is not None and old.recovered and not record.recovered:
            record = record.with_recovery(old.recovered_by or "", old.recovered_at or 0.0, old.recovered_how)
        self._records[key] = record
        self._latest[(record.pbx, record.call_id)] = key

    def ordered(self, tracker: JourneyTracker | None = None) -> list[CallRecord]:
        """The records in start order, with the calls still open in ``tracker`` (``in_progress``)."""
        if tracker is not None:
            for r in tracker.live():
                self.put(r)
        return sorted(self._records.values(), key=lambda r: (r.started_at, r.call_id))


class ReplayError(Exception):
    """A capture that cannot be replayed (missing, not AMI, truncated).  The message is one line."""


@dataclass
class ReplayResult:
    journeys: list[CallRecord]
    events: int = 0
    bad_messages: int = 0
    tracker_errors: int = 0
    timed_events: int = 0  # none: Asterisk's manager.conf had timestampevents = no
    skipped: int = 0  # events of no use to the tracker, counted and skipped unread (in ``events``)
    duplicates: int = 0  # events repeated byte for byte, dropped (in ``events``)
    clock_jumps: int = 0  # timestamps not trusted (a jump beyond journey.max_clock_jump)
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
    policy: CallPolicy | None = None,
    settings: TrackerSettings | None = None,
    pbx: str = "",
    on_update: Callable[[Update], None] | None = None,
    allow_truncated: bool = False,
) -> ReplayResult:
    """Run capture files, one after the other, through one tracker; return every call seen,
    ordered by start time (calls still open at the end are reported ``in_progress``)."""
    tracker = JourneyTracker(policy, settings, pbx=pbx)
    interest = tracker.interest()
    event_filter = EventFilter(interest.events, interest.conditions)
    log = JourneyLog()
    result = ReplayResult(journeys=[])
    for path in paths:
        try:
            size = os.path.getsize(path)
            fh = open(path, "rb")
        except OSError as exc:
            raise ReplayError(unreadable(path, exc)) from None
        framer = AmiFramer(event_filter=event_filter)
        with fh:
            head = fh.read(CHUNK)
            if size == 0 or not _looks_like_ami(head):
                raise ReplayError(f"{path}: not an AMI stream (no manager banner or AMI message at the start)")
            data = head
            while data:
                for msg in framer.iter_feed(data):
                    if msg.ts is not None:
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
        result.skipped += framer.skipped
        result.duplicates += framer.duplicates
        result.bad_messages += framer.bad_messages
        result.files.append(path)
    updates = tracker.flush()
    log.add(updates)
    if on_update is not None:
        for update in updates:
            on_update(update)
    result.clock_jumps = tracker.clock.jumps
    result.tracker_errors = tracker.errors
    result.last_error = tracker.last_error
    result.journeys = log.ordered(tracker)
    return result


def unreadable(path: str, exc: OSError) -> str:
    """Why an input file cannot be read, in one line (``replay``, ``import-queue-log``)."""
    if isinstance(exc, FileNotFoundError):
        return f"{path}: no such file"
    if isinstance(exc, IsADirectoryError):
        return f"{path}: is a directory"
    return f"{path}: cannot read: {exc.strerror or exc}"
