"""The on-disk spool: journeys waiting for the database, durable across crashes and restarts.

A directory of append-only JSON-lines segments (``spool-000000000001.jsonl``...), written with
``write`` + ``flush`` + ``fsync`` and read back oldest first.  A segment is deleted once every journey in
it is in the database.  A line cut short by a crash (no trailing newline) is skipped; a line that is not
JSON is moved to ``rejected.jsonl``.  Re-reading a journey that is already stored is harmless: the
store's upserts are idempotent.  One process at a time owns a spool directory (``flock`` on ``.lock``).

Bounded: an append that would take the segments on disk past ``max_bytes`` is refused (:class:`SpoolFull`),
so that an outage never fills the disk the PBX needs.

Removed under a running process: the spool keeps a descriptor open on every segment that holds journeys, so
when its directory (or a segment) is deleted or replaced, :meth:`Spool.check` (the writer calls it at every
flush and before every append) recreates the directory, takes its lock again and writes every segment back
from those descriptors: nothing spooled is lost as long as the process lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("onechance.store")

SEGMENT_RE = re.compile(r"^spool-(\d{12})\.jsonl$")
DEFAULT_SEGMENT_BYTES = 16 * 1024 * 1024


class SpoolError(Exception):
    """The spool directory cannot be used (permissions, locked by another process...)."""


class SpoolFull(SpoolError):
    """An append would take the spool past its size bound (``database.spool_max_bytes``)."""


def _identity(st: os.stat_result) -> tuple[int, int]:
    return st.st_dev, st.st_ino


@dataclass(slots=True)
class SpoolBatch:
    """Journeys read from the spool; :meth:`Spool.commit` it once they are stored."""

    journeys: list[dict[str, Any]]
    segment: int
    end_offset: int
    lines: int = 0  # complete lines consumed (journeys plus unreadable lines)
    exhausted: bool = False  # the segment has nothing after end_offset
    skipped: list[str] = field(default_factory=list)


def _segment_name(index: int) -> str:
    return f"spool-{index:012d}.jsonl"


def _fsync_all(fds: list[tuple[int, str]]) -> list[str]:
    """fsync and close every descriptor (a worker thread runs this); the errors, one line each."""
    errors = []
    for fd, what in fds:
        try:
            os.fsync(fd)
        except OSError as exc:
            errors.append(f"{what}: {exc.strerror or exc}")
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
    return errors


class Spool:
    """Append-only, fsync'd journey spool in one directory."""

    def __init__(self, directory: str | os.PathLike[str], segment_bytes: int = DEFAULT_SEGMENT_BYTES,
                 max_bytes: int = 0) -> None:
        self.directory = Path(directory)
        self.segment_bytes = segment_bytes
        self.max_bytes = max_bytes  # 0: unbounded
        self._segments: dict[int, int] = {}  # segment index -> size in bytes
        self._lines: dict[int, int] = {}  # segment index -> complete lines not yet consumed
        self._cursor: tuple[int, int] | None = None  # (segment, offset) of the oldest unread byte
        self._active: int | None = None  # segment being appended to
        self._fh: IO[bytes] | None = None
        self._lock_fh: IO[bytes] | None = None
        self._dirty = False
        # descriptors (duplicated) of what was written but not fsync'd yet: sealed segments, the directory
        # after a segment was created, the rejected file.  sync_in_thread() fsyncs them off the event loop.
        self._unsynced: list[tuple[int, str]] = []
        self._sync_lock: asyncio.Lock | None = None  # one fsync at a time: see sync_in_thread
        # a read-only descriptor of every segment with journeys: what a deleted directory held can be written back
        self._keep: dict[int, int] = {}
        self._dir_id: tuple[int, int] | None = None  # (device, inode) of the directory as opened
        self.recreated = 0  # times the directory (or a segment) was found removed and written back

    # ---- lifecycle -------------------------------------------------------------------------------------
    def open(self) -> None:
        """Create the directory, lock it, and take stock of the segments left by earlier runs."""
        self._lock_directory()
        self._segments.clear()
        self._lines.clear()
        self._forget_kept()
        for entry in self.directory.iterdir():
            m = SEGMENT_RE.match(entry.name)
            if not m:
                continue
            index = int(m.group(1))
            try:
                data = entry.read_bytes()
            except OSError as exc:
                raise SpoolError(f"spool segment {entry}: {exc.strerror or exc}") from None
            lines = data.count(b"\n")
            if not data.endswith(b"\n") and data:
                log.warning("spool %s: its last line was cut short by a crash; it will be skipped", entry.name)
            if lines == 0:
                with contextlib.suppress(OSError):
                    entry.unlink()
                continue
            self._segments[index] = len(data)
            self._lines[index] = lines
            self._keep_open(index)
        self._cursor = None
        self._active = None  # never append to a segment a crash may have cut short

    def _lock_directory(self) -> None:
        """Create the directory and take its lock (held until close)."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            lock = open(self.directory / ".lock", "a+b")  # held until close()
        except OSError as exc:
            raise SpoolError(f"spool directory {self.directory}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.seek(0)
            owner = lock.read().decode(errors="replace").strip() or "?"
            lock.close()
            raise SpoolError(
                f"spool directory {self.directory} is in use by another onechance process (pid {owner}); "
                "set ONECHANCE_DATABASE__SPOOL_DIR to another directory"
            ) from None
        try:
            lock.seek(0)
            lock.truncate()
            lock.write(str(os.getpid()).encode())
            lock.flush()
            self._dir_id = _identity(os.stat(self.directory))
        except OSError as exc:  # the disk refuses even the pid: the lock itself holds all the same
            log.warning("spool %s: cannot write the lock file: %s", self.directory, exc.strerror or exc)
            with contextlib.suppress(OSError):
                self._dir_id = _identity(os.stat(self.directory))
        self._release()
        self._lock_fh = lock

    # ---- removed under us --------------------------------------------------------------------------------
    def _keep_open(self, index: int) -> None:
        if index in self._keep:
            return
        with contextlib.suppress(OSError):
            self._keep[index] = os.open(self.directory / _segment_name(index), os.O_RDONLY | os.O_CLOEXEC)

    def _forget_kept(self, index: int | None = None) -> None:
        for i in ([index] if index is not None else list(self._keep)):
            fd = self._keep.pop(i, None)
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)

    def damaged(self) -> str | None:
        """What was removed or replaced under this spool (None when nothing was)."""
        if self._lock_fh is None:
            return None
        try:
            st = os.stat(self.directory)
        except FileNotFoundError:
            return f"the spool directory {self.directory} was removed"
        except OSError as exc:
            return f"the spool directory {self.directory} cannot be read: {exc.strerror or exc}"
        if self._dir_id is not None and _identity(st) != self._dir_id:
            return f"the spool directory {self.directory} was replaced"
        try:
            lock_st = os.stat(self.directory / ".lock")
            if _identity(lock_st) != _identity(os.fstat(self._lock_fh.fileno())):
                return f"the lock file of the spool {self.directory} was replaced"
        except FileNotFoundError:
            return f"the lock file of the spool {self.directory} was removed"
        except OSError:
            pass
        for index, fd in self._keep.items():
            try:
                if os.fstat(fd).st_nlink == 0:
                    return f"the spool segment {self.directory / _segment_name(index)} was removed"
            except OSError:
                continue
        if self._fh is not None:
            with contextlib.suppress(OSError):
                if os.fstat(self._fh.fileno()).st_nlink == 0:
                    return f"the spool segment {self.directory / _segment_name(self._active or 0)} was removed"
        return None

    def check(self) -> str | None:
        """When the directory, its lock or a segment was removed or replaced under us: recreate the directory,
        lock it again and write every segment back from the descriptors kept open on them.  Returns what was
        repaired (None: nothing was wrong); raises :class:`SpoolError` when it cannot be repaired now (the
        descriptors stay open: the next call tries again)."""
        what = self.damaged()
        if what is None:
            return None
        self._close_active()
        if self._needs_lock():
            self._lock_directory()
        written = 0
        for index in sorted(self._segments):
            fd = self._keep.get(index)
            path = self.directory / _segment_name(index)
            try:
                linked = fd is not None and os.fstat(fd).st_nlink > 0 and path.exists() and \
                    _identity(os.stat(path)) == _identity(os.fstat(fd))
            except OSError:
                linked = False
            if linked or fd is None:
                continue
            written += self._write_back(index, fd, path)
        self.recreated += 1
        return f"{what}: recreated it, {written} spooled record(s) written back"

    def _needs_lock(self) -> bool:
        """The directory or its lock file is not the one this process locked."""
        if self._lock_fh is None:
            return True
        try:
            if _identity(os.stat(self.directory)) != self._dir_id:
                return True
            return _identity(os.stat(self.directory / ".lock")) != _identity(os.fstat(self._lock_fh.fileno()))
        except OSError:
            return True

    def _write_back(self, index: int, fd: int, path: Path) -> int:
        """Copy a removed segment (read through ``fd``) to ``path``, fsync'd; returns its complete lines."""
        chunks = []
        offset = 0
        try:
            while True:
                chunk = os.pread(fd, 1 << 20, offset)
                if not chunk:
                    break
                chunks.append(chunk)
                offset += len(chunk)
        except OSError as exc:
            raise SpoolError(f"cannot read back the removed spool segment {path.name}: {exc.strerror or exc}") from None
        data = b"".join(chunks)
        tmp = path.with_name(f".{path.name}.partial")
        try:
            with open(tmp, "wb", buffering=0) as fh:
                view = memoryview(data)
                while view:
                    n = fh.write(view)
                    if not n:
                        raise OSError(errno.EIO, "nothing written")
                    view = view[n:]
                os.fsync(fh.fileno())
            tmp.replace(path)
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise SpoolError(f"cannot write back the spool segment {path}: {exc.strerror or exc}") from None
        self._forget_kept(index)
        self._keep_open(index)
        self._segments[index] = len(data)
        return data.count(b"\n")

    def close(self) -> None:
        """fsync what is left (here, synchronously: call :meth:`aclose` from a running loop) and release the
        directory.  Raises :class:`SpoolError` when the disk refused an fsync."""
        self._close_active()
        pending, self._unsynced = self._unsynced, []
        errors = _fsync_all(pending)
        self._release()
        self._forget_kept()
        if errors:
            raise SpoolError(f"cannot fsync the spool in {self.directory}: {'; '.join(errors)}")

    async def aclose(self) -> None:
        """:meth:`close` with the fsync in a worker thread."""
        self._close_active()
        try:
            await self.sync_in_thread()
        finally:
            self._release()
            self._forget_kept()

    def _release(self) -> None:
        if self._lock_fh is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    # ---- state -----------------------------------------------------------------------------------------
    @property
    def journeys(self) -> int:
        """Journeys (lines) waiting in the spool."""
        return sum(self._lines.values())

    @property
    def nbytes(self) -> int:
        """Bytes waiting in the spool."""
        total = sum(self._segments.values())
        if self._cursor is not None and self._cursor[0] in self._segments:
            total -= self._cursor[1]
        return max(0, total)

    @property
    def disk_bytes(self) -> int:
        """Bytes the segments take on disk (what ``max_bytes`` bounds)."""
        return sum(self._segments.values())

    def has_data(self) -> bool:
        return self.journeys > 0

    # ---- writing ---------------------------------------------------------------------------------------
    def append(self, journeys: Iterable[Mapping[str, Any]], sync: bool = True) -> int:
        """Append journeys (one JSON line each); with ``sync`` also fsync before returning.
        Returns how many were appended.  Raises :class:`SpoolError` when the disk refuses."""
        lines = [json.dumps(j, ensure_ascii=False, separators=(",", ":")).encode() + b"\n" for j in journeys]
        if not lines:
            return 0
        data = b"".join(lines)
        if self.max_bytes and self.disk_bytes + len(data) > self.max_bytes:
            raise SpoolFull(f"the spool {self.directory} is full: {self.disk_bytes} bytes of at most "
                            f"{self.max_bytes} (database.spool_max_bytes)")
        fh = self._active_file(len(data))
        assert self._active is not None
        size = self._segments.get(self._active, 0)
        try:
            view = memoryview(data)
            while view:  # unbuffered: a failed write leaves nothing behind to be written later
                n = fh.write(view)
                if not n:
                    raise OSError(errno.EIO, "nothing written")
                view = view[n:]
            if sync:
                os.fsync(fh.fileno())
            else:
                self._dirty = True
        except OSError as exc:
            self._abandon_active(size)
            raise SpoolError(f"cannot write the spool in {self.directory}: {exc.strerror or exc}") from None
        self._segments[self._active] = self._segments.get(self._active, 0) + len(data)
        self._lines[self._active] = self._lines.get(self._active, 0) + len(lines)
        return len(lines)

    def _take_unsynced(self) -> list[tuple[int, str]]:
        pending, self._unsynced = self._unsynced, []
        if self._dirty and self._fh is not None and self._active is not None:
            # duplicated: the segment may be sealed and closed while the thread runs
            pending.append((os.dup(self._fh.fileno()), _segment_name(self._active)))
        self._dirty = False
        return pending

    async def sync_in_thread(self) -> None:
        """fsync everything written so far, in a worker thread: the event loop never waits for the disk
        (appends may go on meanwhile; a later call syncs them).  Raises :class:`SpoolError` when the disk
        refused (what was written may not be on it: the caller must not take it for durable)."""
        # One at a time: a caller whose lines an fsync already in flight took must not return before it is
        # done (under the lock, it finds that fsync finished; lines written after it began are still unsynced).
        if self._sync_lock is None:
            self._sync_lock = asyncio.Lock()
        async with self._sync_lock:
            pending = self._take_unsynced()
            if not pending:
                return
            errors = await asyncio.to_thread(_fsync_all, pending)
        if errors:
            raise SpoolError(f"cannot fsync the spool in {self.directory}: {'; '.join(errors)}")

    def _defer_fsync(self, fd: int, what: str) -> None:
        """fsync this descriptor's file at the next :meth:`sync_in_thread` (through a duplicate of it)."""
        try:
            self._unsynced.append((os.dup(fd), what))
        except OSError as exc:  # out of descriptors: do it now rather than not at all
            try:
                os.fsync(fd)
            except OSError as exc2:
                raise SpoolError(f"cannot fsync the spool in {self.directory}: {what}: "
                                 f"{exc2.strerror or exc2}") from None
            log.warning("spool %s: fsync'd on the spot (%s)", what, exc.strerror or exc)

    def _active_file(self, incoming: int) -> IO[bytes]:
        if self._fh is not None and self._active is not None:
            if self._segments.get(self._active, 0) + incoming <= self.segment_bytes:
                return self._fh
            self._close_active()
        index = max(self._segments, default=0) + 1
        path = self.directory / _segment_name(index)
        try:
            self._fh = open(path, "ab", buffering=0)  # closed by _close_active()
        except OSError as exc:
            raise SpoolError(f"cannot create {path}: {exc.strerror or exc}") from None
        try:
            dir_fd = os.open(self.directory, os.O_RDONLY)
        except OSError:
            dir_fd = -1
        if dir_fd >= 0:  # the new file's name must reach the disk too
            try:
                self._defer_fsync(dir_fd, "its directory")
            finally:
                os.close(dir_fd)
        self._active = index
        self._segments.setdefault(index, 0)
        self._lines.setdefault(index, 0)
        self._keep_open(index)
        return self._fh

    def _abandon_active(self, size: int) -> None:
        """After a failed append: cut what it wrote (a torn line) and never append to this segment again
        (if the cut fails too, the torn line stays last in a sealed segment, where it is skipped)."""
        index = self._active
        if self._fh is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fh.fileno(), size)
            if self._dirty and index is not None:  # earlier appends with sync=False: fsync'd off the loop
                with contextlib.suppress(OSError, SpoolError):
                    self._defer_fsync(self._fh.fileno(), _segment_name(index))
            with contextlib.suppress(OSError):
                self._fh.close()
        self._fh = None
        self._active = None
        self._dirty = False
        if index is not None and size == 0 and not self._lines.get(index):
            self._drop_segment(index)

    def _close_active(self) -> None:
        """Seal the segment being appended to; its fsync is left to the next :meth:`sync_in_thread`."""
        if self._fh is not None:
            if self._dirty and self._active is not None:
                self._defer_fsync(self._fh.fileno(), _segment_name(self._active))
            self._fh.close()
        self._fh = None
        self._active = None
        self._dirty = False

    # ---- reading ---------------------------------------------------------------------------------------
    def read(self, max_journeys: int) -> SpoolBatch | None:
        """Up to ``max_journeys`` journeys from the oldest segment, in the order they were spooled
        (None when the spool is empty).  Nothing is removed until :meth:`commit`."""
        while self._segments:
            index = min(self._segments)
            if index == self._active:
                self._close_active()  # seal it: new journeys go to a new segment
            offset = self._cursor[1] if self._cursor and self._cursor[0] == index else 0
            batch = self._read_segment(index, offset, max_journeys)
            if batch.lines or not batch.exhausted:
                return batch
            self._drop_segment(index)  # nothing readable left in it
        return None

    def _read_segment(self, index: int, offset: int, max_journeys: int) -> SpoolBatch:
        path = self.directory / _segment_name(index)
        batch = SpoolBatch(journeys=[], segment=index, end_offset=offset)
        kept = self._keep.get(index)
        try:
            # through the descriptor kept open on it: a segment removed under us is still read, never dropped
            fh = os.fdopen(os.dup(kept), "rb") if kept is not None else open(path, "rb")
        except FileNotFoundError:
            batch.exhausted = True
            return batch
        except OSError as exc:
            raise SpoolError(f"cannot read {path}: {exc.strerror or exc}") from None
        with fh:
            fh.seek(offset)
            pos = offset
            while len(batch.journeys) < max_journeys:
                line = fh.readline()
                if not line:
                    batch.exhausted = True
                    break
                if not line.endswith(b"\n"):
                    # cut short by a crash while it was written: the journey was never acknowledged
                    log.warning("spool %s: skipping a truncated last line (%d bytes)", path.name, len(line))
                    pos += len(line)
                    batch.exhausted = True
                    break
                pos += len(line)
                batch.lines += 1
                try:
                    item = json.loads(line)
                    if not isinstance(item, dict):
                        raise ValueError("not a JSON object")
                except ValueError:
                    batch.skipped.append(line.decode(errors="replace").rstrip("\n"))
                    continue
                batch.journeys.append(item)
            else:
                batch.exhausted = fh.read(1) == b""
        batch.end_offset = pos
        return batch

    def commit(self, batch: SpoolBatch) -> None:
        """Forget the journeys of ``batch`` (they are stored); delete its segment when drained."""
        if batch.skipped:
            self.reject(batch.skipped, "not valid JSON in the spool")
        index = batch.segment
        if index not in self._segments:
            return
        self._lines[index] = max(0, self._lines.get(index, 0) - batch.lines)
        if batch.exhausted and index != self._active:
            self._drop_segment(index)
        else:
            self._cursor = (index, batch.end_offset)

    def _drop_segment(self, index: int) -> None:
        self._forget_kept(index)
        with contextlib.suppress(FileNotFoundError):
            (self.directory / _segment_name(index)).unlink()
        self._segments.pop(index, None)
        self._lines.pop(index, None)
        if self._cursor is not None and self._cursor[0] == index:
            self._cursor = None

    # ---- dead letters ----------------------------------------------------------------------------------
    def reject(self, items: Iterable[Any], reason: str) -> None:
        """Keep journeys the database refused (bad data) in ``rejected.jsonl`` for a human to look at."""
        path = self.directory / "rejected.jsonl"
        try:
            with open(path, "ab") as fh:
                for item in items:
                    record = {"reason": reason, "journey": item}
                    fh.write(json.dumps(record, ensure_ascii=False, default=str).encode() + b"\n")
                fh.flush()
                self._defer_fsync(fh.fileno(), path.name)
        except (OSError, SpoolError) as exc:
            log.error("cannot write %s: %s", path, getattr(exc, "strerror", None) or exc)
