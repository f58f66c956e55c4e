"""Fireworks AI wire format: POST /inference/v1/chat/completions (api.fireworks.ai/inference/v1).

Quirks emulated: Fireworks' extra fields accepted (top_k, prompt_truncate_len, min_p, ...); tool_choice
"any" (Fireworks' "required", as litellm sends it); model names
are account paths ("accounts/fireworks/models/..."); in a stream with include_usage the usage rides on
the finish-reason chunk; errors {"error": {"object": "error", "type", "message"}}.
"""

from __future__ import annotations

from .openai_compat import OPENAI_PARAMS, Dialect, bearer, chat_endpoint
from .wire import Json, ProviderSpec

PARAMS = OPENAI_PARAMS | {
    "top_k", "min_p", "typical_p", "repetition_penalty", "prompt_truncate_len", "context_length_exceeded_behavior",
    "mirostat_lr", "mirostat_target", "echo", "raw_output", "perf_metrics_in_response", "reasoning_history",
    "prompt_cache_isolation_key", "speculation", "functions", "function_call",
}  # fmt: skip


def check(body: Json) -> list[str]:
    model = body.get("model")
    if isinstance(model, str) and not model.startswith("accounts/"):
        return [f"Model not found, inaccessible, and/or not deployed: {model} (expected accounts/<account>/models/<name>)"]
    return []


DIALECT = Dialect(name="fireworks", params=PARAMS, check=check, stream_usage="finish", id_prefix="",
                  extra_tool_choices=frozenset({"any"}))  # Fireworks' word for "required"


def error_body(status: int, message: str) -> Json:
    kind = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
            429: "rate_limit_error"}.get(status, "internal_server_error")
    return {"error": {"object": "error", "type": kind, "message": message}}


PROVIDER = ProviderSpec(
    name="fireworks",
    prefix="/fireworks",
    api_base_path="/fireworks/inference/v1",  # litellm appends /chat/completions
    check_headers=bearer,
    error_body=error_body,
    endpoints=(chat_endpoint(DIALECT, "/inference/v1/chat/completions"),),
)
