"""TraceWriter and its disk spool, delivering into the real embedded engine (chDB).

Outages are made by wrapping the real store so that its inserts raise for a while (``FlakyStore``):
the data always lands in the real engine, and the checks count what is in it. Crashes are real:
a subprocess spools and dies with ``os._exit``. Every test file of this process shares one chDB path
(``chdb_path``, see tests/test_store.py); this one works in its own database.
"""

from __future__ import annotations

import json
import logging
import marshal
import os
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from opentracy.store import TraceStore
from opentracy.store.journal import Journal
from opentracy.store.spool import Spool, SpoolLockedError
from opentracy.tracing import TraceRecord, TraceWriter
from opentracy.tracing.record import COLUMN_NAMES, row_from_jsonable, row_to_jsonable
from tests.conftest import database_store_fixture, empty_store_fixture

REPO = Path(__file__).resolve().parents[1]
METADATA = COLUMN_NAMES.index("metadata")
ALIAS = COLUMN_NAMES.index("alias")


shared_store = database_store_fixture("test_writer")


store = empty_store_fixture()


class FlakyStore:
    """The real store, with an outage switch: while ``down`` is set, inserts raise and pings fail."""

    def __init__(self, store: TraceStore, refuse: Callable[[Sequence[Sequence[Any]]], bool] | None = None) -> None:
        self.store = store
        self.max_text_bytes = store.max_text_bytes
        self.down = threading.Event()
        self.gate = threading.Event()  # cleared: inserts wait (a hung store)
        self.gate.set()
        self.refuse = refuse  # rows the store rejects while up (a poison batch)
        self.delivered: list[list[dict[str, Any]]] = []  # metadata of each successful insert, in order

    def insert_rows(self, rows: Sequence[Sequence[Any]], *, dedup_token: str | None = None) -> int:
        self.gate.wait()
        if self.down.is_set():
            raise ConnectionError("ClickHouse is down (test outage)")
        if self.refuse and self.refuse(rows):
            raise ValueError("Code: 27. Cannot parse input (test poison batch)")
        count = self.store.insert_rows(rows, dedup_token=dedup_token)
        self.delivered.append([json.loads(row[METADATA]) for row in rows])
        return count

    def ping(self) -> bool:
        return not self.down.is_set() and self.store.ping()

    def outage(self, start: float, seconds: float) -> None:
        threading.Timer(start, self.down.set).start()
        threading.Timer(start + seconds, self.down.clear).start()


def stored(store: TraceStore) -> tuple[int, int]:
    """(rows, distinct trace ids) in the real table."""
    rows, distinct = store._connected().query(
        "SELECT count(), uniqExact(trace_id) FROM opentracy_traces").result_rows[0]
    return int(rows), int(distinct)


def stored_ids(store: TraceStore) -> set[str]:
    return {tid for (tid,) in store._connected().query("SELECT trace_id FROM opentracy_traces").result_rows}


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def fast_writer(store: Any, spool: Path, **options: Any) -> TraceWriter:
    settings = {"batch_size": 50, "flush_interval": 0.05, "retry_min": 0.05, "retry_max": 0.2, **options}
    return TraceWriter(store, spool, **settings)


# -- outage: exactly once, in order ----------------------------------------------------------------


def test_outage_loses_nothing_duplicates_nothing_keeps_order(store: TraceStore, tmp_path: Path) -> None:
    flaky = FlakyStore(store)
    writer = fast_writer(flaky, tmp_path / "spool")
    submitted: list[str] = []
    threads, per_thread = 4, 250

    def produce(thread: int) -> None:
        for seq in range(per_thread):
            record = TraceRecord(alias="smart", metadata={"thread": thread, "seq": seq})
            assert writer.submit(record)
            submitted.append(record.trace_id)
            time.sleep(0.004)

    flaky.outage(start=0.2, seconds=0.6)  # the store fails in the middle of steady traffic
    producers = [threading.Thread(target=produce, args=(k,)) for k in range(threads)]
    for producer in producers:
        producer.start()
    for producer in producers:
        producer.join()
    wait_until(lambda: writer.stats()["spool_bytes"] == 0 and writer.stats()["queue_depth"] == 0)
    assert writer.close(timeout=10)

    stats = writer.stats()
    assert stats["spooled"] > 0 and stats["replayed"] == stats["spooled"], stats
    assert stats["queued"] == stats["written"] == threads * per_thread
    assert stats["dropped"] == 0
    assert stored(store) == (threads * per_thread, threads * per_thread)
    assert stored_ids(store) == set(submitted)
    for thread in range(threads):  # the store received each producer's records in submission order
        seqs = [m["seq"] for batch in flaky.delivered for m in batch if m["thread"] == thread]
        assert seqs == list(range(per_thread))


# -- crashes ---------------------------------------------------------------------------------------


def crashed_writer(store_class: str, writer_args: str, body: str) -> str:
    """Run a TraceWriter over ``store_class`` (source of a stub store named Store) in a fresh
    interpreter, run ``body`` and die with ``os._exit(9)`` (no close()); return what it printed."""
    script = textwrap.dedent(store_class) + textwrap.dedent(f"""
        import os, time
        from opentracy.tracing import TraceRecord, TraceWriter
        writer = TraceWriter(Store(), {writer_args})
    """) + textwrap.dedent(body) + "\nos._exit(9)\n"
    crashed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                             cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert crashed.returncode == 9, crashed.stderr
    return crashed.stdout


def test_spool_left_by_a_crash_is_replayed_at_start(store: TraceStore, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    printed = crashed_writer("""
        class Store:  # down
            max_text_bytes = 1 << 20
            def insert_rows(self, rows, *, dedup_token=None):
                raise ConnectionError("down")
            def ping(self):
                return False
    """, f"{str(spool)!r}, flush_interval=0.02, batch_size=64", """
        records = [TraceRecord(alias="crash", metadata={"seq": i}) for i in range(300)]
        for record in records:
            assert writer.submit(record)
        assert writer.flush(10)
        print(" ".join(r.trace_id for r in records), flush=True)
    """)
    ids = set(printed.split())
    assert len(ids) == 300
    segments = sorted(spool.glob("*.jsonl"))
    assert segments
    with open(segments[-1], "ab") as torn:  # and it died half-way through writing one more line
        torn.write(b'{"batch":"b-torn","row":{"trace_id":"to')

    writer = fast_writer(store, spool)
    wait_until(lambda: writer.stats()["spool_bytes"] == 0)
    assert writer.close()
    assert stored(store) == (300, 300)
    assert stored_ids(store) == ids
    stats = writer.stats()
    assert stats["replayed"] == 300
    assert stats["dropped_spool_corrupt"] == 1  # the torn line is counted, not silently skipped
    assert not list(spool.glob("*.jsonl"))


def test_crash_between_insert_and_spool_delete_does_not_duplicate(store: TraceStore, tmp_path: Path) -> None:
    rows = [TraceRecord(alias="window").to_row() for _ in range(20)]
    spool = Spool(tmp_path / "spool")
    spool.append("batch-1", [row_to_jsonable(row) for row in rows])
    spool.close()
    store.insert_rows(rows, dedup_token="batch-1")  # the replay insert landed; the crash hit before the delete

    writer = fast_writer(store, tmp_path / "spool")
    wait_until(lambda: writer.stats()["spool_bytes"] == 0)
    assert writer.close()
    assert writer.stats()["replayed"] == 20
    assert stored(store) == (20, 20)  # ClickHouse dropped the second insert of batch-1

    store.insert_rows(rows, dedup_token="another-token")  # control: the dedup is what prevented a copy
    assert stored(store) == (40, 20)


def crash_while_batching(spool: Path, count: int) -> dict[str, str]:
    """A subprocess whose writer encodes ``count`` records of a 60 s batch (the store is fine, never
    asked yet), then dies without close(); returns their start times (ISO) by trace id."""
    printed = crashed_writer("""
        class Store:  # fine, but never asked: the batch is not due
            max_text_bytes = 1 << 20
            def insert_rows(self, rows, *, dedup_token=None):
                raise AssertionError("the batch was not due")
            def ping(self):
                return True
    """, f"{str(spool)!r}, flush_interval=60, batch_size=100_000", f"""
        records = [TraceRecord(alias="journal", response="é" * 3, metadata={{"seq": i}}) for i in range(3)]
        records += [TraceRecord(alias="journal", metadata={{"seq": i}}) for i in range(3, {count})]
        for record in records:
            assert writer.submit(record)
        deadline = time.monotonic() + 10
        while writer.stats()["queue_depth"] and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # an encode tick after the queue emptied: the last rows are journaled
        print(" ".join(f"{{r.trace_id}}={{r.start_time.isoformat()}}" for r in records), flush=True)
    """)
    return dict(item.split("=") for item in printed.split())


def test_submit_all_takes_what_fits_and_counts_the_rest(store: TraceStore, tmp_path: Path) -> None:
    flaky = FlakyStore(store)
    flaky.gate.clear()  # the store hangs: nothing leaves the queue
    writer = fast_writer(flaky, tmp_path / "spool", queue_size=20, batch_size=5)
    first = writer.submit_all([TraceRecord(alias="all") for _ in range(12)])
    time.sleep(0.3)  # the writer takes at most one batch (5) before it hangs in the insert
    second = writer.submit_all([TraceRecord(alias="all") for _ in range(30)])
    stats = writer.stats()
    assert first == 12 and 8 <= second <= 13 and stats["dropped_queue_full"] == 30 - second
    flaky.gate.set()
    assert writer.close()
    assert stored(store) == (first + second, first + second)


def test_sync_journals_what_came_before_without_an_insert(store: TraceStore, tmp_path: Path) -> None:
    """The trace process acknowledges events once sync() says they are journaled: a kill -9 right
    after must not lose them, and sync() must not cost an insert (inserts are made large on purpose)."""
    flaky = FlakyStore(store)
    writer = TraceWriter(flaky, tmp_path / "spool", flush_interval=60.0)
    writer.submit_all([TraceRecord(alias="synced") for _ in range(7)])
    assert writer.sync(5.0)
    assert flaky.delivered == []  # journaled, not inserted
    recovered = Journal(tmp_path / "spool", COLUMN_NAMES, []).recover()
    assert recovered is not None and len(recovered.rows) == 7
    assert writer.close()
    assert stored(store) == (7, 7)


def test_a_batch_is_inserted_once_its_rows_reach_batch_bytes(store: TraceStore, tmp_path: Path) -> None:
    """Rows of ~1 KB against a 50 KB cap: the open batch goes to the store once it holds ~50 KB (checked
    after each round the writer encodes, here one per sync()), not after batch_size rows or 60 s."""
    flaky = FlakyStore(store)
    writer = TraceWriter(flaky, tmp_path / "spool", flush_interval=60.0, batch_bytes=50_000)
    for _ in range(4):
        writer.submit_all([TraceRecord(alias="big", response=f"{i:04d}" + "x" * 1000) for i in range(30)])
        assert writer.sync(5.0)
    wait_until(lambda: len(flaky.delivered) == 2)
    assert [len(batch) for batch in flaky.delivered] == [60, 60]
    assert writer.close()
    assert stored(store) == (120, 120)


def test_batch_being_collected_survives_a_crash(store: TraceStore, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    ids = crash_while_batching(spool, 500)
    assert len(set(ids)) == 500 and (spool / "journal").stat().st_size > 0
    with open(spool / "journal", "ab") as torn:  # and it died half-way through journaling one more frame
        torn.write(struct.pack("<III", 999, 1, 0) + b"\x00" * 10)

    writer = fast_writer(store, spool)
    wait_until(lambda: stored(store) == (500, 500))
    assert writer.close()
    rows = store._connected().query("SELECT trace_id, start_time, response FROM opentracy_traces").result_rows
    assert {tid: start.isoformat() for tid, start, _ in rows} == ids  # to the microsecond
    assert {response for _, _, response in rows} == {"é" * 3, ""}  # rows come back as they were encoded
    stats = writer.stats()
    assert stats["replayed"] == 500
    assert stats["dropped_spool_corrupt"] == 1  # the torn row is counted, not silently skipped
    assert not (spool / "journal").exists() and not list(spool.glob("*.jsonl"))


def test_crash_after_the_insert_before_the_journal_cleared_does_not_duplicate(store: TraceStore,
                                                                               tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    ids = crash_while_batching(spool, 40)
    left = Journal(spool, COLUMN_NAMES, ["start_time", "end_time"]).recover()
    assert left is not None and len(left.rows) == 40 and left.lost_rows == 0
    # The insert of that batch had landed; the crash came before the journal was cleared.
    store.insert_rows([row_from_jsonable(row) for row in left.rows], dedup_token=left.batch_id)

    writer = fast_writer(store, spool)
    wait_until(lambda: writer.stats()["replayed"] == 40)
    assert writer.close()
    assert stored(store) == (40, 40)  # ClickHouse dropped the replay: same batch id, same token
    assert stored_ids(store) == set(ids)


def test_crash_after_spooling_before_the_journal_cleared_does_not_duplicate(store: TraceStore,
                                                                           tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    rows = [TraceRecord(alias="both").to_row() for _ in range(30)]
    spool = Spool(spool_dir)  # the store was down: the batch went to the spool (fsync'd) ...
    spool.append("batch-9", [row_to_jsonable(row) for row in rows])
    spool.close()
    journal = Journal(spool_dir, COLUMN_NAMES, ["start_time", "end_time"])  # ... and the crash left the journal
    journal.begin("batch-9")
    journal.append(rows)

    writer = fast_writer(store, spool_dir)
    wait_until(lambda: writer.stats()["spool_bytes"] == 0)
    assert writer.close()
    assert stored(store) == (30, 30)  # not 60: both copies carry batch-9's dedup token


def test_journal_skips_and_counts_a_damaged_frame(tmp_path: Path) -> None:
    journal = Journal(tmp_path, COLUMN_NAMES, ["start_time", "end_time"])
    frames = [[TraceRecord(alias=f"frame-{n}").to_row() for _ in range(rows)] for n, rows in enumerate((2, 3, 4))]
    journal.begin("batch-7")
    for frame in frames:
        journal.append(frame)
    data = bytearray((tmp_path / "journal").read_bytes())
    second = data.index(b"frame-1")  # a byte of the second frame's payload goes bad (ids are hex: no "frame")
    data[second] = ord("X")
    (tmp_path / "journal").write_bytes(bytes(data))

    left = Journal(tmp_path, COLUMN_NAMES, ["start_time", "end_time"]).recover()
    assert left is not None and left.batch_id == "batch-7"
    assert [row["alias"] for row in left.rows] == ["frame-0"] * 2 + ["frame-2"] * 4
    assert left.lost_rows == 3
    assert left.rows[0]["start_time"] == frames[0][0][1]  # microseconds, as encoded


def test_a_journal_of_an_older_build_is_recovered_to_the_microsecond(store: TraceStore, tmp_path: Path) -> None:
    # 0.1.0 journaled times as float Unix seconds; a crash just before an upgrade leaves such a file.
    record = TraceRecord(alias="old-journal", start_time=datetime(2026, 11, 27, 4, 28, 22, 123457, timezone.utc))
    row = record.to_row()
    start = COLUMN_NAMES.index("start_time")
    row[start] = record.start_time.timestamp()
    payload = marshal.dumps([row])
    header = {"batch": "old-batch", "columns": list(COLUMN_NAMES), "marshal": marshal.version}
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / "journal").write_bytes(
        json.dumps(header).encode() + b"\n" + struct.pack("<III", len(payload), 1, zlib.crc32(payload)) + payload)
    writer = TraceWriter(store, tmp_path / "spool")
    assert writer.close()
    stored_start = store._connected().query("SELECT start_time FROM opentracy_traces WHERE alias = 'old-journal'")
    assert stored_start.result_rows == [(record.start_time,)]


def test_a_clean_close_leaves_no_journal(store: TraceStore, tmp_path: Path) -> None:
    writer = TraceWriter(store, tmp_path / "spool", flush_interval=60)
    for _ in range(20):
        writer.submit(TraceRecord(alias="clean"))
    wait_until(lambda: (tmp_path / "spool" / "journal").exists() and writer.stats()["queue_depth"] == 0)
    assert writer.close()
    assert not (tmp_path / "spool" / "journal").exists()
    assert stored(store) == (20, 20)
    writer = fast_writer(store, tmp_path / "spool")  # and the next start finds nothing to replay
    assert writer.close() and writer.stats()["replayed"] == 0 and stored(store) == (20, 20)


# -- limits: counted, never silent -----------------------------------------------------------------


def test_spool_cap_drops_and_counts(store: TraceStore, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    flaky = FlakyStore(store)
    flaky.down.set()
    writer = fast_writer(flaky, tmp_path / "spool", spool_max_bytes=40_000)
    with caplog.at_level(logging.WARNING, logger="opentracy.tracing.writer"):
        for i in range(100):
            writer.submit(TraceRecord(alias="cap", response="x" * 500, metadata={"seq": i}))
        assert writer.flush()
    stats = writer.stats()
    assert 0 < stats["spooled"] < 100
    assert stats["spooled"] + stats["dropped_spool_full"] == 100
    assert stats["dropped"] == stats["dropped_spool_full"]
    assert stats["spool_bytes"] <= 40_000
    assert any("dropped" in r.message and "spool_full" in r.message for r in caplog.records)

    flaky.down.clear()
    wait_until(lambda: writer.stats()["spool_bytes"] == 0)
    assert writer.close()
    assert stored(store) == (stats["spooled"], stats["spooled"])


def test_full_queue_drops_without_blocking(store: TraceStore, tmp_path: Path) -> None:
    flaky = FlakyStore(store)
    flaky.gate.clear()  # the store hangs: the writer thread is stuck in an insert
    writer = fast_writer(flaky, tmp_path / "spool", queue_size=20, batch_size=5)
    started = time.perf_counter()
    accepted = sum(writer.submit(TraceRecord(alias="q")) for _ in range(200))
    elapsed = time.perf_counter() - started
    assert elapsed < 0.5  # submit() never waits
    stats = writer.stats()
    assert 20 <= accepted <= 25 and stats["dropped_queue_full"] == 200 - accepted
    flaky.gate.set()
    assert writer.close()
    assert stored(store) == (accepted, accepted)


def test_poison_batch_is_set_aside_and_the_rest_flows(store: TraceStore, tmp_path: Path) -> None:
    flaky = FlakyStore(store, refuse=lambda rows: any(row[ALIAS] == "poison" for row in rows))
    writer = fast_writer(flaky, tmp_path / "spool", poison_after=3, retry_min=0.01)
    for _ in range(10):
        writer.submit(TraceRecord(alias="good"))
    writer.flush()
    writer.submit(TraceRecord(alias="poison"))
    writer.flush()
    for _ in range(10):
        writer.submit(TraceRecord(alias="good"))
    writer.flush()
    wait_until(lambda: writer.stats()["spool_bytes"] == 0)
    assert writer.close()
    assert stored(store) == (20, 20)
    assert writer.stats()["rejected"] == 1
    assert len(list((tmp_path / "spool" / "rejected").glob("*.jsonl"))) == 1


# -- shutdown --------------------------------------------------------------------------------------


def test_close_flushes_the_queue(store: TraceStore, tmp_path: Path) -> None:
    writer = TraceWriter(store, tmp_path / "spool", flush_interval=30, batch_size=100_000)
    for _ in range(300):
        writer.submit(TraceRecord(alias="bye"))
    started = time.perf_counter()
    assert writer.close(timeout=5)
    assert time.perf_counter() - started < 2  # woken, not waiting out the 30 s interval
    assert stored(store) == (300, 300)
    assert writer.submit(TraceRecord()) is False
    assert writer.stats()["dropped_closed"] == 1


def test_a_quiet_writer_wakes_for_the_first_record_and_writes_it_on_time(store: TraceStore, tmp_path: Path) -> None:
    # Between bursts the writer sleeps without a timer; the first record wakes it, and the batch is
    # inserted at its flush time with no further traffic and no flush() call.
    writer = TraceWriter(store, tmp_path / "spool", flush_interval=0.3)
    try:
        for expected in (1, 2):
            time.sleep(0.8)  # quiet: nothing queued, no batch open
            started = time.monotonic()
            writer.submit(TraceRecord(alias="quiet"))
            wait_until(lambda: stored(store)[0] == expected, timeout=5)
            assert time.monotonic() - started < 3
        # flush() ends the wait for more records at once (an admin read must not wait out intervals)
        slow = TraceWriter(store, tmp_path / "spool2", flush_interval=30, encode_interval=10)
        try:
            slow.submit(TraceRecord(alias="quiet"))
            started = time.monotonic()
            assert slow.flush(timeout=5)
            assert time.monotonic() - started < 2
            assert stored(store)[0] == 3
        finally:
            slow.close()
    finally:
        writer.close()


def test_close_with_store_down_spools_for_the_next_start(store: TraceStore, tmp_path: Path) -> None:
    flaky = FlakyStore(store)
    flaky.down.set()
    writer = fast_writer(flaky, tmp_path / "spool", flush_interval=30, batch_size=100_000)
    for _ in range(50):
        writer.submit(TraceRecord(alias="later"))
    assert writer.close(timeout=5)
    assert writer.stats()["spooled"] == 50 and stored(store) == (0, 0)

    writer = fast_writer(store, tmp_path / "spool")
    wait_until(lambda: stored(store) == (50, 50))
    assert writer.close()


# -- metrics and throughput ------------------------------------------------------------------------


def test_prometheus_exposition(store: TraceStore, tmp_path: Path) -> None:
    writer = fast_writer(store, tmp_path / "spool")
    for _ in range(3):
        writer.submit(TraceRecord(cost_usd=float("nan")))
    writer.close()
    text = writer.prometheus()
    lines = text.splitlines()
    assert "# TYPE opentracy_traces_written_total counter" in lines
    assert "opentracy_traces_written_total 3" in lines
    assert "opentracy_traces_sanitized_total 3" in lines
    assert 'opentracy_traces_dropped_total{reason="queue_full"} 0' in lines
    assert "# TYPE opentracy_trace_spool_bytes gauge" in lines
    assert "opentracy_trace_store_up 1" in lines
    assert text.endswith("\n")
    for line in lines:  # every sample line is `name{labels} number`
        if not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            assert name.startswith("opentracy_") and float(value) >= 0


def test_throughput(store: TraceStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    writer = TraceWriter(store, tmp_path / "spool", queue_size=100_000)
    threads, per_thread = 4, 5000
    submit_seconds: list[float] = []

    def produce() -> None:
        records = [TraceRecord(alias="smart", selected_model="gpt-4o", response="ok " * 20,
                               messages=[{"role": "user", "content": "hello"}]) for _ in range(per_thread)]
        started = time.perf_counter()
        for record in records:
            writer.submit(record)
        submit_seconds.append(time.perf_counter() - started)

    started = time.perf_counter()
    producers = [threading.Thread(target=produce) for _ in range(threads)]
    for producer in producers:
        producer.start()
    for producer in producers:
        producer.join()
    assert writer.close(timeout=30)
    elapsed = time.perf_counter() - started
    total = threads * per_thread
    assert stored(store) == (total, total)
    rate = total / elapsed
    submit_us = sum(submit_seconds) / total * 1e6
    with capsys.disabled():
        print(f"\n[writer] {total} records from {threads} threads into chDB in {elapsed:.2f} s "
              f"= {rate:.0f} records/s; submit() {submit_us:.1f} us per call")
    assert rate > 1000


# -- the spool on its own --------------------------------------------------------------------------


def test_spool_is_fifo_across_segments_and_locked(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", segment_bytes=200)
    for n in range(10):
        assert spool.append(f"b{n}", [{"n": n, "i": i} for i in range(3)]) == 3
    assert len(list((tmp_path / "s").glob("*.jsonl"))) > 3
    with pytest.raises(SpoolLockedError):
        Spool(tmp_path / "s")
    seen = []
    for _ in range(4):
        batch = spool.peek()
        assert spool.peek() is batch  # re-peeking (a failed insert) re-reads nothing
        seen.append(batch.batch_id)
        assert [row["i"] for row in batch.rows] == [0, 1, 2]
        spool.ack(batch)
    spool.append("b10", [{"n": 10, "i": 0}])  # appended after a partial replay: still last
    while (batch := spool.peek()) is not None:
        seen.append(batch.batch_id)
        spool.ack(batch)
    assert seen == [f"b{n}" for n in range(11)]
    assert spool.is_empty and spool.bytes == 0 and not list((tmp_path / "s").glob("*.jsonl"))
    spool.close()
    Spool(tmp_path / "s").close()  # the lock is released by close()


def test_secrets_are_removed_from_every_stored_text(store: TraceStore, tmp_path: Path) -> None:
    """The writer scrubs the encoded row: plain text, JSON columns (where a secret is JSON-escaped), labels."""
    from opentracy.tracing.policy import TracePolicy

    plain, odd = "sk-live-0123456789abcdef", 'key"with\\quote-é-42'
    policy = TracePolicy(secrets=[plain, odd])
    writer = fast_writer(store, tmp_path / "spool", scrub=policy.scrub_text)
    record = TraceRecord(
        messages=[{"role": "user", "content": f"my key is {plain} and {odd}"}],
        response=f"echo {plain}", error_message=f"401 for key {odd}", user=plain,
        request_params={"nested": [{"api_key": plain}]}, metadata={"note": odd},
        attempts=[{"model": "m", "status": "error", "error": f"bad key {plain}"}])
    writer.submit(record)
    assert writer.flush(10)
    writer.close()
    row = store.get_trace(record.trace_id)
    assert row is not None
    text = json.dumps(row, default=str, ensure_ascii=False)
    assert plain not in text and "with\\\\quote" not in text and 'with"quote' not in text
    assert row["response"] == "echo [SECRET]"
    assert row["messages"][0]["content"] == "my key is [SECRET] and [SECRET]"
    assert row["metadata"] == {"note": "[SECRET]"} and row["user"] == "[SECRET]"
