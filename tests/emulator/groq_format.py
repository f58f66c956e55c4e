"""Groq wire format: POST /openai/v1/chat/completions (api.groq.com/openai/v1), OpenAI-compatible.

Quirks emulated: `logprobs`/`logit_bias`/`top_logprobs` and n > 1 rejected; an assistant message
carrying a null field (e.g. "function_call": null) rejected (litellm strips them, issue #5839);
usage carries Groq's timing fields; `x_groq` {id} on the first chunk and {id, usage} on the finish
chunk; the usage chunk only when stream_options.include_usage; tool calls streamed whole in one
delta; `service_tier: "on_demand"`; errors {"error": {"message", "type", "code"}}.
"""

from __future__ import annotations

from collections.abc import Mapping

from .openai_compat import OPENAI_PARAMS, Dialect, StreamPoint, bearer, chat_endpoint
from .replies import Reply
from .wire import Call, Json, ProviderSpec

UNSUPPORTED = ("logprobs", "logit_bias", "top_logprobs")
PARAMS = (OPENAI_PARAMS - {"audio", "modalities", "prediction", "store", "web_search_options", "verbosity",
                           "prompt_cache_key", "prompt_cache_retention", "safety_identifier", "functions",
                           "function_call"}) | {"reasoning_format", "include_reasoning", "search_settings",
                                                "documents", "citation_options", "compound_custom"}


def check(body: Json) -> list[str]:
    problems = [f"`{k}` is not supported with this model" for k in UNSUPPORTED if body.get(k) not in (None, False)]
    if body.get("n") not in (None, 1):
        problems.append("'n' : number must be at most 1")
    for i, msg in enumerate(body["messages"]):
        if isinstance(msg, dict) and msg.get("role") == "assistant":
            nulls = sorted(k for k, v in msg.items() if v is None and k != "content")
            if nulls:
                problems.append(f"'messages.{i}' : for 'role:assistant' the following must be satisfied"
                                f"[{', '.join(f'messages.{i}.{k} : value must be set, not null' for k in nulls)}]")
    return problems


def _timing(reply: Reply, completion: int = 0) -> Json:
    return {"queue_time": 0.0123, "prompt_time": 0.0011, "completion_time": 0.0207, "total_time": 0.0218}


def _x_groq(call: Call) -> Json:
    return {"id": f"req_emu{call.seq:020d}"}


def _decorate_response(call: Call, reply: Reply, payload: Json) -> None:
    payload["usage_breakdown"] = None
    payload["x_groq"] = {**_x_groq(call), "seed": 1}


def _decorate_chunk(call: Call, reply: Reply, chunk: Json, at: StreamPoint) -> None:
    if at.index == 0:
        chunk["x_groq"] = _x_groq(call)
    elif at.final:
        usage = {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens,
                 "total_tokens": reply.prompt_tokens + reply.completion_tokens, **_timing(reply)}
        chunk["x_groq"] = {**_x_groq(call), "usage": usage}


DIALECT = Dialect(
    name="groq",
    params=PARAMS,
    unknown_param=lambda k: f"property '{k}' is unsupported",
    check=check,
    whole_tool_call=True,
    usage_extra=_timing,
    envelope_extra=lambda call: {"system_fingerprint": "fp_emulator", "service_tier": "on_demand"},
    decorate_response=_decorate_response,
    decorate_chunk=_decorate_chunk,
)

_ERRORS: Mapping[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None), 401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "model_not_found"), 413: ("invalid_request_error", "request_too_large"),
    429: ("tokens", "rate_limit_exceeded"), 498: ("flex_tier_capacity_exceeded", None),
}


def error_body(status: int, message: str) -> Json:
    kind, code = _ERRORS.get(status, ("internal_server_error", None))
    error: Json = {"message": message, "type": kind}
    if code:
        error["code"] = code
    return {"error": error}


PROVIDER = ProviderSpec(
    name="groq",
    prefix="/groq",
    api_base_path="/groq/openai/v1",  # litellm appends /chat/completions (default https://api.groq.com/openai/v1)
    check_headers=bearer,
    error_body=error_body,
    request_id_header="x-request-id",
    endpoints=(chat_endpoint(DIALECT, "/openai/v1/chat/completions"),),
)
