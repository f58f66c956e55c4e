"""The trace store: ClickHouse (embedded chDB or a server) and the local disk spool in front of it."""

from opentracy.store.clickhouse import (
    AmbiguousTraceIdError,
    StoreError,
    StoreLockedError,
    StoreURL,
    TraceStore,
    parse_store_url,
)
from opentracy.store.spool import Spool

__all__ = [
    "AmbiguousTraceIdError",
    "Spool",
    "StoreError",
    "StoreLockedError",
    "StoreURL",
    "TraceStore",
    "parse_store_url",
]
