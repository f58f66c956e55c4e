"""Mistral wire format: POST /v1/chat/completions (api.mistral.ai/v1), OpenAI-like with its own rules.

Quirks emulated: unknown fields are a 422 in FastAPI's "extra_forbidden" shape (so `seed` must be sent
as `random_seed`, `stream_options` is not a field); `tool_choice` also takes "any"; tool call ids must
be exactly 9 characters [a-zA-Z0-9] (Mistral's own ids are; "call_..." ids from another provider are
rejected); an assistant message needs content or tool_calls; `name` only on tool messages. Answers:
tool calls without "type", content "" next to them, streamed whole in one delta; usage on the finish
chunk of every stream (no include_usage needed); errors {"object": "error", "message", "type",
"param", "code"}.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .openai_compat import Dialect, bearer, chat_endpoint
from .replies import ToolCall, stable_id
from .wire import Json, ProviderSpec

PARAMS = frozenset(
    {
        "model", "messages", "temperature", "top_p", "max_tokens", "stream", "stop", "random_seed",
        "response_format", "tools", "tool_choice", "presence_penalty", "frequency_penalty", "n", "prediction",
        "parallel_tool_calls", "prompt_mode", "safe_prompt", "metadata", "reasoning_effort", "guardrails",
        "prompt_cache_key",
    }
)  # fmt: skip
TOOL_CALL_ID = re.compile(r"^[a-zA-Z0-9]{9}$")
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def mistral_tool_id(tc: ToolCall) -> str:
    seed = int(stable_id(tc.id_seed, "mistral"), 16)
    out = ""
    for _ in range(9):
        seed, rem = divmod(seed, len(_ALPHABET))
        out += _ALPHABET[rem]
    return out


def _bad_id(value: object) -> bool:
    return not isinstance(value, str) or not TOOL_CALL_ID.match(value)


def check(body: Json) -> list[str]:
    problems = []
    for i, msg in enumerate(body["messages"]):
        if not isinstance(msg, dict):
            continue
        role = msg.get("role")
        if msg.get("name") is not None and role != "tool":
            problems.append(f"messages.{i}.name: Extra inputs are not permitted")
        for call in msg.get("tool_calls") or ():
            if isinstance(call, dict) and _bad_id(call.get("id")):
                problems.append(f"Tool call id was {call.get('id')} but must be a-z, A-Z, 0-9, with a length of 9.")
        if role == "tool" and _bad_id(msg.get("tool_call_id")):
            problems.append(f"Tool call id was {msg.get('tool_call_id')} but must be a-z, A-Z, 0-9, with a length of 9.")
        if role == "assistant" and not msg.get("content") and not msg.get("tool_calls") and i != len(body["messages"]) - 1:
            problems.append(f"messages.{i}: Assistant message must have either content or tool_calls, but not none.")
    return problems


def _unknown(key: str) -> str:
    return f"body.{key}: Extra inputs are not permitted (extra_forbidden)"


DIALECT = Dialect(
    name="mistral",
    params=PARAMS,
    unknown_param=_unknown,
    check=check,
    extra_tool_choices=frozenset({"any"}),  # Mistral's word for "required"
    stream_usage="finish",
    stream_usage_always=True,
    whole_tool_call=True,
    tool_call_id=mistral_tool_id,
    tool_call_type=False,
    tool_call_content="",
    id_prefix="",
)

_ERRORS: Mapping[int, str] = {400: "invalid_request_error", 401: "unauthorized", 404: "invalid_model",
                              422: "invalid_request_error", 429: "rate_limited"}


def error_body(status: int, message: str) -> Json:
    kind = _ERRORS.get(status, "internal_server_error" if status >= 500 else "invalid_request_error")
    return {"object": "error", "message": message, "type": kind, "param": None, "code": str(1000 + status)}


PROVIDER = ProviderSpec(
    name="mistral",
    prefix="/mistral",
    api_base_path="/mistral/v1",  # litellm appends /chat/completions (and adds /v1 when missing)
    check_headers=bearer,
    error_body=error_body,
    endpoints=(chat_endpoint(DIALECT, "/v1/chat/completions"),),
)
