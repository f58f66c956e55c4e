"""Together AI wire format: POST /v1/chat/completions (api.together.xyz/v1), OpenAI-compatible.

Quirks emulated: extra sampling fields accepted (top_k, repetition_penalty, min_p, ...); stream chunks
carry `choices[].text` beside `delta` (with `token_id`), the finish chunk says finish_reason "eos"
(not "stop") and carries usage on every stream; non-streamed answers say "stop"; a `prompt: []` field
on answers; errors {"id", "error": {"message", "type", "param", "code"}}.
"""

from __future__ import annotations

from . import openai_format
from .openai_compat import OPENAI_FINISH, OPENAI_PARAMS, Dialect, StreamPoint, bearer, chat_endpoint
from .replies import Reply
from .wire import Call, Json, ProviderSpec

PARAMS = OPENAI_PARAMS | {
    "top_k", "repetition_penalty", "min_p", "echo", "safety_model", "context_length_exceeded_behavior",
    "reasoning", "chat_template_kwargs", "function_call", "functions",
}  # fmt: skip


def _decorate_response(call: Call, reply: Reply, payload: Json) -> None:
    payload["prompt"] = []


def _decorate_chunk(call: Call, reply: Reply, chunk: Json, at: StreamPoint) -> None:
    choice = chunk["choices"][0]
    choice["text"] = choice["delta"].get("content") or ""
    choice["seed"] = None
    choice["delta"] = {"token_id": 1000 + at.index, "role": "assistant", "content": choice["text"],
                       "tool_calls": choice["delta"].get("tool_calls")}


DIALECT = Dialect(
    name="together",
    params=PARAMS,
    stream_finish={**OPENAI_FINISH, "stop": "eos"},
    stream_usage="finish",
    stream_usage_always=True,
    decorate_response=_decorate_response,
    decorate_chunk=_decorate_chunk,
    id_prefix="",
)


def error_body(status: int, message: str) -> Json:
    return {"id": "emu-error", **openai_format.error_body(status, message)}


PROVIDER = ProviderSpec(
    name="together",
    prefix="/together",
    api_base_path="/together/v1",  # litellm appends /chat/completions (default https://api.together.ai/v1)
    check_headers=bearer,
    error_body=error_body,
    endpoints=(chat_endpoint(DIALECT, "/v1/chat/completions"),),
)
