"""The append-only spool: what the collector has acknowledged and the warehouse has not loaded.

The collector answers 200 only once a message is on disk (``write`` + ``fdatasync``), so a crash
of the worker, the loader or the machine loses nothing it acknowledged. One fsync per request
would cap a worker at about a thousand requests a second, so writes use *group commit*: while
one flush is on its way to the disk, new requests gather in a buffer and all share the next
fsync (:class:`SpoolWriter`).

Layout: each worker process appends to its own *segment* file ``<start_ns>-<pid>.seg`` in the
spool folder and holds an exclusive ``flock`` on it while it lives. A segment that can be locked
by someone else is therefore *sealed* (its writer rolled over or died) and, once fully loaded,
may be deleted (:func:`segments`). A segment is created under a ``.tmp`` name and renamed only
after it is locked, so the loader never mistakes a brand-new segment for a sealed one.

Every line is one record: a one-letter kind, then JSON. ``E`` a Segment message (with the
server's ``receivedAt``, the write key's *name* and ``source``); ``B`` a JSON header, a tab and
a whole batch body as received (every message valid; the loader stamps them); ``R`` a message
refused inside a batch (with its reason); ``D`` a CRM deal row and ``C`` a call (webhooks);
``X`` a line erased in place (:func:`rewrite_lines`), which the loader skips.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from touchline.errors import TouchlineError

log = logging.getLogger(__name__)

EVENT, BATCH, REJECT, DEAL, CALL, ERASED = b"E", b"B", b"R", b"D", b"C", b"X"
SEGMENT_SUFFIX = ".seg"
#: the redo journal of an in-place rewrite of a segment, beside it
REWRITE_SUFFIX = ".rewrite"
_JOURNAL_END = b"END\n"
LIMIT_CHECK_SECONDS = 0.25


class SpoolError(TouchlineError, OSError):
    """The spool cannot be written (disk full, permissions): the request is not acknowledged."""


class SpoolFullError(SpoolError):
    """The spool or the disk is over its limit: clients should retry later (HTTP 503)."""


class SpoolWriter:
    """One worker's segment, appended to with group commit.

    :meth:`append` returns only when the bytes are durable. Requests that arrive while a flush
    is running join the next one, so a busy worker does one fsync per *flush*, not per request.
    Each request waits on a future of its own, which the flush completes: a request cancelled
    while it waits (its client went away) cancels only that future, never its neighbours'
    acknowledgement (one shared future shielded per request cost two more event-loop hops).
    """

    def __init__(
        self,
        directory: Path,
        *,
        segment_bytes: int,
        limit_bytes: int,
        min_free_bytes: int,
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.limit_bytes = limit_bytes
        self.min_free_bytes = min_free_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._fd = -1
        self._size = 0
        self._buffer: list[bytes] = []
        self._waiters: list[asyncio.Future[None]] = []  # one per append in the buffer
        self._flushing = False
        self._flusher: asyncio.Task[None] | None = None  # referenced so it is not collected
        self._full_checked_at = -LIMIT_CHECK_SECONDS
        self._spool_bytes = 0
        self._disk_full = False
        self._open_segment()

    def _open_segment(self) -> None:
        name = f"{time.time_ns()}-{os.getpid()}"
        tmp = self.directory / f"{name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_EXCL, 0o640)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(tmp, self.directory / f"{name}{SEGMENT_SUFFIX}")
        _fsync_dir(self.directory)
        if self._fd >= 0:
            os.close(self._fd)  # releases the old lock: that segment is sealed now
        self._fd, self._size = fd, 0

    def over_limit(self) -> bool:
        """Whether new data must be refused.

        The folder is measured at most every 0.25 s (other workers write to it too); in
        between, this worker's own appends are added to the last measurement.
        """
        now = time.monotonic()
        if now - self._full_checked_at >= LIMIT_CHECK_SECONDS:
            self._full_checked_at = now
            self._spool_bytes = spool_bytes(self.directory)
            self._disk_full = shutil.disk_usage(self.directory).free < self.min_free_bytes
        return self._disk_full or self._spool_bytes > self.limit_bytes

    async def append(self, data: bytes) -> None:
        """Write ``data`` (whole lines) and return once it is on disk.

        Raises :class:`SpoolFullError` without writing when over the limit, :class:`SpoolError`
        when the disk refuses the write.
        """
        if self.over_limit():
            raise SpoolFullError(f"spool {self.directory} is over its size or free-disk limit")
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._waiters.append(done)
        self._buffer.append(data)
        self._spool_bytes += len(data)
        if not self._flushing:
            self._flushing = True
            self._flusher = loop.create_task(self._flush_loop())
        await done

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._buffer:
                data, waiters = b"".join(self._buffer), self._waiters
                self._buffer, self._waiters = [], []
                try:
                    await loop.run_in_executor(None, self._write, data)
                except OSError as exc:
                    log.error("spool write to %s failed: %s", self.directory, exc)
                    for done in waiters:
                        if not done.done():  # cancelled: its request is gone
                            done.set_exception(
                                SpoolError(f"cannot write spool {self.directory}: {exc}")
                            )
                else:
                    for done in waiters:
                        if not done.done():
                            done.set_result(None)
        finally:
            self._flushing = False

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fdatasync(self._fd)
        self._size += len(data)
        if self._size >= self.segment_bytes:
            self._open_segment()

    def close(self) -> None:
        """Release the segment (it becomes sealed)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def spool_bytes(directory: Path) -> int:
    """Bytes in the spool's segments (loaded or not: a segment shrinks only when deleted)."""
    total = 0
    with contextlib.suppress(FileNotFoundError), os.scandir(directory) as entries:
        for entry in entries:
            if entry.name.endswith(SEGMENT_SUFFIX):
                with contextlib.suppress(FileNotFoundError):
                    total += entry.stat().st_size
    return total


@dataclass(frozen=True)
class Segment:
    """A spool segment as the loader sees it."""

    path: Path
    sealed: bool

    @property
    def name(self) -> str:
        return self.path.name


@contextlib.contextmanager
def segments(directory: Path) -> Iterator[list[Segment]]:
    """The spool's segments, oldest first, with sealed ones locked for the caller's use.

    A segment whose lock we obtain has no live writer: it is sealed and cannot grow. The locks
    are held until the ``with`` block ends, so no one can reopen a segment we delete.
    """
    held: list[int] = []
    found: list[Segment] = []
    try:
        paths = sorted(directory.glob(f"*{SEGMENT_SUFFIX}"), key=_segment_order)
        for path in paths:
            try:
                fd = os.open(path, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                found.append(Segment(path, sealed=False))
                continue
            held.append(fd)
            found.append(Segment(path, sealed=True))
        yield found
    finally:
        for fd in held:
            os.close(fd)


def _segment_order(path: Path) -> tuple[int, str]:
    head = path.stem.split("-", 1)[0]
    return (int(head) if head.isdigit() else 0, path.name)


def read_complete(path: Path, offset: int, max_bytes: int) -> bytes:
    """Whole lines of ``path`` from ``offset``: at most ``max_bytes`` unless one line is longer.

    A line still being written (no newline yet) is left for the next read.
    """
    with path.open("rb") as file:
        file.seek(offset)
        data = file.read(max_bytes)
        end = data.rfind(b"\n")
        if end < 0 and len(data) == max_bytes:  # a line longer than max_bytes: read it whole
            data += file.readline()
            end = data.rfind(b"\n")
    return data[: end + 1] if end >= 0 else b""


def trailing_partial(path: Path, offset: int) -> bytes:
    """Bytes after the last newline of a sealed segment: a write cut off by a crash."""
    with path.open("rb") as file:
        file.seek(offset)
        return file.read()


def rewrite_lines(path: Path, rewrite: Callable[[bytes], bytes | None], *,
                  partial: bool = False) -> int:
    """Replace lines of segment ``path`` in place; return how many changed.

    ``rewrite(line)`` (without its newline) gives ``None`` to keep the line, else its new
    content, at most as long; it is padded with spaces to the old length, and a line that
    becomes empty is written as an ``X`` (erased) line the loader skips. With ``partial``
    (only for a sealed segment: a live one may be writing it), the bytes after the last
    newline, a write cut off by a crash, are offered too.

    Why in place and of the same length: ``spool_offsets`` counts bytes, so every offset
    stays valid whether the line was loaded or not; a live writer only appends (``O_APPEND``),
    so no byte it writes is touched. Durable: the new bytes go to a redo journal
    (``<segment>.rewrite``, fsynced, with an end marker) before any byte of the segment
    changes, and the journal is removed only after the segment is fsynced; a crash in
    between is finished by :func:`replay_rewrites` (the loader runs it before each load).
    """
    with path.open("rb") as file:
        data = file.read()
    edits: list[tuple[int, bytes]] = []
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        stop = len(data) if end < 0 else end
        if end < 0 and not partial:
            break
        line = data[start:stop]
        new = rewrite(line)
        if new is not None and new != line:
            if len(new) > len(line):
                raise ValueError(f"a rewritten line of {path.name} would grow")
            if not new.strip():
                new = ERASED
            edits.append((start, new.ljust(len(line), b" ")))
        start = stop + 1
    if not edits:
        return 0
    journal = path.with_name(path.name + REWRITE_SUFFIX)
    with journal.open("wb") as out:
        out.writelines(f"{offset}\t".encode() + new.hex().encode() + b"\n"
                       for offset, new in edits)
        out.write(_JOURNAL_END)
        out.flush()
        os.fsync(out.fileno())
    _fsync_dir(path.parent)
    _apply_journal(path, journal)
    return len(edits)


def _apply_journal(path: Path, journal: Path) -> None:
    lines = journal.read_bytes().splitlines(keepends=True)
    if not lines or lines[-1] != _JOURNAL_END:  # cut off before it was complete: never applied
        journal.unlink()
        _fsync_dir(journal.parent)
        return
    if path.exists():
        fd = os.open(path, os.O_WRONLY)
        try:
            for entry in lines[:-1]:
                offset, hexed = entry.rstrip(b"\n").split(b"\t")
                os.pwrite(fd, bytes.fromhex(hexed.decode()), int(offset))
            os.fdatasync(fd)
        finally:
            os.close(fd)
    journal.unlink()
    _fsync_dir(journal.parent)


def replay_rewrites(directory: Path) -> int:
    """Finish the in-place rewrites a crash interrupted (see :func:`rewrite_lines`); return
    how many journals were found."""
    journals = sorted(directory.glob(f"*{SEGMENT_SUFFIX}{REWRITE_SUFFIX}"))
    for journal in journals:
        _apply_journal(journal.with_name(journal.name.removesuffix(REWRITE_SUFFIX)), journal)
    return len(journals)
