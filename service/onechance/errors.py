"""Errors that must be seen without flooding the log: one full report per key and interval, then a count."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

__all__ = ["RateLimitedLog", "load_when_ready"]

T = TypeVar("T")


class RateLimitedLog:
    """Logs the first failure of each key with its traceback, then at most one line per ``interval`` seconds
    saying how many more there were (so a failure repeated on every event neither hides nor floods)."""

    def __init__(self, logger: logging.Logger, interval: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self.counts: dict[str, int] = {}

    def failed(self, key: str, message: str, exc: BaseException | None = None) -> None:
        self.counts[key] = self.counts.get(key, 0) + 1
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        more = self._suppressed.pop(key, 0)
        suffix = f" ({more} more since the last report)" if more else ""
        exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
        self.logger.error("%s%s", message, suffix, exc_info=exc_info)


async def load_when_ready(load: Callable[[], Awaitable[T]], stop: asyncio.Event, errors: RateLimitedLog,
                          what: str) -> T | None:
    """``load()`` until it answers (a store that is not up yet at start), retrying after 1 s, doubling up to 60 s;
    each failure reported through ``errors`` (``"<what> not loaded yet: <why>"``).  None when ``stop`` is set
    first."""
    from .store.engine import describe

    delay = 1.0
    while not stop.is_set():
        try:
            return await load()
        except Exception as exc:
            errors.failed("restore", f"{what} not loaded yet: {describe(exc)}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(60.0, delay * 2)
    return None
