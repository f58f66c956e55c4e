"""``TraceWriter``: gets trace records from the request path into the store, off the request path.

``submit()`` only puts the record (or a builder of it) on a bounded in-memory queue. One background
thread builds and encodes (sanitises) what came in every ``encode_interval`` (0.5 s) while records
arrive, and sleeps while none do (the first
``submit()`` after a quiet spell wakes it); it appends the encoded rows to the disk
:class:`~opentracy.store.journal.Journal` (so a crash does not lose the batch being collected), and
inserts them in one call per ``batch_size`` rows (10,000), ``batch_bytes`` of rows (16 MiB) or
``flush_interval`` seconds, whichever comes first. Large inserts because a chDB insert costs ~10 ms of
CPU whatever its size (measured: 13 us a row in 2000-row inserts, ~7 in 10,000-row ones).
If the store fails, the batch goes to the disk :class:`~opentracy.store.Spool` and is replayed, oldest
first, when the store answers again (retries back off from ``retry_min`` to ``retry_max`` seconds).
While anything is spooled, new batches are spooled behind it, so traces reach the store in
submission order.

Guarantees and where they come from:

- *No duplicates.* Each batch gets a random id when formed; every insert of it (first try, replays
  after a failure, replays after a crash) carries that id as ClickHouse ``insert_deduplication_token``
  and the table keeps a deduplication window (``non_replicated_deduplication_window``, measured to
  work on chDB and to survive a restart). So the crash window between "insert succeeded" and "spool
  segment deleted" — and a client timeout after the server did commit — replay a batch ClickHouse
  then ignores. A segment is deleted only after all its batches were inserted.
- *No loss in a crash.* What the writer has encoded is in the journal until it is inserted or spooled;
  a process that dies (kill -9, OOM) leaves it there and the next writer on the directory spools it
  first, under the same batch id. Lost in a crash: what was still in the queue, at most one encode
  interval (0.5 s) of records.
- *No silent loss.* A record is lost only when the queue is full (``dropped{reason="queue_full"}``),
  the spool is at ``spool_max_bytes`` while the store is down (``spool_full``), it is submitted after
  ``close()`` (``closed``), or a crash tore a spool line or journal frame (``spool_corrupt``); each is
  counted and logged with totals. A batch the store keeps refusing while it answers pings (a poison batch) is
  moved to ``<spool>/rejected/`` after ``poison_after`` tries and counted as ``rejected``: kept on
  disk, so the spool cannot stall forever behind it.

Queue full → drop and count, rather than spool from ``submit()``: ``submit()`` runs on the event loop,
and writing + fsync'ing there would stall every request. The writer thread moves the queue to disk at
disk speed while the store is down, so a full queue means the disk cannot keep up either — spooling
from the caller would not save those records, only slow the gateway.

Throughput (measured here by ``tests/test_writer.py::test_throughput``: chDB, 2 vCPU shared with the
4 threads submitting small chat records): 9,500-20,000 records/s end to end into chDB, journal
included, from run to run on this VM; ``submit()`` 2.3-6.1 us per call (7-25 with ``queue.Queue``).
The ceiling is the Python work per record (building, ``TraceRecord.to_row`` ~8-19 us, the journal
~1 us), not ClickHouse (a 2000-row insert is ~40 ms); past it the queue fills and the excess is
dropped and counted.
"""

from __future__ import annotations

import collections
import logging
import operator
import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Callable, Protocol

from opentracy.store.journal import Journal
from opentracy.store.spool import Spool, SpooledBatch
from opentracy.tracing.record import (
    COLUMN_NAMES,
    COLUMNS,
    DEFAULT_MAX_TEXT_BYTES,
    TraceRecord,
    row_from_jsonable,
    row_to_jsonable,
)

log = logging.getLogger(__name__)

DROP_REASONS = ("queue_full", "spool_full", "closed", "unencodable", "spool_corrupt", "internal_error")
Pending = TraceRecord | Callable[[], TraceRecord | list]  # a record, or its builder (run on the writer
# thread), which may return the record's to_row() instead
_WARN_EVERY = 10.0  # seconds between repeated warnings of one kind
_REPLAY_SLICE = 0.5  # seconds of replay before the queue is looked at again


class _Journaled(threading.Event):
    """The queue marker of :meth:`TraceWriter.sync`: set once what came before it is journaled."""


class RowStore(Protocol):
    """What the writer needs of a store (:class:`~opentracy.store.TraceStore` is one)."""

    max_text_bytes: int

    def insert_rows(self, rows: Sequence[Sequence[Any]], *, dedup_token: str | None = None) -> int: ...

    def ping(self) -> bool: ...


class TraceWriter:
    """Non-blocking ``submit()``; batched, ordered, spooled, exactly-once delivery to the store.

    The writer does not own the store: ``close()`` the writer, then the store.
    """

    def __init__(self, store: RowStore, spool_dir: str | Path, *, batch_size: int = 10_000,
                 batch_bytes: int = 16 << 20,
                 flush_interval: float = 1.0, encode_interval: float = 0.5, queue_size: int = 10_000,
                 spool_max_bytes: int = 1 << 30,
                 retry_min: float = 0.5, retry_max: float = 30.0, poison_after: int = 5,
                 scrub: Callable[[str], str] | None = None) -> None:
        self._store = store
        self._scrub = scrub  # applied to every text of every encoded row before it is stored or spooled
        self._spool = Spool(spool_dir, max_bytes=spool_max_bytes)  # holds the directory's lock
        self._journal = Journal(spool_dir, COLUMN_NAMES, [c.name for c in COLUMNS if c.kind == "time"])
        self._batch_size = batch_size
        self._batch_bytes = batch_bytes  # the open batch is inserted once its rows take this much (journal size)
        self._flush_interval = flush_interval
        self._encode_interval = min(encode_interval, flush_interval)
        self._retry_min, self._retry_max = retry_min, retry_max
        self._poison_after = poison_after
        self._max_text_bytes = getattr(store, "max_text_bytes", DEFAULT_MAX_TEXT_BYTES)
        # A deque, not queue.Queue: append/popleft are atomic and the writer has its own wake-up, so
        # the three locks Queue takes per put are not needed on the request path.
        self._queue: collections.deque[Pending | threading.Event] = collections.deque()
        self._queue_size = queue_size
        self._queued = 0  # records accepted by submit(); changed under _submit_lock

        self._counts_lock = threading.Lock()
        self._counts = dict.fromkeys(("written", "spooled", "replayed", "rejected", "sanitized"), 0)
        self._dropped = dict.fromkeys(DROP_REASONS, 0)
        self._last_warning: dict[str, float] = {}

        # Touched by the writer thread only:
        self._backoff = retry_min
        self._retry_at = 0.0  # monotonic time before which the store is not tried again
        self._store_up = True
        self._refusals = 0  # consecutive failures of the oldest spooled batch while the store pings fine
        self._rows: list[list[Any]] = []  # encoded, waiting for their insert (and in the journal)
        self._rows_since = 0.0  # monotonic time the oldest of them was encoded
        self._rows_bytes = 0  # their size, as marshalled into the journal
        self._batch_id = ""  # the open batch's id: its journal header and, later, its dedup token
        self._journal_ok = True
        self._recover_journal()

        self._submit_lock = threading.Lock()  # closed-check + put are one step: nothing slips in after close
        self._closed = False
        self._stopping = threading.Event()
        # When the writer wakes, and why (bench/README.md, "Writer wake-ups"): every wake-up of a thread
        # costs ~0.1-0.2 ms of CPU on a VM, and more when it has to take the GIL from a busy event loop.
        # So it does not wake per record (measured ~+1 ms CPU per request) nor on a fixed tick while idle
        # (10 ticks/s cost ~2.4 ms of CPU a second doing nothing): while records arrive it encodes them
        # once per encode_interval (0.5 s; 0.1 s measured ~+0.02 ms CPU per request more at 350
        # req/s, and 0.5 s still frees the request objects builders hold quickly: holding them for a
        # 5 s interval measured ~+0.05 ms), and once nothing arrives it sleeps until the first submit()
        # (``_idle``), the open batch's flush time or the next spool retry. ``_urgent`` (flush, close, a
        # full batch) ends any sleep at once.
        self._signal = threading.Condition()
        self._idle = False  # the writer sleeps until a record arrives (read without the lock by submit)
        self._urgent = False
        self._thread = threading.Thread(target=self._run, name="opentracy-trace-writer", daemon=True)
        self._thread.start()

    # -- request path ---------------------------------------------------------------------------

    def submit(self, record: Pending) -> bool:
        """Queue a record for writing; never blocks. False if it was dropped (counted and logged).

        ``record`` may be a builder called on the writer thread (what it costs is then paid there, in
        batches).
        """
        return self.submit_all((record,)) == 1

    def submit_all(self, records: Sequence[Pending]) -> int:
        """:meth:`submit` for many records under one lock; how many were queued (the rest are counted)."""
        with self._submit_lock:
            if self._closed:
                self._drop("closed", len(records))
                return 0
            taken = records[:max(0, self._queue_size - len(self._queue))]
            self._queue.extend(taken)
            self._queued += len(taken)
        if len(taken) < len(records):
            self._drop("queue_full", len(records) - len(taken))
        if not taken:
            return 0
        if self._idle:  # the first records after a quiet spell: wake the writer to start gathering
            self._notify(urgent=False)
        elif len(self._queue) >= self._batch_size:
            self._notify(urgent=True)  # a full batch is waiting; otherwise the writer sleeps out its interval
        return len(taken)

    # -- control --------------------------------------------------------------------------------

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is in the store or, if the store is down, spooled."""
        if not self._thread.is_alive():
            return not self._queue
        marker = threading.Event()
        self._queue.append(marker)  # not counted against queue_size: it is not a record
        self._notify(urgent=True)
        return marker.wait(timeout)

    def sync(self, timeout: float = 10.0) -> bool:
        """Wait until everything submitted so far is encoded and in the journal — kept through a crash
        of this process — without forcing an insert (:meth:`flush` does both)."""
        if not self._thread.is_alive():
            return not self._queue
        marker = _Journaled()
        self._queue.append(marker)
        self._notify(urgent=True)
        return marker.wait(timeout)

    def close(self, timeout: float = 10.0) -> bool:
        """Stop accepting, write out the queue (to the store, or to the spool if it is down), stop.

        For SIGTERM/SIGINT: called from the app's shutdown. True if everything was written or spooled
        within ``timeout``; what is left in the spool is replayed by the next writer on this directory.
        """
        with self._submit_lock:
            self._closed = True
        self._stopping.set()
        self._notify(urgent=True)
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.error("trace writer: not finished after %.1fs; %d record(s) still queued (store hung?)",
                      timeout, len(self._queue))
            return False
        self._journaled(self._journal.close)
        self._spool.close()
        return True

    # -- observability --------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        with self._counts_lock:
            counts = dict(self._counts)
            dropped = dict(self._dropped)
        counts["dropped"] = sum(dropped.values())
        counts.update({f"dropped_{reason}": n for reason, n in dropped.items()})
        counts["queued"] = self._queued
        counts["queue_depth"] = len(self._queue)
        counts["spool_bytes"] = self._spool.bytes
        counts["store_up"] = self._store_up
        return counts

    def prometheus(self) -> str:
        """Counters and gauges in Prometheus text exposition format, for ``GET /metrics``."""
        stats = self.stats()
        lines: list[str] = []

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, Any]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(f"{name}{labels} {int(value)}" for labels, value in samples)

        for key, help_text in (
            ("queued", "Trace records accepted by submit()."),
            ("written", "Trace records inserted into the store (directly or replayed from the spool)."),
            ("spooled", "Trace records written to the disk spool because the store was down."),
            ("replayed", "Trace records inserted into the store from the disk spool."),
            ("rejected", "Trace records the store refused while up, moved to the spool's rejected/ folder."),
            ("sanitized", "Trace records stored with fields fixed by sanitising (see encoding_errors)."),
        ):
            metric(f"opentracy_traces_{key}_total", "counter", help_text, [("", stats[key])])
        metric("opentracy_traces_dropped_total", "counter", "Trace records lost, by reason.",
               [(f'{{reason="{reason}"}}', stats[f"dropped_{reason}"]) for reason in DROP_REASONS])
        metric("opentracy_trace_queue_depth", "gauge", "Trace records waiting in memory.",
               [("", stats["queue_depth"])])
        metric("opentracy_trace_spool_bytes", "gauge", "Bytes in the disk spool waiting for the store.",
               [("", stats["spool_bytes"])])
        metric("opentracy_trace_store_up", "gauge", "1 if the last store operation succeeded.",
               [("", int(stats["store_up"]))])
        return "\n".join(lines) + "\n"

    # -- writer thread --------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            stopping = self._stopping.is_set()
            self._replay_safely()  # leftovers first, in order
            # Wait for more records only when there is no spooled backlog the store could take now.
            idle = self._spool.is_empty or time.monotonic() < self._retry_at
            records, markers = self._collect(wait=idle and not stopping)
            self._encode(records)
            due = time.monotonic() - self._rows_since >= self._flush_interval
            flushing = any(type(marker) is not _Journaled for marker in markers)
            full = len(self._rows) >= self._batch_size or self._rows_bytes >= self._batch_bytes
            if self._rows and (flushing or stopping or due or full):
                rows, self._rows, self._rows_bytes = self._rows, [], 0
                try:
                    self._deliver(rows)
                except Exception:  # a bug, not an outage: count the batch as lost and keep going
                    log.exception("trace writer: could not deliver a batch of %d record(s)", len(rows))
                    self._drop("internal_error", len(rows))
            for marker in markers:
                marker.set()
            if stopping and not records and not self._rows and not self._queue:
                break
        # Last chance for the spool while shutting down: one attempt, not the backoff schedule.
        self._retry_at = 0.0
        self._replay_safely()

    def _replay_safely(self) -> None:
        try:
            self._replay(time.monotonic() + _REPLAY_SLICE)
        except Exception:  # a bug here must not kill the thread that owns the queue; the spool keeps the data
            log.exception("trace writer: unexpected error while replaying the spool (will retry)")
            self._retry_at = time.monotonic() + self._retry_max

    def _collect(self, wait: bool) -> tuple[list[Pending], list[threading.Event]]:
        """Up to one batch from the queue, after sleeping (see ``_sleep``) if ``wait`` and no full batch
        is queued."""
        if wait and len(self._queue) < self._batch_size:
            self._sleep()
        with self._signal:
            self._urgent = False
        records: list[Pending] = []
        while len(records) < self._batch_size:
            try:
                item = self._queue.popleft()
            except IndexError:
                break
            if isinstance(item, threading.Event):
                return records, [item]  # flush() or sync(): cut the batch here
            records.append(item)
        return records, []

    def _sleep(self) -> None:
        """Until records to encode have gathered for ``encode_interval``; with none queued, first until one
        arrives, the open batch is due or a spool retry is (``_urgent`` ends either wait)."""
        with self._signal:
            if self._urgent:
                return
            if not self._queue:
                self._idle = True  # published before the wait, under the lock submit() notifies with
                self._signal.wait(self._quiet_timeout())
                self._idle = False
                if self._urgent or not self._queue:
                    return  # flush/close, or the batch or a retry is due
            self._signal.wait_for(lambda: self._urgent, self._encode_interval)

    def _quiet_timeout(self) -> float | None:
        """How long the writer may sleep with nothing queued: until the open batch or a spool retry is due."""
        deadlines = []
        if self._rows:
            deadlines.append(self._rows_since + self._flush_interval)
        if not self._spool.is_empty:
            deadlines.append(self._retry_at)
        return max(0.0, min(deadlines) - time.monotonic()) if deadlines else None

    def _notify(self, *, urgent: bool) -> None:
        with self._signal:
            self._urgent = self._urgent or urgent
            self._idle = False  # one wake-up for the first record, not one per record
            self._signal.notify()

    def _encode(self, records: list[Pending]) -> None:
        """Build (if a builder), encode and scrub each record into the rows waiting for the insert,
        and append them to the journal."""
        if not records:
            return
        opened = not self._rows
        if opened:
            self._rows_since = time.monotonic()
            self._batch_id = uuid.uuid4().hex
        first = len(self._rows)
        for pending in records:
            try:
                built = pending if isinstance(pending, TraceRecord) else pending()
                row = built if type(built) is list else built.to_row(self._max_text_bytes)
                self._rows.append(_scrubbed(row, self._scrub) if self._scrub is not None else row)
            except Exception:  # builders and to_row() are built not to raise; if one does, say so loudly
                log.exception("trace writer: record could not be built or encoded")
                self._drop("unencodable", 1)
        if len(self._rows) > first:
            self._journaled(self._journal_rows, opened, self._rows[first:])

    def _journal_rows(self, opened: bool, rows: list[list[Any]]) -> None:
        if opened:
            self._journal.begin(self._batch_id)
        self._rows_bytes += self._journal.append(rows)

    def _deliver(self, rows: list[list[Any]]) -> None:
        self._count("sanitized", sum(1 for row in rows if row[-1]))
        try:
            if self._spool.is_empty and time.monotonic() >= self._retry_at:
                try:
                    self._store.insert_rows(rows, dedup_token=self._batch_id)
                except Exception as exc:
                    self._store_failed(exc)
                else:
                    self._store_ok()
                    self._count("written", len(rows))
                    return
            self._to_spool(self._batch_id, rows)
        finally:
            self._journaled(self._journal.clear)  # in the store, in the spool, or counted as lost

    def _recover_journal(self) -> None:
        """Spool the batch a crashed writer left in the journal (before anything new is written)."""
        try:
            left = self._journal.recover()
            if left is None:
                return
            if left.lost_rows:
                self._drop("spool_corrupt", left.lost_rows)
            # If the crash came after the batch was inserted or spooled, before the journal was cleared,
            # this is a second copy under the same id (in a segment of its own: a new writer starts
            # one), and ClickHouse's deduplication token drops its insert.
            if left.rows:
                log.warning("trace writer: %d trace record(s) left in %s by a crash; spooling them for the store",
                            len(left.rows), self._journal.path)
                kept = self._spool.append(left.batch_id, left.rows)  # fsync'd: then the journal may go
                if kept < len(left.rows):
                    self._drop("spool_full", len(left.rows) - kept)
            self._journal.clear()
        except OSError as exc:  # the records stay in the journal file; nothing is overwritten by this run
            log.error("trace writer: cannot recover the journal %s (%s); leaving it for the next start",
                      self._journal.path, exc)
            self._journal_ok = False

    def _journaled(self, step: Callable[..., object], *args: Any) -> None:
        """Run a journal write; a disk error costs crash safety, never the records (they are in memory)."""
        if not self._journal_ok:
            return
        try:
            step(*args)
        except OSError as exc:
            if self._due("journal"):
                log.warning("trace writer: cannot write the journal %s (%s); records waiting for the next "
                            "insert would be lost if the process crashed", self._journal.path, exc)

    def _to_spool(self, batch_id: str, rows: list[list[Any]]) -> None:
        try:
            kept = self._spool.append(batch_id, [row_to_jsonable(row) for row in rows])
        except OSError as exc:
            log.error("trace writer: cannot write the spool at %s: %s", self._spool.directory, exc)
            kept = 0
        self._count("spooled", kept)
        if kept < len(rows):
            self._drop("spool_full", len(rows) - kept)

    def _replay(self, until: float) -> None:
        while not self._spool.is_empty and time.monotonic() >= self._retry_at and time.monotonic() < until:
            lost_before = self._spool.lost_rows
            batch = self._spool.peek()
            if self._spool.lost_rows > lost_before:
                self._drop("spool_corrupt", self._spool.lost_rows - lost_before)
            if batch is None:
                return
            try:
                rows = [row_from_jsonable(row) for row in batch.rows]
                self._store.insert_rows(rows, dedup_token=batch.batch_id)
            except Exception as exc:
                if not self._refused_while_up(batch, exc):
                    return
                continue
            self._spool.ack(batch)
            self._store_ok()
            self._count("replayed", len(rows))
            self._count("written", len(rows))

    def _refused_while_up(self, batch: SpooledBatch, exc: Exception) -> bool:
        """After a failed replay: True if the batch was set aside as poison (go on with the next)."""
        if not self._store.ping():
            self._store_failed(exc)
            return False
        self._refusals += 1
        if self._refusals < self._poison_after:
            self._store_failed(exc)
            return False
        path = self._spool.reject(batch, f"{type(exc).__name__}: {exc}")
        self._refusals = 0
        self._count("rejected", len(batch.rows))
        log.error("trace writer: the store answers but refused batch %s %d times (%s); moved %d row(s) to %s",
                  batch.batch_id, self._poison_after, exc, len(batch.rows), path)
        return True

    def _store_ok(self) -> None:
        if not self._store_up:
            log.warning("trace writer: store is back; replaying %d spooled bytes", self._spool.bytes)
        self._store_up = True
        self._backoff = self._retry_min
        self._retry_at = 0.0
        self._refusals = 0

    def _store_failed(self, exc: Exception) -> None:
        if self._store_up or self._due("store_down"):
            log.warning("trace writer: store insert failed (%s: %s); spooling to %s, %d bytes spooled, "
                        "retry in %.1fs", type(exc).__name__, exc, self._spool.directory, self._spool.bytes,
                        self._backoff)
        self._store_up = False
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self._retry_max)

    # -- counters -------------------------------------------------------------------------------

    def _count(self, key: str, n: int) -> None:
        with self._counts_lock:
            self._counts[key] += n

    def _drop(self, reason: str, n: int) -> None:
        with self._counts_lock:
            self._dropped[reason] += n
            total = self._dropped[reason]
        if self._due(f"drop:{reason}"):
            log.warning("trace writer: dropped %d trace record(s) (%s); %d dropped for this reason so far",
                        n, reason, total)

    def _due(self, key: str) -> bool:
        """Rate limit for repeated warnings: at most one per key every few seconds."""
        now = time.monotonic()
        with self._counts_lock:
            if now - self._last_warning.get(key, float("-inf")) < _WARN_EVERY:
                return False
            self._last_warning[key] = now
            return True


# Where an encoded row keeps its texts: text, label, id and JSON columns are str once encoded, text
# lists are lists of str (TraceRecord.to_row).
_ROW_TEXTS = operator.itemgetter(*(i for i, c in enumerate(COLUMNS) if c.kind in ("text", "label", "id", "json")))
_ROW_TEXT_LISTS = tuple(i for i, c in enumerate(COLUMNS) if c.kind == "text_list")


def _scrubbed(row: list[Any], scrub: Callable[[str], str]) -> list[Any]:
    """The encoded row with ``scrub`` applied to each text (JSON columns are text here too).

    Most rows hold no secret: one pass of ``scrub`` over all the row's texts joined says so, instead
    of one call per text (a secret in any text is in the joined one too).
    """
    joined = "\x00".join(_ROW_TEXTS(row))
    for i in _ROW_TEXT_LISTS:
        if row[i]:
            joined += "\x00" + "\x00".join(row[i])
    if scrub(joined) == joined:
        return row
    return [scrub(value) if type(value) is str else
            [scrub(item) if type(item) is str else item for item in value] if type(value) is list else value
            for value in row]
