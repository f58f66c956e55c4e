"""Server-sent events in OpenAI's exact framing, with the extras on the last chunk before [DONE].

The upstream is always asked for usage (``stream_options.include_usage``) so cost is exact; the
usage-only chunk is passed on only when the client asked for it. To put ``_cost``/``_routing`` on
the last chunk we hold one chunk back: when the upstream ends, the held chunk is the last.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

import litellm

from opentracy.gateway.extras import RequestContext, clean, routing_info, wire_json
from opentracy.gateway.pricing import cost_usd
from opentracy.routing.failover import classify
from opentracy.routing.router import RouteOutcome

log = logging.getLogger("opentracy.gateway")
DONE = b"data: [DONE]\n\n"


@dataclass(slots=True)
class StreamResult:
    """What a finished (or abandoned) stream produced; handed to the tracer."""

    status: str = "ok"  # ok | error | cancelled
    text: list[str] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    cost: float = 0.0
    error: str | None = None
    ttft_ms: float | None = None
    latency_ms: float | None = None  # as sent in the last chunk's ``_latency_ms``
    upstream_finished: bool = False
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)  # tool calls by index, as they stream

    @property
    def output(self) -> str:
        return "".join(self.text)

    @property
    def tool_calls(self) -> list[dict[str, Any]]:
        """The streamed tool-call deltas joined into whole calls, as a JSON answer would carry them."""
        return [self.calls[i] for i in sorted(self.calls)]


def sse(data: dict[str, Any]) -> bytes:
    return b"data: " + wire_json(data) + b"\n\n"


async def stream_events(ctx: RequestContext, outcome: RouteOutcome, *, client_wants_usage: bool,
                        messages: list[dict[str, Any]], scrub: Callable[[str], str],
                        on_finish: Callable[[StreamResult], None],
                        idle_timeout: float | None = None) -> AsyncIterator[bytes]:
    """Yield the SSE body; ``on_finish`` runs exactly once, whether the stream ends, fails or is cut."""
    assert outcome.target is not None
    result = StreamResult()
    held: dict[str, Any] | None = None
    try:
        async for chunk in _chunks(outcome, idle_timeout):
            data = clean(chunk, outcome.target.provider)
            _observe(result, data)
            if not data.get("choices") and not data.get("usage"):
                continue  # nothing for an OpenAI client (Azure's content-filter chunk that opens a stream)
            if not data.get("choices") and data.get("usage"):
                if not client_wants_usage:
                    continue
            elif not client_wants_usage:
                data.pop("usage", None)
            if held is not None:
                yield sse(held)
            elif result.ttft_ms is None:
                result.ttft_ms = ctx.latency_ms()
            held = data
        result.upstream_finished = True
        if result.usage is None:
            result.usage = _estimate_usage(outcome.target.model, messages, result.output)
            if client_wants_usage:
                if held is not None:
                    yield sse(held)
                held = {**(held or {}), "choices": [], "usage": result.usage}
        result.cost = cost_usd(outcome.target, result.usage)
        final = held or {"object": "chat.completion.chunk", "choices": []}
        result.latency_ms = round(ctx.latency_ms(), 3)
        final.update({"_cost": result.cost, "_latency_ms": result.latency_ms, "_routing": routing_info(ctx, outcome)})
        yield sse(final)
        yield DONE
    except (asyncio.CancelledError, GeneratorExit):
        result.status = "cancelled"
        raise
    except Exception as exc:  # the upstream failed after the first chunk: too late to fall back
        failure = classify(exc)
        result.status, result.error = "error", f"{failure.kind}: {scrub(failure.message)}"
        if held is not None:
            yield sse(held)
        yield sse({"error": {"message": f"upstream stream failed: {result.error}",
                             "type": failure.client_type, "param": None, "code": failure.client_code}})
    finally:
        await _close(outcome.stream)
        on_finish(result)


async def _chunks(outcome: RouteOutcome, idle_timeout: float | None) -> AsyncIterator[Any]:
    """The upstream's chunks; a gap longer than ``idle_timeout`` ends the stream with an error."""
    if outcome.first_chunk is not None:
        yield outcome.first_chunk
    if outcome.stream is None:
        return
    while True:
        try:
            async with asyncio.timeout(idle_timeout):
                chunk = await anext(outcome.stream)
        except StopAsyncIteration:
            return
        except asyncio.TimeoutError:
            raise StreamStalled(f"no chunk from the upstream for {idle_timeout:g} s "
                                f"(OPENTRACY_STREAM_IDLE_TIMEOUT)") from None
        yield chunk


class StreamStalled(litellm.Timeout):
    """The upstream stopped sending mid-stream."""

    def __init__(self, message: str) -> None:
        super().__init__(message=message, model="", llm_provider="")


def _observe(result: StreamResult, data: dict[str, Any]) -> None:
    if data.get("usage"):
        result.usage = dict(data["usage"])
    for choice in data.get("choices") or ():
        delta = choice.get("delta") or {}
        if isinstance(delta.get("content"), str):
            result.text.append(delta["content"])
        for call in delta.get("tool_calls") or ():
            _join_tool_call(result.calls, call)
        if choice.get("finish_reason"):
            result.finish_reason = choice["finish_reason"]


def _join_tool_call(calls: dict[int, dict[str, Any]], part: dict[str, Any]) -> None:
    """OpenAI streams a tool call as deltas: id, type and name first, then argument fragments."""
    index = part.get("index")
    index = index if isinstance(index, int) else len(calls)
    call = calls.setdefault(index, {"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
    if part.get("id"):
        call["id"] = part["id"]
    function = part.get("function") or {}
    if function.get("name") and not call["function"]["name"]:  # sent once (some providers repeat it)
        call["function"]["name"] = function["name"]
    if isinstance(function.get("arguments"), str):
        call["function"]["arguments"] += function["arguments"]


def _estimate_usage(model: str, messages: list[dict[str, Any]], output: str) -> dict[str, int]:
    """Only when the upstream sent no usage: litellm's tokenizer-based count."""
    try:
        prompt = litellm.token_counter(model=model, messages=messages)
        completion = litellm.token_counter(model=model, text=output) if output else 0
    except Exception:
        prompt, completion = 0, 0
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _close(stream: Any) -> None:
    """Close the upstream so an abandoned client does not keep a provider generating."""
    for name in ("aclose",):
        closer = getattr(stream, name, None)
        if closer is not None:
            try:
                await closer()
            except Exception:
                log.debug("closing upstream stream failed", exc_info=True)
            return
