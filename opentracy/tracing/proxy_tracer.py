"""``ProxyTracer``: the trace path of a litellm proxy process, opened lazily and closed on the way out.

A litellm proxy imports its callbacks while its app starts (FastAPI lifespan, after fork), so nothing
heavy happens at import: the settings are read (from the environment, as for the gateway:
``OPENTRACY_CLICKHOUSE_URL`` / ``OPENTRACY_DATA_DIR`` / ``OPENTRACY_TRACE_CONTENT`` /
``OPENTRACY_TRACE_REDACT`` / ``OPENTRACY_TRACE_TTL_DAYS`` / ``OPENTRACY_TRACING``) at the first record,
and the store is opened on a background thread (opening chDB takes ~0.5 s; the event loop must not
wait for it). Records of that time are held in memory until the writer runs.

Getting out without losing what was accepted:

- On SIGTERM uvicorn shuts down gracefully and then re-raises SIGTERM with the default handler
  restored (``uvicorn/server.py`` ``capture_signals``), which kills the process: ``atexit`` never
  runs there. So at the first record we chain a SIGTERM handler in front of the server's: it writes
  out what is queued and, until the process ends, each record is written before ``submit()``
  returns (the requests still finishing during the graceful shutdown included). ``atexit`` still
  closes everything on a normal exit (and first drains litellm's own logging queue, whose atexit
  handler would otherwise run after ours).
- Several proxy worker processes need a ClickHouse server (``OPENTRACY_CLICKHOUSE_URL=http://...``):
  the embedded store allows one process per data directory; the other workers log an error once and
  drop their traces (counted in ``stats()``).

Which records to write, one per request, is :class:`opentracy.tracing.proxy.ProxyLogger`'s business.
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import logging
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from opentracy.tracing.policy import TracePolicy
from opentracy.tracing.record import TraceRecord

log = logging.getLogger("opentracy.tracing.proxy")  # proxy.py logs here too: one logger to configure in a proxy

MAX_BUFFERED = 10_000  # records held while the store opens
SHUTDOWN_FLUSH_TIMEOUT = 10.0


class ProxyTracer:
    """The proxy process's trace path: settings, policy, store and writer, all opened lazily.

    ``submit()`` never blocks on the store (except in the shutdown mode entered on SIGTERM).
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        self._environ = environ  # None: os.environ, read at the first record
        self._lock = threading.Lock()
        self._state = "new"  # new -> opening -> open | off | failed; closed
        self._buffer: collections.deque[TraceRecord] = collections.deque()
        self._configured = threading.Event()  # settings read (or tracing found off)
        self._opened = threading.Event()  # the store opened (or failed to)
        self._policy: TracePolicy | None = None
        self._store: Any = None
        self._writer: Any = None
        self._durable = False  # after SIGTERM: each record is written before submit() returns
        self._dropped = 0
        self._pid = os.getpid()
        self._previous_sigterm: Any = None
        self.before_close: Any = None  # called first by close(): the logger writes what it still holds

    # -- request path ---------------------------------------------------------------------------

    def submit(self, record: TraceRecord, extra_secrets: tuple[str, ...] = ()) -> None:
        if not self._configured.is_set():
            self._start()
            self._configured.wait(5.0)  # another thread may be reading the settings right now
        policy = self._policy
        if policy is None:  # tracing off, or the settings could not be read
            return
        record = policy.apply(record)
        if extra_secrets:  # keys seen on this call only (a literal api_key in the proxy config, ...)
            record = TracePolicy(secrets=extra_secrets).scrub_record(record)
        with self._lock:
            writer = self._writer
            if writer is None:
                if self._state == "opening" and len(self._buffer) < MAX_BUFFERED:
                    self._buffer.append(record)
                else:
                    self._drop(1)
                return
        writer.submit(record)
        if self._durable:
            writer.flush(SHUTDOWN_FLUSH_TIMEOUT)

    # -- lifecycle ------------------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._state != "new":
                return
            self._state = "opening"
        try:
            from opentracy.config import load_settings

            settings = load_settings(None, self._environ)
            options = settings.engine
            if options.tracing:
                self._policy = TracePolicy(store_content=options.trace_content, redact=options.trace_redact,
                                           secrets=settings.secrets)
        except Exception as exc:  # a bad OPENTRACY_* value: say so once, never break the proxy
            log.error("opentracy: tracing is off in this proxy: %s", exc)
            self._set_state("off")
            return
        finally:
            self._configured.set()
        if self._policy is None:  # OPENTRACY_TRACING=false
            self._set_state("off")
            return
        self._install_sigterm_flush()
        threading.Thread(target=self._open, args=(options,), name="opentracy-store-open", daemon=True).start()

    def _open(self, options: Any) -> None:
        from opentracy.store import StoreError, TraceStore
        from opentracy.tracing.writer import TraceWriter

        try:
            store = TraceStore(options.clickhouse_url, ttl_days=options.trace_ttl_days, require_connection=False)
            try:
                writer = TraceWriter(store, Path(options.data_dir) / "spool", spool_max_bytes=options.spool_max_bytes,
                                     flush_interval=options.trace_flush_interval, scrub=self._policy.scrub_text if self._policy else None)
            except BaseException:
                store.close()
                raise
        except (StoreError, OSError, ValueError) as exc:
            log.error("opentracy: cannot open the trace store (%s); traces of this proxy process are dropped. "
                      "Several proxy workers need a ClickHouse server: OPENTRACY_CLICKHOUSE_URL=http://...", exc)
            self._set_state("failed")
            return
        except Exception:
            log.exception("opentracy: cannot open the trace store; traces of this proxy process are dropped")
            self._set_state("failed")
            return
        # Registered now, after chDB / clickhouse-connect were imported: atexit runs last-in first-out,
        # so this flush runs before their own exit handlers close anything.
        atexit.register(self.close)
        with self._lock:
            self._store, self._writer = store, writer
            buffered, self._buffer = list(self._buffer), collections.deque()
            self._state = "open"
        for record in buffered:
            writer.submit(record)
        self._opened.set()
        log.info("opentracy: tracing this proxy into %s", store.url)

    def _set_state(self, state: str) -> None:
        with self._lock:
            self._state = state
            self._drop(len(self._buffer))
            self._buffer.clear()
        self._opened.set()

    def _drop(self, count: int) -> None:
        if count:
            self._dropped += count
            if self._dropped == count or self._dropped % 1000 < count:
                log.warning("opentracy: %d trace record(s) dropped so far (store not available)", self._dropped)

    def flush(self, timeout: float = SHUTDOWN_FLUSH_TIMEOUT) -> bool:
        """Wait until every record submitted so far is in the store (or spooled)."""
        deadline = time.monotonic() + timeout
        if self._state == "opening":
            self._opened.wait(timeout)
        writer = self._writer
        return writer.flush(max(0.0, deadline - time.monotonic())) if writer is not None else True

    def close(self, timeout: float = SHUTDOWN_FLUSH_TIMEOUT) -> None:
        """Write out the queue, then close the writer and the store. Idempotent."""
        if os.getpid() != self._pid:
            return  # a forked child inherited this object, not the writer thread
        _drain_litellm_logging_queue()
        if self.before_close is not None:
            self.before_close()
        if self._state == "opening":
            self._opened.wait(timeout)
        with self._lock:
            if self._state != "open":
                if self._state in ("new", "opening"):
                    self._state = "closed"
                return
            self._state = "closed"
            writer, store, self._writer = self._writer, self._store, None
        writer.close(timeout)
        store.close()

    def stats(self) -> dict[str, Any]:
        writer = self._writer
        stats = dict(writer.stats()) if writer is not None else {}
        stats.update(state=self._state, buffered=len(self._buffer), dropped_unopened=self._dropped)
        return stats

    # -- SIGTERM --------------------------------------------------------------------------------

    def _install_sigterm_flush(self) -> None:
        """Chain a SIGTERM handler in front of the server's (uvicorn's, gunicorn's, or the default)."""
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread; atexit still applies
        try:
            previous = signal.getsignal(signal.SIGTERM)
            if previous is signal.SIG_IGN or previous is None:
                return
            self._previous_sigterm = previous
            signal.signal(signal.SIGTERM, self._on_sigterm)
        except (ValueError, OSError, RuntimeError) as exc:
            log.debug("opentracy: no SIGTERM flush (%s)", exc)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self._durable = True
        self.flush()
        previous = self._previous_sigterm
        if callable(previous):
            previous(signum, frame)  # e.g. uvicorn: graceful shutdown, then SIGTERM with the default handler
        else:  # SIG_DFL: close now, then die as the default would have
            self.close()
            signal.signal(signum, signal.SIG_DFL)
            signal.raise_signal(signum)


def _drain_litellm_logging_queue() -> None:
    """Run litellm's queued logging callbacks now: its own atexit flush would come after ours."""
    try:
        asyncio.get_running_loop()
        return  # called from async code (not at exit): litellm's worker runs its queue itself
    except RuntimeError:
        pass
    try:
        from litellm.litellm_core_utils.logging_worker import GLOBAL_LOGGING_WORKER

        flush = getattr(GLOBAL_LOGGING_WORKER, "_flush_on_exit", None)
        if callable(flush):
            flush()
    except Exception:  # an older/newer litellm without it: nothing queued there to lose
        log.debug("opentracy: litellm logging queue not drained", exc_info=True)
