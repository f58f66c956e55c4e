"""What the gateway saw of one request, as plain data: taken on the event loop, built into a record in
the trace process.

The gateway's hooks run on the event loop, between requests, where every line costs several times
what it costs in a loop of its own (the request path's code and data have the caches). So a hook only
makes a tuple: the request context's fields, the request's body and a chat answer's as they
crossed the wire (bytes the route already has: nothing to serialise), and references to the small
parts of any other outcome that are stored (a stream's result, an error; for embeddings and shadow
calls the answer's ``_routing``, usage and message). Bytes where the route has them, because what
the outbox holds costs the event loop while it is held: one object instead of some twenty per
answer took ~10 us per JSON request off the loop (bench/README.md, "Session 11"). The shipper
pickles a batch of events at once, off the event loop. Everything else a record costs —
parsing the bodies, the :class:`TraceRecord`, :meth:`TraceRecord.to_row`'s checks and JSON, removing
secrets, redaction — runs in the trace process (:mod:`opentracy.tracing.process`), through :func:`build`,
or for most requests :func:`row`, which goes straight to the stored row.

Why (bench/README.md, "Session 9"): building and encoding a record on the event loop cost the server
~80 us per JSON request at c=1; pickling a copied-out event there still ~20 us.

An event is a tuple, not a dataclass: it only travels from the functions here to :func:`build`.
"""

from __future__ import annotations

import json
import math
import pickle
import re
from typing import TYPE_CHECKING, Any, Mapping

import orjson

from opentracy import __version__
from opentracy.tracing.record import (
    COLUMN_NAMES,
    LABEL_MAX_BYTES,
    MAX_SECONDS,
    MIN_SECONDS,
    PARAMS_NOT_RECORDED,
    TRACE_STATUSES,
    TraceRecord,
    dump_json,
    json_safe,
)

if TYPE_CHECKING:
    from opentracy.gateway.errors import APIError
    from opentracy.gateway.extras import RequestContext
    from opentracy.gateway.streaming import StreamResult
    from opentracy.routing.router import RouteOutcome

ANSWERED, AUTH_FAILED, REJECTED, FAILED, STREAM_ENDED = "answered", "auth_failed", "rejected", "failed", "stream"
Event = tuple  # (kind, trace_id, start_time, end_time, latency_ms, requested_model, stream, key_name, user,
# client_metadata, shadow_of, error, routing, request, result, notes): see _event() and build()


def answered(ctx: "RequestContext", ended: float, latency_ms: float, outcome: "RouteOutcome",
             payload: Mapping[str, Any], answer: Mapping[str, Any], *, request_body: bytes | None = None,
             answer_body: bytes | None = None) -> Event:
    """A JSON answer as sent: its cost, usage and latency are the client's ``_cost``, ``usage``, ``_latency_ms``,
    its routing the answer's ``_routing``. With the request's body and the answer's (the bytes the
    route received and sent), the event carries those bytes rather than the payload and parts of the
    answer: the trace process parses them."""
    request = payload if request_body is None else request_body
    sent = answer.get("_routing")
    if answer_body is not None and sent is not None:
        return _event(ANSWERED, ctx, ended, latency_ms, None, None, request, answer_body)
    return _event(ANSWERED, ctx, ended, latency_ms, None, sent if sent is not None else _routing(outcome),
                  request, _answer_parts(answer))


def auth_failed(ctx: "RequestContext", ended: float, latency_ms: float, error: "APIError") -> Event:
    return _event(AUTH_FAILED, ctx, ended, latency_ms, _error(error), None, None, None)


def rejected(ctx: "RequestContext", ended: float, latency_ms: float, error: "APIError",
             payload: Mapping[str, Any] | None, names_alias: bool) -> Event:
    return _event(REJECTED, ctx, ended, latency_ms, _error(error), None, payload, names_alias)


def failed(ctx: "RequestContext", ended: float, latency_ms: float, outcome: "RouteOutcome",
           payload: Mapping[str, Any], error: "APIError") -> Event:
    return _event(FAILED, ctx, ended, latency_ms, _error(error), _routing(outcome), payload, None)


def stream_ended(ctx: "RequestContext", ended: float, latency_ms: float, outcome: "RouteOutcome",
                 payload: Mapping[str, Any], result: "StreamResult", *, request_body: bytes | None = None) -> Event:
    """A relayed stream, finished or not: partial output when the client left or the upstream broke."""
    summary = (result.status, result.error, result.output, result.finish_reason, result.tool_calls,
               result.ttft_ms, result.cost, result.latency_ms, result.usage)
    return _event(STREAM_ENDED, ctx, ended, latency_ms, None, _routing(outcome),
                  payload if request_body is None else request_body, summary)


def _event(kind: str, ctx: "RequestContext", ended: float, latency_ms: float, error: Any, routing: Any,
           request: Any, result: Any) -> Event:
    return (kind, ctx.trace_id, ctx.start_time, ended, latency_ms, ctx.requested_model, ctx.stream,
            ctx.key_name, ctx.user, ctx.client_metadata, ctx.shadow_of, error, routing, request, result, ())


def _error(error: "APIError") -> tuple[str, str, int]:
    return (error.code or error.type, error.message, error.status)


def _routing(outcome: "RouteOutcome") -> tuple[str, list[dict[str, Any]], str, str, bool]:
    attempts = outcome.attempts
    last = attempts[-1] if attempts else None
    target = outcome.target
    return (outcome.route.alias or "", [a.public() for a in attempts],
            target.model if target else (last.model if last else ""),
            target.provider if target else (last.provider if last else ""),
            outcome.fallback_used or len(attempts) > 1)


def _answer_as_sent(answer: Mapping[str, Any]) -> tuple[Any, tuple[Any, ...]]:
    """(routing, parts) of an answer parsed from the bytes the client got."""
    return answer.get("_routing"), _answer_parts(answer)


def _answer_parts(answer: Mapping[str, Any]) -> tuple[Any, ...]:
    choices = answer.get("choices") or ()
    first = choices[0] if choices else {}
    message = first.get("message") or {}
    return (answer.get("_latency_ms"), answer.get("_cost"), answer.get("usage"), message.get("content"),
            message.get("tool_calls"), first.get("finish_reason"), bool(choices))


def picklable(event: Event) -> Event:
    """``event`` if pickle takes it, else a JSON-safe copy whose notes say what was replaced."""
    try:
        pickle.dumps(event, protocol=pickle.HIGHEST_PROTOCOL)
        return event
    except Exception:  # an object pickle cannot take (a provider's odd value in a tool call, ...)
        problems: list[str] = []
        safe = json_safe(event, problems)
        safe[-1] = ["shipping: " + p for p in problems] or ["shipping: replaced a value pickle refused"]
        return tuple(safe)


def build(event: Event) -> TraceRecord:
    """The record of an event, before the trace policy (content, redaction) is applied."""
    (kind, trace_id, start_time, ended, latency_ms, requested_model, stream, key_name, user, client_metadata,
     shadow_of, error, routing, payload, result, notes) = event
    notes = list(notes)
    if type(payload) is bytes:
        payload = _parsed(payload, "request body", notes)
    if type(result) is bytes:
        routing, result = _answer_as_sent(_parsed(result, "answer body", notes) or {})
    record = TraceRecord(
        trace_id=trace_id,
        start_time=start_time,  # Unix seconds: TraceRecord stores them as they are (see its time convention)
        end_time=ended,
        requested_model=requested_model,
        status="error" if error else "ok",
        error_type=error[0] if error else "",
        error_message=error[1] if error else "",
        http_status=error[2] if error else 200,
        stream=stream,
        latency_ms=latency_ms,
        api_key_name=key_name or "",
        user=user or "",
        metadata=dict(client_metadata or {}),
        shadow_of=shadow_of or "",
        source="gateway",
        version=__version__,
        encoding_errors=notes,
    )
    if kind == AUTH_FAILED:  # no content: an unauthenticated caller does not get to write prompts into the store
        record.content_stored = False
        return record
    _add_request(record, payload)
    if routing is not None:
        (record.alias, record.attempts, record.selected_model, record.provider,
         record.fallback_used) = _routing_fields(routing)
    if kind == ANSWERED:
        answer_latency, cost, usage, content, tool_calls, finish_reason, has_choices = result
        record.latency_ms = float(answer_latency or record.latency_ms)
        record.cost_usd = float(cost or 0.0)
        _add_usage(record, usage)
        if has_choices:
            record.response = content if isinstance(content, str) else ""
            record.tool_calls = tool_calls or []
            record.finish_reason = str(finish_reason or "")
    elif kind == STREAM_ENDED:
        status, stream_error, output, finish_reason, tool_calls, ttft_ms, cost, stream_latency, usage = result
        record.status = status
        record.error_type, record.error_message, record.http_status = _stream_outcome(status, stream_error)
        record.response = output
        record.finish_reason = finish_reason or ""
        record.tool_calls = tool_calls
        record.ttft_ms = ttft_ms
        record.cost_usd = cost
        if stream_latency is not None:
            record.latency_ms = stream_latency
        _add_usage(record, usage)
    elif kind == REJECTED and result:  # rejected before routing, but still this alias's traffic
        record.alias = requested_model
    return record


# The columns row() writes, in its order; checked against the schema at import.
_ROW_COLUMNS = ("trace_id", "start_time", "end_time", "alias", "requested_model", "selected_model", "provider",
                "status", "error_type", "error_message", "http_status", "stream", "ttft_ms", "latency_ms",
                "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd", "fallback_used", "attempts",
                "messages", "response", "tools", "tool_calls", "finish_reason", "request_params", "api_key_name",
                "user", "metadata", "redacted", "content_stored", "source", "version", "shadow_of", "encoding_errors")
if _ROW_COLUMNS != COLUMN_NAMES:
    raise RuntimeError("events.row() no longer matches TraceRecord's columns: update it with the schema")
_UINT32_MAX = 0xFFFF_FFFF


def row(event: Event, limit: int) -> list[Any] | None:
    """``build(event).to_row(limit)`` for an answered or streamed request whose values all are of the
    kinds and sizes ``to_row`` stores as they are; None for any other event (then use :func:`build`).

    Why: the trace process does this for every request; without the record in between and
    ``to_row``'s check per column its writer thread spent 36 us of CPU per JSON request instead of 46
    (bench/README.md, "Session 10"); parsing and writing JSON with orjson instead of :mod:`json` took
    its Python threads from 45-52 us to 24-25 ("Session 12"; see :func:`_parsed_json_text` for the
    one spelling that differs). Only for the default trace policy (content stored, no redaction):
    the others change the record.
    """
    (kind, trace_id, start_time, end_time, latency_ms, requested_model, stream, key_name, user, client_metadata,
     shadow_of, error, routing, payload, result, notes) = event
    if (kind != ANSWERED and kind != STREAM_ENDED) or error is not None or notes or type(payload) is not bytes:
        return None
    try:
        request = orjson.loads(payload)
        if type(request) is not dict or "input" in request:  # not a chat request: build() says why
            return None
        answer_json = _json_text
        if type(result) is bytes:
            answer = orjson.loads(result)
            if type(answer) is not dict:
                return None
            routing, result = _answer_as_sent(answer)
            answer_json = _parsed_json_text
        alias, attempts, selected_model, provider, fallback_used = _routing_fields(routing)
        status, error_type, error_message, http_status, ttft_ms = "ok", "", "", 200, None
        if kind == ANSWERED:
            answer_latency, cost, usage, content, tool_calls, finish_reason, has_choices = result
            latency_ms = float(answer_latency or latency_ms)
            cost = float(cost or 0.0)
            if has_choices:
                response = content if isinstance(content, str) else ""
                tool_calls = tool_calls or []
                finish_reason = str(finish_reason or "")
            else:
                response, tool_calls, finish_reason = "", [], ""
        else:
            status, stream_error, response, finish_reason, tool_calls, ttft_ms, cost, stream_latency, usage = result
            error_type, error_message, http_status = _stream_outcome(status, stream_error)
            finish_reason = finish_reason or ""
            if stream_latency is not None:
                latency_ms = stream_latency
        prompt_tokens, completion_tokens, total_tokens = _token_counts(usage)
        key_name, user, shadow_of = key_name or "", user or "", shadow_of or ""
        if not (type(trace_id) is str and trace_id.isascii() and 0 < len(trace_id) <= LABEL_MAX_BYTES
                and type(start_time) is float and MIN_SECONDS <= start_time <= MAX_SECONDS
                and type(end_time) is float and MIN_SECONDS <= end_time <= MAX_SECONDS
                and _all_fit((alias, requested_model, selected_model, provider, finish_reason, key_name, __version__),
                             min(limit, LABEL_MAX_BYTES))
                and _all_fit((error_message, response, user, shadow_of), limit)
                and status in TRACE_STATUSES
                and type(stream) is bool and (ttft_ms is None or _finite(ttft_ms)) and _finite(latency_ms)
                and 0 <= prompt_tokens <= _UINT32_MAX and 0 <= completion_tokens <= _UINT32_MAX
                and 0 <= total_tokens <= _UINT32_MAX and _finite(cost) and type(fallback_used) is bool):
            return None
        tools = request.get("tools")
        texts = (answer_json(attempts, limit), _parsed_json_text(request.get("messages") or [], limit),
                 _parsed_json_text(tools, limit) if tools else "[]",
                 answer_json(tool_calls, limit) if tool_calls else "[]",
                 _parsed_json_text(_request_params(request), limit) if request.keys() - _NOT_PARAMS else "{}",
                 _json_text(dict(client_metadata), limit) if client_metadata else "{}")
    except Exception:  # whatever build() makes of it, it says so
        return None
    if None in texts:
        return None
    attempts_text, messages_text, tools_text, tool_calls_text, params_text, metadata_text = texts
    return [trace_id, round(start_time * 1_000_000), round(end_time * 1_000_000), alias, requested_model,
            selected_model, provider, status, error_type, error_message, http_status, stream, ttft_ms, latency_ms,
            prompt_tokens, completion_tokens, total_tokens, cost, fallback_used, attempts_text, messages_text,
            response, tools_text, tool_calls_text, finish_reason, params_text, key_name, user,
            metadata_text, False, True, "gateway", __version__, shadow_of, []]


def _routing_fields(routing: Any) -> tuple[str, Any, str, str, bool]:
    """(alias, attempts, selected model, provider, fallback used) from an answer's ``_routing`` as the
    client got it, or from :func:`_routing` (already that tuple)."""
    if type(routing) is not dict:
        return routing
    attempts = routing.get("attempts") or []
    return (routing.get("alias") or "", attempts, routing.get("selected_model") or "", routing.get("provider") or "",
            bool(routing.get("fallback_used")) or len(attempts) > 1)


def _stream_outcome(status: str, stream_error: str | None) -> tuple[str, str, int]:
    """(error type, error message, HTTP status) of a stream that ended with ``status``."""
    if status == "error":
        return "stream_error", stream_error or "", 502
    if status == "cancelled":
        return "client_disconnected", "", 499
    return "", "", 200


_NOT_PARAMS = PARAMS_NOT_RECORDED | {"messages", "model", "input"}


def _request_params(payload: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in _NOT_PARAMS}


def _token_counts(usage: Mapping[str, Any] | None) -> tuple[int, int, int]:
    if not usage:
        return 0, 0, 0
    return (int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
            int(usage.get("total_tokens") or 0))


def _fits(value: Any, limit: int) -> bool:
    """A str ``to_row`` stores as it is: valid UTF-8 (no lone surrogates) of at most ``limit`` bytes."""
    if type(value) is not str:
        return False
    if value.isascii():
        return len(value) <= limit
    try:
        return len(value.encode("utf-8")) <= limit
    except UnicodeEncodeError:
        return False


def _all_fit(values: tuple[Any, ...], limit: int) -> bool:
    """:func:`_fits` for each value, for ASCII values (nearly all) in one pass over their joined text;
    there a str subclass passes too (stored by its characters, as clickhouse-connect encodes it)."""
    try:
        joined = "".join(values)
    except TypeError:  # a value is not a str
        return False
    if joined.isascii():
        return max(map(len, values)) <= limit
    return all(_fits(value, limit) for value in values)


def _finite(value: Any) -> bool:
    return type(value) is float and math.isfinite(value)


def _json_text(value: Any, limit: int) -> str | None:
    """The JSON column's text as ``to_row`` stores it, or None if ``to_row`` would have to fix it."""
    if type(value) in (list, dict) and not value:
        return "[]" if type(value) is list else "{}"
    try:
        text = dump_json(value)
    except (TypeError, ValueError, RecursionError):
        return None
    return text if _fits(text, limit) else None


_EXPONENT = re.compile(rb"[0-9]e\+[0-9]")  # how orjson writes a float of 1e16 or more


def _parsed_json_text(value: Any, limit: int) -> str | None:
    """:func:`_json_text` for a value ``orjson`` parsed from a body, written by ``orjson`` too.

    The text is ``dump_json``'s but for one spelling: a float under 1e-4 (``0.00001`` or ``1e-7``
    where ``dump_json`` writes ``1e-05``, ``1e-07``), the same number. None where orjson cannot write
    the value exactly, or may have parsed it inexactly: ``orjson.loads`` reads an integer beyond 64 bits
    as a float, which it writes with an exponent of at least ``e+18`` (``build()`` then parses the
    body with :mod:`json`, which keeps the integer). Looked for only where ``e+`` is in the text at all
    (a URL's ``cheese+pizza`` has it too; the regular expression is dearer than the search).
    """
    try:
        text = orjson.dumps(value)
    except orjson.JSONEncodeError:  # nested deeper than orjson writes, ...
        return None
    if len(text) > limit or (b"e+" in text and _EXPONENT.search(text)):
        return None
    return text.decode()


def _parsed(body: bytes, what: str, notes: list[str]) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except ValueError as exc:
        value = exc
    if isinstance(value, dict):
        return value
    notes.append(f"{what}: not a JSON object ({str(value)[:80]}); not stored")
    return None


def _add_request(record: TraceRecord, payload: Mapping[str, Any] | None) -> None:
    if not payload:
        return
    record.messages = payload.get("messages") or []
    record.tools = payload.get("tools") or []
    record.request_params = _request_params(payload)
    if "input" in payload:  # embeddings: the input is the "prompt"
        record.messages = [{"role": "user", "content": json.dumps(payload["input"], ensure_ascii=False)}]


def _add_usage(record: TraceRecord, usage: Mapping[str, Any] | None) -> None:
    record.prompt_tokens, record.completion_tokens, record.total_tokens = _token_counts(usage)
