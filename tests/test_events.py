"""events.row(): the trace process's short way from a gateway event to its stored row.

It must store exactly what the long way (``build(event).to_row()``) stores, and step aside (None)
for anything that way has to fix. One spelling differs by design: it writes what it parsed with
orjson, which spells a float under 1e-4 ``0.00001`` where the long way writes ``1e-05``. The events
here come from the gateway's own hooks, with the answers and stream results the routes hand them.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.responses import JSONResponse

from opentracy.gateway.extras import RequestContext, answer as answer_extras
from opentracy.gateway.streaming import StreamResult
from opentracy.routing.aliases import Route, Target
from opentracy.routing.router import Attempt, RouteOutcome
from opentracy.tracing import events
from opentracy.tracing.record import COLUMN_NAMES, DEFAULT_MAX_TEXT_BYTES
from tests.support import WEATHER_TOOL

TARGET = Target("gpt-4o", {"model": "openai/gpt-4o"}, "openai")
BACKUP = Target("claude", {"model": "anthropic/claude-sonnet-4-6"}, "anthropic")


def _outcome(fallback: bool = False) -> RouteOutcome:
    if fallback:
        attempts = [Attempt("openai/gpt-4o", "openai", "error", 12.5, "RateLimitError: slow down", 429),
                    Attempt("anthropic/claude-sonnet-4-6", "anthropic", "ok", 30.25)]
        return RouteOutcome(Route("gpt-4o", "smart", (TARGET, BACKUP)), attempts, BACKUP)
    return RouteOutcome(Route("gpt-4o", None, (TARGET,)), [Attempt("openai/gpt-4o", "openai", "ok", 3.5)], TARGET)


def _answered_both(request: dict[str, Any], message: dict[str, Any], *, fallback: bool = False, choices: bool = True,
                   cost: Any = None, ctx: RequestContext | None = None,
                   **ctx_fields: Any) -> tuple[events.Event, events.Event | None]:
    """The event of one answer made from the answer's dict (embeddings, shadow calls) and from the
    bytes the client got (chat completions); None for the second where the answer cannot be sent."""
    ctx = ctx or RequestContext(request.get("model", "gpt-4o"), **ctx_fields)
    outcome = _outcome(fallback)
    outcome.response = {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o",
                        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}] if choices else [],
                        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}}
    data = answer_extras(ctx, outcome)  # the JSON the client gets: _cost, _latency_ms, _routing
    if cost is not None:
        data["_cost"] = cost
    body = json.dumps(request, ensure_ascii=False).encode()
    try:
        sent: bytes | None = JSONResponse(data).body  # what the route sends, and traces
    except ValueError:  # a NaN, a lone surrogate: the route cannot send it either
        sent = None
    ended = ctx.start_time + 0.2
    from_dict = events.answered(ctx, ended, 200.0, outcome, request, data, request_body=body)
    as_sent = (events.answered(ctx, ended, 200.0, outcome, request, data, request_body=body, answer_body=sent)
               if sent is not None else None)
    return from_dict, as_sent


def _answered(request: dict[str, Any], message: dict[str, Any], **fields: Any) -> events.Event:
    """The event the route makes: from the bytes sent where it can send them."""
    from_dict, as_sent = _answered_both(request, message, **fields)
    return as_sent or from_dict


def _streamed(request: dict[str, Any], result: StreamResult) -> events.Event:
    ctx = RequestContext(request["model"], stream=True)
    body = json.dumps(request).encode()
    return events.stream_ended(ctx, ctx.start_time + 0.5, 500.0, _outcome(), request, result, request_body=body)


CHAT = {"model": "gpt-4o", "messages": [{"role": "system", "content": "Be brief."},
                                        {"role": "user", "content": "What is the capital of France?"}]}
HELLO = {"role": "assistant", "content": "Paris."}


def _stream_result(status: str = "ok", **fields: Any) -> StreamResult:
    result = StreamResult(status=status, text=["Par", "is."], usage={"prompt_tokens": 9, "completion_tokens": 2,
                                                                     "total_tokens": 11},
                          finish_reason="stop", cost=0.0001, ttft_ms=41.5, latency_ms=480.0)
    for name, value in fields.items():
        setattr(result, name, value)
    return result


TAKEN = {
    "plain chat": _answered(CHAT, HELLO),
    "non-ASCII prompt and answer": _answered(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "Où est 東京? 🗼"}]},
        {"role": "assistant", "content": "東京は日本の首都です — très bien ✓"}),
    "tools, tool calls, parameters, metadata, user, key": _answered(
        {**CHAT, "tools": [WEATHER_TOOL], "tool_choice": "auto", "temperature": 0.2, "max_tokens": 64,
         "response_format": {"type": "text"}, "user": "u-42", "metadata": {"team": "search"}, "stream": False},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
        key_name="prod", user="u-42", client_metadata={"team": "search", "ticket": 7}),
    "an alias that fell back": _answered({**CHAT, "model": "smart"}, HELLO, fallback=True),
    "an answer without choices": _answered(CHAT, HELLO, choices=False),
    "an integer cost": _answered(CHAT, HELLO, cost=0),
    "numbers in parameters and tools": _answered(
        {**CHAT, "temperature": 1.0, "top_p": 0.95, "presence_penalty": -0.0, "seed": 18446744073709551615,
         "logit_bias": {"1734": -100, "50256": 2.5e-3}, "tools": [{"type": "function", "function": {
             "name": "pick", "parameters": {"type": "object", "properties": {"n": {
                 "type": "number", "minimum": -9223372036854775808, "maximum": 1e15, "default": 123456.789}}}}}]},
        HELLO),
    "a shadow call": _answered(CHAT, HELLO, shadow_of="0" * 32),
    "a plus sign after an e": _answered({"model": "gpt-4o", "messages": [
        {"role": "user", "content": "https://example.com/search?q=cheese+pizza, or 1e+ something"}]}, HELLO),
    "a finished stream": _streamed({**CHAT, "stream": True, "stream_options": {"include_usage": True}},
                                   _stream_result()),
    "a stream the upstream broke": _streamed({**CHAT, "stream": True}, _stream_result("error", error="reset by peer")),
    "a stream the client left": _streamed({**CHAT, "stream": True}, _stream_result("cancelled", ttft_ms=None,
                                                                                  usage=None, latency_ms=None)),
    "a stream with tool calls": _streamed({**CHAT, "stream": True, "tools": [WEATHER_TOOL]}, _stream_result(
        calls={0: {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}})),
}

LEFT = {  # to_row fixes something in each: row() must leave them to build()
    "a lone surrogate in the answer": _answered(CHAT, {"role": "assistant", "content": "bad \ud800 text"}),
    "a NaN cost": _answered(CHAT, HELLO, cost=float("nan")),
    "a prompt over the size cap": _answered(
        {"model": "gpt-4o", "messages": [{"role": "user", "content": "x" * (DEFAULT_MAX_TEXT_BYTES + 10)}]}, HELLO),
    "a body that is not a JSON object": events.answered(
        RequestContext("gpt-4o"), 1.0, 1.0, _outcome(), CHAT, {"choices": []}, request_body=b"[1, 2]"),
    "an embeddings request": _answered({"model": "text-embedding-3-small", "input": ["a", "b"]}, HELLO),
    "a request answered without a body at hand": events.answered(
        RequestContext("gpt-4o"), 1.0, 1.0, _outcome(), CHAT, {"choices": []}),
    "a string where the trace id goes": _answered(CHAT, HELLO, ctx=RequestContext("gpt-4o", trace_id="")),
}


@pytest.mark.parametrize("name", list(TAKEN))
def test_row_stores_what_the_record_would(name: str) -> None:
    event = TAKEN[name]
    fast = events.row(event, DEFAULT_MAX_TEXT_BYTES)
    assert fast is not None, "row() should take this event"
    assert fast == events.build(event).to_row(DEFAULT_MAX_TEXT_BYTES)


@pytest.mark.parametrize("name", list(LEFT))
def test_row_leaves_what_needs_fixing_to_the_record(name: str) -> None:
    assert events.row(LEFT[name], DEFAULT_MAX_TEXT_BYTES) is None


ANSWERS = {  # (request, answer message, options)
    "plain chat": (CHAT, HELLO, {}),
    "non-ASCII and emoji": ({"model": "gpt-4o", "messages": [{"role": "user", "content": "東京 🗼 \"quoted\"\n"}]},
                            {"role": "assistant", "content": "東京は — ✓ \\ back\tslash"}, {}),
    "tool calls and metadata": ({**CHAT, "tools": [WEATHER_TOOL], "temperature": 0.2}, {
        "role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]}, {"client_metadata": {"team": "x"}}),
    "a fallback": ({**CHAT, "model": "smart"}, HELLO, {"fallback": True}),
    "no choices": (CHAT, HELLO, {"choices": False}),
    "an integer cost": (CHAT, HELLO, {"cost": 0}),
    "a tiny float cost": (CHAT, HELLO, {"cost": 1.2345678901234567e-07}),
}


@pytest.mark.parametrize("name", list(ANSWERS))
def test_an_answer_traced_from_the_bytes_sent_stores_what_its_dict_would(name: str) -> None:
    request, message, options = ANSWERS[name]
    from_dict, as_sent = _answered_both(request, message, **options)
    assert as_sent is not None and type(as_sent[-2]) is bytes  # the route's event carries the bytes
    expected = events.build(from_dict).to_row(DEFAULT_MAX_TEXT_BYTES)
    assert events.build(as_sent).to_row(DEFAULT_MAX_TEXT_BYTES) == expected
    assert events.row(as_sent, DEFAULT_MAX_TEXT_BYTES) == expected


def test_an_answer_body_that_is_not_json_is_noted_not_lost() -> None:
    """Cannot come from the route (it sends what it rendered); if it did, the trace says so."""
    event = events.answered(RequestContext("gpt-4o"), 1.0, 1.0, _outcome(), CHAT, {"_routing": {}},
                            request_body=json.dumps(CHAT).encode(), answer_body=b"{truncated")
    assert events.row(event, DEFAULT_MAX_TEXT_BYTES) is None
    record = events.build(event)
    assert record.messages == CHAT["messages"] and record.response == ""
    assert any("answer body" in note for note in record.encoding_errors)


def _stored(event: events.Event, column: str) -> Any:
    """A JSON column's value as the trace process stores it: row(), or the record where row() steps aside."""
    stored = events.row(event, DEFAULT_MAX_TEXT_BYTES) or events.build(event).to_row(DEFAULT_MAX_TEXT_BYTES)
    return json.loads(stored[COLUMN_NAMES.index(column)])


def test_integers_beyond_64_bits_are_stored_exactly() -> None:
    """orjson reads them as floats; the trace must hold the client's integer."""
    request = {**CHAT, "seed": 12345678901234567890123, "logit_bias": {"7": -9223372036854775809}}
    event = _answered(request, HELLO)
    assert _stored(event, "request_params") == {"seed": 12345678901234567890123,
                                                "logit_bias": {"7": -9223372036854775809}}
    message = {"role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function", "index": 2 ** 70,
                                                                     "function": {"name": "f", "arguments": "{}"}}]}
    assert _stored(_answered(CHAT, message), "tool_calls")[0]["index"] == 2 ** 70


def test_a_tiny_float_is_stored_as_the_same_number() -> None:
    event = _answered({**CHAT, "temperature": 1e-05, "top_p": 1.5e-09}, HELLO)
    fast = events.row(event, DEFAULT_MAX_TEXT_BYTES)
    assert fast is not None
    params = COLUMN_NAMES.index("request_params")
    assert json.loads(fast[params]) == json.loads(events.build(event).to_row(DEFAULT_MAX_TEXT_BYTES)[params]) == {
        "temperature": 1e-05, "top_p": 1.5e-09}


def test_row_respects_a_smaller_size_cap() -> None:
    event = _answered({"model": "gpt-4o", "messages": [{"role": "user", "content": "é" * 1500}]}, HELLO)
    assert events.row(event, 2 * 1024 * 1024) == events.build(event).to_row(2 * 1024 * 1024)
    assert events.row(event, 2048) is None  # 3000 bytes of prompt: to_row would truncate it
    assert events.build(event).to_row(2048)[-1]  # ... and says so

