"""The trace pipeline of a running server — records, writer, store — in a child process of its own.

The server's event loop only notes what it saw of each request — a tuple, with the JSON bodies as the
bytes that crossed the wire (:mod:`opentracy.tracing.events`) — and a thread of the server ships those
events here every ``SHIP_INTERVAL`` (:mod:`opentracy.tracing.gateway`). This process builds the
records (:func:`opentracy.tracing.events.build`, then the trace policy: content, redaction; or, for
most requests under the default policy, :func:`~opentracy.tracing.events.row` straight to the row), and its
:class:`~opentracy.tracing.writer.TraceWriter` encodes them, removes secrets, journals, inserts and
spools, with the guarantees described there. The server's reads (admin routes) come here too.

Why a process: the same Python is 3-6x slower run between the gateway's requests than in a batch of
its own, and chDB loaded in the server made the server's own code slower on every request, whatever
tracing did (bench/README.md, "Session 8" and "Session 9"). Here it runs in batches, on the other core,
with no GIL shared with the event loop.

The child is ``python -m opentracy.tracing.process``: it imports the store and the writer, nothing of
the gateway (a :mod:`multiprocessing` spawn would re-import the server's main module, litellm
included). It serves one :class:`_Served` through :mod:`multiprocessing.managers` on a Unix socket,
with an authentication key the parent passes on stdin. If the child dies (the OOM killer, a crash),
the next call starts a new one, whose writer spools what the last one journaled; the server keeps
events until the child has taken them, so what is lost is what the dead child had not yet journaled
(at most the writer's encode interval, 0.5 s).

The child exits when its parent does, even after ``kill -9``: its stdin, the parent's end of a pipe,
closes (``PR_SET_PDEATHSIG`` would fire when the *thread* that started it ends). Left running, it
would keep the data directory locked against the next server. It ignores SIGINT and SIGTERM: a
signal to the whole process group reaches the server too, which ships its last events and closes
the child, and the writer's queue must still be written then.
"""

from __future__ import annotations

import functools
import gc
import json
import logging
import os
import secrets
import select
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from multiprocessing.managers import BaseManager
from pathlib import Path
from typing import Any, Sequence

from opentracy.store.clickhouse import StoreError, StoreURL, TraceStore, parse_store_url
from opentracy.tracing import events
from opentracy.tracing.policy import TracePolicy
from opentracy.tracing.record import TraceRecord
from opentracy.tracing.writer import TraceWriter

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0  # seconds for the child to start listening (it imports chDB first)
INGEST_SYNC_TIMEOUT = 2.0  # seconds ingest() waits for the writer to journal what it took
_READS = frozenset({"query_traces", "get_trace", "count", "ping", "select"})


@dataclass(frozen=True)
class PolicyOptions:
    """What :class:`TracePolicy` is made of; sent to the child at start and on every reload."""

    store_content: bool = True
    redact: bool = False
    secrets: tuple[str, ...] = ()

    def policy(self) -> TracePolicy:
        return TracePolicy(store_content=self.store_content, redact=self.redact, secrets=self.secrets)


@dataclass(frozen=True)
class PipelineOptions:
    """How the child opens the store and its writer."""

    url: str
    spool_dir: str
    ttl_days: int | None = None
    spool_max_bytes: int = 1 << 30
    flush_interval: float = 1.0


class _Served:
    """What the child serves: the store and the writer, once ``open()`` made them. A method's exception
    reaches the server as itself (StoreLockedError, ...); a served object's constructor's would arrive
    as a generic RemoteError, hence ``open()``."""

    def __init__(self) -> None:
        self._store: TraceStore | None = None
        self._writer: TraceWriter | None = None
        self._policy = TracePolicy()

    def open(self, options: PipelineOptions, policy: PolicyOptions) -> None:
        self._policy = policy.policy()
        embedded = parse_store_url(options.url).embedded
        self._store = TraceStore(options.url, ttl_days=options.ttl_days, require_connection=embedded)
        self._writer = TraceWriter(self._store, Path(options.spool_dir), spool_max_bytes=options.spool_max_bytes,
                                   flush_interval=options.flush_interval, scrub=self._scrub_text)
        # What is alive now (chDB, clickhouse-connect, numpy, pandas) lives as long as the process:
        # out of the collector's sight, a full collection here took 22 ms instead of ~37 (trace_ab,
        # JSON c=1, 8,000 records: 2.7 us a record instead of 9).
        gc.freeze()

    def set_policy(self, policy: PolicyOptions) -> None:
        self._policy = policy.policy()  # records built from now on; the writer scrubs with it too

    def ingest(self, batch: Sequence[events.Event]) -> int:
        """Queue the events' records; the writer thread builds them (a builder that raises is counted)."""
        (store, writer), policy = self._opened(), self._policy
        writer.submit_all([functools.partial(_record, event, policy, store.max_text_bytes) for event in batch])
        # Taken once queued; journaled (kept through a crash of this process) before the server lets
        # them go, unless the writer is stuck (a hung store): a resend would store them twice.
        writer.sync(INGEST_SYNC_TIMEOUT)
        return len(batch)

    def flush(self, timeout: float) -> bool:
        return self._opened()[1].flush(timeout)

    def stats(self) -> dict[str, Any]:
        return self._opened()[1].stats()

    def prometheus(self) -> str:
        return self._opened()[1].prometheus()

    def read(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if name not in _READS:
            raise StoreError(f"trace store: {name}() is not available")
        return getattr(self._opened()[0], name)(*args, **kwargs)

    def close(self) -> None:
        """Write out the writer's queue, then close the store."""
        store, writer = self._opened()
        writer.close()
        store.close()

    def _opened(self) -> tuple[TraceStore, TraceWriter]:
        if self._store is None or self._writer is None:
            raise StoreError("the trace store is not open")
        return self._store, self._writer

    def _scrub_text(self, text: str) -> str:
        return self._policy.scrub_text(text)


def _record(event: events.Event, policy: TracePolicy, limit: int) -> TraceRecord | list[Any]:
    """The event's record with the policy applied, or for the default policy its row where
    :func:`events.row` can make it (most requests)."""
    if policy.stores_as_built:
        row = events.row(event, limit)
        if row is not None:
            return row
    record = events.build(event)
    return record if record.content_stored is False else policy.apply(record)


class _PipelineManager(BaseManager):
    """Serves one :class:`_Served` pipeline from the child process."""


_EXPOSED = ("open", "set_policy", "ingest", "flush", "stats", "prometheus", "read", "close")
_PipelineManager.register("Served", exposed=_EXPOSED)  # the server's side: a proxy type, no object


class TraceProcess:
    """The child process, with the calls the server makes of it.

    Thread-safe: each calling thread gets its own connection to the child.
    """

    def __init__(self, options: PipelineOptions, policy: PolicyOptions) -> None:
        """Start the child and open (migrate) the store in it; raises what ``TraceStore()`` raises."""
        self.url: StoreURL = parse_store_url(options.url)
        self._options = options
        self._policy = policy
        self._closed = False
        self._restart_lock = threading.Lock()
        self._start()

    def _start(self) -> None:
        authkey = secrets.token_bytes(32)
        self._child = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True)
        try:
            address = self._handshake(authkey)
            manager = _PipelineManager(address=address, authkey=authkey)
            manager.connect()
            served: Any = manager.Served()  # type: ignore[attr-defined]
            served.open(self._options, self._policy)
        except BaseException:
            self._stop()
            raise
        self._served = served

    def _handshake(self, authkey: bytes) -> str:
        assert self._child.stdin is not None and self._child.stdout is not None
        self._child.stdin.write(authkey.hex() + "\n")
        self._child.stdin.flush()  # left open: the child exits when it closes (this process is gone)
        if not select.select([self._child.stdout], [], [], START_TIMEOUT)[0]:
            raise StoreError(f"the trace store's process did not start within {START_TIMEOUT:g} s")
        line = self._child.stdout.readline()  # the child writes its address once it listens
        self._child.stdout.close()
        if not line:
            raise StoreError(f"the trace store's process exited at start (code {self._child.wait(5)})")
        return str(json.loads(line)["address"])

    def ingest(self, batch: Sequence[events.Event]) -> int:
        """Hand events to the child; raises StoreError if it is gone (the caller keeps them and retries)."""
        return self._call("ingest", batch)

    def set_policy(self, policy: PolicyOptions) -> None:
        self._policy = policy  # a restarted child gets it too
        self._call("set_policy", policy)

    def flush(self, timeout: float) -> bool:
        return bool(self._call("flush", timeout))

    def stats(self) -> dict[str, Any]:
        return self._call("stats")

    def prometheus(self) -> str:
        return self._call("prometheus")

    def query_traces(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return self._call("read", "query_traces", args, kwargs)

    def get_trace(self, trace_id: str) -> dict[str, Any] | None:
        return self._call("read", "get_trace", (trace_id,), {})

    def count(self) -> int:
        return self._call("read", "count", (), {})

    def select(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._call("read", "select", (sql, params), {})

    def ping(self) -> bool:
        try:
            return bool(self._call("read", "ping", (), {}))
        except StoreError:
            return False

    def close(self) -> None:
        """Write out the child's queue, close its store, then stop it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._served.close()
        except Exception:  # the child is gone already: nothing left to close
            pass
        self._stop()

    def _stop(self) -> None:
        if self._child.poll() is None:
            self._child.kill()  # the store is closed (or unreachable); the child ignores SIGTERM
            self._child.wait()
        if self._child.stdin is not None:
            self._child.stdin.close()

    def __repr__(self) -> str:
        return f"TraceProcess({str(self.url)!r})"

    def _call(self, name: str, *args: Any) -> Any:
        if self._closed:
            raise StoreError(f"trace store {self.url} is closed")
        if self._child.poll() is not None:
            self._restart()
        try:
            return getattr(self._served, name)(*args)
        except (EOFError, OSError) as exc:  # it died during the call: the caller keeps what it sent
            raise StoreError(f"the trace store's process is gone ({type(exc).__name__}: {exc})") from exc

    def _restart(self) -> None:
        """A new child after the last one died (OOM killer, a crash): its writer spools what the dead
        one journaled, and replays the spool into the store."""
        with self._restart_lock:
            if self._child.poll() is None or self._closed:
                return  # another thread restarted it, or close() is under way
            log.warning("trace process exited with %s; starting a new one", self._child.returncode)
            self._stop()  # closes the dead child's stdin pipe
            self._start()


def _serve() -> None:
    """The child: serve the pipeline until the parent closes it, or dies."""
    authkey = bytes.fromhex(sys.stdin.readline().strip())
    if not authkey:  # the parent died before the handshake
        return
    # Ctrl-C, and SIGTERM sent to the whole process group, reach the server too: it writes out its
    # queued traces through this process before closing it, so this process must still be here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    pipeline = _Served()  # one per child: every connection of the server reaches the same writer
    _PipelineManager.register("Served", lambda: pipeline, exposed=_EXPOSED)
    threading.Thread(target=_exit_with_parent, args=(pipeline,), name="exit-with-parent", daemon=True).start()
    server = _PipelineManager(address=None, authkey=authkey).get_server()  # a fresh Unix socket
    print(json.dumps({"address": server.address}), flush=True)
    os.dup2(2, 1)  # anything printed later goes to the server's stderr, not the closed handshake pipe
    server.serve_forever()


def _exit_with_parent(pipeline: _Served) -> None:
    """Exit once stdin ends: the parent keeps its end open while it lives, and the kernel closes it
    when the parent process dies, ``kill -9`` included (whichever of its threads started this one).
    The writer's queue is written out first: a server killed outright loses only the events it had
    not shipped yet."""
    while os.read(0, 4096):
        pass
    try:
        pipeline.close()
    except Exception:  # not open yet, or closed by the server already
        pass
    os._exit(0)


if __name__ == "__main__":
    _serve()
