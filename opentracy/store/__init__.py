"""The trace store: ClickHouse (embedded chDB or a server) and the local disk spool in front of it."""

from opentracy.store.clickhouse import (
    AmbiguousTraceIdError,
    StoreError,
    StoreLockedError,
    StoreURL,
    TraceStore,
    parse_store_url,
    wait_for_release,
)
from opentracy.store.spool import Spool, SpoolLockedError

__all__ = [
    "AmbiguousTraceIdError",
    "Spool",
    "SpoolLockedError",
    "StoreError",
    "StoreLockedError",
    "StoreURL",
    "TraceStore",
    "parse_store_url",
    "wait_for_release",
]
