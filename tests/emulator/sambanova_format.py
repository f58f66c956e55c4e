"""SambaNova wire format: POST /v1/chat/completions (api.sambanova.ai/v1), OpenAI-compatible.

Quirks emulated: a narrower parameter set (top_k accepted; no logit_bias, penalties, n); usage carries
SambaNova's throughput fields (time_to_first_token, total_latency, ...); stream usage in its own chunk
when stream_options.include_usage; errors {"error": {"code", "message", "param", "type"}}.
"""

from __future__ import annotations

from . import openai_format
from .openai_compat import Dialect, bearer, chat_endpoint
from .replies import Reply
from .wire import Json, ProviderSpec

PARAMS = frozenset(
    {
        "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "stop",
        "stream", "stream_options", "tools", "tool_choice", "response_format", "parallel_tool_calls", "seed",
        "reasoning_effort", "chat_template_kwargs", "do_sample", "logprobs", "top_logprobs",
    }
)  # fmt: skip


def _throughput(reply: Reply, completion: int) -> Json:
    return {"time_to_first_token": 0.012, "total_latency": 0.05, "total_tokens_per_sec": 800.0,
            "completion_tokens_after_first_per_sec": 900.0, "completion_tokens_per_sec": 700.0,
            "start_time": 1700000000.0, "end_time": 1700000000.05, "is_last_response": True, "stop_reason": "stop"}


DIALECT = Dialect(
    name="sambanova",
    params=PARAMS,
    usage_extra=_throughput,
    envelope_extra=lambda call: {"system_fingerprint": "fastcoe"},
)

PROVIDER = ProviderSpec(
    name="sambanova",
    prefix="/sambanova",
    api_base_path="/sambanova/v1",  # litellm (openai SDK) appends /chat/completions
    check_headers=bearer,
    error_body=openai_format.error_body,
    endpoints=(chat_endpoint(DIALECT, "/v1/chat/completions"),),
)
