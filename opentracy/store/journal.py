"""``Journal``: the batch the writer is still collecting, on disk, so a process crash does not lose it.

Why: one insert into ClickHouse has a fixed cost (chDB, measured here: ~11 ms of CPU in the calling
thread plus ~15 ms in its insert and merge threads, whether it carries 1 row or 400), so the writer
wants few, large inserts. Rows held in memory for a long batch interval would be lost by a crash
(kill -9, OOM, segfault); rows in the journal are not. Each encode pass (every 0.5 s while records
arrive) appends the rows it encoded as one frame, one ``write`` into the OS page cache, no
``fsync``: the durability of a ClickHouse insert without ``fsync_after_insert`` (a process crash
loses nothing written; a power cut may).

Layout of ``<dir>/journal``: a JSON header line ``{"batch": id, "columns": [...], "marshal": N}``, then
frames: ``<payload bytes, rows, crc32>`` (3 x uint32, little-endian) and the payload, the frame's
rows as :mod:`marshal` data, as encoded (times are integer microseconds). marshal, not JSON: the
journal is written on every request's trace and read only after a crash; marshal costs ~1 us a row
where JSON cost ~11 (escaping the JSON columns' text again). A frame is loaded only if its CRC
matches, so a frame torn by the crash, or a damaged file, is skipped and counted, never unmarshalled.
The writer clears the file once the batch is inserted or spooled. At start-up a non-empty journal is
a batch a crash left behind: :meth:`recover` returns it and the writer moves it into the spool under
the same batch id; if its insert had in fact landed, ClickHouse's deduplication token drops the
second one.

Owned by one thread (the writer's); the spool's directory lock keeps other processes out.
"""

from __future__ import annotations

import json
import logging
import marshal
import os
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

log = logging.getLogger(__name__)

JOURNAL_NAME = "journal"
_FRAME = struct.Struct("<III")  # payload bytes, rows, crc32 of the payload


@dataclass(frozen=True, slots=True)
class RecoveredBatch:
    """What a crash left in the journal: rows by column name (the spool's rows)."""

    batch_id: str
    rows: list[dict[str, Any]]
    lost_rows: int  # rows in frames that could not be read (torn by the crash, or damaged)


class Journal:
    """Append-only file of the open batch's encoded rows; cleared when the batch is delivered."""

    def __init__(self, directory: str | os.PathLike[str], columns: Sequence[str], time_columns: Sequence[str]) -> None:
        self.path = Path(directory) / JOURNAL_NAME
        self._columns = list(columns)
        self._time_columns = frozenset(time_columns)  # for journals of 0.1.0 builds, which wrote seconds
        self._handle: BinaryIO | None = None

    def begin(self, batch_id: str) -> None:
        """Start a new batch (the previous one must have been cleared)."""
        header = {"batch": batch_id, "columns": self._columns, "marshal": marshal.version}
        self._write(json.dumps(header, separators=(",", ":")).encode() + b"\n")

    def append(self, rows: Sequence[Sequence[Any]]) -> int:
        """Add encoded rows (``TraceRecord.to_row()``) of the open batch, as one frame; its size in bytes."""
        if not rows:
            return 0
        payload = marshal.dumps(list(rows))
        self._write(_FRAME.pack(len(payload), len(rows), zlib.crc32(payload)) + payload)
        return len(payload)

    def clear(self) -> None:
        """The batch is in the store or the spool (or a recovered one was moved there): forget it."""
        handle = self._open()
        if handle.tell():  # opened for appending: the position is the file's size
            handle.truncate(0)

    def close(self) -> None:
        """Remove the file (after a clean shutdown there is nothing to recover)."""
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        self.path.unlink(missing_ok=True)

    def recover(self) -> RecoveredBatch | None:
        """The batch a crash left behind, or None. Does not clear it: clear once it is safe elsewhere."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        if not data:
            return None
        line_end = data.find(b"\n")
        try:
            header = json.loads(data[:line_end]) if line_end >= 0 else None
            batch_id, columns = str(header["batch"]), list(header["columns"])
            readable = header.get("marshal") == marshal.version
        except (ValueError, KeyError, TypeError):
            log.error("trace journal %s: unreadable header; its rows cannot be recovered", self.path)
            return RecoveredBatch("", [], _count_rows(data, max(line_end, 0) + 1))
        if not readable:  # written by a Python whose marshal format differs
            log.error("trace journal %s: written with marshal version %s, this Python reads %s; its rows "
                      "cannot be recovered", self.path, header.get("marshal"), marshal.version)
            return RecoveredBatch(batch_id, [], _count_rows(data, line_end + 1))
        times = [i for i, name in enumerate(columns) if name in self._time_columns]
        rows: list[dict[str, Any]] = []
        lost = 0
        offset = line_end + 1
        while offset < len(data):
            frame = _read_frame(data, offset)
            if frame is None:  # torn or damaged: the rest of the file cannot be framed
                lost += _count_rows(data, offset)
                break
            payload, count, offset = frame
            if payload is None:
                lost += count
                continue
            for values in marshal.loads(payload):
                for i in times:
                    if type(values[i]) is float:  # written by a build that journaled Unix seconds
                        values[i] = round(values[i] * 1_000_000)
                rows.append(dict(zip(columns, values)))
        return RecoveredBatch(batch_id, rows, lost)

    def _write(self, data: bytes) -> None:
        handle = self._open()
        handle.write(data)
        handle.flush()  # into the OS: survives the process, not a power cut

    def _open(self) -> BinaryIO:
        if self._handle is None:
            self._handle = open(self.path, "ab")
        return self._handle


def _read_frame(data: bytes, offset: int) -> tuple[bytes | None, int, int] | None:
    """(payload or None if its CRC fails, rows, next offset); None if no whole frame header is there."""
    end = offset + _FRAME.size
    if end > len(data):
        return None
    size, count, crc = _FRAME.unpack_from(data, offset)
    payload = data[end:end + size]
    if len(payload) < size:
        return None
    return (payload if zlib.crc32(payload) == crc else None), count, end + size


def _count_rows(data: bytes, offset: int) -> int:
    """Rows the frames from ``offset`` on say they hold, for the loss count (1 for a torn frame header)."""
    lost = 0
    while offset + _FRAME.size <= len(data):
        size, count, _ = _FRAME.unpack_from(data, offset)
        lost += count
        offset += _FRAME.size + size
    return lost or (1 if offset < len(data) else 0)
