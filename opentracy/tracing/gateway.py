"""Tracing for the gateway: the store, the writer, and one record per request the gateway saw.

The gateway builds every record itself, from what it answered: the JSON it returned (so the trace's
cost, usage and latency are the client's ``_cost``, ``usage`` and ``_latency_ms``), the stream it
relayed (with partial output when the client left or the upstream broke), or the error it returned
(rejected before any provider call, or every attempt failed). It does not use litellm's callbacks:
not every call goes through litellm (:mod:`opentracy.routing.direct`), and litellm cannot know about
fallbacks, rejections or abandoned streams. The litellm callback is for litellm proxies
(:mod:`opentracy.tracing.proxy`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple

from opentracy import __version__
from opentracy.config import Settings
from opentracy.store import TraceStore, parse_store_url
from opentracy.store.process import StoreProcess
from opentracy.tracing.policy import TracePolicy
from opentracy.tracing.record import PARAMS_NOT_RECORDED, TraceRecord
from opentracy.tracing.tracer import Tracer
from opentracy.tracing.writer import TraceWriter

if TYPE_CHECKING:
    from opentracy.gateway.errors import APIError
    from opentracy.gateway.extras import RequestContext
    from opentracy.gateway.streaming import StreamResult
    from opentracy.routing.router import RouteOutcome

log = logging.getLogger("opentracy.tracing")

ENCODE_DELAY = 0.05
"""Seconds a record may wait on the event loop to be encoded with others (see GatewayTracer._later)."""
ENCODE_BATCH = 64
"""Records encoded at once, at most: ~2-3 ms of the event loop, and the cap on what the delay holds."""


class GatewayTracer(Tracer):
    """Owns the trace path for one server process: open at start, ``close()`` flushes."""

    def __init__(self, settings: Settings, store: TraceStore | StoreProcess) -> None:
        options = settings.engine
        self.store = store
        self.policy = _policy(settings)
        # The writer removes secrets from each encoded row, with the policy current then (reloads swap it).
        self.writer = TraceWriter(store, Path(options.data_dir) / "spool", spool_max_bytes=options.spool_max_bytes,
                                  flush_interval=options.trace_flush_interval, scrub=self._scrub_text)
        self._aliases = frozenset(settings.aliases)
        self._pending: list[Callable[[], TraceRecord]] = []  # builders waiting for encode_pending()
        self._pending_lock = threading.Lock()
        self._auth_failures = 0
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(cls, settings: Settings) -> "GatewayTracer":
        """Open the store (migrating it) and start the writer; raises StoreError/StoreLockedError."""
        options = settings.engine
        if parse_store_url(options.clickhouse_url).embedded:  # chDB: in a process of its own (see there)
            return cls(settings, StoreProcess(options.clickhouse_url, ttl_days=options.trace_ttl_days))
        return cls(settings, TraceStore(options.clickhouse_url, ttl_days=options.trace_ttl_days,
                                        require_connection=False))

    def reconfigure(self, settings: Settings) -> None:
        self.policy = _policy(settings)  # the store itself (URL, TTL) changes only with a restart
        self._aliases = frozenset(settings.aliases)

    def _scrub_text(self, text: str) -> str:
        return self.policy.scrub_text(text)

    # -- hooks called by the routes -----------------------------------------------------------
    # Each notes the time and hands a builder of the record to _later(). What the builders read is not
    # changed after the hook (the answer was sent, the stream ended, the payload is never mutated).

    def answered(self, ctx: "RequestContext", outcome: "RouteOutcome", payload: Mapping[str, Any],
                 answer: Mapping[str, Any]) -> None:
        self._later(self._answered, ctx, outcome, payload, answer)

    def auth_failed(self, ctx: "RequestContext", error: "APIError") -> None:
        with self._lock:
            self._auth_failures += 1
        self._later(self._auth_failed, ctx, error)

    def rejected(self, ctx: "RequestContext", error: "APIError", payload: Mapping[str, Any] | None) -> None:
        self._later(self._rejected, ctx, error, payload, ctx.requested_model in self._aliases)

    def failed(self, ctx: "RequestContext", outcome: "RouteOutcome", payload: Mapping[str, Any],
               error: "APIError") -> None:
        self._later(self._failed, ctx, outcome, payload, error)

    def stream_ended(self, ctx: "RequestContext", outcome: "RouteOutcome", payload: Mapping[str, Any],
                     result: "StreamResult") -> None:
        self._later(self._stream_ended, ctx, outcome, payload, result)

    def _later(self, build: Callable[..., TraceRecord], ctx: "RequestContext", *args: Any) -> None:
        """Queue a builder of the record; the event loop builds and encodes the queued ones together, at
        most ``ENCODE_DELAY`` later. With PII redaction on, the writer thread builds them.

        Why batches on the event loop (bench/README.md, "Session 8"): building and encoding a record
        costs ~19 us of Python hot in a loop, ~116 us in the server when it runs once per request
        between the gateway's own code, 55-60 us there in batches (measured at c=1); a writer thread
        doing it makes the event loop hand the GIL across cores. A batch runs warm and uninterrupted; the
        request's objects are kept for at most ``ENCODE_DELAY``. Redaction (regexes over every text)
        costs far more and stays off the event loop.
        """
        builder = functools.partial(build, ctx, _Ended(time.time(), ctx.latency_ms()), *args)
        if self.policy.redact:
            self.writer.submit(builder)
            return
        with self._pending_lock:
            self._pending.append(builder)
            waiting = len(self._pending)
        if waiting not in (1, ENCODE_BATCH):
            return  # a batch is open: its timer (or the call for a full batch) encodes this one too
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not called from an event loop: encode now
            self.encode_pending()
            return
        if waiting == 1:
            loop.call_later(ENCODE_DELAY, self.encode_pending)
        else:
            loop.call_soon(self.encode_pending)

    def encode_pending(self) -> None:
        """Build and encode the queued records and hand the rows to the writer. Safe on any thread."""
        with self._pending_lock:
            pending, self._pending = self._pending, []
        for builder in pending:
            try:
                row = self.writer.encode(builder())
            except Exception:  # builders and to_row() do not raise; if one does, the writer retries and counts it
                self.writer.submit(builder)
                continue
            self.writer.submit(row)

    def flush(self, timeout: float = 10.0) -> bool:
        """Write out everything traced so far (to the store, or the spool if it is down)."""
        self.encode_pending()
        return self.writer.flush(timeout)

    # -- builders (event loop, after the response; the writer thread when redacting) ------------

    def _answered(self, ctx: "RequestContext", ended: "_Ended", outcome: "RouteOutcome",
                  payload: Mapping[str, Any], answer: Mapping[str, Any]) -> TraceRecord:
        record = self._base(ctx, ended, status="ok", error=None)
        _add_request(record, payload)
        _add_routing(record, outcome)
        record.latency_ms = float(answer.get("_latency_ms") or record.latency_ms)
        record.cost_usd = float(answer.get("_cost") or 0.0)
        _add_usage(record, answer.get("usage"))
        choices = answer.get("choices") or []
        if choices:
            message = choices[0].get("message") or {}
            content = message.get("content")
            record.response = content if isinstance(content, str) else ""
            record.tool_calls = message.get("tool_calls") or []
            record.finish_reason = str(choices[0].get("finish_reason") or "")
        return self.policy.apply(record)

    def _auth_failed(self, ctx: "RequestContext", ended: "_Ended", error: "APIError") -> TraceRecord:
        # No content: an unauthenticated caller does not get to write prompts into the store.
        record = self._base(ctx, ended, status="error", error=error)
        record.content_stored = False
        return record

    def _rejected(self, ctx: "RequestContext", ended: "_Ended", error: "APIError",
                  payload: Mapping[str, Any] | None, names_alias: bool) -> TraceRecord:
        record = self._base(ctx, ended, status="error", error=error)
        _add_request(record, payload)
        if names_alias:  # rejected before routing, but still this alias's traffic
            record.alias = ctx.requested_model
        return self.policy.apply(record)

    def _failed(self, ctx: "RequestContext", ended: "_Ended", outcome: "RouteOutcome",
                payload: Mapping[str, Any], error: "APIError") -> TraceRecord:
        record = self._base(ctx, ended, status="error", error=error)
        _add_request(record, payload)
        _add_routing(record, outcome)
        return self.policy.apply(record)

    def _stream_ended(self, ctx: "RequestContext", ended: "_Ended", outcome: "RouteOutcome",
                      payload: Mapping[str, Any], result: "StreamResult") -> TraceRecord:
        record = self._base(ctx, ended, status=result.status, error=None)
        if result.status == "error":
            record.error_type, record.error_message, record.http_status = "stream_error", result.error or "", 502
        elif result.status == "cancelled":
            record.error_type, record.http_status = "client_disconnected", 499
        _add_request(record, payload)
        _add_routing(record, outcome)
        record.response = result.output
        record.finish_reason = result.finish_reason or ""
        record.tool_calls = result.tool_calls
        record.ttft_ms = result.ttft_ms
        record.cost_usd = result.cost
        if result.latency_ms is not None:
            record.latency_ms = result.latency_ms
        _add_usage(record, result.usage)
        return self.policy.apply(record)

    # -- operations -------------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        stats = self.writer.stats()
        return {"enabled": True, "store": str(self.store.url), "store_up": stats.get("store_up"),
                "queue_depth": stats.get("queue_depth"), "spool_bytes": stats.get("spool_bytes")}

    def prometheus(self) -> str:
        with self._lock:
            failures = self._auth_failures
        return (self.writer.prometheus()
                + "# HELP opentracy_auth_failures_total Requests refused for a missing or wrong engine key.\n"
                + "# TYPE opentracy_auth_failures_total counter\n"
                + f"opentracy_auth_failures_total {failures}\n")

    def close(self) -> None:
        """Flush the queue to the store (or the spool), then close the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self.encode_pending()
        self.writer.close()
        self.store.close()

    def _base(self, ctx: "RequestContext", ended: "_Ended", *, status: str, error: "APIError | None") -> TraceRecord:
        return TraceRecord(
            trace_id=ctx.trace_id,
            start_time=datetime.fromtimestamp(ctx.start_time, timezone.utc),
            end_time=datetime.fromtimestamp(ended.time, timezone.utc),
            requested_model=ctx.requested_model,
            status=status,
            error_type=error.code or error.type if error else "",
            error_message=error.message if error else "",
            http_status=error.status if error else 200,
            stream=ctx.stream,
            latency_ms=ended.latency_ms,
            api_key_name=ctx.key_name or "",
            user=ctx.user or "",
            metadata=dict(ctx.client_metadata or {}),
            shadow_of=ctx.shadow_of or "",
            source="gateway",
            version=__version__,
        )


class _Ended(NamedTuple):
    """When the request path finished with a request: the builder runs later (encode_pending())."""

    time: float  # epoch seconds
    latency_ms: float


def _policy(settings: Settings) -> TracePolicy:
    return TracePolicy(store_content=settings.engine.trace_content, redact=settings.engine.trace_redact,
                       secrets=settings.secrets)


def _add_request(record: TraceRecord, payload: Mapping[str, Any] | None) -> None:
    if not payload:
        return
    record.messages = payload.get("messages") or []
    record.tools = payload.get("tools") or []
    record.request_params = {k: v for k, v in payload.items()
                             if k not in PARAMS_NOT_RECORDED and k not in ("messages", "model", "input")}
    if "input" in payload:  # embeddings: the input is the "prompt"
        record.messages = [{"role": "user", "content": json.dumps(payload["input"], ensure_ascii=False)}]


def _add_routing(record: TraceRecord, outcome: "RouteOutcome") -> None:
    record.alias = outcome.route.alias or ""
    record.attempts = [a.public() for a in outcome.attempts]
    last = outcome.attempts[-1] if outcome.attempts else None
    target = outcome.target
    record.selected_model = target.model if target else (last.model if last else "")
    record.provider = target.provider if target else (last.provider if last else "")
    record.fallback_used = outcome.fallback_used or len(outcome.attempts) > 1


def _add_usage(record: TraceRecord, usage: Mapping[str, Any] | None) -> None:
    if usage:
        record.prompt_tokens = int(usage.get("prompt_tokens") or 0)
        record.completion_tokens = int(usage.get("completion_tokens") or 0)
        record.total_tokens = int(usage.get("total_tokens") or 0)
