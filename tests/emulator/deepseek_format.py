"""DeepSeek wire format: POST /chat/completions (also /v1/... and /beta/...; api.deepseek.com).

Quirks emulated: usage carries prompt_cache_hit_tokens / prompt_cache_miss_tokens; in a stream with
stream_options.include_usage the usage rides on the finish-reason chunk (not a separate choices-[]
chunk as OpenAI sends); ids are UUIDs; errors in OpenAI's shape.
"""

from __future__ import annotations

import uuid

from . import openai_format
from .openai_compat import Dialect, bearer, chat_endpoint
from .replies import Reply
from .wire import Call, Json, ProviderSpec

PARAMS = frozenset(
    {
        "model", "messages", "frequency_penalty", "max_tokens", "presence_penalty", "response_format", "stop",
        "stream", "stream_options", "temperature", "top_p", "tools", "tool_choice", "logprobs", "top_logprobs",
        "thinking", "reasoning_effort", "user", "parallel_tool_calls", "n", "seed",
    }
)  # fmt: skip


def _cache(reply: Reply, completion: int) -> Json:
    return {"prompt_tokens_details": {"cached_tokens": 0}, "prompt_cache_hit_tokens": 0,
            "prompt_cache_miss_tokens": reply.prompt_tokens}


def _decorate_response(call: Call, reply: Reply, payload: Json) -> None:
    payload["id"] = str(uuid.UUID(int=call.seq))


DIALECT = Dialect(
    name="deepseek",
    params=PARAMS,
    stream_usage="finish",
    usage_extra=_cache,
    envelope_extra=lambda call: {"system_fingerprint": "fp_emulator_prod0820_fp8_kvcache"},
    decorate_response=_decorate_response,
    id_prefix="",
)

PROVIDER = ProviderSpec(
    name="deepseek",
    prefix="/deepseek",
    api_base_path="/deepseek",  # litellm appends /chat/completions (default https://api.deepseek.com/beta)
    check_headers=bearer,
    error_body=openai_format.error_body,
    endpoints=tuple(chat_endpoint(DIALECT, p) for p in ("/chat/completions", "/v1/chat/completions", "/beta/chat/completions")),
)
