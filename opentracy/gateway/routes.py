"""The HTTP routes: OpenAI's chat completions, embeddings and models, plus health and metrics.

Each handler: take the engine once (reload-safe) → authenticate → resolve the model → call the
route's targets → enrich with the extras → respond (JSON or SSE). Everything that goes wrong
becomes an OpenAI-shaped :class:`APIError` and a trace.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse

from opentracy import __version__
from opentracy.engine import Engine
from opentracy.gateway.errors import APIError
from opentracy.gateway.extras import RequestContext, WireJSONResponse, answer, extras_headers, routing_info
from opentracy.gateway.shadow import Shadower
from opentracy.gateway.schemas import ChatCompletionRequest, EmbeddingRequest, error_responses
from opentracy.gateway.streaming import StreamResult, stream_events
from opentracy.routing.aliases import Route, UnknownModelError
from opentracy.routing.router import RouteOutcome
from opentracy.tracing.tracer import Tracer

router = APIRouter()

# Fields we handle ourselves rather than forward as given.
NOT_FORWARDED = {"model", "stream", "stream_options"}


def _engine(request: Request) -> Engine:
    return request.app.state.engine


def _tracer(request: Request) -> Tracer:
    return request.app.state.tracer


def _authenticate(engine: Engine, request: Request, ctx: RequestContext, tracer: Tracer) -> None:
    try:
        ctx.key_name = engine.keys.authenticate(request.headers.get("authorization"),
                                                request.headers.get("x-api-key"))
    except APIError as exc:
        tracer.auth_failed(ctx, exc)
        exc.headers.update(extras_headers(ctx))
        raise


def _resolve(engine: Engine, ctx: RequestContext, tracer: Tracer, payload: dict[str, Any]) -> Route:
    try:
        return engine.resolver.resolve(ctx.requested_model, ctx.user)
    except UnknownModelError:
        served = ", ".join(engine.resolver.served_names()) or "(none configured)"
        hint = (" Provider models can also be named as litellm model strings such as 'openai/gpt-4o'."
                if engine.settings.engine.passthrough else "")
        error = APIError(404, f"The model '{ctx.requested_model}' does not exist or is not served by this "
                              f"engine. Served models: {served}.{hint}",
                         param="model", code="model_not_found", headers=extras_headers(ctx))
        tracer.rejected(ctx, error, payload)
        raise error from None


def _upstream_error(engine: Engine, ctx: RequestContext, outcome: RouteOutcome) -> APIError:
    failure = outcome.failure
    assert failure is not None
    tried = ", ".join(a.model for a in outcome.attempts)
    message = engine.scrub(f"{failure.message} (model '{ctx.requested_model}'; tried: {tried})")
    headers = extras_headers(ctx, latency_ms=ctx.latency_ms())
    return APIError(failure.client_status, message, type=failure.client_type, code=failure.client_code,
                    headers=headers, extra={"_routing": routing_info(ctx, outcome)})


CHAT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "A chat completion (JSON), or with stream=true server-sent events of chunks",
          "content": {"application/json": {"schema": {"type": "object"}},
                      "text/event-stream": {"schema": {"type": "string"}}}},
    **error_responses(400, 401, 404, 413, 429, 502, 503, 504),
}


@router.post("/v1/chat/completions", response_model=None, responses=CHAT_RESPONSES)
async def chat_completions(body: ChatCompletionRequest, request: Request) -> JSONResponse | StreamingResponse:
    engine, tracer = _engine(request), _tracer(request)
    ctx = RequestContext(requested_model=body.model, stream=bool(body.stream), user=body.user,
                         client_metadata=body.metadata)
    _authenticate(engine, request, ctx, tracer)
    payload = body.model_dump(exclude_unset=True, exclude=NOT_FORWARDED)
    limit = engine.settings.engine.max_messages
    if limit and len(body.messages) > limit:
        error = APIError(400, f"Too many messages: {len(body.messages)}; the limit is {limit} "
                              f"(OPENTRACY_MAX_MESSAGES).", param="messages", code="too_many_messages",
                         headers=extras_headers(ctx))
        tracer.rejected(ctx, error, None)
        raise error
    route = _resolve(engine, ctx, tracer, payload)

    await _take_upstream_slot(engine, ctx, tracer, payload)
    try:
        outcome = await engine.router.complete(route, payload, stream=ctx.stream)
        _raise_if_failed(engine, ctx, tracer, outcome, payload)
    except BaseException:
        engine.upstream_slots.release()
        raise
    shadower: Shadower = request.app.state.shadower
    request_body = await request.body()  # read by FastAPI already: traced as sent
    if not ctx.stream:
        engine.upstream_slots.release()
        data = answer(ctx, outcome)
        response = _json_response(ctx, data)
        tracer.answered(ctx, outcome, payload, data, request_body=request_body, answer_body=response.body)
        shadower.mirror(engine, tracer, ctx, route, payload)
        return response

    def finished(result: StreamResult) -> None:
        engine.upstream_slots.release()  # a stream holds its slot until it ends, however it ends
        tracer.stream_ended(ctx, outcome, payload, result, request_body=request_body)
        if result.status == "ok":
            shadower.mirror(engine, tracer, ctx, route, payload)

    assert outcome.target is not None
    events = stream_events(ctx, outcome, client_wants_usage=bool(body.stream_options and body.stream_options.include_usage),
                           messages=payload["messages"], scrub=engine.scrub, on_finish=finished,
                           idle_timeout=engine.settings.engine.stream_idle_timeout)
    headers = {**extras_headers(ctx, selected_model=outcome.target.model), "cache-control": "no-cache",
               "x-accel-buffering": "no"}
    return StreamingResponse(events, media_type="text/event-stream", headers=headers)


@router.post("/v1/embeddings", responses=error_responses(400, 401, 404, 413, 429, 502, 503, 504))
async def embeddings(body: EmbeddingRequest, request: Request) -> JSONResponse:
    engine, tracer = _engine(request), _tracer(request)
    ctx = RequestContext(requested_model=body.model, user=body.user)
    _authenticate(engine, request, ctx, tracer)
    payload = body.model_dump(exclude_unset=True, exclude=NOT_FORWARDED)
    route = _resolve(engine, ctx, tracer, payload)
    await _take_upstream_slot(engine, ctx, tracer, payload)
    try:
        outcome = await engine.router.embed(route, payload)
    finally:
        engine.upstream_slots.release()
    _raise_if_failed(engine, ctx, tracer, outcome, payload)
    data = answer(ctx, outcome)
    tracer.answered(ctx, outcome, payload, data, request_body=await request.body())
    return _json_response(ctx, data)


async def _take_upstream_slot(engine: Engine, ctx: RequestContext, tracer: Tracer, payload: dict[str, Any]) -> None:
    """Wait briefly for one of the engine's concurrent-upstream-call slots, else a clear 503."""
    if not engine.upstream_slots.locked():  # the common case: a free slot, taken without waiting
        await engine.upstream_slots.acquire()
        return
    try:
        async with asyncio.timeout(engine.settings.engine.upstream_queue_seconds):
            await engine.upstream_slots.acquire()
    except TimeoutError:
        error = APIError(503, "The engine is at its limit of concurrent upstream calls "
                              "(OPENTRACY_MAX_CONCURRENT_UPSTREAM); retry shortly.", type="server_error",
                         code="engine_overloaded", headers={"retry-after": "1", **extras_headers(ctx)})
        tracer.rejected(ctx, error, payload)
        raise error from None


def _raise_if_failed(engine: Engine, ctx: RequestContext, tracer: Tracer, outcome: RouteOutcome,
                     payload: dict[str, Any]) -> None:
    if outcome.failure is not None or outcome.target is None:
        error = _upstream_error(engine, ctx, outcome)
        tracer.failed(ctx, outcome, payload, error)
        raise error


def _json_response(ctx: RequestContext, data: dict[str, Any]) -> JSONResponse:
    return WireJSONResponse(data, headers=extras_headers(ctx, data["_cost"], data["_latency_ms"],
                                                         data["_routing"]["selected_model"]))


@router.get("/v1/models", responses=error_responses(401))
async def list_models(request: Request) -> dict[str, Any]:
    engine = _engine(request)
    ctx = RequestContext(requested_model="")
    _authenticate(engine, request, ctx, _tracer(request))
    created = int(request.app.state.started_at)
    data = [{"id": name, "object": "model", "created": created, "owned_by": "opentracy"}
            for name in engine.resolver.served_names()]
    return {"object": "list", "data": data}


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    engine = _engine(request)
    return {"status": "ok", "version": __version__, "models": len(engine.resolver.served_names()),
            "uptime_s": round(time.time() - request.app.state.started_at, 3),
            "tracing": _tracer(request).health()}


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(request: Request) -> str:
    return _tracer(request).prometheus() + request.app.state.shadower.prometheus()

