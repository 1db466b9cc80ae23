"""The journey writer: the daemon's asynchronous, loss-free path from call records to the database.

``submit()`` is synchronous and never waits for the database: it puts the call record (or a recovery) in a
bounded in-memory queue keyed by ``(pbx, call_id)`` (several records of a call coalesce into the newest), or
appends it to the on-disk spool when the queue is full.  A background task writes batches every
``flush_interval`` seconds (or as soon as ``batch_size`` calls wait) with idempotent upserts.

When the database is unavailable, every batch goes to the spool (fsync'd) and the task retries with
exponential backoff; once the database answers again, the spool is written back in order before
anything else.  Journeys spooled by an earlier run (a crash, a SIGKILL, a restart while the database
was down) are written when the writer starts.  A journey the database refuses for its data (not for
its availability) is written to ``<spool>/rejected.jsonl`` and counted, so it never blocks the rest.

Nothing accepted is lost silently:

* a SQLite file (or its directory) removed or replaced under the running writer is noticed at every flush
  and after every write (:class:`~onechance.store.engine.FileWatch`): the database is reported unavailable,
  the batch just written (into the deleted file) is spooled again, and the next try opens a new file;
* a spool directory removed under it is recreated with everything it held (:meth:`Spool.check`);
* the spool is bounded (``spool_max_bytes``); when it (or the disk) refuses, journeys stay in memory up to
  ``memory_max``, and past that each new call is dropped, counted (``onechance_store_journeys_dropped``) and
  logged;
* :meth:`close` tries the database once more (even in the middle of a back-off), spools what it cannot
  store, retries until its deadline when the spool refuses, and ends with one line saying how many journeys
  were stored, spooled and lost (:attr:`lost`); :meth:`hurry` makes it spool at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from enum import StrEnum
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from ..errors import RateLimitedLog
from ..journey import CallRecord, Recovered
from . import migrate
from .engine import (
    FileWatch,
    StoreConfigError,
    StoreUnavailable,
    describe,
    is_schema_missing,
    is_unavailable,
    sqlite_file,
)
from .facts import Fact
from .rows import BadJourney, JourneyRows, Key, StoreItem, from_line, journey_rows, to_line
from .spool import DEFAULT_SEGMENT_BYTES, Spool, SpoolError, SpoolFull
from .upsert import apply_ordered, upsert_rows

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger("onechance.store")

#: batches a recovery whose call is not stored yet is retried for, before it is set aside
ORPHAN_RETRIES = 3
#: at close, while the spool refuses (disk full), how often the database and the spool are tried again
CLOSE_RETRY = 0.5


class WriterState(StrEnum):
    NEW = "new"  # not started, or not yet talked to the database
    OK = "ok"  # the last database operation succeeded
    UNAVAILABLE = "unavailable"  # the database cannot be reached: journeys go to the spool
    CLOSED = "closed"


class JourneyWriter:
    """Batches journey dicts into the database; never loses one, never blocks the caller.

    Use from one event loop: ``await start()``, then ``submit()`` from the consumer, then
    ``await close()``.  Metrics (``onechance_store_*``) are registered on ``registry``.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        spool_dir: str | Path,
        registry: CollectorRegistry,
        *,
        batch_size: int = 200,
        flush_interval: float = 0.5,
        queue_size: int = 10000,
        retry_interval: float = 5.0,
        max_retry_interval: float = 60.0,
        auto_upgrade: bool = True,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        spool_max_bytes: int = 0,
        memory_max: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.batch_size = max(1, batch_size)
        self.flush_interval = flush_interval
        self.queue_size = max(1, queue_size)
        self.retry_interval = retry_interval
        self.max_retry_interval = max(retry_interval, max_retry_interval)
        self.auto_upgrade = auto_upgrade
        self._clock = clock
        self._spool = Spool(spool_dir, segment_bytes=segment_bytes, max_bytes=spool_max_bytes)
        #: calls kept in memory at most when the spool cannot take them (beyond: dropped, counted, logged)
        self.memory_max = max(self.queue_size, memory_max if memory_max is not None else 4 * self.queue_size)
        self._pending: dict[Key, CallRecord] = {}
        # recoveries and facts (alerts, deliveries, worklist entries): written after the records of their batch,
        # in the order they came
        self._ordered: list[Recovered | Fact] = []
        self._durable_waiters: dict[int, asyncio.Future[None]] = {}  # id(fact) -> persist() waiting for it
        self._orphans: dict[Recovered, int] = {}  # recoveries whose call was not stored yet -> tries
        self._state = WriterState.NEW
        self._schema_ready = False
        self._started = False
        self._closing = False
        self._busy = False
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._retry_delay = retry_interval
        self._next_retry = 0.0
        self.last_error: str | None = None
        self.last_write_at: float | None = None
        self._overflow_logged = False
        self._errors = RateLimitedLog(log)
        self.spool_error: str | None = None  # the spool's last refusal, until it takes an append again
        self._spool_failure: SpoolError | None = None
        self._file = FileWatch(path) if (path := sqlite_file(engine)) is not None else None
        self._reopen = False  # the SQLite file vanished: dispose the engine (and recreate its directory) first
        self._file_replaced = False
        self._hurried = asyncio.Event()
        self._final_try = False  # closing: the database was tried once more regardless of the back-off
        self._spool_retry_at = 0.0  # the spool refused: the next spill (but at close) not before this
        self.dropped = 0  # new calls refused: spool and memory both full
        # what the close did with the journeys (calls) still waiting: stored, spooled, lost
        self.closing_stored = 0
        self.closing_spooled = 0
        self.lost = 0  # calls neither stored nor spooled when the writer closed
        self.lost_facts = 0  # alerts, deliveries, worklist entries and recoveries likewise

        self.m_queue_depth = Gauge(
            "onechance_store_queue_depth", "Journeys waiting in memory for the database", registry=registry
        )
        self.m_queue_depth.set_function(lambda: float(len(self._pending) + len(self._ordered)))
        self.m_spool_bytes = Gauge(
            "onechance_store_spool_bytes", "Bytes of journeys waiting in the on-disk spool", registry=registry
        )
        self.m_spool_bytes.set_function(lambda: float(self._spool.nbytes))
        self.m_spool_journeys = Gauge(
            "onechance_store_spool_journeys", "Journeys waiting in the on-disk spool", registry=registry
        )
        self.m_spool_journeys.set_function(lambda: float(self._spool.journeys))
        self.m_up = Gauge(
            "onechance_store_up", "1 when the database answered the last write, else 0", registry=registry
        )
        self.m_up.set_function(lambda: 1.0 if self._state == WriterState.OK else 0.0)
        self.m_write_seconds = Histogram(
            "onechance_store_write_seconds", "Time to write one batch of journeys", registry=registry
        )
        self.m_failures = Counter(
            "onechance_store_write_failures",
            "Failed writes: reason=unavailable (database down, retried), rejected (bad data), spool (disk)",
            ["reason"],
            registry=registry,
        )
        self.m_written = Counter(
            "onechance_store_journeys_written", "Journey versions written to the database", registry=registry
        )
        self.m_spooled = Counter(
            "onechance_store_journeys_spooled", "Journeys put in the on-disk spool", registry=registry
        )
        self.m_spool_max = Gauge(
            "onechance_store_spool_max_bytes", "The spool's size bound (database.spool_max_bytes; 0: none)",
            registry=registry,
        )
        self.m_spool_max.set(spool_max_bytes)
        self.m_dropped = Counter(
            "onechance_store_journeys_dropped",
            "Calls not kept: the spool refused them (full or disk error) and memory_max calls already waited",
            registry=registry,
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, engine: AsyncEngine, registry: CollectorRegistry, **overrides: Any
    ) -> JourneyWriter:
        """A writer configured by the ``[database]`` settings."""
        db = settings.database
        kwargs: dict[str, Any] = {
            "batch_size": db.batch_size,
            "flush_interval": db.flush_interval,
            "queue_size": db.queue_size,
            "retry_interval": db.retry_interval,
            "max_retry_interval": max(60.0, db.retry_interval),
            "auto_upgrade": db.auto_upgrade,
            "spool_max_bytes": db.spool_max_bytes,
        }
        kwargs.update(overrides)
        return cls(engine, settings.spool_dir(), registry, **kwargs)

    # ---- state -----------------------------------------------------------------------------------------
    @property
    def state(self) -> WriterState:
        return self._state

    @property
    def ready(self) -> bool:
        """Started, not closing, and the database answered the last operation."""
        return self._started and not self._closing and self._state == WriterState.OK

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    @property
    def spooled(self) -> int:
        """Journeys waiting in the on-disk spool."""
        return self._spool.journeys

    @property
    def spool_dir(self) -> Path:
        return self._spool.directory

    def status(self) -> dict[str, Any]:
        """A snapshot for health endpoints."""
        return {
            "state": str(self._state),
            "ready": self.ready,
            "queue_depth": len(self._pending),
            "spool_journeys": self._spool.journeys,
            "spool_bytes": self._spool.nbytes,
            "spool_error": self.spool_error,
            "dropped": self.dropped,
            "last_error": self.last_error,
            "last_write_at": self.last_write_at,
        }

    def problem(self) -> str | None:
        """Why the store is not ready, in one line (None when it is).  A spool that refuses appends while the
        database takes every journey puts nothing at risk: it is in :meth:`status` and the log, not here."""
        if self._state == WriterState.UNAVAILABLE:
            if self.spool_error is not None:
                return (f"database unavailable ({self.last_error}) and the spool refuses journeys "
                        f"({self.spool_error}): {self.in_memory} wait in memory only")
            return f"database unavailable ({self.last_error}): journeys go to the spool"
        if not self.ready:
            return "starting" if not self._closing else "closing"
        return None

    # ---- the consumer's side ---------------------------------------------------------------------------
    def submit(self, item: StoreItem) -> None:
        """Queue a call record (or a recovery, or a fact) for writing.  Never blocks on the database and never
        raises for the database's sake."""
        if self._closing and self._task is None:
            raise RuntimeError("the journey writer is closed")
        if not isinstance(item, CallRecord):
            self._ordered.append(item)
            if len(self._ordered) >= self.batch_size:
                self._wake.set()
            return
        key = item.key
        old = self._pending.get(key)
        if old is not None:
            if item.updated_at >= old.updated_at:
                self._pending[key] = item
            return
        if len(self._pending) >= self.queue_size and self._spool_open():
            try:
                self._spool.append([to_line(item)], sync=False)  # fsync'd by the background task
            except SpoolError as exc:
                self._spool_refused(exc, 1)
                if len(self._pending) >= self.memory_max:
                    self._drop(item)
                    return
            else:
                self.spool_error = self._spool_failure = None
                self.m_spooled.inc()
                if not self._overflow_logged:
                    self._overflow_logged = True
                    log.warning("the store queue is full (%d calls): overflowing to the spool in %s",
                                self.queue_size, self._spool.directory)
                self._wake.set()
                return
        self._pending[key] = item
        if len(self._pending) >= self.batch_size:
            self._wake.set()

    async def persist(self, facts: Sequence[Fact]) -> None:
        """Return once these facts are durable on this machine's disk: appended to the spool and fsync'd (a few
        milliseconds; nothing waits for the database), from where the writer stores them at once.  Before
        start, or when the spool refuses, they are written to the database and this waits for that; raises
        :class:`SpoolError` when neither took them (they stay queued in memory and are written later).

        Spooled facts may reach the database before facts submitted earlier: harmless, since every fact row
        is stored only over an older version of itself (``updated_at``)."""
        if not facts:
            return
        if self._started and not self._closing:
            try:
                self._spool.append([to_line(fact) for fact in facts], sync=False)
                await self._spool.sync_in_thread()
            except SpoolError as exc:
                self._spool_refused(exc, len(facts))
            else:
                self.spool_error = self._spool_failure = None
                self._wake.set()
                return
        loop = asyncio.get_running_loop()
        waiters = []
        for fact in facts:
            fut: asyncio.Future[None] = loop.create_future()
            self._durable_waiters[id(fact)] = fut
            self._ordered.append(fact)
            waiters.append(fut)
        self._wake.set()
        await asyncio.gather(*waiters)

    def _durable(self, batch: Sequence[StoreItem]) -> None:
        """These items are in the database or fsync'd in the spool: tell whoever waits for them."""
        if not self._durable_waiters:
            return
        for item in batch:
            fut = self._durable_waiters.pop(id(item), None)
            if fut is not None and not fut.done():
                fut.set_result(None)

    def _spool_open(self) -> bool:
        return self._started

    def _spool_refused(self, exc: SpoolError, n: int) -> None:
        self.m_failures.labels("spool").inc()
        self.spool_error = str(exc)
        self._spool_failure = exc
        with contextlib.suppress(RuntimeError):  # (no loop: a close outside one)
            self._spool_retry_at = asyncio.get_running_loop().time() + max(1.0, self.retry_interval)
        what = "the spool is full" if isinstance(exc, SpoolFull) else "the spool refuses appends"
        self._errors.failed("spool", f"{exc}: {what}; {len(self._pending) + n} journeys wait in memory (at most "
                            f"{self.memory_max} calls, then new calls are dropped)")

    def _drop(self, item: CallRecord) -> None:
        self.dropped += 1
        self.m_dropped.inc()
        self._errors.failed("dropped", f"call {item.call_id} ({item.pbx}) DROPPED: the spool refuses journeys "
                            f"({self.spool_error}) and {len(self._pending)} calls already wait in memory "
                            f"(memory_max); {self.dropped} dropped so far")
    # ---- lifecycle -------------------------------------------------------------------------------------
    def _open(self) -> bool:
        """Open the spool (raises :class:`SpoolError` if it cannot be used); False if already open."""
        if self._started:
            return False
        self._spool.open()
        self._started = True
        if self._spool.has_data():
            log.info("%d journeys in the spool %s from an earlier run: writing them",
                     self._spool.journeys, self._spool.directory)
        return True

    async def start(self) -> None:
        """Start writing in a task of the writer's own (for tools and tests; the daemon runs :meth:`run` in
        its task group instead); journeys left in the spool by an earlier run are written first."""
        self._open()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="onechance-store-writer")

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every journey submitted so far is in the database (True), or in the spool
        because the database is unavailable (False)."""
        async def wait() -> bool:
            while True:
                if not self._has_pending() and not self._spool.has_data() and not self._busy:
                    return True
                if self._state == WriterState.UNAVAILABLE and not self._has_pending() and not self._busy:
                    return False
                if self._task is None or self._task.done():
                    return False
                self._progress.clear()
                self._wake.set()
                await self._progress.wait()

        if timeout is None:
            return await wait()
        try:
            return await asyncio.wait_for(wait(), timeout)
        except TimeoutError:
            return False

    async def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the writer has talked to the database once (or ``timeout``); returns ``ready``."""
        async def wait() -> None:
            while self._state == WriterState.NEW and not self._closing and (
                    self._task is None or not self._task.done()):
                self._progress.clear()
                self._wake.set()
                await self._progress.wait()

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wait(), timeout)
        return self.ready

    async def close(self, timeout: float | None = 30.0) -> None:
        """Write what can be written, spool the rest, release the spool, and say in one line what became of the
        journeys still waiting (:attr:`lost`: calls neither stored nor spooled, e.g. on a full disk).  Returns
        within about ``timeout`` seconds: what is not written by then is spooled for the next start, and while
        the spool refuses, the database and the spool are tried again until then.  :meth:`hurry` cuts it short
        (straight to the spool)."""
        if self._state == WriterState.CLOSED:
            return
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        self._closing = True
        self._wake.set()
        task = self._task
        cancelled = False
        if task is not None:
            try:
                await self._wait_for(task, deadline)
            except asyncio.CancelledError:
                cancelled = True  # spill and release the spool all the same, then pass the cancellation on
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task  # let it put its batch in flight back before spilling
            self._check_storage()
            await self._spill_pending(force=True)
            if not cancelled:
                await self._retry_until(deadline)
        elif self._has_pending():
            # never started: nothing was written, keep it all on disk
            try:
                self._open()
            except SpoolError as exc:
                log.error("%s: %d journeys submitted before start() cannot be spooled", exc,
                          len(self._pending) + len(self._ordered))
            await self._spill_pending(force=True)
        self._check_storage()
        try:
            await self._spool.aclose()
        except SpoolError as exc:  # never swallowed: what the spool held may not be on the disk
            self.m_failures.labels("spool").inc()
            log.error("%s: the journeys spooled last may be lost", exc)
        self._task = None
        self._state = WriterState.CLOSED
        self._report_close()
        if cancelled:
            raise asyncio.CancelledError

    def hurry(self) -> None:
        """Stop waiting for the database: the close (now or to come) spools what is not written at once."""
        self._hurried.set()
        self._wake.set()

    @property
    def hurried(self) -> bool:
        return self._hurried.is_set()

    async def _wait_for(self, task: asyncio.Task[None], deadline: float | None) -> None:
        """Until ``task`` ends, ``deadline`` (loop time) passes or :meth:`hurry` is called."""
        loop = asyncio.get_running_loop()
        hurried = loop.create_task(self._hurried.wait())
        try:
            timeout = None if deadline is None else max(0.0, deadline - loop.time())
            await asyncio.wait({task, hurried}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            hurried.cancel()

    async def _retry_until(self, deadline: float | None) -> None:
        """At close, while journeys are left in memory (the spool refused them: a full disk): try the database
        and the spool again every ``CLOSE_RETRY`` seconds until ``deadline``."""
        loop = asyncio.get_running_loop()
        while self._has_pending() and not self._hurried.is_set() and deadline is not None:
            if loop.time() + CLOSE_RETRY >= deadline:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurried.wait(), CLOSE_RETRY)
            self._check_storage()
            if self._reopen:
                await self._reopen_database()
            try:
                await self._write_pending()
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            await self._spill_pending(force=True)

    def _report_close(self) -> None:
        """One line: what became of the journeys still waiting when the writer closed."""
        self.lost = len(self._pending)
        self.lost_facts = len(self._ordered) + len(self._orphans)
        for fut in self._durable_waiters.values():
            if not fut.done():
                fut.set_exception(SpoolError("the journey writer closed before this could be stored or spooled"))
        self._durable_waiters.clear()
        parts = [f"shutdown: {self.closing_stored} journeys stored, {self.closing_spooled} spooled for the next "
                 f"start, {self.lost} {'LOST' if self.lost else 'lost'}"]
        if self.lost_facts:
            parts.append(f", and {self.lost_facts} alert, delivery, callback or recovery records LOST")
        if self.lost or self.lost_facts:
            parts.append(f" (neither the database nor the spool took them: {self.last_error or '-'}; "
                         f"{self.spool_error or '-'})")
        if self._spool.has_data():
            parts.append(f"; {self._spool.journeys} records wait in the spool {self._spool.directory}")
        if self.dropped:
            parts.append(f"; {self.dropped} calls were DROPPED earlier (spool and memory full)")
        if self.lost or self.lost_facts or self.dropped:
            log.error("%s", "".join(parts))
        else:
            log.info("%s", "".join(parts))

    @property
    def in_memory(self) -> int:
        """Calls and records waiting in memory only (neither in the database nor in the spool)."""
        return len(self._pending) + len(self._ordered) + len(self._orphans)

    @property
    def unsaved(self) -> int:
        """Calls and records this writer could not keep (lost at close, or dropped when everything was full)."""
        return self.lost + self.lost_facts + self.dropped

    # ---- the storage under us ----------------------------------------------------------------------------
    def _check_storage(self) -> None:
        """The spool's directory written back if it was removed; the SQLite file checked (see FileWatch)."""
        if self._started and self._state != WriterState.CLOSED:
            try:
                repaired = self._spool.check()
            except SpoolError as exc:
                self._spool_refused(exc, 0)
            else:
                if repaired:
                    log.warning("%s", repaired)
        if self._file is not None and not self._reopen:
            what = self._file.changed()
            if what is not None:
                self._database_lost(what)

    def _database_lost(self, what: str) -> None:
        assert self._file is not None
        self._file.forget()
        self._reopen = True
        self._schema_ready = False
        log.error("%s: SQLite would go on writing into the deleted file; journeys go to the spool %s, and a new "
                  "database file is opened at the next try", what, self._spool.directory)
        self._mark_unavailable(StoreUnavailable(what), quiet=True)

    async def _reopen_database(self) -> None:
        """After the SQLite file vanished: close every connection to it (the next one opens a new file at the
        same path, in a directory created again if it went too)."""
        self._reopen = False
        try:
            await self.engine.dispose()
        except Exception as exc:
            log.warning("closing the connections to the removed database file: %s", describe(exc))
        if self._file is not None:
            try:
                self._file.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.error("cannot create the database directory %s again: %s", self._file.path.parent,
                          exc.strerror or exc)

    # ---- as a daemon service (``onechance.app.Service``) -------------------------------------------------
    def prepare(self) -> None:
        """Take the spool before anything starts: a spool directory another onechance holds, or one that cannot
        be made, is a configuration error (:class:`StoreConfigError`, one line, exit 2), not a crash later."""
        try:
            self._open()
        except SpoolError as exc:
            raise StoreConfigError(str(exc)) from None

    async def run(self) -> None:
        """Write until :meth:`aclose`, in the calling task (the daemon's task group)."""
        self._open()  # already open after prepare()
        if self._task is None:
            self._task = asyncio.current_task()
            await self._run()
        elif self._task is not None:
            await asyncio.shield(self._task)

    async def aclose(self) -> None:
        """:meth:`close` with the default timeout."""
        await self.close()

    # ---- the background task ---------------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                if not self._closing:
                    await self._sleep(loop)
                self._wake.clear()
                if self._closing and self._hurried.is_set():
                    await self._spill_pending(force=True)  # close() does it again should this be cut short
                    return
                self._check_storage()
                await self._spool.sync_in_thread()
                waiting = self._state == WriterState.UNAVAILABLE and loop.time() < self._next_retry
                if waiting and self._closing and not self._final_try:
                    waiting = False  # closing: one more try at once (the database may be back), not the back-off's
                if self._closing:
                    self._final_try = True
                if waiting:
                    await self._spill_pending()
                    if self._closing:
                        return
                    continue
                if self._reopen:
                    await self._reopen_database()
                ok = await self._drain_spool()
                if ok:
                    ok = await self._write_pending()
                if ok and not self._closing and (not self._schema_ready or self._state != WriterState.OK):
                    ok = await self._probe()
                if not ok:
                    await self._spill_pending(force=True)
                    if self._closing:
                        return
                elif self._closing and not self._has_pending() and not self._spool.has_data():
                    return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let the writer die: everything is still in memory/spool
                log.exception("store writer error; retrying")
                self.last_error = f"{type(exc).__name__}: {exc}"
                await self._spill_pending()
                if self._closing:
                    return
                await asyncio.sleep(self.retry_interval)
            finally:
                self._busy = False
                self._progress.set()

    async def _sleep(self, loop: asyncio.AbstractEventLoop) -> None:
        # submit() only wakes the writer for a full batch: a journey arriving while it sleeps (idle, or
        # waiting for the next retry) must not wait in memory longer than flush_interval
        delay = self.flush_interval
        if self._state == WriterState.UNAVAILABLE:
            delay = min(max(0.0, self._next_retry - loop.time()), delay)
        if delay <= 0 or self._wake.is_set():
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), delay)

    async def _probe(self) -> bool:
        """Check the database when there is nothing to write (after start, and on each retry while it is
        unavailable), upgrading the schema the first time, so that ``ready`` means something."""
        self._busy = True
        try:
            await self._prepare_schema()
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            if not is_unavailable(exc) and not isinstance(exc, StoreUnavailable):
                log.error("database check failed: %s", describe(exc))
            self._mark_unavailable(exc)
            return False
        self._mark_ok()
        return True

    async def _drain_spool(self) -> bool:
        while self._spool.has_data():
            batch = self._spool.read(self.batch_size)
            if batch is None:
                break
            self._busy = True
            items: list[StoreItem] = []
            for line in batch.journeys:
                try:
                    items.append(from_line(line))
                except BadJourney as exc:
                    self.m_failures.labels("rejected").inc()
                    log.error("a spooled journey cannot be stored: %s", exc)
                    self._spool.reject([line], str(exc))
            if items and not await self._write(items):
                return False
            self._spool.commit(batch)
            if isinstance(self._spool_failure, SpoolFull):
                self.spool_error = self._spool_failure = None  # it shrank: room again
            self._progress.set()
        return True

    def _has_pending(self) -> bool:
        return bool(self._pending or self._ordered)

    def _take_batch(self) -> list[StoreItem]:
        """Up to ``batch_size`` records, then every recovery and fact waiting (written after the records of the
        same batch; a fact never waits behind a backlog of records)."""
        keys = list(islice(self._pending, self.batch_size))
        batch: list[StoreItem] = [self._pending.pop(k) for k in keys]
        batch.extend(self._ordered)
        self._ordered = []
        return batch

    async def _write_pending(self) -> bool:
        while self._has_pending():
            batch = self._take_batch()
            self._busy = True
            try:
                ok = await self._write(batch)
            except BaseException:  # cancelled mid-write (close() timed out or was cancelled)
                self._keep_in_memory(batch)  # close() spools them
                raise
            if not ok:
                await self._spool_journeys(batch)
                return False
            self._progress.set()
            if not self._closing and len(self._pending) < self.batch_size:
                break  # the rest waits for the next flush interval
        return True

    async def _spill_pending(self, force: bool = False) -> None:
        """Move everything waiting in memory to the spool (the database is unavailable, or closing).  While the
        spool refuses (full, disk error), tried again only every retry interval unless ``force``."""
        if not (self._has_pending() or self._orphans) or not self._started:
            return
        if not force and self.spool_error is not None and \
                asyncio.get_running_loop().time() < self._spool_retry_at:
            return
        batch: list[StoreItem] = [*self._pending.values(), *self._ordered, *self._orphans]
        self._pending.clear()
        self._ordered = []
        self._orphans.clear()
        await self._spool_journeys(batch)

    async def _spool_journeys(self, batch: list[StoreItem]) -> None:
        """Append to the spool and fsync, the fsync in a worker thread (the loop never waits for it)."""
        calls = sum(1 for item in batch if isinstance(item, CallRecord))
        try:
            self._spool.append([to_line(item) for item in batch], sync=False)
        except SpoolError as exc:
            # the disk (or the bound) refuses: keep them in memory (beyond the queue's bound) rather than lose them
            self._spool_refused(exc, len(batch))
            self._keep_in_memory(batch)
        else:
            self.m_spooled.inc(len(batch))
            try:
                await self._spool.sync_in_thread()
            except SpoolError as exc:
                # the disk took the write but not the fsync: do not take these journeys for durable
                self._spool_refused(exc, len(batch))
                self._keep_in_memory(batch)
            else:
                self.spool_error = self._spool_failure = None
                if self._closing:
                    self.closing_spooled += calls
                self._durable(batch)

    def _keep_in_memory(self, batch: list[StoreItem]) -> None:
        """Put items back in the queue (beyond its bound), unless a newer version of a call waits there."""
        ordered: list[Recovered | Fact] = []
        for item in batch:
            if not isinstance(item, CallRecord):
                ordered.append(item)
                continue
            old = self._pending.get(item.key)
            if old is None or item.updated_at > old.updated_at:
                self._pending[item.key] = item
        self._ordered = ordered + self._ordered

    # ---- database --------------------------------------------------------------------------------------
    async def _prepare_schema(self) -> None:
        if self._schema_ready:
            return
        try:
            if self.auto_upgrade:
                await migrate.upgrade(self.engine)
            else:
                current = await migrate.current_revision(self.engine)
                head = migrate.head_revision()
                if current != head:
                    raise StoreUnavailable(
                        f"the database schema is at {current or 'nothing'}, this version needs {head}: "
                        "run `onechance db upgrade` (or set database.auto_upgrade)"
                    )
        except StoreUnavailable:
            raise
        except Exception as exc:
            if is_unavailable(exc):
                raise
            raise StoreUnavailable(f"cannot upgrade the database schema: {describe(exc)}") from exc
        self._schema_ready = True

    async def _write(self, items: Sequence[StoreItem]) -> bool:
        """Write records, recoveries and facts; False (nothing lost: the caller spools them) when the database
        is unavailable.  Items refused for their data are set aside in the spool's rejected file."""
        now = self._clock()
        latest: dict[Key, tuple[CallRecord, JourneyRows]] = {}
        ordered: list[Recovered | Fact] = [*self._orphans]
        for item in items:
            if not isinstance(item, CallRecord):
                ordered.append(item)
                continue
            try:
                rows = journey_rows(item, now)
            except BadJourney as exc:
                self._reject(item, str(exc))
                continue
            old = latest.get(rows.key)
            if old is None or item.updated_at >= old[0].updated_at:
                latest[rows.key] = (item, rows)
        if not latest and not ordered:
            return True
        pairs = list(latest.values())
        try:
            await self._prepare_schema()
            await self._upsert([rows for _, rows in pairs], ordered)
        except Exception as exc:
            if is_schema_missing(exc):
                self._schema_ready = False  # dropped under us: upgrade again (auto_upgrade) or wait for it
            if is_unavailable(exc) or is_schema_missing(exc):
                self._mark_unavailable(exc)
                return False
            if len(pairs) + len(ordered) <= 1:
                for item in [p[0] for p in pairs] + ordered:
                    self._reject(item, describe(exc))
                self._durable(items)
                return True
            log.warning("a batch of %d journeys was refused (%s); writing them one by one", len(pairs),
                        describe(exc))
            singles: list[tuple[StoreItem, list[JourneyRows], list[Recovered | Fact]]] = [
                *((record, [rows], []) for record, rows in pairs), *((o, [], [o]) for o in ordered)]
            for item, rows_, ordered_ in singles:
                try:
                    await self._upsert(rows_, ordered_)
                except Exception as exc1:
                    if is_unavailable(exc1) or is_schema_missing(exc1):
                        self._mark_unavailable(exc1)
                        return False
                    self._reject(item, describe(exc1))
        if self._file is not None and (what := self._file.changed()) is not None:
            self._database_lost(what)  # this batch may have gone into the removed file: spooled again
            return False
        self._mark_ok()
        if self._closing:
            self.closing_stored += len(pairs)
        self._durable(items)
        return True

    async def _upsert(self, rows: list[JourneyRows], ordered: list[Recovered | Fact]) -> None:
        started = time.perf_counter()
        async with self.engine.begin() as conn:
            applied = await upsert_rows(conn, rows)
            missing = await apply_ordered(conn, ordered) if ordered else []
        self.m_write_seconds.observe(time.perf_counter() - started)
        self.m_written.inc(len(applied))
        self.last_write_at = self._clock()
        for item in ordered:
            if isinstance(item, Recovered):
                self._orphans.pop(item, None)
        for r in missing:  # its call is not stored yet (still queued): try again with the next batches
            tries = self._orphans.get(r, 0) + 1
            if tries < ORPHAN_RETRIES:
                self._orphans[r] = tries
            else:
                log.warning("recovery of call %s (%s) not stored: the call is not in the database", r.call_id,
                            r.pbx)

    def _reject(self, item: StoreItem, reason: str) -> None:
        self.m_failures.labels("rejected").inc()
        what = getattr(item, "call_id", None) or getattr(item, "id", None) or getattr(item, "alert_id", "?")
        log.error("%s %s refused by the database: %s (kept in %s)", type(item).__name__, what, reason,
                  self._spool.directory / "rejected.jsonl")
        self._spool.reject([to_line(item)], reason)

    def _mark_ok(self) -> None:
        if self._file is not None and not self._file.known:
            self._file.remember()
            if self._file_replaced:
                log.warning("a new database file %s is in use (what was stored in the removed one is not in it)",
                            self._file.path)
            self._file_replaced = True  # from now on, a file remembered again is a new one
        if self._state == WriterState.UNAVAILABLE:
            log.warning("database available again%s",
                        f"; writing {self._spool.journeys} spooled journeys" if self._spool.has_data() else "")
        self._state = WriterState.OK
        self._retry_delay = self.retry_interval
        self.last_error = None

    def _mark_unavailable(self, exc: BaseException, quiet: bool = False) -> None:
        self.m_failures.labels("unavailable").inc()
        self.last_error = describe(exc)
        loop = asyncio.get_running_loop()
        if self._state != WriterState.UNAVAILABLE:
            self._retry_delay = self.retry_interval
            if not quiet:
                log.warning("database unavailable (%s): journeys go to the spool in %s; retrying every %gs",
                            self.last_error, self._spool.directory, self._retry_delay)
        else:
            self._retry_delay = min(self._retry_delay * 2, self.max_retry_interval)
            log.info("database still unavailable (%s); next try in %gs", self.last_error, self._retry_delay)
        self._state = WriterState.UNAVAILABLE
        self._next_retry = loop.time() + self._retry_delay
