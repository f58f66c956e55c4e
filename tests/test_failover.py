"""The failover table in docs/architecture.md, row by row, against litellm's real exception classes."""

from __future__ import annotations

import asyncio

import litellm
import pytest

from opentracy.routing.failover import classify

ARGS = {"message": "boom", "llm_provider": "openai", "model": "gpt-4o"}


def make(cls: type, **extra: object) -> BaseException:
    """An instance as litellm raises it (constructors differ by class)."""
    if cls is litellm.APIConnectionError:
        return cls(message="connection reset", llm_provider="openai", model="gpt-4o")
    if cls in (litellm.BadRequestError, litellm.ContextWindowExceededError, litellm.ContentPolicyViolationError,
               litellm.UnsupportedParamsError):
        return cls(**ARGS)
    if cls in (litellm.PermissionDeniedError, litellm.UnprocessableEntityError):
        import httpx

        status = 403 if cls is litellm.PermissionDeniedError else 422
        return cls(response=httpx.Response(status, request=httpx.Request("POST", "http://x")), **ARGS)
    if cls is litellm.APIError:
        return cls(status_code=extra.get("status_code", 500), **ARGS)  # type: ignore[arg-type]
    return cls(**ARGS)


@pytest.mark.parametrize("cls, retry_same, try_next, client_status", [
    (litellm.Timeout, True, True, 504),
    (litellm.RateLimitError, True, True, 429),
    (litellm.APIConnectionError, True, True, 502),
    (litellm.InternalServerError, True, True, 502),
    (litellm.ServiceUnavailableError, True, True, 502),
    (litellm.BadGatewayError, True, True, 502),
    (litellm.AuthenticationError, False, True, 502),
    (litellm.PermissionDeniedError, False, True, 502),
    (litellm.NotFoundError, False, True, 404),
    (litellm.ContextWindowExceededError, False, True, 400),
    (litellm.ContentPolicyViolationError, False, True, 400),
    (litellm.BadRequestError, False, False, 400),
    (litellm.UnprocessableEntityError, False, False, 400),
    (litellm.UnsupportedParamsError, False, False, 400),
])
def test_litellm_exception_classes(cls: type, retry_same: bool, try_next: bool, client_status: int) -> None:
    failure = classify(make(cls))
    assert (failure.retry_same, failure.try_next, failure.client_status) == (retry_same, try_next, client_status)


@pytest.mark.parametrize("status, try_next, client_status", [
    (408, True, 504), (409, True, 502), (429, True, 429), (500, True, 502), (503, True, 502),
    (400, False, 400), (422, False, 400),
])
def test_unrecognised_errors_go_by_status(status: int, try_next: bool, client_status: int) -> None:
    failure = classify(make(litellm.APIError, status_code=status))
    assert (failure.try_next, failure.client_status) == (try_next, client_status)


def test_unknown_exceptions_move_on_and_mid_stream_cuts_are_server_errors() -> None:
    assert classify(RuntimeError("weird")).try_next
    assert classify(asyncio.TimeoutError()).client_status == 504
    from litellm.exceptions import MidStreamFallbackError

    cut = MidStreamFallbackError(message="cut", model="gpt-4o", llm_provider="openai")
    assert classify(cut).client_status == 502


def test_messages_drop_litellm_banners() -> None:
    failure = classify(litellm.RateLimitError(message="slow down\nReceived Model Group=x", llm_provider="openai",
                                              model="gpt-4o"))
    assert "Received Model Group" not in failure.message and "slow down" in failure.message
