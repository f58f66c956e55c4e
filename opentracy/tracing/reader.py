"""Reading traces for the CLI: directly from the store, or through the running server.

chDB lets one process hold a data directory. While ``opentracy serve`` runs on the embedded store,
the CLI asks the server (found through ``<data_dir>/engine.json``); otherwise it opens the store, after
delivering what a stopped engine left on disk (the journal of a crash, the spool of an outage), as the
next ``opentracy serve`` would: a read right after a crash sees the last requests.
"""

from __future__ import annotations

import json
import os
import re
import sys
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Iterator, Mapping, Protocol

import httpx

from opentracy.config import EngineOptions
from opentracy.store import StoreLockedError, TraceStore, analytics, parse_store_url, wait_for_release
from opentracy.store.spool import SpoolLockedError
from opentracy.tracing.writer import TraceWriter

SINCE_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
ENGINE_FILE = "engine.json"
STORE_RELEASE_WAIT = 15.0
"""Seconds to wait for a process that holds the embedded store while no server answers for it (a
killed server's trace process writes out its queue first: ~60 ms for a small one here, longer for a
large one on a busy machine; its writer gives up after 10 s)."""


class TraceSource(Protocol):
    def query(self, *, last: int, alias: str | None, model: str | None, status: str | None,
              since: str | None) -> list[dict[str, Any]]: ...

    def get(self, trace_id: str) -> dict[str, Any] | None: ...

    def stats(self, *, by: str, since: str | None) -> list[dict[str, Any]]: ...

    def compare(self, *, alias: str, since: str | None) -> list[dict[str, Any]]: ...

    def export_rows(self, *, alias: str | None, model: str | None, status: str | None,
                    since: str | None) -> Iterator[dict[str, Any]]: ...

    def close(self) -> None: ...


def parse_since(text: str) -> timedelta:
    """``90s``, ``15m``, ``1h``, ``7d``, ``2w`` → timedelta."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text or "")
    if not match:
        raise ValueError(f"since must look like 30m, 1h, 7d (got {text!r})")
    return timedelta(**{SINCE_UNITS[match.group(2)]: float(match.group(1))})


def jsonable(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}


class StoreSource:
    def __init__(self, store: TraceStore) -> None:
        self._store = store

    def query(self, *, last: int, alias: str | None, model: str | None, status: str | None,
              since: str | None) -> list[dict[str, Any]]:
        window = parse_since(since) if since else None
        return [jsonable(r) for r in self._store.query_traces(last, alias, model, status, window)]

    def get(self, trace_id: str) -> dict[str, Any] | None:
        row = self._store.get_trace(trace_id)
        return jsonable(row) if row else None

    def stats(self, *, by: str, since: str | None) -> list[dict[str, Any]]:
        return [jsonable(r) for r in analytics.stats(self._store, by, parse_since(since) if since else None)]

    def compare(self, *, alias: str, since: str | None) -> list[dict[str, Any]]:
        return analytics.compare(self._store, alias, parse_since(since) if since else None)

    def export_rows(self, *, alias: str | None, model: str | None, status: str | None,
                    since: str | None) -> Iterator[dict[str, Any]]:
        window = parse_since(since) if since else None
        return (jsonable(r) for r in analytics.iter_traces(self._store, alias=alias, model=model, status=status,
                                                            since=window))

    def close(self) -> None:
        self._store.close()


class ServerSource:
    def __init__(self, url: str, api_key: str | None) -> None:
        headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=30)

    def query(self, *, last: int, alias: str | None, model: str | None, status: str | None,
              since: str | None) -> list[dict[str, Any]]:
        params = {k: v for k, v in {"last": last, "alias": alias, "model": model, "status": status,
                                    "since": since}.items() if v is not None}
        return self._call("GET", "/admin/traces", params)["data"]

    def get(self, trace_id: str) -> dict[str, Any] | None:
        response = self._client.get(f"/admin/traces/{trace_id}")
        if response.status_code == 404:
            return None
        return self._checked(response)

    def stats(self, *, by: str, since: str | None) -> list[dict[str, Any]]:
        return self._call("GET", "/admin/stats", _present(by=by, since=since))["data"]

    def compare(self, *, alias: str, since: str | None) -> list[dict[str, Any]]:
        return self._call("GET", "/admin/compare", _present(alias=alias, since=since))["data"]

    def export_rows(self, *, alias: str | None, model: str | None, status: str | None,
                    since: str | None) -> Iterator[dict[str, Any]]:
        params = _present(alias=alias, model=model, status=status, since=since)
        with self._client.stream("GET", "/admin/export", params=params, timeout=None) as response:
            if response.status_code >= 400:
                response.read()
                self._checked(response)
            for line in response.iter_lines():
                if line.strip():
                    yield json.loads(line)

    def reload(self) -> dict[str, Any]:
        return self._call("POST", "/admin/reload", {})

    def close(self) -> None:
        self._client.close()

    def _call(self, method: str, path: str, params: Mapping[str, Any]) -> Any:
        return self._checked(self._client.request(method, path, params=params))

    @staticmethod
    def _checked(response: httpx.Response) -> Any:
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            raise RuntimeError(f"server answered {response.status_code}: {message}")
        return response.json()


def _present(**params: Any) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


def running_server(data_dir: Path) -> str | None:
    """The URL of an ``opentracy serve`` holding ``data_dir``, if one is alive and answers.

    The pid check alone is not enough: a server killed by ``kill -9`` leaves ``engine.json`` behind,
    and its pid can still exist (a zombie nobody reaped yet, or a reused pid).
    """
    try:
        info = json.loads((data_dir / ENGINE_FILE).read_text())
        os.kill(int(info["pid"]), 0)
        url = str(info["url"])
        httpx.get(f"{url}/health", timeout=2.0)
        return url
    except (OSError, ValueError, KeyError, TypeError, httpx.HTTPError):
        return None


def open_source(options: EngineOptions, server: str | None = None, api_key: str | None = None) -> TraceSource:
    if server:
        return ServerSource(server, api_key)
    url = options.clickhouse_url
    if parse_store_url(url).embedded:
        live = running_server(options.data_dir)
        if live:
            return ServerSource(live, api_key)
    try:
        store = TraceStore(url, ttl_days=options.trace_ttl_days)
    except StoreLockedError as exc:  # no server answers for it: likely a killed one's trace process, writing out
        if not wait_for_store(exc):
            raise RuntimeError(f"{exc}. If a server holds it, pass --server http://HOST:PORT") from None
        store = TraceStore(url, ttl_days=options.trace_ttl_days)
    _deliver_leftovers(store, options)
    return StoreSource(store)


def wait_for_store(exc: StoreLockedError) -> bool:
    """Say so on stderr and wait (up to :data:`STORE_RELEASE_WAIT`) for the holder of the embedded store
    to let go of it; whether it did. For when no server answers for the store."""
    print(f"opentracy: the trace store is held by process {exc.pid or '?'}; waiting up to "
          f"{STORE_RELEASE_WAIT:.0f} s for it to let go", file=sys.stderr, flush=True)
    return wait_for_release(exc.path, STORE_RELEASE_WAIT)


def _deliver_leftovers(store: TraceStore, options: EngineOptions) -> None:
    """Into the store: the batch a crashed engine left in its journal and anything spooled."""
    spool_dir = Path(options.data_dir) / "spool"
    if not spool_dir.is_dir():
        return
    try:
        writer = TraceWriter(store, spool_dir, spool_max_bytes=options.spool_max_bytes)
    except SpoolLockedError:
        return  # an engine holds the spool (on a ClickHouse server) and delivers it itself
    writer.close()
