"""TraceStore and TraceRecord against the real embedded engine (chDB), never a fake.

chDB allows one data path per process (and one process per path), so every test file in this
pytest process uses the same path, ``<basetemp>/chdb`` (fixture ``chdb_path``), and isolates itself
with its own database (``?database=...``). Tests that need a second path or a second process run a
subprocess.
"""

from __future__ import annotations

import json
import math
import random
import os
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from opentracy.store import AmbiguousTraceIdError, StoreError, TraceStore, parse_store_url
from opentracy.store.migrations import MIGRATIONS, SchemaDriftError, apply_migrations
from opentracy.tracing.record import COLUMN_NAMES, DEFAULT_MAX_TEXT_BYTES, TraceRecord
from tests.conftest import empty_store_fixture

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store_url(chdb_path: Path) -> str:
    return f"chdb://{chdb_path}?database=test_store"


@pytest.fixture(scope="module")
def shared_store(store_url: str):
    store = TraceStore(store_url)
    yield store
    store.close()


store = empty_store_fixture()


def run_python(code: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})


def ago(**kwargs: float) -> datetime:
    return datetime.now(timezone.utc) - timedelta(**kwargs)


# -- URLs ------------------------------------------------------------------------------------------


def test_store_urls() -> None:
    url = parse_store_url("chdb:///var/lib/opentracy/chdb/")
    assert (url.scheme, url.path, url.database, url.embedded) == ("chdb", "/var/lib/opentracy/chdb", "default", True)
    assert parse_store_url("chdb:///data?database=tests").database == "tests"
    server = parse_store_url("http://tracy:p%40ss@ch.internal:8123/traces?max_execution_time=10")
    assert (server.host, server.port, server.username, server.password, server.database) == (
        "ch.internal", 8123, "tracy", "p@ss", "traces")
    assert server.settings == (("max_execution_time", "10"),)
    assert "p@ss" not in str(server) and "p@ss" not in repr(server)
    secure = parse_store_url("https://ch.example.com")
    assert (secure.port, secure.database, secure.username) == (8443, "default", "default")
    for bad in ("chdb://relative/path", "chdb:///x?nope=1", "ftp://host/db", "http://host/bad-name;drop"):
        with pytest.raises(ValueError):
            parse_store_url(bad)


def test_unreachable_server_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="cannot reach ClickHouse"):
        TraceStore("http://127.0.0.1:9/traces", connect_timeout=1)
    lazy = TraceStore("http://127.0.0.1:9/traces", connect_timeout=1, require_connection=False)
    assert lazy.ping() is False
    with pytest.raises(StoreError):
        lazy.insert([TraceRecord()])


# -- schema ----------------------------------------------------------------------------------------


def test_migrations_are_idempotent(store: TraceStore, store_url: str) -> None:
    client = store._connected()
    assert store.schema_version == MIGRATIONS[-1].version
    assert apply_migrations(client) == MIGRATIONS[-1].version
    again = TraceStore(store_url)  # a second open (a restart, another replica) changes nothing
    again.close()
    versions = client.query("SELECT version, count() FROM opentracy_schema_version GROUP BY version").result_rows
    assert versions == [(m.version, 1) for m in MIGRATIONS]
    columns = [name for (name,) in client.query(
        "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'opentracy_traces' "
        "ORDER BY position").result_rows]
    assert columns == list(COLUMN_NAMES)
    # Rerunning every statement of every migration on a migrated store is harmless, too.
    for migration in MIGRATIONS:
        for statement in migration.statements():
            client.command(statement)


def test_missing_column_is_reported_not_discovered_at_insert(chdb_path: Path) -> None:
    url = f"chdb://{chdb_path}?database=test_drift"
    store = TraceStore(url)
    client = store._connected()
    client.command("ALTER TABLE opentracy_traces DROP COLUMN shadow_of")  # as if a migration were missing
    with pytest.raises(SchemaDriftError, match="shadow_of"):
        TraceStore(url)
    client.command("DROP DATABASE test_drift")
    store.close()


def test_reopen_keeps_data(tmp_path: Path) -> None:
    """Write in one process, exit, read in another: what a restart of `opentracy serve` does."""
    path = tmp_path / "restart"
    write = run_python(f"""
        from opentracy.store import TraceStore
        from opentracy.tracing.record import TraceRecord
        store = TraceStore("chdb://{path}")
        records = [TraceRecord(alias="smart", response=f"answer {{i}}") for i in range(3)]
        store.insert(records)
        print(records[0].trace_id)
    """)
    assert write.returncode == 0, write.stderr
    trace_id = write.stdout.split()[-1]
    read = run_python(f"""
        from opentracy.store import TraceStore
        store = TraceStore("chdb://{path}")
        print(store.count(), store.get_trace("{trace_id}")["response"], store.schema_version)
    """)
    assert read.returncode == 0, read.stderr
    assert read.stdout.split()[-4:] == ["3", "answer", "0", str(MIGRATIONS[-1].version)]


def test_same_path_twice_in_one_process_shares_the_data(store: TraceStore, store_url: str) -> None:
    store.insert([TraceRecord(alias="a")])
    other = TraceStore(store_url)
    assert other.count() == 1
    other.close()  # closing one handle leaves the other working
    assert store.count() == 1


def test_second_process_gets_store_locked_error(store: TraceStore, chdb_path: Path) -> None:
    result = run_python(f"""
        from opentracy.store import TraceStore, StoreLockedError
        try:
            TraceStore("chdb://{chdb_path}")
        except StoreLockedError as exc:
            print("LOCKED", exc.pid)
            print(exc)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"LOCKED {os.getpid()}"
    assert "go through the running server" in result.stdout


def test_other_path_in_same_process_is_refused_clearly(store: TraceStore, tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="one path per process"):
        TraceStore(f"chdb://{tmp_path / 'another'}")
    assert store.count() == 0  # the open engine is unharmed


# -- insert and query ------------------------------------------------------------------------------


def test_insert_query_filters_and_get_by_prefix(store: TraceStore) -> None:
    rows = [
        TraceRecord(alias="smart", selected_model="gpt-4o", requested_model="smart", start_time=ago(minutes=50)),
        TraceRecord(alias="smart", selected_model="claude", requested_model="smart", fallback_used=True,
                    start_time=ago(minutes=40)),
        TraceRecord(alias="cheap", selected_model="gpt-4o-mini", requested_model="cheap", start_time=ago(minutes=30)),
        TraceRecord(alias="", selected_model="gpt-4o", requested_model="gpt-4o", status="error",
                    error_type="RateLimitError", http_status=429, start_time=ago(minutes=20)),
        TraceRecord(alias="smart", selected_model="gpt-4o", requested_model="smart", start_time=ago(days=3),
                    messages=[{"role": "user", "content": "hi"}], metadata={"tags": ["a"]},
                    attempts=[{"model": "gpt-4o", "status": "ok", "error": None, "latency_ms": 12.5}]),
    ]
    assert store.insert(rows) == 5
    assert store.count() == 5

    newest_first = store.query_traces()
    assert [t["trace_id"] for t in newest_first] == [r.trace_id for r in rows[3::-1]] + [rows[4].trace_id]
    assert [t["trace_id"] for t in store.query_traces(last=2)] == [rows[3].trace_id, rows[2].trace_id]
    assert store.query_traces(last=0) == []
    assert len(store.query_traces(alias="smart")) == 3
    assert {t["selected_model"] for t in store.query_traces(alias="smart", model="gpt-4o")} == {"gpt-4o"}
    assert len(store.query_traces(model="gpt-4o")) == 3  # selected or requested
    assert len(store.query_traces(model="smart")) == 3
    assert [t["http_status"] for t in store.query_traces(status="error")] == [429]
    assert len(store.query_traces(since=timedelta(hours=1))) == 4
    assert len(store.query_traces(alias="smart", since=timedelta(minutes=45))) == 1
    assert store.query_traces(alias="nobody") == []
    slim = store.query_traces(last=1, fields=["trace_id", "start_time"])
    assert set(slim[0]) == {"trace_id", "start_time"}
    with pytest.raises(ValueError):
        store.query_traces(fields=["trace_id; DROP TABLE x"])

    full = store.get_trace(rows[4].trace_id)
    assert full is not None
    assert full["messages"] == [{"role": "user", "content": "hi"}]
    assert full["metadata"] == {"tags": ["a"]}
    assert full["attempts"][0]["latency_ms"] == 12.5
    assert full["start_time"].tzinfo is not None
    assert abs(full["start_time"] - rows[4].start_time) < timedelta(microseconds=1)
    assert TraceRecord.from_row(full).trace_id == rows[4].trace_id
    assert store.get_trace(rows[1].trace_id[:12])["fallback_used"] is True
    dashed = str(__import__("uuid").UUID(rows[2].trace_id)).upper()
    assert store.get_trace(dashed)["trace_id"] == rows[2].trace_id
    assert store.get_trace("f" * 32) is None


def test_ambiguous_prefix(store: TraceStore) -> None:
    store.insert([TraceRecord(trace_id="abc" + "0" * 29), TraceRecord(trace_id="abc" + "1" * 29)])
    with pytest.raises(AmbiguousTraceIdError) as caught:
        store.get_trace("abc")
    assert len(caught.value.matches) == 2
    assert store.get_trace("abc1")["trace_id"] == "abc" + "1" * 29


def test_query_values_are_parameters_not_sql(store: TraceStore) -> None:
    store.insert([TraceRecord(alias="x' OR '1'='1")])
    assert len(store.query_traces(alias="x' OR '1'='1")) == 1
    assert store.query_traces(alias="' OR 1=1 --") == []


def test_ttl_applied_and_changed_at_startup(chdb_path: Path) -> None:
    url = f"chdb://{chdb_path}?database=test_ttl"

    def table_ttl(store: TraceStore) -> str:
        engine = store._connected().command("SELECT engine_full FROM system.tables "
                                            "WHERE database = 'test_ttl' AND name = 'opentracy_traces'")
        return engine.split(" SETTINGS ")[0].partition(" TTL ")[2]

    store = TraceStore(url, ttl_days=7)
    assert table_ttl(store) == "toDateTime(start_time) + toIntervalDay(7)"
    store.insert([TraceRecord(start_time=ago(days=30)), TraceRecord(start_time=ago(days=1))])
    store._connected().command("OPTIMIZE TABLE opentracy_traces FINAL")
    assert store.count() == 1  # the 30-day-old trace is past the TTL
    store.close()

    store = TraceStore(url, ttl_days=90)
    assert table_ttl(store) == "toDateTime(start_time) + toIntervalDay(90)"
    store.close()
    store = TraceStore(url, ttl_days=None)
    assert table_ttl(store) == ""
    store._connected().command("DROP DATABASE test_ttl")
    store.close()
    with pytest.raises(ValueError):
        TraceStore(url, ttl_days=0)


# -- odd records -----------------------------------------------------------------------------------


class Opaque:
    def __repr__(self) -> str:
        raise RuntimeError("repr must not be needed")


def test_odd_records_are_stored_with_their_fixes_listed(store: TraceStore) -> None:
    huge = "é" * (5 * 1024 * 1024 // 2)  # 5 MB of UTF-8
    circular: dict = {"name": "loop"}
    circular["self"] = circular
    odd = {
        "nan_cost": TraceRecord(cost_usd=float("nan"), ttft_ms=float("inf")),
        "bytes_text": TraceRecord(response=b"caf\xc3\xa9 \xff\xfe", error_message=bytearray(b"boom")),
        "surrogate": TraceRecord(response="half an emoji: \ud800!", user="\udcff", alias="a\ud83dz",
                                 messages=[{"role": "user", "content": "x\ud800"}]),
        "huge": TraceRecord(response=huge, messages=[{"role": "user", "content": huge}]),
        "object_in_metadata": TraceRecord(metadata={"obj": Opaque(), "when": datetime(2024, 1, 1),
                                                    "loop": circular, ("tuple", "key"): {1, 2}, "nan": math.nan}),
        "bad_numbers": TraceRecord(prompt_tokens=-1, completion_tokens="12", total_tokens=2**40, http_status=None,
                                   stream="yes", status="timeout", start_time="yesterday", latency_ms="fast"),
    }
    store.insert(list(odd.values()))
    assert store.count() == len(odd)

    def stored(name: str) -> dict:
        trace = store.get_trace(odd[name].trace_id)
        assert trace is not None, name
        return trace

    t = stored("nan_cost")
    assert t["cost_usd"] == 0.0 and t["ttft_ms"] is None
    assert any(e.startswith("cost_usd: nan") for e in t["encoding_errors"])
    assert any(e.startswith("ttft_ms: inf") for e in t["encoding_errors"])

    t = stored("bytes_text")
    assert t["response"] == "café \ufffd\ufffd" and t["error_message"] == "boom"
    assert "response: bytes decoded as UTF-8" in t["encoding_errors"]

    t = stored("surrogate")
    assert t["response"] == "half an emoji: \ufffd!" and t["user"] == "\ufffd" and t["alias"] == "a\ufffdz"
    assert t["messages"] == [{"role": "user", "content": "x\ufffd"}]
    assert {e.split(":")[0] for e in t["encoding_errors"]} == {"alias", "messages", "response", "user"}

    t = stored("huge")
    assert len(t["response"].encode()) <= 1024 * 1024
    assert t["response"].startswith("éé") and t["response"].endswith("bytes]")
    assert t["messages"]["_opentracy_truncated"] is True  # still valid JSON, with the head kept
    assert t["messages"]["head"].startswith('[{"role":"user","content":"éé')
    assert any(e.startswith("response: truncated from 5242880") for e in t["encoding_errors"])

    t = stored("object_in_metadata")
    assert t["metadata"]["obj"] == "<unencodable: Opaque>"
    assert t["metadata"]["when"] == "2024-01-01T00:00:00"
    assert t["metadata"]["loop"]["self"] == "<circular>"
    assert t["metadata"]["nan"] is None
    assert sorted(t["metadata"]["<unencodable: tuple>"]) == [1, 2]
    assert any("unencodable Opaque" in e for e in t["encoding_errors"])

    t = stored("bad_numbers")
    assert (t["prompt_tokens"], t["completion_tokens"], t["total_tokens"]) == (0, 12, 2**32 - 1)
    assert t["http_status"] == 200 and t["stream"] is False and t["status"] == "error"
    assert t["latency_ms"] == 0.0 and abs(t["start_time"] - ago()) < timedelta(minutes=1)
    assert len(t["encoding_errors"]) == 7

    clean = TraceRecord(alias="fine", messages=[{"role": "user", "content": "ok"}])
    assert clean.sanitize().encoding_errors == []
    assert clean.sanitize().messages == clean.messages


def test_to_row_is_what_each_columns_encoder_gives() -> None:
    """to_row's quick checks (common values skip the encoders) never change a stored value or a fix."""
    from opentracy.tracing.record import COLUMNS, ENCODING_ERRORS

    def by_encoders(record: TraceRecord, limit: int) -> list:
        row, problems = [], []
        for column in COLUMNS[:-1]:
            value, found = column.encode(getattr(record, column.name), limit)
            row.append(value)
            problems += [f"{column.name}: {p}" for p in found][:5] + (
                [f"{column.name}: and {len(found) - 5} more"] if len(found) > 5 else [])
        return row + [ENCODING_ERRORS.encode(record.encoding_errors, limit)[0] + problems]

    when = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone.utc)
    values = {
        "text": ["", "plain", "x" * 1024, "x" * 1025, "é", "\ud800", None, b"raw", 7],
        "label": ["", "gpt-4o", "ok", "error", "weird", "y" * 1024, "y" * 1025, "ü", None, 3],
        "id": ["", "abc", "z" * 1025, None, "ü"],
        "json": [[], {}, [{"role": "user", "content": "hi"}], {"k": "é"}, [float("nan")], ["x" * 2000], None, (1, 2),
                 {"set": {1}}],
        "float": [0.0, 1.5, float("inf"), float("nan"), 3, True, None, "2.5"],
        "nullable_float": [None, 2.0, float("nan"), 4],
        "uint": [0, 5, -1, 2**40, 1.0, True, None, "12"],
        "bool": [True, False, None, 0, 1, 2, "yes"],
        "time": [when, when.replace(tzinfo=None), datetime(1800, 1, 1, tzinfo=timezone.utc), 1.7e9, "noon", None],
    }
    rng = random.Random(7)
    for _ in range(300):
        record = TraceRecord(encoding_errors=rng.choice([[], ["earlier fix"]]))
        for column in COLUMNS[:-1]:
            setattr(record, column.name, rng.choice(values[column.kind]))
        for limit in (1024, DEFAULT_MAX_TEXT_BYTES):
            expected, actual = by_encoders(record, limit), record.to_row(limit)
            for column, want, got in zip(COLUMNS, expected, actual):
                if column.kind == "time" and got != want:  # "stored the write time": now, twice (in us)
                    now_us = (ago() - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)
                    assert abs(got - want) < 5_000_000 and abs(got - now_us) < 5_000_000
                    continue
                if column.kind == "id" and not getattr(record, column.name):
                    assert len(got) == 32  # a fresh id, twice
                    continue
                assert got == want or (want != want and got != got), (column.name, getattr(record, column.name))


def test_max_text_bytes_is_configurable(chdb_path: Path) -> None:
    store = TraceStore(f"chdb://{chdb_path}?database=test_store", max_text_bytes=4096)
    record = TraceRecord(response="x" * 10_000, tools=[{"name": "t" * 10_000}])
    store.insert([record])
    trace = store.get_trace(record.trace_id)
    assert len(trace["response"].encode()) <= 4096
    assert len(json.dumps(trace["tools"]).encode()) <= 4096 + 64 and trace["tools"]["_opentracy_truncated"]
    store.close()


# -- cost of an insert (the numbers quoted in opentracy/store/clickhouse.py) ------------------------


def test_batching_is_far_cheaper_per_row(store: TraceStore, capsys: pytest.CaptureFixture[str]) -> None:
    def record(i: int) -> TraceRecord:
        return TraceRecord(alias="smart", selected_model="gpt-4o", messages=[{"role": "user", "content": f"q{i}"}],
                           response="an answer of a few words " * 8, prompt_tokens=20, completion_tokens=50)

    singles = 30
    started = time.perf_counter()
    for i in range(singles):
        store.insert([record(i)])
    single_ms = (time.perf_counter() - started) / singles * 1000

    batch = [record(i) for i in range(1000)]
    started = time.perf_counter()
    store.insert(batch)
    batch_ms = (time.perf_counter() - started) * 1000
    rows = [record(i).to_row() for i in range(1000)]
    started = time.perf_counter()
    store.insert_rows(rows)
    insert_only_ms = (time.perf_counter() - started) * 1000
    with capsys.disabled():
        print(f"\n[chDB] single-row insert {single_ms:.1f} ms; 1000-row batch {batch_ms:.1f} ms incl. encoding "
              f"({batch_ms:.0f} us/row, {single_ms / (batch_ms / 1000):.0f}x cheaper per row), "
              f"{insert_only_ms:.1f} ms for the insert alone")
    assert store.count() == singles + 2000
    assert batch_ms / 1000 < single_ms / 10
