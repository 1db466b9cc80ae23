"""Flow control between an AMI socket and its one consumer: a bounded queue, TCP back-pressure, a backlog.

The socket side calls :meth:`FlowControl.put` from inside ``data_received`` (synchronously, never blocking);
the consumer takes items from :attr:`FlowControl.queue` and calls :meth:`FlowControl.item_done` after each.
When the queue fills past its high-water mark (three quarters of ``maxsize`` items, or of ``max_weight``: each
item may weigh, e.g. the bytes of the socket read it holds), reading from the socket is paused (the kernel's
buffers then push back on Asterisk); the rest of the read being handled waits in a backlog, in order.  Reading
resumes when the consumer has drained the queue below the low-water marks (a quarter).  Should even the backlog
fill (it only holds what one read brought), :meth:`put` says so and the link drops the connection to resync
rather than silently losing events.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Generic, Protocol, TypeVar

__all__ = ["FlowControl", "Reader"]

T = TypeVar("T")


class Reader(Protocol):
    """What flow control needs of a transport (``asyncio.ReadTransport``)."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


class FlowControl(Generic[T]):
    """A bounded, ordered hand-over from a socket's callback to one consumer task."""

    def __init__(self, maxsize: int, backlog: int | None = None, max_weight: int = 0) -> None:
        self.queue: asyncio.Queue[T] = asyncio.Queue(maxsize)
        self.high = max(1, maxsize * 3 // 4) if maxsize else 0
        self.low = maxsize // 4
        self.backlog_max = backlog if backlog is not None else max(10000, 4 * maxsize)
        self.high_weight = max(1, max_weight * 3 // 4) if max_weight else 0
        self.low_weight = max_weight // 4
        self.weight = 0  # of the items waiting (queue and backlog)
        self.count = 0  # what the items waiting hold (e.g. AMI messages; 1 per item unless told)
        self._weights: deque[tuple[int, int]] = deque()  # each waiting item's weight and count, oldest first
        self._backlog: deque[T] = deque()
        self._reader: Reader | None = None
        self.paused = False
        self.pauses = 0  # times reading was paused because the consumer fell behind

    @property
    def depth(self) -> int:
        """Items waiting for the consumer (queue and backlog)."""
        return self.queue.qsize() + len(self._backlog)

    def attach(self, reader: Reader) -> None:
        """The transport whose reading is paused and resumed (a new connection)."""
        self._reader = reader
        self.paused = False

    def detach(self) -> None:
        """The connection is gone: nothing to pause or resume any more (queued items stay)."""
        self._reader = None
        self.paused = False

    def put(self, item: T, weight: int = 1, count: int = 1) -> bool:
        """Queue one item, in order, never blocking; False when even the backlog is full (the item is not
        queued: the caller must drop the connection)."""
        if self._backlog or self.queue.full():
            if len(self._backlog) >= self.backlog_max:
                return False
            self._backlog.append(item)
            self._weigh(weight, count)
            self._pause()
            return True
        self.queue.put_nowait(item)
        self._weigh(weight, count)
        if (self.high and self.queue.qsize() >= self.high) or (self.high_weight and self.weight >= self.high_weight):
            self._pause()
        return True

    def put_last(self, item: T) -> None:
        """Queue an item after everything else, whatever the bounds (the final item of a link)."""
        if self._backlog or self.queue.full():
            self._backlog.append(item)
        else:
            self.queue.put_nowait(item)
        self._weigh(0, 1)

    def _weigh(self, weight: int, count: int) -> None:
        self.weight += weight
        self.count += count
        self._weights.append((weight, count))

    def item_done(self) -> None:
        """The consumer handled one item: refill the queue from the backlog, resume reading once drained."""
        if self._weights:
            weight, count = self._weights.popleft()
            self.weight -= weight
            self.count -= count
        backlog = self._backlog
        while backlog and not self.queue.full():
            self.queue.put_nowait(backlog.popleft())
        if (self.paused and not backlog and self.queue.qsize() <= self.low
                and (not self.high_weight or self.weight <= self.low_weight)):
            self.resume()

    def _pause(self) -> None:
        if not self.paused and self._reader is not None:
            self.paused = True
            self.pauses += 1
            self._reader.pause_reading()

    def resume(self) -> None:
        """Resume reading (also when a connection ends: never leave a transport paused)."""
        if self.paused:
            self.paused = False
            if self._reader is not None:
                with contextlib.suppress(RuntimeError):  # transport closing
                    self._reader.resume_reading()
