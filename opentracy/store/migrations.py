"""Numbered schema migrations for the trace store, applied by the engine at start-up.

Rules that keep applying idempotent (two replicas starting at once, or a crash between a statement
and its version row, must both be harmless):

- every statement is re-runnable: ``CREATE ... IF NOT EXISTS``, ``ADD COLUMN IF NOT EXISTS``;
- migrations are append-only: never edit a released one, add the next number;
- the traces table is created from :class:`~opentracy.tracing.record.TraceRecord` as it is *now*,
  so on a fresh store later ``ADD COLUMN IF NOT EXISTS`` migrations are no-ops; on an old store they
  add what is missing. :func:`verify_columns` then checks the table against the dataclass, so a
  forgotten migration fails at start-up (and in tests), not at the first insert.

SQL is kept to what both chDB (ClickHouse 26.x) and a ClickHouse 23.8 server accept: no JSON type,
no ``CREATE OR REPLACE``, no new-analyzer-only syntax.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentracy.tracing.record import COLUMNS, column_definitions

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

log = logging.getLogger(__name__)

TRACES_TABLE = "opentracy_traces"
VERSION_TABLE = "opentracy_schema_version"

DEDUPLICATION_WINDOW = 10_000
"""Insert blocks whose dedup token a plain MergeTree remembers (``non_replicated_deduplication_window``).

Off by default on non-replicated tables; the writer relies on it so that replaying a spooled batch
whose first insert in fact landed (crash between insert and spool delete, or a timeout after the
server committed) is dropped by ClickHouse instead of stored twice. Measured on chDB 26.9: a second
insert with the same ``insert_deduplication_token`` is skipped, also after a process crash/restart
(the log lives in the table's ``deduplication_logs``); insert cost unchanged (~5-6 ms per insert).
"""


def _create_traces() -> str:
    # ORDER BY (alias, selected_model, start_time): the questions asked of traces are "this alias /
    # this model over time". Both leading columns are LowCardinality with few distinct values, so
    # the primary index narrows an alias (or alias+model) to contiguous ranges and then by time;
    # a model filter without an alias still skips well because the first column has few values.
    # Monthly partitions keep TTL drops cheap and let time ranges prune whole months.
    # trace_id lookups (get_trace) use the bloom filter; "latest N" uses the start_time minmax index.
    return f"""
CREATE TABLE IF NOT EXISTS {TRACES_TABLE}
(
    {column_definitions()},
    INDEX idx_trace_id trace_id TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_start_time start_time TYPE minmax GRANULARITY 1
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(start_time)
ORDER BY (alias, selected_model, start_time)
SETTINGS non_replicated_deduplication_window = {DEDUPLICATION_WINDOW}, index_granularity = 8192
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    description: str
    statements: Callable[[], list[str]]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "create opentracy_traces", lambda: [_create_traces()]),
)


def current_version(client: Client) -> int:
    client.command(
        f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} "
        "(version UInt32, description String, applied_at DateTime DEFAULT now()) "
        "ENGINE = MergeTree ORDER BY version"
    )
    return int(client.command(f"SELECT max(version) FROM {VERSION_TABLE}") or 0)


def apply_migrations(client: Client, migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    """Apply every migration newer than the store's version; return the resulting version."""
    version = current_version(client)
    for migration in migrations:
        if migration.version <= version:
            continue
        log.info("trace store: applying migration %d (%s)", migration.version, migration.description)
        for statement in migration.statements():
            client.command(statement)
        client.insert(VERSION_TABLE, [[migration.version, migration.description]],
                      column_names=["version", "description"])
        version = migration.version
    return version


class SchemaDriftError(RuntimeError):
    """The table lacks a column TraceRecord has (or types differ): a migration is missing."""


def verify_columns(client: Client) -> None:
    result = client.query(
        "SELECT name, type FROM system.columns WHERE database = currentDatabase() AND table = {t:String}",
        parameters={"t": TRACES_TABLE},
    )
    actual = dict(result.result_rows)
    wrong = [f"{c.name} (want {c.clickhouse_type}, table has {actual.get(c.name, 'nothing')})"
             for c in COLUMNS if actual.get(c.name) != c.clickhouse_type]
    if wrong:
        raise SchemaDriftError(f"{TRACES_TABLE} does not match TraceRecord: {', '.join(wrong)}; "
                               "add a migration in opentracy/store/migrations.py")


EMBEDDED_MERGE_SELECTOR_BASE = 20
"""``merge_selector_base`` of the embedded store's table (ClickHouse's default: 5).

chDB merges in the gateway's own process, so merge CPU is request CPU. The default merges eagerly:
with one 2000-row insert a second, each row cost 12.8 us of merge threads over 45 inserts (the table
kept 3 parts); with base 20 it cost 3.8 us (14 parts), because each row is rewritten by fewer, wider
merges (write amplification ~log_base of the part count). Reads touch more parts; at the embedded
store's sizes that is milliseconds. A server keeps its own default: its merges are not in our process,
and ClickHouse calls this an expert setting that older servers may not accept.
"""


def apply_embedded_settings(client: Client) -> None:
    """Table settings of the embedded (chDB) store; re-applying is a no-op."""
    client.command(f"ALTER TABLE {TRACES_TABLE} MODIFY SETTING merge_selector_base = {EMBEDDED_MERGE_SELECTOR_BASE}")


_OUR_TTL = re.compile(r"\bTTL toDateTime\(start_time\) \+ toIntervalDay\((\d+)\)")


def apply_ttl(client: Client, ttl_days: int | None) -> None:
    """Make the table's TTL match ``ttl_days`` (``None``: keep traces forever). No-op if it already does.

    Only a TTL of the engine's own shape is removed; one an operator wrote by hand is left alone.
    """
    engine = str(client.command(
        "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = {t:String}",
        parameters={"t": TRACES_TABLE},
    ))
    ours = _OUR_TTL.search(engine)
    current = int(ours.group(1)) if ours else None
    if current == ttl_days:
        return
    if ttl_days is not None:
        log.info("trace store: TTL %s -> %d days", current, ttl_days)
        client.command(f"ALTER TABLE {TRACES_TABLE} MODIFY TTL toDateTime(start_time) + INTERVAL {int(ttl_days)} DAY")
    elif ours:
        log.info("trace store: removing TTL of %d days (traces kept forever)", current)
        client.command(f"ALTER TABLE {TRACES_TABLE} REMOVE TTL")
    elif " TTL " in engine:
        log.warning("trace store: %s has a TTL the engine did not set; leaving it", TRACES_TABLE)
