"""Call a route's targets in order with immediate retries and fallbacks, recording every attempt.

We call ``litellm.acompletion`` per target instead of using litellm's Router: the Router's default
retry back-off costs ~5 s per fallback here, and we need each attempt's outcome for ``_routing``
and the trace anyway. Retries and fallbacks are immediate; the failure table is in
:mod:`opentracy.routing.failover`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable, Mapping

import httpx
import litellm

from opentracy.routing.aliases import Route, Target
from opentracy.routing.direct import DirectOpenAI
from opentracy.routing.failover import Failure, classify
from opentracy.routing.provider_fixes import prepare_call


DEFAULT_TIMEOUT = 600.0  # seconds per attempt, litellm's own default
DEADLINE_GRACE = 1.0  # the provider client's timeout should fire first, with its own error


@dataclass(slots=True)
class Attempt:
    """One call to one target; serialised into ``_routing.attempts`` and the trace."""

    model: str
    provider: str
    status: str  # "ok" or "error"
    latency_ms: float
    error: str | None = None
    http_status: int | None = None

    def public(self) -> dict[str, Any]:
        return {"model": self.model, "status": self.status, "error": self.error,
                "latency_ms": round(self.latency_ms, 3), "http_status": self.http_status}


@dataclass(slots=True)
class RouteOutcome:
    """What the route produced: a response (or an open stream) or the last failure."""

    route: Route
    attempts: list[Attempt] = field(default_factory=list)
    target: Target | None = None
    response: Any = None  # litellm ModelResponse / EmbeddingResponse, or a dict from the direct path
    stream: AsyncIterator[Any] | None = None
    first_chunk: Any = None  # already pulled from ``stream`` so failures before it can fall back
    failure: Failure | None = None

    @property
    def fallback_used(self) -> bool:
        return self.target is not None and bool(self.route.targets) and self.target is not self.route.targets[0]


class Router:
    """Runs routes; holds only immutable settings, so one instance serves all requests."""

    def __init__(self, *, num_retries: int, timeout: float | None, drop_params: bool,
                 connect_timeout: float = 10.0, scrub: Callable[[str], str] = str,
                 direct: DirectOpenAI | None = None) -> None:
        self._scrub = scrub  # removes provider/engine keys from upstream error text (some echo them)
        self._direct = direct  # OpenAI-format upstreams without litellm's per-call work (routing/direct.py)
        self._num_retries = num_retries
        self._timeout = timeout or DEFAULT_TIMEOUT
        self._connect_timeout = connect_timeout
        self._drop_params = drop_params

    async def complete(self, route: Route, request: Mapping[str, Any], *, stream: bool) -> RouteOutcome:
        """Chat completion over the route's targets."""
        return await self._run(route, request, "chat", stream)

    async def embed(self, route: Route, request: Mapping[str, Any]) -> RouteOutcome:
        return await self._run(route, request, "embedding", False)

    async def _run(self, route: Route, request: Mapping[str, Any], kind: str, stream: bool) -> RouteOutcome:
        outcome = RouteOutcome(route)
        for target in route.targets:
            for _ in range(1 + self._num_retries):
                started = time.perf_counter()
                try:
                    # A hard deadline per attempt (for a stream: until its first chunk), whatever
                    # the provider's client does with its own timeout.
                    deadline = float(target.params.get("timeout") or self._timeout) + DEADLINE_GRACE
                    async with asyncio.timeout(deadline):  # no extra task per attempt, unlike wait_for
                        await self._call(outcome, target, request, kind, stream)
                except Exception as exc:  # every upstream failure is classified, none escapes
                    failure = _explain_missing_credentials(classify(exc), target)
                    failure = dataclasses.replace(failure, message=self._scrub(failure.message))
                    outcome.failure = failure
                    outcome.attempts.append(Attempt(
                        target.model, target.provider, "error", _ms_since(started),
                        f"{failure.kind}: {failure.message}", failure.upstream_status))
                    if not failure.try_next:
                        return outcome
                    if not failure.retry_same:
                        break
                    continue
                outcome.attempts.append(Attempt(target.model, target.provider, "ok", _ms_since(started)))
                outcome.target, outcome.failure = target, None
                return outcome
        return outcome

    async def _call(self, outcome: RouteOutcome, target: Target, request: Mapping[str, Any], kind: str,
                    stream: bool) -> None:
        if kind == "chat" and self._direct is not None:
            call = await self._direct.prepare({**target.params, **request}, provider=target.provider, stream=stream,
                                              timeout=self._timeout, connect_timeout=self._connect_timeout)
            if call is not None:
                if stream:
                    await _open_stream(outcome, await self._direct.stream(call))
                else:
                    outcome.response = await self._direct.complete(call)
                return
        kwargs: dict[str, Any] = {**target.params, **request, "model": target.model,
                                  "max_retries": 0, "num_retries": 0}
        if kind == "chat":
            kwargs = prepare_call(target.provider, kwargs)
        if self._drop_params:
            kwargs.setdefault("drop_params", True)
        kwargs.setdefault("timeout", httpx.Timeout(self._timeout, connect=self._connect_timeout))
        if kind == "embedding":
            outcome.response = await litellm.aembedding(**kwargs)
            return
        if not stream:
            outcome.response = await litellm.acompletion(**kwargs)
            return
        # Exact usage (and so cost) for every stream; litellm's stream wrapper honours this for all
        # providers, even those whose own API has no such option (it is not sent to them).
        kwargs["stream_options"] = {"include_usage": True}
        await _open_stream(outcome, await litellm.acompletion(**kwargs, stream=True))


async def _open_stream(outcome: RouteOutcome, stream: Any) -> None:
    """Pull the first chunk inside the attempt: most providers report errors only once the stream is
    read, and until a chunk reaches the client we can still fall back."""
    iterator = aiter(stream)
    try:
        outcome.first_chunk = await anext(iterator)
    except StopAsyncIteration:
        outcome.first_chunk = None
    outcome.stream = iterator


def _explain_missing_credentials(failure: Failure, target: Target) -> Failure:
    """litellm reports a missing provider key in provider-specific ways (a 500 for OpenAI, a 401 for
    Anthropic); say plainly which variable the engine's environment lacks."""
    text = failure.message.lower()
    if "api_key" in target.params or not any(w in text for w in ("credential", "api key", "api_key")):
        return failure
    try:
        missing = litellm.validate_environment(model=target.model).get("missing_keys") or []
    except Exception:
        return failure
    if not missing:
        return failure
    return dataclasses.replace(
        failure, kind="upstream_auth", retry_same=False, client_status=502, client_type="upstream_error",
        client_code="upstream_auth",
        message=f"no credentials for provider {target.provider}: set {' or '.join(missing)} in the engine's "
                f"environment, or api_key in the model's litellm_params")


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0

