"""The daemon's garbage collection, paced so that a full collection does not hold the event loop every second.

Python's collector runs a full collection (every object the process holds, some 60-140 ms at 10,000 calls in
progress) whenever the younger generations have promoted a quarter as many objects as the last one kept.
Under a burst of API requests that is about once a second, and each one delays every other request, a health
check included, by as long (docs/performance.md).  Here:

* what exists once the daemon is built (modules, classes, the app) is frozen out of every collection
  (:func:`gc.freeze`): it lives as long as the process;
* the young generations are collected as usual (they are small and quick);
* a full collection runs on a timer, every ``daemon.gc_interval`` seconds, and otherwise only after
  :data:`FULL_AFTER` young collections (instead of Python's 10), a bound on the garbage that can wait for it.

Objects without reference cycles are freed the moment their last reference goes, whatever this does; only
cyclic garbage waits for a full collection, for at most ``gc_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)

FULL_AFTER = 1000  # generation-1 collections before a full one is due without the timer (Python's default: 10)


class GcPace:
    """``with pace.installed(): ... await pace.run()`` for the life of the daemon (process-wide: one per
    process)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.full = 0  # full collections run by the timer
        self.longest = 0.0  # the longest of them, in seconds

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Freeze what exists now and pace the full collections; Python's own pace is back on exit."""
        before = gc.get_threshold()
        gc.collect()
        gc.freeze()
        gc.set_threshold(before[0], before[1], FULL_AFTER)
        try:
            yield
        finally:
            gc.set_threshold(*before)
            gc.unfreeze()

    def collect(self) -> float:
        """One full collection now; how long it held the process, in seconds."""
        t0 = time.perf_counter()
        found = gc.collect()
        took = time.perf_counter() - t0
        self.full += 1
        self.longest = max(self.longest, took)
        log.debug("full garbage collection: %d unreachable objects freed in %.0f ms", found, took * 1000)
        return took

    async def run(self) -> None:
        """Every ``interval`` seconds, a full collection (until cancelled)."""
        while True:
            await asyncio.sleep(self.interval)
            self.collect()
