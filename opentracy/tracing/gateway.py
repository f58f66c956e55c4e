"""Tracing for the gateway: one event per request the gateway saw, shipped to the trace process.

The gateway traces from what it answered: the JSON it returned (so the trace's cost, usage and
latency are the client's ``_cost``, ``usage`` and ``_latency_ms``), the stream it relayed (with partial
output when the client left or the upstream broke), or the error it returned (rejected before any
provider call, or every attempt failed). It does not use litellm's callbacks: not every call goes
through litellm (:mod:`opentracy.routing.direct`), and litellm cannot know about fallbacks, rejections
or abandoned streams. The litellm callback is for litellm proxies (:mod:`opentracy.tracing.proxy`).

Each hook makes an event of what the trace needs (:mod:`opentracy.tracing.events`: a tuple, the JSON
bodies as bytes) and appends it to an outbox; a thread ships the outbox to the trace process
(:mod:`opentracy.tracing.process`) every ``SHIP_INTERVAL``, where records are built, encoded,
scrubbed of secrets and written.
"""

from __future__ import annotations

import collections
import logging
import pickle
import threading
import time
from typing import TYPE_CHECKING, Any, Mapping

from opentracy.config import Settings
from opentracy.store import StoreError
from opentracy.tracing import events
from opentracy.tracing.process import PipelineOptions, PolicyOptions, TraceProcess
from opentracy.tracing.tracer import Tracer

if TYPE_CHECKING:
    from opentracy.gateway.errors import APIError
    from opentracy.gateway.extras import RequestContext
    from opentracy.gateway.streaming import StreamResult
    from opentracy.routing.router import RouteOutcome

log = logging.getLogger("opentracy.tracing")

SHIP_INTERVAL = 0.5
"""Seconds events gather in the outbox before one call hands them to the trace process."""
OUTBOX_MAX = 50_000
"""Events held while the trace process is away (restarting); beyond, new ones are dropped and counted."""
RETRY_INTERVAL = 0.5
"""Seconds between tries to reach a trace process that is gone (the next try starts a new one)."""


class GatewayTracer(Tracer):
    """Owns the trace path for one server process: open at start, ``close()`` flushes."""

    def __init__(self, settings: Settings, process: TraceProcess) -> None:
        self.store = process  # the admin routes read through it
        self._process = process
        self._aliases = frozenset(settings.aliases)
        self._outbox: collections.deque[events.Event] = collections.deque()
        self._outbox_lock = threading.Lock()
        self._ship_lock = threading.Lock()  # one shipment at a time: the thread's, or flush()'s
        self._wake = threading.Event()
        self._counts_lock = threading.Lock()
        self._auth_failures = 0
        self._dropped = 0
        self._closed = False
        self._shipper = threading.Thread(target=self._ship_forever, name="opentracy-trace-shipper", daemon=True)
        self._shipper.start()

    @classmethod
    def open(cls, settings: Settings) -> "GatewayTracer":
        """Start the trace process (it opens and migrates the store); raises StoreError/StoreLockedError."""
        options = settings.engine
        pipeline = PipelineOptions(url=options.clickhouse_url, spool_dir=str(options.data_dir / "spool"),
                                   ttl_days=options.trace_ttl_days, spool_max_bytes=options.spool_max_bytes,
                                   flush_interval=options.trace_flush_interval)
        return cls(settings, TraceProcess(pipeline, _policy(settings)))

    def reconfigure(self, settings: Settings) -> None:
        self._aliases = frozenset(settings.aliases)  # the store itself (URL, TTL) changes only with a restart
        try:
            self._process.set_policy(_policy(settings))
        except StoreError as exc:  # gone: the restarted process gets the new policy
            log.warning("trace process unreachable while applying the new trace policy: %s", exc)

    # -- hooks called by the routes (event loop) --------------------------------------------------

    def answered(self, ctx: "RequestContext", outcome: "RouteOutcome", payload: Mapping[str, Any],
                 answer: Mapping[str, Any], *, request_body: bytes | None = None,
                 answer_body: bytes | None = None) -> None:
        self._send(events.answered(ctx, time.time(), ctx.latency_ms(), outcome, payload, answer,
                                   request_body=request_body, answer_body=answer_body))

    def auth_failed(self, ctx: "RequestContext", error: "APIError") -> None:
        with self._counts_lock:
            self._auth_failures += 1
        self._send(events.auth_failed(ctx, time.time(), ctx.latency_ms(), error))

    def rejected(self, ctx: "RequestContext", error: "APIError", payload: Mapping[str, Any] | None) -> None:
        self._send(events.rejected(ctx, time.time(), ctx.latency_ms(), error, payload,
                                   ctx.requested_model in self._aliases))

    def failed(self, ctx: "RequestContext", outcome: "RouteOutcome", payload: Mapping[str, Any],
               error: "APIError") -> None:
        self._send(events.failed(ctx, time.time(), ctx.latency_ms(), outcome, payload, error))

    def stream_ended(self, ctx: "RequestContext", outcome: "RouteOutcome", payload: Mapping[str, Any],
                     result: "StreamResult", *, request_body: bytes | None = None) -> None:
        self._send(events.stream_ended(ctx, time.time(), ctx.latency_ms(), outcome, payload, result,
                                       request_body=request_body))

    def _send(self, event: events.Event) -> None:
        with self._outbox_lock:
            if self._closed or len(self._outbox) >= OUTBOX_MAX:
                self._dropped += 1
                return
            self._outbox.append(event)
            first = len(self._outbox) == 1
        if first:
            self._wake.set()

    # -- shipping (the shipper thread; flush() and close() on any thread) -------------------------

    def _ship_forever(self) -> None:
        while True:
            self._wake.wait()
            if self._closed:
                return
            time.sleep(SHIP_INTERVAL)  # let a batch gather: one call per interval, not per request
            with self._outbox_lock:
                if not self._outbox:
                    self._wake.clear()
                    continue
            if not self._ship():
                time.sleep(RETRY_INTERVAL)

    def _ship(self) -> bool:
        """Hand the outbox to the trace process; events leave it only once the process has them."""
        with self._ship_lock:
            with self._outbox_lock:
                batch = list(self._outbox)
            if not batch:
                return True
            try:
                try:
                    self._process.ingest(batch)
                except (pickle.PicklingError, TypeError, AttributeError):  # raised before anything was sent
                    self._process.ingest([events.picklable(event) for event in batch])
            except StoreError as exc:
                log.warning("trace process unreachable (%s); %d events held for the next try", exc, len(batch))
                return False
            except Exception:  # never lose the outbox to a bug here; the next try may succeed
                log.exception("shipping %d trace events failed", len(batch))
                return False
            with self._outbox_lock:
                for _ in range(len(batch)):
                    self._outbox.popleft()
            return True

    def flush(self, timeout: float = 10.0) -> bool:
        """Write out everything traced so far (to the store, or the spool if it is down)."""
        if not self._ship():
            return False
        try:
            return self._process.flush(timeout)
        except StoreError:
            return False

    # -- operations -------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """The trace process's writer counters, and what this process dropped or holds."""
        try:
            stats = self._process.stats()
        except StoreError:
            stats = {"store_up": False}
        with self._outbox_lock:
            stats["outbox"] = len(self._outbox)
            stats["dropped_outbox_full"] = self._dropped
        return stats

    def health(self) -> dict[str, Any]:
        stats = self.stats()
        return {"enabled": True, "store": str(self._process.url), "store_up": stats.get("store_up"),
                "queue_depth": stats.get("queue_depth", 0) + stats["outbox"], "spool_bytes": stats.get("spool_bytes")}

    def prometheus(self) -> str:
        try:
            text = self._process.prometheus()
        except StoreError:
            text = ""
        with self._counts_lock:
            failures = self._auth_failures
        with self._outbox_lock:
            dropped, held = self._dropped, len(self._outbox)
        return (text
                + "# HELP opentracy_trace_events_dropped_total Trace events dropped before the trace process "
                  "took them (outbox full while it was away, or sent after close).\n"
                + "# TYPE opentracy_trace_events_dropped_total counter\n"
                + f"opentracy_trace_events_dropped_total {dropped}\n"
                + "# HELP opentracy_trace_outbox Trace events waiting to be shipped to the trace process.\n"
                + "# TYPE opentracy_trace_outbox gauge\n"
                + f"opentracy_trace_outbox {held}\n"
                + "# HELP opentracy_auth_failures_total Requests refused for a missing or wrong engine key.\n"
                + "# TYPE opentracy_auth_failures_total counter\n"
                + f"opentracy_auth_failures_total {failures}\n")

    def close(self) -> None:
        """Ship what is left, then close the trace process (it writes out its queue). Idempotent."""
        with self._outbox_lock:
            if self._closed:
                return
            self._closed = True
        self._wake.set()
        for _ in range(3):  # a process that died just now is restarted by the next try
            if self._ship():
                break
        with self._outbox_lock:
            lost = len(self._outbox)
        if lost:
            log.error("trace process unreachable at shutdown: %d trace events not written", lost)
        self._process.close()


def _policy(settings: Settings) -> PolicyOptions:
    return PolicyOptions(store_content=settings.engine.trace_content, redact=settings.engine.trace_redact,
                         secrets=tuple(settings.secrets))
