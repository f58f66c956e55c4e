"""``TraceStore``: the ClickHouse trace table, embedded (chDB) or on a server, behind one API.

URLs::

    chdb:///abs/path                       embedded engine, data in that directory (the default)
    chdb:///abs/path?database=name         ... in another database of it (tests share one engine so)
    http://user:pass@host:8123/db          a ClickHouse server (https:// on 8443); db defaults to default

Costs measured here (chDB 26.9, clickhouse-connect 1.12, 2 vCPU; ``test_batching_is_far_cheaper_per_row``
in tests/test_store.py prints them again): one ``insert`` call has a fixed cost of ~5-9 ms, so a
single-row insert costs ~6-9 ms while a 1000-row batch costs ~13 ms for the insert (~13 us/row) or
~45 ms including sanitising/encoding the records (~45 us/row) — 100-200x cheaper per row. Hence
inserts are batched by :class:`~opentracy.tracing.writer.TraceWriter` on a background thread, never
made per request.

chDB facts the API is shaped by (measured):

- one *process* per data directory: a second process fails with ``Cannot lock file <dir>/status.
  Another server instance in same directory is already running`` (surfaced as ``Error initializing
  EmbeddedServer``). :class:`StoreLockedError` names the holder's PID so the CLI can say "the
  server holds the store; go through it".
- one *path* per process: while any client is open on one path, opening another path raises
  ``EmbeddedServer already initialized with path ...``. After every client is closed a process may
  open another path. Several clients on the same path share one engine.
- no async client: callers on an event loop use a thread.

Query values are always bound as server-side parameters (``{name:Type}``), which chDB supports.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, unquote, urlsplit

from opentracy.store.migrations import (
    TRACES_TABLE,
    apply_embedded_settings,
    apply_migrations,
    apply_ttl,
    verify_columns,
)
from opentracy.tracing.record import (
    COLUMN_NAMES,
    COLUMNS,
    DEFAULT_MAX_TEXT_BYTES,
    TraceRecord,
    decode_columns,
    utc_now,
)

# clickhouse-connect (and the numpy, pandas and pyarrow it loads) is imported on connect, not on import:
# a server whose store runs in another process (tracing/process.py) never loads it.
if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

log = logging.getLogger(__name__)

MAX_QUERY_ROWS = 10_000
# Server settings of the embedded engine. Its memory worker (which corrects the memory tracker and
# purges freed pages) ticks every 50-100 ms by default: measured 3 ms of CPU a second idle and up to
# ~15 ms/s under tracing load, in the gateway's process. Once a second is plenty for a trace store.
CHDB_OPTIONS = {"memory_worker_period_ms": "1000"}
_DATABASE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_COLUMN_TYPE_NAMES = tuple(c.clickhouse_type for c in COLUMNS)


class StoreError(RuntimeError):
    """The trace store cannot be opened or used."""


class StoreLockedError(StoreError):
    """Another process holds the embedded store (chDB allows one process per data directory)."""

    def __init__(self, path: str, pid: int | None) -> None:
        holder = f"process {pid}" if pid else "another process"
        super().__init__(f"the trace store at {path} is held by {holder} (an `opentracy serve`?); "
                         "chDB allows one process per data directory: go through the running server, "
                         "or stop it first")
        self.path = path
        self.pid = pid

    def __reduce__(self) -> tuple[Any, ...]:  # raised in the store's process, re-raised in the server's
        return type(self), (self.path, self.pid)


class AmbiguousTraceIdError(StoreError, LookupError):
    """A trace id prefix that matches more than one trace."""

    def __init__(self, prefix: str, matches: list[str]) -> None:
        super().__init__(f"trace id prefix {prefix!r} matches several traces ({', '.join(matches)}, ...); "
                         "give more characters")
        self.prefix = prefix
        self.matches = matches

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.prefix, self.matches)


@dataclass(frozen=True, slots=True)
class StoreURL:
    """A parsed store URL. ``str()`` hides the password."""

    scheme: str  # chdb | http | https
    path: str = ""  # chdb data directory
    host: str = ""
    port: int = 0
    username: str = "default"
    password: str = field(default="", repr=False)
    database: str = "default"
    settings: tuple[tuple[str, str], ...] = ()

    @property
    def embedded(self) -> bool:
        return self.scheme == "chdb"

    def __str__(self) -> str:
        if self.embedded:
            return f"chdb://{self.path}" + (f"?database={self.database}" if self.database != "default" else "")
        auth = f"{self.username}:***@" if self.password else f"{self.username}@"
        return f"{self.scheme}://{auth}{self.host}:{self.port}/{self.database}"


def parse_store_url(url: str) -> StoreURL:
    """``chdb:///abs/path`` or ``http(s)://user:pass@host:port/db?setting=value``."""
    if url.startswith("chdb:"):
        location, _, query = url[len("chdb:"):].removeprefix("//").partition("?")
        path = unquote(location)
        if not path.startswith("/"):
            raise ValueError(f"store URL {url!r}: chDB needs an absolute path, e.g. chdb:///var/lib/opentracy/chdb")
        options = dict(parse_qsl(query))
        database = options.pop("database", "default")
        if options:
            raise ValueError(f"store URL {url!r}: unknown chDB options {sorted(options)}; only ?database=NAME")
        return StoreURL("chdb", path=os.path.normpath(path), database=_database_name(url, database))
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"store URL {url!r}: expected chdb:///abs/path or http(s)://user:pass@host:8123/db")
    database = _database_name(url, unquote(parts.path.strip("/")) or "default")
    return StoreURL(
        scheme=parts.scheme,
        host=parts.hostname,
        port=parts.port or (8443 if parts.scheme == "https" else 8123),
        username=unquote(parts.username) if parts.username else "default",
        password=unquote(parts.password) if parts.password else "",
        database=database,
        settings=tuple(parse_qsl(parts.query)),
    )


def _database_name(url: str, name: str) -> str:
    if not _DATABASE_NAME.match(name):
        raise ValueError(f"store URL {url!r}: database name {name!r} must be letters, digits, underscores")
    return name


class TraceStore:
    """The ``opentracy_traces`` table: created/migrated on open, batched inserts, trace queries.

    Thread-safe. On chDB every call is serialised by a lock (one embedded engine); on a server
    calls run concurrently (no HTTP session is used, so clickhouse-connect allows that).
    """

    def __init__(self, url: str, *, ttl_days: int | None = None, max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES,
                 connect_timeout: float = 5.0, send_receive_timeout: float = 30.0,
                 require_connection: bool = True) -> None:
        """Connect, migrate the schema, apply the TTL.

        ``require_connection=False`` (server URLs only): if the server is unreachable now, start
        anyway and connect + migrate on first use; until then inserts raise and the writer spools.
        """
        if ttl_days is not None and ttl_days <= 0:
            raise ValueError("ttl_days must be a positive number of days, or None to keep traces forever")
        if max_text_bytes < 1024:
            raise ValueError("max_text_bytes must be at least 1024")
        self.url = parse_store_url(url)
        self.max_text_bytes = max_text_bytes
        self.schema_version = 0
        self._ttl_days = ttl_days
        self._timeouts = (connect_timeout, send_receive_timeout)
        self._lock: contextlib.AbstractContextManager[Any] = (
            threading.Lock() if self.url.embedded else contextlib.nullcontext()
        )
        self._connect_lock = threading.Lock()
        self._client: Client | None = None
        self._closed = False
        try:
            self._connected()
        except StoreError as exc:
            if require_connection or self.url.embedded:
                raise
            log.warning("trace store %s unreachable (%s); will connect on first use", self.url, exc)

    def _connected(self) -> Client:
        """The client, connecting and migrating first if that has not happened yet."""
        client = self._client
        if client is not None:
            return client
        with self._connect_lock:
            if self._closed:
                raise StoreError(f"trace store {self.url} is closed")
            if self._client is None:
                client = _connect(self.url, *self._timeouts)
                try:
                    self.schema_version = apply_migrations(client)
                    verify_columns(client)
                    apply_ttl(client, self._ttl_days)
                    if self.url.embedded:
                        apply_embedded_settings(client)
                except Exception:
                    client.close()
                    raise
                self._client = client
            return self._client

    # -- writing -------------------------------------------------------------------------------

    def insert(self, records: Sequence[TraceRecord], *, dedup_token: str | None = None) -> int:
        """Insert records in one batch (sanitised: odd fields are fixed and flagged, never dropped)."""
        return self.insert_rows([r.to_row(self.max_text_bytes) for r in records], dedup_token=dedup_token)

    def insert_rows(self, rows: Sequence[Sequence[Any]], *, dedup_token: str | None = None) -> int:
        """Insert encoded rows (``TraceRecord.to_row()``) as one insert; return the row count.

        ``dedup_token`` makes the insert idempotent: ClickHouse drops a later insert with the same
        token (within the table's deduplication window). The writer passes its batch id so a replay
        of a batch that already landed is not stored twice. Without one a fresh token is used.
        """
        if not rows:
            return 0
        settings = {"insert_deduplicate": 1, "insert_deduplication_token": dedup_token or uuid.uuid4().hex}
        client = self._connected()
        with self._lock:
            client.insert(TRACES_TABLE, rows, column_names=COLUMN_NAMES,
                          column_type_names=_COLUMN_TYPE_NAMES, settings=settings)
        return len(rows)

    # -- reading -------------------------------------------------------------------------------

    def query_traces(self, last: int = 20, alias: str | None = None, model: str | None = None,
                     status: str | None = None, since: timedelta | None = None,
                     fields: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """The newest ``last`` traces matching the filters, newest first.

        ``model`` matches the selected or the requested model. ``fields`` limits the columns read
        (listing traces without reading message bodies is much cheaper).
        """
        if not 0 <= last <= MAX_QUERY_ROWS:
            raise ValueError(f"last must be between 0 and {MAX_QUERY_ROWS}")
        if last == 0:
            return []
        condition, params = trace_filter(alias=alias, model=model, status=status, since=since)
        params["last"] = last
        # Two steps: find the time of the N-th newest match reading only start_time, then read full
        # rows from there on. Without lazy materialisation (ClickHouse < 25) a plain ORDER BY ... LIMIT
        # would read every column — message bodies included — of every matching row.
        sql = (f"SELECT {_select_list(fields)} FROM {TRACES_TABLE} WHERE {condition} AND start_time >= "
               f"(SELECT min(start_time) FROM (SELECT start_time FROM {TRACES_TABLE} WHERE {condition} "
               "ORDER BY start_time DESC LIMIT {last:UInt32})) "
               "ORDER BY start_time DESC, trace_id LIMIT {last:UInt32}")
        return list(self._rows(sql, params))

    def get_trace(self, trace_id: str) -> dict[str, Any] | None:
        """One trace by id, or by a unique prefix of it (dashes and case are ignored)."""
        key = trace_id.strip().lower().replace("-", "")
        if not key:
            raise ValueError("empty trace id")
        test = "trace_id = {key:String}" if len(key) >= 32 else "startsWith(trace_id, {key:String})"
        sql = (f"SELECT {_select_list(None)} FROM {TRACES_TABLE} WHERE {test} "
               "ORDER BY start_time DESC LIMIT 1 BY trace_id LIMIT 2")
        found = list(self._rows(sql, {"key": key}))
        if len(found) > 1:
            raise AmbiguousTraceIdError(key, [row["trace_id"] for row in found])
        return found[0] if found else None

    def count(self) -> int:
        client = self._connected()
        with self._lock:
            return int(client.command(f"SELECT count() FROM {TRACES_TABLE}"))

    def ping(self) -> bool:
        """True if the store answers a query now (the writer asks this when an insert fails)."""
        try:
            client = self._connected()
            with self._lock:
                client.command("SELECT 1")
            return True
        except Exception:
            return False

    def close(self) -> None:
        with self._connect_lock:
            self._closed = True
            client, self._client = self._client, None
        if client is not None:
            with self._lock:
                client.close()

    def __enter__(self) -> TraceStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"TraceStore({str(self.url)!r})"

    def _rows(self, sql: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        client = self._connected()
        with self._lock:
            result = client.query(sql, parameters=params)
        names = result.column_names
        for values in result.result_rows:
            row = dict(zip(names, values))
            row.update(decode_columns(row))  # trace columns decoded; aggregates and aliases as returned
            yield row

    def select(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """Rows of a parameterised SELECT over ``opentracy_traces`` (for the analytics queries)."""
        return list(self._rows(sql, params or {}))


def trace_filter(*, alias: str | None = None, model: str | None = None, status: str | None = None,
                 since: timedelta | None = None) -> tuple[str, dict[str, Any]]:
    """A parameterised WHERE condition for the usual trace filters, and its parameters.

    ``model`` matches the selected or the requested model; ``since`` is a window back from now.
    """
    where, params = ["1"], {}
    if alias is not None:
        where.append("alias = {alias:String}")
        params["alias"] = alias
    if model is not None:
        where.append("(selected_model = {model:String} OR requested_model = {model:String})")
        params["model"] = model
    if status is not None:
        where.append("status = {status:String}")
        params["status"] = status
    if since is not None:
        where.append("start_time >= {since:DateTime64(6, 'UTC')}")
        params["since"] = (utc_now() - since).strftime("%Y-%m-%d %H:%M:%S.%f")
    return " AND ".join(where), params


def _select_list(fields: Sequence[str] | None) -> str:
    names = COLUMN_NAMES if fields is None else tuple(fields)
    unknown = [n for n in names if n not in COLUMN_NAMES]
    if unknown:
        raise ValueError(f"unknown trace fields {unknown}; known: {', '.join(COLUMN_NAMES)}")
    return ", ".join(f"`{n}`" for n in names)


def _connect(url: StoreURL, connect_timeout: float, send_receive_timeout: float) -> Client:
    client = _connect_chdb(url.path) if url.embedded else _connect_server(url, connect_timeout, send_receive_timeout)
    if url.database != "default":
        try:
            client.command(f"CREATE DATABASE IF NOT EXISTS `{url.database}`")
            client.database = url.database
        except Exception:
            client.close()
            raise
    return client


def _connect_server(url: StoreURL, connect_timeout: float, send_receive_timeout: float) -> Client:
    # clickhouse-connect logs "Unexpected Http Driver Exception" on every failed request; the writer
    # already reports store outages once per retry window with counts, so keep its logger quiet.
    logging.getLogger("clickhouse_connect.driver.httpclient").setLevel(logging.CRITICAL)
    import clickhouse_connect

    try:
        client = clickhouse_connect.get_client(
            interface=url.scheme, host=url.host, port=url.port, username=url.username, password=url.password,
            connect_timeout=connect_timeout, send_receive_timeout=send_receive_timeout,
            autogenerate_session_id=False, tz_mode="aware", settings=dict(url.settings),
        )
    except Exception as exc:
        raise StoreError(f"cannot reach ClickHouse at {url}: {exc}") from exc
    return client


def _connect_chdb(path: str) -> Client:
    Path(path).mkdir(parents=True, exist_ok=True)
    holder = _foreign_holder(path)
    if holder is not None:  # checked first: chDB's own failure is vague and noisy on stderr
        raise StoreLockedError(path, holder or None)
    import clickhouse_connect

    try:
        return clickhouse_connect.get_client(interface="chdb", path=path, tz_mode="aware", chdb_options=CHDB_OPTIONS)
    except Exception as exc:
        message = str(exc)
        if "already initialized with path" in message:
            raise StoreError(f"this process already has a chDB store open at another path; chDB allows one "
                             f"path per process, so {path} cannot be opened too ({message})") from exc
        holder = _foreign_holder(path)
        if holder is not None:
            raise StoreLockedError(path, holder or None) from exc
        raise StoreError(f"cannot open the chDB store at {path}: {message}") from exc


def wait_for_release(path: str, timeout: float) -> bool:
    """Whether the process holding the chDB directory ``path`` let go of it within ``timeout`` seconds.

    After a ``kill -9`` of ``opentracy serve`` its trace process holds the store while it writes out its
    queue; a restart or a CLI read in that moment waits instead of failing.
    """
    deadline = time.monotonic() + timeout
    while _foreign_holder(path) is not None:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _foreign_holder(path: str) -> int | None:
    """PID of another process holding the chDB directory (0 if unknown), None if nobody else does.

    ClickHouse keeps ``<dir>/status`` flock'ed while it runs and writes its PID there. A probe
    lock fails also when *this* process holds it; the PID tells the two cases apart.
    """
    status = Path(path) / "status"
    try:
        with open(status, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                match = re.search(rb"PID:\s*(\d+)", handle.read(256))
                pid = int(match.group(1)) if match else 0
                return None if pid == os.getpid() else pid
            fcntl.flock(handle, fcntl.LOCK_UN)
            return None
    except FileNotFoundError:
        return None
