"""``Spool``: batches waiting for the store, on local disk, in order.

When the store fails, the writer appends the batch here and replays it, oldest first, when the store
is back. Layout: ``<dir>/00000001.jsonl``, ``00000002.jsonl``, ... — one JSON line per row
(``{"batch": id, "row": {...}}``), a batch always whole inside one segment, each append fsync'd
before it counts as spooled. Segments are only ever appended to by the process that created them
(a leftover segment may end in a torn line from a crash; appending after it would corrupt the next
line) and are deleted once every batch in them has been replayed.

Replay is at-least-once at this level: progress inside a segment lives in memory, so after a crash
the whole segment replays. Exactly-once comes from the store: every batch is inserted with its
batch id as ClickHouse ``insert_deduplication_token`` (see ``opentracy.store.migrations``).

One writer per directory: an exclusive ``flock`` on ``<dir>/lock`` for the spool's lifetime. Two
processes sharing a spool would replay each other's batches; give each worker its own directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".jsonl"


class SpoolLockedError(RuntimeError):
    """Another writer (this process or another) already uses this spool directory."""


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    """The oldest batch still in the spool; hand it back to :meth:`Spool.ack` once stored."""

    batch_id: str
    rows: list[dict[str, Any]]
    segment: int
    end_offset: int


class Spool:
    """Append-only, size-capped, crash-safe FIFO of row batches. Not thread-safe: one owner thread."""

    def __init__(self, directory: str | os.PathLike[str], *, max_bytes: int = 1 << 30,
                 segment_bytes: int = 64 << 20) -> None:
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = _lock(self.directory / "lock")
        self._sizes: dict[int, int] = {
            int(p.stem): p.stat().st_size
            for p in self.directory.glob(f"*{SEGMENT_SUFFIX}") if p.stem.isdigit()
        }
        self._bytes = sum(self._sizes.values())
        self._head_offset = 0  # read position in the oldest segment
        self._active: BinaryIO | None = None  # segment this process appends to
        self._active_number = 0
        self._peeked: SpooledBatch | None = None  # read once, kept until ack (no re-read per retry)
        self.lost_rows = 0  # torn/corrupt lines skipped on replay (crash mid-append, disk damage)
        if self._sizes:
            log.warning("trace spool %s: %d bytes left from a previous run; replaying them first",
                        self.directory, self.bytes)

    @property
    def bytes(self) -> int:
        """Bytes on disk in segments (safe to read from any thread)."""
        return self._bytes

    @property
    def is_empty(self) -> bool:
        return not self._sizes

    def append(self, batch_id: str, rows: list[dict[str, Any]]) -> int:
        """Append a batch durably; return how many rows fit under ``max_bytes`` (the rest are not written)."""
        lines = []
        room = self.max_bytes - self.bytes
        for row in rows:
            line = json.dumps({"batch": batch_id, "row": row}, ensure_ascii=False, separators=(",", ":"))
            data = line.encode("utf-8") + b"\n"
            if len(data) > room:
                break
            room -= len(data)
            lines.append(data)
        if not lines:
            return 0
        handle = self._segment_for_append()
        payload = b"".join(lines)
        start = self._sizes[self._active_number]
        try:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        except OSError:
            with contextlib.suppress(OSError):  # leave no torn line for the next append to follow
                handle.truncate(start)
            raise
        self._sizes[self._active_number] += len(payload)
        self._bytes += len(payload)
        return len(lines)

    def peek(self) -> SpooledBatch | None:
        """The oldest batch not yet acknowledged, or None when the spool is empty."""
        if self._peeked is not None:
            return self._peeked
        while self._sizes:
            segment = min(self._sizes)
            self._peeked = self._read_batch(segment, self._head_offset)
            if self._peeked is not None:
                return self._peeked
            self._remove(segment)  # nothing readable left in it
        return None

    def ack(self, batch: SpooledBatch) -> None:
        """``batch`` is stored: move past it, deleting its segment once fully replayed."""
        if batch is not self._peeked:
            raise ValueError("ack() takes the batch peek() returned, oldest first")
        self._peeked = None
        self._head_offset = batch.end_offset
        if self._head_offset >= self._sizes[batch.segment]:
            self._remove(batch.segment)  # if it was the active one, the next append starts a new one

    def reject(self, batch: SpooledBatch, reason: str) -> Path:
        """Move a batch the store keeps refusing to ``<dir>/rejected/`` and go past it."""
        folder = self.directory / "rejected"
        folder.mkdir(exist_ok=True)
        path = folder / f"{batch.batch_id}{SEGMENT_SUFFIX}"
        with open(path, "ab") as handle:
            handle.write(json.dumps({"reason": reason}).encode() + b"\n")
            for row in batch.rows:
                handle.write(json.dumps({"batch": batch.batch_id, "row": row}, ensure_ascii=False).encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.ack(batch)
        return path

    def close(self) -> None:
        if self._active is not None:
            self._active.close()
            self._active = None
        if self._lock_file is not None:
            self._lock_file.close()  # releases the flock
            self._lock_file = None

    def _segment_for_append(self) -> BinaryIO:
        if self._active is not None and self._sizes.get(self._active_number, 0) >= self.segment_bytes:
            self._active.close()
            self._active = None
        if self._active is None or self._active_number not in self._sizes:
            if self._active is not None:
                self._active.close()
            self._active_number = max(self._sizes, default=self._active_number) + 1
            path = self.directory / f"{self._active_number:08d}{SEGMENT_SUFFIX}"
            self._active = open(path, "ab")
            self._sizes[self._active_number] = 0
            _fsync_directory(self.directory)
        return self._active

    def _read_batch(self, segment: int, offset: int) -> SpooledBatch | None:
        batch_id: str | None = None
        rows: list[dict[str, Any]] = []
        end = offset
        with open(self._path(segment), "rb") as handle:
            handle.seek(offset)
            for line in handle:
                if not line.endswith(b"\n"):
                    self._lose(segment, 1, "torn last line (crash while spooling)")
                    end += len(line)
                    break
                try:
                    item = json.loads(line)
                    this_batch, row = str(item["batch"]), dict(item["row"])
                except (ValueError, KeyError, TypeError):
                    self._lose(segment, 1, "unreadable line")
                    end += len(line)
                    continue
                if batch_id is not None and this_batch != batch_id:
                    break
                batch_id = this_batch
                rows.append(row)
                end += len(line)
        if batch_id is None:
            return None
        return SpooledBatch(batch_id, rows, segment, end)

    def _lose(self, segment: int, rows: int, why: str) -> None:
        self.lost_rows += rows
        log.warning("trace spool %s: skipped %d row(s) in segment %d: %s", self.directory, rows, segment, why)

    def _remove(self, segment: int) -> None:
        if segment == self._active_number and self._active is not None:
            self._active.close()
            self._active = None
        self._path(segment).unlink(missing_ok=True)
        self._bytes -= self._sizes.pop(segment)
        self._head_offset = 0

    def _path(self, segment: int) -> Path:
        return self.directory / f"{segment:08d}{SEGMENT_SUFFIX}"


def _lock(path: Path) -> BinaryIO:
    handle = open(path, "ab")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise SpoolLockedError(f"trace spool {path.parent} is in use by another writer; "
                               "each writer (process) needs its own spool directory") from None
    return handle


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
