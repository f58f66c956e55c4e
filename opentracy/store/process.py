"""The embedded store (chDB) of a running server, in a child process of its own.

Why not in the server's process: chDB loaded there made the server's own code slower on every
request, whatever tracing did. Measured with ``bench/trace_ab.py`` (two untraced engines, requests
alternating): importing chDB alone cost the event loop ~18 us per JSON request, a chDB session
open in it ~30 us (~2.5 % of the request), with its ~12 threads and ~300 MB of RSS in the process.
A traced server whose store lived in a child measured ~30 us less CPU per JSON request in total,
the child's CPU included (bench/README.md, "Session 8").

The child is ``python -m opentracy.store.process``: it imports the store and nothing of the server
(a :mod:`multiprocessing` spawn would re-import the server's main module, litellm included). It
serves one :class:`TraceStore` through :mod:`multiprocessing.managers` on a Unix socket, with an
authentication key the parent passes on stdin. The server calls it once per insert of a batch of
rows, per read and per ping. If the child dies (the OOM killer, a crash), the next call starts a new
one; meanwhile the writer spools, and replays once the store answers.

The child exits when its parent does, even after ``kill -9``: its stdin, the parent's end of a pipe,
closes (``PR_SET_PDEATHSIG`` would fire when the *thread* that started it ends). Left running, it
would keep the data directory locked against the next server. It ignores SIGINT and SIGTERM: a
signal to the whole process group reaches the server too, which writes out its queued traces
through the child before closing it.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import select
import signal
import subprocess
import sys
import threading
from multiprocessing.managers import BaseManager
from typing import Any, Sequence

from opentracy.store.clickhouse import StoreError, StoreURL, TraceStore, parse_store_url
from opentracy.tracing.record import DEFAULT_MAX_TEXT_BYTES

log = logging.getLogger(__name__)

START_TIMEOUT = 60.0  # seconds for the child to start listening (it imports chDB first)
_CALLS = frozenset({"insert_rows", "query_traces", "get_trace", "count", "ping", "select", "close"})


class _Served:
    """What the child serves: its store, once ``open()`` made it. A method's exception reaches the
    server as itself (StoreLockedError, ...); a served object's constructor's would arrive as a
    generic RemoteError, hence ``open()`` rather than serving TraceStore directly."""

    def __init__(self) -> None:
        self._store: TraceStore | None = None

    def open(self, url: str, ttl_days: int | None) -> None:
        self._store = TraceStore(url, ttl_days=ttl_days)

    def call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._store is None or name not in _CALLS:
            raise StoreError(f"trace store: {name}() is not available")
        return getattr(self._store, name)(*args, **kwargs)


class _StoreManager(BaseManager):
    """Serves one :class:`_Served` store from the child process."""


_StoreManager.register("Served", _Served, exposed=("open", "call"))


class StoreProcess:
    """A :class:`TraceStore` in a child process, with the methods the server uses.

    Thread-safe like the store itself: each calling thread gets its own connection to the child.
    """

    def __init__(self, url: str, *, ttl_days: int | None = None) -> None:
        """Start the child and open (migrate) the store in it; raises what ``TraceStore()`` raises."""
        self.url: StoreURL = parse_store_url(url)
        self.max_text_bytes = DEFAULT_MAX_TEXT_BYTES
        self._options = (url, ttl_days)
        self._closed = False
        self._restart_lock = threading.Lock()
        self._start()

    def _start(self) -> None:
        authkey = secrets.token_bytes(32)
        self._child = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                       stdout=subprocess.PIPE, text=True)
        try:
            address = self._handshake(authkey)
            manager = _StoreManager(address=address, authkey=authkey)
            manager.connect()
            served: Any = manager.Served()  # type: ignore[attr-defined]
            served.open(*self._options)
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

    def insert_rows(self, rows: Sequence[Sequence[Any]], *, dedup_token: str | None = None) -> int:
        return self._call("insert_rows", rows, dedup_token=dedup_token)

    def query_traces(self, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
        return self._call("query_traces", *args, **kwargs)

    def get_trace(self, trace_id: str) -> dict[str, Any] | None:
        return self._call("get_trace", trace_id)

    def count(self) -> int:
        return self._call("count")

    def select(self, sql: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._call("select", sql, params)

    def ping(self) -> bool:
        try:
            return bool(self._call("ping"))
        except StoreError:
            return False

    def close(self) -> None:
        """Close the store in the child, then stop the child. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._served.call("close", (), {})
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
        return f"StoreProcess({str(self.url)!r})"

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        if self._closed:
            raise StoreError(f"trace store {self.url} is closed")
        if self._child.poll() is not None:
            self._restart()
        try:
            return self._served.call(name, args, kwargs)
        except (EOFError, OSError) as exc:  # it died during the call: the writer spools and retries
            raise StoreError(f"the trace store's process is gone ({type(exc).__name__}: {exc})") from exc

    def _restart(self) -> None:
        """A new child after the last one died (OOM killer, a crash): the next call, typically the
        writer's retry, finds the store again and the spool replays into it."""
        with self._restart_lock:
            if self._child.poll() is None or self._closed:
                return  # another thread restarted it, or close() is under way
            log.warning("trace store process exited with %s; starting a new one", self._child.returncode)
            self._stop()  # closes the dead child's stdin pipe
            self._start()


def _serve() -> None:
    """The child: serve the store until the parent closes it, or dies."""
    authkey = bytes.fromhex(sys.stdin.readline().strip())
    if not authkey:  # the parent died before the handshake
        return
    threading.Thread(target=_exit_with_parent, name="exit-with-parent", daemon=True).start()
    # Ctrl-C, and SIGTERM sent to the whole process group, reach the server too: it writes out its
    # queued traces through this process before closing it, so this process must still be here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    server = _StoreManager(address=None, authkey=authkey).get_server()  # a fresh Unix socket
    print(json.dumps({"address": server.address}), flush=True)
    os.dup2(2, 1)  # anything printed later goes to the server's stderr, not the closed handshake pipe
    server.serve_forever()


def _exit_with_parent() -> None:
    """Exit once stdin ends: the parent keeps its end open while it lives, and the kernel closes it
    when the parent process dies, ``kill -9`` included (whichever of its threads started this one)."""
    while os.read(0, 4096):
        pass
    os._exit(0)


if __name__ == "__main__":
    _serve()
