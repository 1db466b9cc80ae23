"""Which event timestamps to believe: the PBX's clock as its events tell it, minus the lies.

The tracker runs on the PBX's clock (each event's ``Timestamp``), so one absurd timestamp would do real harm:
an event stamped seven hours ahead (or ``99999999999``) would make every live call look older than
``max_call_age`` and close it, and would date that event's own step of a call hours away.  The rules:

* a timestamp is **trusted** when it lies within ``max_jump`` seconds of the latest trusted one (going back
  more than that is a jump too), or -- live, where the caller passes the arrival time of the event on the PBX's
  clock (the local clock plus the offset learnt from trusted events) -- when it is no further than ``max_jump``
  ahead of that arrival time: a PBX that was quiet for an hour is not lying about its clock;
* an event whose timestamp is not trusted is **held** (in order, with the events that follow it) until the
  stream says which it was:

  - an *outlier*: a later event fits the trusted clock again: the held event is applied at the latest trusted
    time and counted in :attr:`ClockGuard.jumps`; the events after it are judged afresh;
  - a *step*: ``confirm`` events in a row (the held one included) agree with each other within ``max_jump``: the
    PBX's clock really moved (a quiet gap in a replay, an NTP step), the held events keep their own times and
    count in :attr:`ClockGuard.steps`;
  - nothing decided after ``max_held`` events, or at :meth:`ClockGuard.flush` (the end of a replay, a link loss,
    the daemon's tick): an outlier.

Events without a timestamp never decide anything; held or not, they keep their place in the stream.
Pure: no clock is ever read here.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Generic, TypeVar

__all__ = ["DEFAULT_MAX_JUMP", "ClockGuard"]

T = TypeVar("T")

DEFAULT_MAX_JUMP = 300.0
#: events in a row, agreeing with each other, that show the PBX's clock really moved
DEFAULT_CONFIRM = 3
#: events held at most while deciding (the held timestamp is then taken for an outlier)
DEFAULT_MAX_HELD = 64

#: an item released by the guard: the item and the time to apply it at (None: it carried no timestamp)
Released = tuple[T, float | None, float]


class ClockGuard(Generic[T]):
    """Judges timestamps in stream order; :meth:`admit` returns the items ready to apply, with their times."""

    __slots__ = ("confirm", "held", "jumps", "max_held", "max_jump", "reference", "steps")

    def __init__(self, max_jump: float = DEFAULT_MAX_JUMP, *, confirm: int = DEFAULT_CONFIRM,
                 max_held: int = DEFAULT_MAX_HELD) -> None:
        if not max_jump > 0:
            raise ValueError("max_jump must be positive")
        self.max_jump = max_jump
        self.confirm = max(2, confirm)
        self.max_held = max(self.confirm, max_held)
        self.reference: float | None = None  # the latest trusted timestamp
        self.jumps = 0  # timestamps not trusted (applied at the latest trusted time)
        self.steps = 0  # jumps the following events confirmed (the PBX's clock moved)
        self.held: list[tuple[T, float | None, float]] = []  # read-only outside: what waits for a decision

    @property
    def holding(self) -> int:
        """Events held while a timestamp is being judged."""
        return len(self.held)

    def fits(self, ts: float, arrival: float = 0.0) -> bool:
        """``ts`` is believable now (``arrival``: when the event arrived, on the PBX's clock; 0 when unknown)."""
        ref = self.reference
        if ref is None:
            return True
        if ts < ref - self.max_jump:
            return False
        return ts <= (arrival if arrival > ref else ref) + self.max_jump

    def trust(self, ts: float) -> None:
        """A timestamp found believable (:meth:`fits`) by the caller's own fast path."""
        ref = self.reference
        if ref is None or ts > ref:
            self.reference = ts

    def admit(self, item: T, ts: float | None, arrival: float = 0.0) -> list[Released[T]]:
        """Take one item in stream order; returns the items ready to apply (this one, earlier held ones, or none
        while a jump is being judged), each with the time to apply it at."""
        out: list[Released[T]] = []
        self._admit(item, ts, arrival, out)
        return out

    def flush(self) -> list[Released[T]]:
        """Decide now (no more events are coming for a while): a timestamp still being judged is an outlier."""
        out: list[Released[T]] = []
        while self.held:
            self._decide(out, final=True)
        return out

    # ---- inside ----------------------------------------------------------------------------------------
    def _admit(self, item: T, ts: float | None, arrival: float, out: list[Released[T]]) -> None:
        if self.held:
            self.held.append((item, ts, arrival))
            self._decide(out, final=False)
        elif ts is None:
            out.append((item, None, arrival))
        elif self.fits(ts, arrival):
            self.trust(ts)
            out.append((item, ts, arrival))
        else:
            self.held.append((item, ts, arrival))

    def _decide(self, out: list[Released[T]], final: bool) -> None:
        held = self.held
        suspect = held[0][1]
        assert suspect is not None
        agreeing = 1
        for _item, ts, arrival in held[1:]:
            if ts is None:
                continue
            if self.fits(ts, arrival):
                self._release(out, step=False)  # the clock we trusted goes on: the held one lied
                return
            if abs(ts - suspect) <= self.max_jump:
                agreeing += 1
                if agreeing >= self.confirm:
                    self._release(out, step=True)
                    return
        if final or len(held) > self.max_held:
            self._release(out, step=False)

    def _release(self, out: list[Released[T]], step: bool) -> None:
        held, self.held = self.held, []
        item, ts, arrival = held[0]
        if step:
            self.steps += 1
            self.reference = ts
            out.append((item, ts, arrival))
        else:
            self.jumps += 1
            out.append((item, self.reference, arrival))
        self._readmit(held[1:], out)

    def _readmit(self, items: Iterable[tuple[T, float | None, float]], out: list[Released[T]]) -> None:
        for item, ts, arrival in items:
            self._admit(item, ts, arrival, out)
