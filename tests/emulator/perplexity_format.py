"""Perplexity wire format: POST /chat/completions (api.perplexity.ai), OpenAI-like search answers.

Quirks emulated: no tools; search fields accepted (search_domain_filter, return_images, ...); after
the system message(s) user and assistant turns must alternate and the last one is the user's; answers
carry `citations` (URLs) and `search_results`, usage carries search_context_size / num_search_queries
/ citation_tokens and Perplexity's own bill `cost` {input_tokens_cost, output_tokens_cost, request_cost,
total_cost} (the request fee is part of the price: `reported_cost`); stream chunks say object "chat.completion", carry the whole
message so far beside the delta, and cumulative usage, citations and search_results on every chunk;
errors {"error": {"message", "type", "code"}}.
"""

from __future__ import annotations

from .openai_compat import Dialect, StreamPoint, bearer, chat_endpoint
from .replies import Reply
from .wire import Call, Json, ProviderSpec

PARAMS = frozenset(
    {
        "model", "messages", "max_tokens", "temperature", "top_p", "top_k", "stream", "presence_penalty",
        "frequency_penalty", "response_format", "search_domain_filter", "return_images", "return_related_questions",
        "search_recency_filter", "search_after_date_filter", "search_before_date_filter", "web_search_options",
        "search_mode", "reasoning_effort", "disable_search", "enable_search_classifier", "language_preference",
        "stream_mode", "last_updated_after_filter", "last_updated_before_filter", "image_domain_filter",
        "image_format_filter", "max_completion_tokens",
    }
)  # fmt: skip
CITATIONS = ["https://example.com/emulator/source-1", "https://example.org/emulator/source-2"]
SEARCH_RESULTS = [{"title": "Emulator source one", "url": CITATIONS[0], "date": "2025-01-01"},
                  {"title": "Emulator source two", "url": CITATIONS[1], "date": None}]


def check(body: Json) -> list[str]:
    roles = [m.get("role") for m in body["messages"] if isinstance(m, dict)]
    rest = roles[next((i for i, r in enumerate(roles) if r != "system"), len(roles)):]
    if any(r not in ("user", "assistant") for r in rest):
        return ["After the (optional) system message(s), only user and assistant roles are allowed"]
    if any(a == b for a, b in zip(rest, rest[1:])) or (rest and rest[0] != "user"):
        return ["After the (optional) system message(s), user and assistant roles should be alternating."]
    if rest and rest[-1] != "user":
        return ["Last message must have role `user`."]
    return []


PRICE_PER_TOKEN = 1e-06  # sonar: $1 / M input and output tokens
REQUEST_FEE = 0.005  # sonar, search_context_size "low": $5 / 1000 requests


def reported_cost(prompt_tokens: int, completion_tokens: int) -> Json:
    """Perplexity's own bill for a request, as sent in usage.cost."""
    costs = {"input_tokens_cost": round(prompt_tokens * PRICE_PER_TOKEN, 9),
             "output_tokens_cost": round(completion_tokens * PRICE_PER_TOKEN, 9), "request_cost": REQUEST_FEE}
    return {**costs, "total_cost": round(sum(costs.values()), 9)}


def _usage_extra(reply: Reply, completion: int) -> Json:
    return {"search_context_size": "low", "citation_tokens": 0, "num_search_queries": 1,
            "cost": reported_cost(reply.prompt_tokens, completion)}


def _decorate_response(call: Call, reply: Reply, payload: Json) -> None:
    payload["citations"] = list(CITATIONS)
    payload["search_results"] = [dict(r) for r in SEARCH_RESULTS]
    payload["choices"][0]["delta"] = {"role": "assistant", "content": ""}


def _decorate_chunk(call: Call, reply: Reply, chunk: Json, at: StreamPoint) -> None:
    choice = chunk["choices"][0]
    choice["message"] = {"role": "assistant", "content": at.text_so_far}
    choice["delta"] = {"role": "assistant", "content": choice["delta"].get("content") or ""}
    chunk["citations"] = list(CITATIONS)
    chunk["search_results"] = [dict(r) for r in SEARCH_RESULTS]


DIALECT = Dialect(
    name="perplexity",
    params=PARAMS,
    check=check,
    tools=False,
    stream_usage="every",
    stream_usage_always=True,
    usage_extra=_usage_extra,
    decorate_response=_decorate_response,
    decorate_chunk=_decorate_chunk,
    object_chunk="chat.completion",
    id_prefix="",
)


def error_body(status: int, message: str) -> Json:
    kind = {400: "invalid_parameter", 401: "invalid_api_key", 429: "rate_limit_exceeded"}.get(status, "internal_error")
    return {"error": {"message": message, "type": kind, "code": status}}


PROVIDER = ProviderSpec(
    name="perplexity",
    prefix="/perplexity",
    api_base_path="/perplexity",  # litellm (openai SDK) appends /chat/completions
    check_headers=bearer,
    error_body=error_body,
    endpoints=(chat_endpoint(DIALECT, "/chat/completions"), chat_endpoint(DIALECT, "/v1/chat/completions")),
)
