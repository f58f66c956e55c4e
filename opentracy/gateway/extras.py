"""The fields OpenTracy adds to OpenAI's response shape: ``_cost``, ``_latency_ms``, ``_routing``.

Also the one place that turns litellm's pydantic objects into plain OpenAI JSON: litellm adds
``provider_specific_fields`` and null ``function_call``/``tool_calls`` keys that OpenAI never sends.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.responses import JSONResponse

from opentracy.gateway.pricing import cost_usd
from opentracy.routing.router import RouteOutcome

LITELLM_ONLY_KEYS = ("provider_specific_fields",)
NULL_DROPPED_KEYS = ("function_call", "tool_calls", "citations", "reasoning_content", "thinking_blocks", "audio",
                     "images", "annotations")
# What an OpenAI message / delta may carry, plus litellm's reasoning_content, thinking_blocks and images
# (kept when they say something). Anything else is a provider's field litellm let through (Together's token_id).
MESSAGE_KEYS = {"role", "content", "tool_calls", "refusal", "annotations", "audio", "function_call",
                "reasoning_content", "thinking_blocks", "images"}
EMPTY_DROPPED_KEYS = ("thinking_blocks", "images")


@dataclass(slots=True)
class RequestContext:
    """Facts about one client request that the response extras and the trace both need."""

    requested_model: str
    stream: bool = False
    key_name: str | None = None
    user: str | None = None
    client_metadata: dict[str, Any] | None = None
    shadow_of: str | None = None  # the primary's trace id, for a mirrored call
    trace_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    started: float = field(default_factory=time.perf_counter)
    start_time: float = field(default_factory=time.time)

    def latency_ms(self) -> float:
        return (time.perf_counter() - self.started) * 1000.0


def routing_info(ctx: RequestContext, outcome: RouteOutcome) -> dict[str, Any]:
    target = outcome.target
    return {
        "alias": outcome.route.alias,
        "requested_model": ctx.requested_model,
        "selected_model": target.model if target else None,
        "provider": target.provider if target else None,
        "fallback_used": outcome.fallback_used,
        "attempts": [a.public() for a in outcome.attempts],
        "trace_id": ctx.trace_id,
    }


def answer(ctx: RequestContext, outcome: RouteOutcome) -> dict[str, Any]:
    """A successful outcome as the client gets it: OpenAI's JSON plus the extras."""
    assert outcome.target is not None
    data = clean(outcome.response, outcome.target.provider)
    data.update({"_cost": cost_usd(outcome.target, data.get("usage")), "_latency_ms": round(ctx.latency_ms(), 3),
                 "_routing": routing_info(ctx, outcome)})
    return data


def clean(obj: Any, provider: str | None = None) -> dict[str, Any]:
    """litellm object → OpenAI JSON dict (chat completion, chunk or embedding response)."""
    data = obj.model_dump() if hasattr(obj, "model_dump") else dict(obj)
    for choice in data.get("choices") or ():
        message = choice.get("message")
        if isinstance(message, dict):
            _drop_litellm_keys(message)
            _keep_message_keys(message)
            if message.get("tool_calls") and message.get("content") == "":
                message["content"] = None  # OpenAI's shape; litellm says "" beside Bedrock tool calls
        delta = choice.get("delta")
        if isinstance(delta, dict):  # OpenAI's deltas carry only what changed: {} at the end
            _drop_litellm_keys(delta)
            _keep_message_keys(delta)
            for key in [k for k, v in delta.items() if v is None]:
                del delta[key]
        _drop_litellm_keys(choice)
    _drop_litellm_keys(data)
    for key in [k for k, v in data.items() if k.startswith("vertex_ai_") and not v]:
        del data[key]  # litellm's Gemini bookkeeping, [] when there is nothing to say
    model = data.get("model")
    if provider and isinstance(model, str) and model.startswith(provider + "/"):
        # litellm prefixes some providers' non-streamed model (llms/openai/openai.py, fireworks_ai); chunks are bare
        data["model"] = model[len(provider) + 1:]
    return data


def _keep_message_keys(part: dict[str, Any]) -> None:
    for key in [k for k in part if k not in MESSAGE_KEYS or (k in EMPTY_DROPPED_KEYS and not part[k])]:
        del part[key]
    for call in part.get("tool_calls") or ():
        if isinstance(call, dict):  # Gemini's thought signature: litellm already carries it in the tool call id
            call.pop("provider_specific_fields", None)


def _drop_litellm_keys(part: dict[str, Any]) -> None:
    for key in LITELLM_ONLY_KEYS:
        part.pop(key, None)
    for key in NULL_DROPPED_KEYS:
        if key in part and part[key] is None:
            del part[key]


def extras_headers(ctx: RequestContext, cost: float | None = None, latency_ms: float | None = None,
                   selected_model: str | None = None) -> dict[str, str]:
    headers = {"x-opentracy-trace-id": ctx.trace_id}
    if cost is not None:
        headers["x-opentracy-cost"] = f"{cost:.10f}".rstrip("0").rstrip(".") or "0"
    if latency_ms is not None:
        headers["x-opentracy-latency-ms"] = f"{latency_ms:.3f}"
    if selected_model:
        headers["x-opentracy-selected-model"] = selected_model
    return headers


def wire_json(data: Any, *, allow_nan: bool = True) -> bytes:
    """``data`` as the compact UTF-8 JSON a client gets (an answer, a stream chunk, an error).

    Text with a lone surrogate — half an emoji, which JSON carries as a ``\\ud83d`` escape and which a
    client or a provider may send — cannot be UTF-8; then every non-ASCII character is written as
    such an escape instead, so the client decodes the text the provider sent rather than getting a 500.
    """
    try:
        return json.dumps(data, ensure_ascii=False, allow_nan=allow_nan, separators=(",", ":")).encode()
    except UnicodeEncodeError:
        return json.dumps(data, allow_nan=allow_nan, separators=(",", ":")).encode()


class WireJSONResponse(JSONResponse):
    """Starlette's ``JSONResponse`` (no NaN, compact) rendered with :func:`wire_json`."""

    def render(self, content: Any) -> bytes:
        return wire_json(content, allow_nan=False)
