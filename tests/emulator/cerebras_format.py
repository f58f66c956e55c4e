"""Cerebras wire format: POST /v1/chat/completions (api.cerebras.ai/v1), OpenAI-compatible.

Quirks emulated: a narrower parameter set (no logit_bias, presence/frequency penalties, n); answers
carry `time_info`; usage (and time_info) ride on the finish chunk of every stream, asked or not;
errors at top level {"message", "type", "param", "code"}.
"""

from __future__ import annotations

from .openai_compat import Dialect, StreamPoint, bearer, chat_endpoint
from .replies import Reply
from .wire import Call, Json, ProviderSpec

PARAMS = frozenset(
    {
        "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "stream",
        "stream_options", "seed", "tools", "tool_choice", "response_format", "user", "logprobs", "top_logprobs",
        "parallel_tool_calls", "reasoning_effort", "service_tier", "prediction", "clear_thinking",
    }
)  # fmt: skip
TIME_INFO = {"queue_time": 0.0001, "prompt_time": 0.0002, "completion_time": 0.0012, "total_time": 0.0031}


def _decorate_response(call: Call, reply: Reply, payload: Json) -> None:
    payload["time_info"] = {**TIME_INFO, "created": payload["created"]}


def _decorate_chunk(call: Call, reply: Reply, chunk: Json, at: StreamPoint) -> None:
    if at.final:
        chunk["time_info"] = {**TIME_INFO, "created": chunk["created"]}


DIALECT = Dialect(
    name="cerebras",
    params=PARAMS,
    stream_usage="finish",
    stream_usage_always=True,
    usage_extra=lambda reply, completion: {"prompt_tokens_details": {"cached_tokens": 0}},
    envelope_extra=lambda call: {"system_fingerprint": "fp_emulator"},
    decorate_response=_decorate_response,
    decorate_chunk=_decorate_chunk,
)


def error_body(status: int, message: str) -> Json:
    kind = {400: "invalid_request_error", 401: "invalid_request_error", 404: "not_found_error",
            429: "too_many_requests_error"}.get(status, "server_error")
    return {"message": message, "type": kind, "param": "", "code": str(status)}


PROVIDER = ProviderSpec(
    name="cerebras",
    prefix="/cerebras",
    api_base_path="/cerebras/v1",  # litellm (openai SDK) appends /chat/completions
    check_headers=bearer,
    error_body=error_body,
    endpoints=(chat_endpoint(DIALECT, "/v1/chat/completions"),),
)
