"""Which upstream failures move on to the next target, and what the client sees if all fail.

One table, so the behaviour is documented in one place (docs/architecture.md repeats it) and
tested case by case. Classification goes by litellm's exception class first (litellm already maps
each provider's errors onto OpenAI's classes), then by HTTP status for anything unrecognised.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
import httpx
import litellm
import openai


@dataclass(frozen=True, slots=True)
class Failure:
    """A classified upstream failure."""

    kind: str  # short name: rate_limit, timeout, connection, server, auth, not_found, ...
    upstream_status: int | None
    retry_same: bool  # worth retrying the same target (router_settings.num_retries)
    try_next: bool  # worth moving to the next target
    client_status: int  # status returned if this is the last failure
    client_type: str  # OpenAI error ``type``
    client_code: str
    message: str


@dataclass(frozen=True, slots=True)
class Rule:
    kind: str
    retry_same: bool
    try_next: bool
    client_status: int
    client_type: str


# Order matters: subclasses before their bases (ContextWindowExceededError is a BadRequestError).
RULES: tuple[tuple[type[BaseException], Rule], ...] = (
    (litellm.ContextWindowExceededError, Rule("context_window", False, True, 400, "invalid_request_error")),
    (litellm.ContentPolicyViolationError, Rule("content_policy", False, True, 400, "invalid_request_error")),
    (litellm.Timeout, Rule("timeout", True, True, 504, "timeout_error")),
    (asyncio.TimeoutError, Rule("timeout", True, True, 504, "timeout_error")),
    (litellm.RateLimitError, Rule("rate_limit", True, True, 429, "rate_limit_error")),
    (litellm.AuthenticationError, Rule("upstream_auth", False, True, 502, "upstream_error")),
    (litellm.PermissionDeniedError, Rule("upstream_auth", False, True, 502, "upstream_error")),
    (litellm.NotFoundError, Rule("not_found", False, True, 404, "invalid_request_error")),
    (litellm.UnsupportedParamsError, Rule("unsupported_params", False, False, 400, "invalid_request_error")),
    (litellm.UnprocessableEntityError, Rule("bad_request", False, False, 400, "invalid_request_error")),
    (litellm.BadRequestError, Rule("bad_request", False, False, 400, "invalid_request_error")),
    (litellm.APIConnectionError, Rule("connection", True, True, 502, "upstream_error")),
    (litellm.ServiceUnavailableError, Rule("server", True, True, 502, "upstream_error")),
    (litellm.BadGatewayError, Rule("server", True, True, 502, "upstream_error")),
    (litellm.InternalServerError, Rule("server", True, True, 502, "upstream_error")),
)

# Fallback by upstream status when the exception class says nothing more specific.
STATUS_RULES: dict[int, Rule] = {
    408: Rule("timeout", True, True, 504, "timeout_error"),
    409: Rule("conflict", True, True, 502, "upstream_error"),
    429: Rule("rate_limit", True, True, 429, "rate_limit_error"),
}
SERVER_ERROR = Rule("server", True, True, 502, "upstream_error")
CONNECTION = Rule("connection", True, True, 502, "upstream_error")
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError, httpx.TransportError, openai.APIConnectionError, aiohttp.ClientConnectionError,
    aiohttp.ClientPayloadError,
)
CLIENT_ERROR = Rule("bad_request", False, False, 400, "invalid_request_error")


def classify(exc: BaseException) -> Failure:
    """Classify an exception raised by a litellm call."""
    status = _upstream_status(exc)
    rule = next((r for cls, r in RULES if isinstance(exc, cls)), None)
    if rule is not None and rule.kind == "server" and _caused_by_connection_failure(exc):
        # litellm reports "connection refused/reset" from the OpenAI client as a 500
        # InternalServerError; name it for what it is.
        rule = CONNECTION
    if rule is None:
        if status in STATUS_RULES:
            rule = STATUS_RULES[status]
        elif status is not None and 400 <= status < 500:
            rule = CLIENT_ERROR
        else:
            rule = SERVER_ERROR  # unknown errors: a different provider may well succeed
    return Failure(
        kind=rule.kind,
        upstream_status=status,
        retry_same=rule.retry_same,
        try_next=rule.try_next,
        client_status=rule.client_status,
        client_type=rule.client_type,
        client_code=rule.kind,
        message=_message_of(exc),
    )


def _caused_by_connection_failure(exc: BaseException) -> bool:
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        if isinstance(current, CONNECTION_ERRORS):
            return True
        original = getattr(current, "original_exception", None)
        current = original if isinstance(original, BaseException) else (current.__cause__ or current.__context__)
        seen += 1
    return False


def _upstream_status(exc: BaseException) -> int | None:
    """The HTTP status the provider sent. litellm re-raises provider errors as its own classes and
    sometimes changes the status on the way (Bedrock's 500 becomes ServiceUnavailableError 503,
    exception_mapping_utils.py _map_bedrock_exception); the provider's exception stays in the chain
    (__cause__ / __context__), so take the innermost status there."""
    status, node, seen = None, exc, set()
    while node is not None and id(node) not in seen:
        seen.add(id(node))
        code = getattr(node, "status_code", None)
        if isinstance(code, int) and not isinstance(code, bool):
            status = code
        node = node.__cause__ or node.__context__
    return status


def _message_of(exc: BaseException) -> str:
    """A one-line message without litellm's decorations (doc links, provider list banners)."""
    text = str(getattr(exc, "message", "") or exc) or type(exc).__name__
    text = text.split("\nReceived Model Group")[0].split(" LiteLLM Retried:")[0]
    text = " ".join(text.split())
    return text[:1000]
