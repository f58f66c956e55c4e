"""Admin routes: read traces through the running server (which holds the embedded store)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from opentracy.config import ConfigError
from opentracy.gateway.errors import APIError
from opentracy.gateway.extras import RequestContext
from opentracy.gateway.reload import reload_config
from opentracy.gateway.schemas import error_responses
from opentracy.store import AmbiguousTraceIdError, analytics
from opentracy.tracing.reader import jsonable, parse_since

router = APIRouter(prefix="/admin")


def _authorize_admin(request: Request) -> None:
    engine = request.app.state.engine
    try:
        engine.keys.authenticate(request.headers.get("authorization"), request.headers.get("x-api-key"),
                                 admin=True)
    except APIError as exc:
        request.app.state.tracer.auth_failed(RequestContext(requested_model=""), exc)
        raise


async def _store(request: Request) -> Any:
    """The trace store, after writing out what is queued: a read sees every request answered before it
    (the writer otherwise batches for OPENTRACY_TRACE_FLUSH_SECONDS)."""
    _authorize_admin(request)
    tracer = request.app.state.tracer
    store = getattr(tracer, "store", None)
    if store is None:
        raise APIError(404, "Tracing is off on this engine (OPENTRACY_TRACING=false).", code="tracing_disabled")
    await run_in_threadpool(tracer.flush, 5.0)
    return store


@router.get("/traces", responses=error_responses(400, 401, 403, 404))
async def list_traces(request: Request, last: int = Query(20, ge=0, le=10_000), alias: str | None = None,
                      model: str | None = None, status: str | None = None,
                      since: str | None = None) -> dict[str, Any]:
    store = await _store(request)
    try:
        window = parse_since(since) if since else None
    except ValueError as exc:
        raise APIError(400, str(exc), param="since") from None
    rows = await run_in_threadpool(store.query_traces, last, alias, model, status, window)
    return {"object": "list", "data": [jsonable(r) for r in rows]}


@router.get("/traces/{trace_id}", responses=error_responses(400, 401, 403, 404))
async def show_trace(request: Request, trace_id: str) -> dict[str, Any]:
    store = await _store(request)
    try:
        row = await run_in_threadpool(store.get_trace, trace_id)
    except AmbiguousTraceIdError as exc:
        raise APIError(400, str(exc), param="trace_id", code="ambiguous_trace_id") from None
    except ValueError as exc:
        raise APIError(400, str(exc), param="trace_id") from None
    if row is None:
        raise APIError(404, f"No trace {trace_id!r}.", param="trace_id", code="trace_not_found")
    return jsonable(row)


@router.post("/reload", responses=error_responses(400, 401, 403))
async def reload(request: Request) -> dict[str, Any]:
    """Apply the config file as it is now; a bad config keeps the running one and says why."""
    _authorize_admin(request)
    try:
        settings = await run_in_threadpool(reload_config, request.app)
    except ConfigError as exc:
        raise APIError(400, f"config not reloaded, the running config stays: {exc}", code="invalid_config") from None
    return {"status": "reloaded", "config": str(settings.path), "aliases": list(settings.aliases),
            "models": list(settings.model_names)}


@router.get("/stats", responses=error_responses(400, 401, 403, 404))
async def stats(request: Request, by: str = "alias", since: str | None = None) -> dict[str, Any]:
    store = await _store(request)
    try:
        rows = await run_in_threadpool(analytics.stats, store, by, parse_since(since) if since else None)
    except ValueError as exc:
        raise APIError(400, str(exc)) from None
    return {"object": "list", "data": [jsonable(r) for r in rows]}


@router.get("/compare", responses=error_responses(400, 401, 403, 404))
async def compare(request: Request, alias: str, since: str | None = None) -> dict[str, Any]:
    store = await _store(request)
    try:
        rows = await run_in_threadpool(analytics.compare, store, alias, parse_since(since) if since else None)
    except ValueError as exc:
        raise APIError(400, str(exc)) from None
    return {"object": "list", "data": rows}


@router.get("/export", response_class=StreamingResponse, responses={
    200: {"description": "One full trace row per line, oldest first",
          "content": {"application/x-ndjson": {"schema": {"type": "string"}}}},
    **error_responses(400, 401, 403, 404)})
async def export_traces(request: Request, alias: str | None = None, model: str | None = None,
                        status: str | None = None, since: str | None = None) -> StreamingResponse:
    """Full trace rows as JSON lines, oldest first (``opentracy export`` turns them into examples)."""
    store = await _store(request)
    try:
        window = parse_since(since) if since else None
    except ValueError as exc:
        raise APIError(400, str(exc), param="since") from None
    rows = analytics.iter_traces(store, alias=alias, model=model, status=status, since=window)
    lines = (json.dumps(jsonable(row), ensure_ascii=False, default=str) + "\n" for row in rows)
    return StreamingResponse(iterate_in_threadpool(lines), media_type="application/x-ndjson")
