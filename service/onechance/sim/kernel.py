"""A tiny discrete-event kernel: processes are generators that yield how many seconds to sleep.

A sleeping process can be woken early with :meth:`Kernel.wake` (the value it receives from ``yield`` is
then the wake value; a sleep that runs out gives ``None``).  Time is kept in integer microseconds, and
processes due at the same time run in the order they were scheduled, so a run is fully determined by
the seed of the random generator the processes use.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Generator
from typing import Any

__all__ = ["US", "Kernel", "Proc"]

US = 1_000_000

ProcGen = Generator[float | None, Any, Any]


class Proc:
    __slots__ = ("done", "gen", "name", "token")

    def __init__(self, gen: ProcGen, name: str = "") -> None:
        self.gen = gen
        self.name = name
        self.token = 0
        self.done = False


class Kernel:
    def __init__(self, start_us: int, before_step: Callable[[int], None] | None = None) -> None:
        self.now = start_us
        self._heap: list[tuple[int, int, Proc, int, Any]] = []
        self._seq = 0
        self._before = before_step
        self.current: Proc | None = None

    def spawn(self, gen: ProcGen, delay: float = 0.0, name: str = "") -> Proc:
        proc = Proc(gen, name)
        self._push(self.now + round(delay * US), proc, None)
        return proc

    def _push(self, t: int, proc: Proc, value: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, proc, proc.token, value))

    def wake(self, proc: Proc, value: Any = True) -> None:
        """Resume ``proc`` now (its pending sleep is cancelled)."""
        if proc.done:
            return
        proc.token += 1
        self._push(self.now, proc, value)

    @property
    def next_time(self) -> int | None:
        while self._heap and self._heap[0][3] != self._heap[0][2].token:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def step(self) -> bool:
        """Run the next due process step; False when nothing is scheduled."""
        heap = self._heap
        while heap:
            t, _seq, proc, token, value = heapq.heappop(heap)
            if token != proc.token or proc.done:
                continue
            if t > self.now:
                self.now = t
            if self._before is not None:
                self._before(self.now)
            self.current = proc
            try:
                delay = proc.gen.send(value)
            except StopIteration:
                proc.done = True
                return True
            if delay is None:
                continue  # sleeps until woken
            proc.token += 1
            self._push(self.now + max(0, round(delay * US)), proc, None)
            return True
        return False
