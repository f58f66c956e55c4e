"""Admin routes: read traces through the running server (which holds the embedded store)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool

from opentracy.gateway.errors import APIError
from opentracy.gateway.extras import RequestContext
from opentracy.gateway.schemas import error_responses
from opentracy.store import AmbiguousTraceIdError
from opentracy.tracing.reader import jsonable, parse_since

router = APIRouter(prefix="/admin")


def _store(request: Request) -> Any:
    engine = request.app.state.engine
    ctx = RequestContext(requested_model="")
    try:
        engine.keys.authenticate(request.headers.get("authorization"), request.headers.get("x-api-key"),
                                 admin=True)
    except APIError as exc:
        request.app.state.tracer.auth_failed(ctx, exc)
        raise
    store = getattr(request.app.state.tracer, "store", None)
    if store is None:
        raise APIError(404, "Tracing is off on this engine (OPENTRACY_TRACING=false).", code="tracing_disabled")
    return store


@router.get("/traces", responses=error_responses(400, 401, 403, 404))
async def list_traces(request: Request, last: int = Query(20, ge=0, le=10_000), alias: str | None = None,
                      model: str | None = None, status: str | None = None,
                      since: str | None = None) -> dict[str, Any]:
    store = _store(request)
    try:
        window = parse_since(since) if since else None
    except ValueError as exc:
        raise APIError(400, str(exc), param="since") from None
    rows = await run_in_threadpool(store.query_traces, last, alias, model, status, window)
    return {"object": "list", "data": [jsonable(r) for r in rows]}


@router.get("/traces/{trace_id}", responses=error_responses(400, 401, 403, 404))
async def show_trace(request: Request, trace_id: str) -> dict[str, Any]:
    store = _store(request)
    try:
        row = await run_in_threadpool(store.get_trace, trace_id)
    except AmbiguousTraceIdError as exc:
        raise APIError(400, str(exc), param="trace_id", code="ambiguous_trace_id") from None
    except ValueError as exc:
        raise APIError(400, str(exc), param="trace_id") from None
    if row is None:
        raise APIError(404, f"No trace {trace_id!r}.", param="trace_id", code="trace_not_found")
    return jsonable(row)
