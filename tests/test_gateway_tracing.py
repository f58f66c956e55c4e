"""GatewayTracer, the gateway's side of tracing, against the real embedded engine (chDB).

The end-to-end behaviour (one trace per request, through a running engine) is in tests/test_traces.py;
this file holds what a running engine cannot be made to show on demand.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

from opentracy.config import load_settings
from opentracy.gateway.errors import APIError
from opentracy.gateway.extras import RequestContext
from opentracy.routing.aliases import Route, Target
from opentracy.routing.router import Attempt, RouteOutcome
from opentracy.tracing.gateway import GatewayTracer

def test_a_gateway_record_that_cannot_be_built_is_counted_not_lost_silently(tmp_path: Path) -> None:
    """The trace process builds each record from the event the gateway's hook pickled; one whose
    build raises (here an upstream's usage that is not a number) must not surface on the event loop
    or take other records with it: the writer counts it as ``unencodable`` and stores the others."""
    tracer = GatewayTracer.open(load_settings(None, environ={"OPENTRACY_DATA_DIR": str(tmp_path)}))
    target = Target("demo", {"model": "openai/demo"}, "openai")
    outcome = RouteOutcome(Route("demo", None, (target,)), [Attempt("openai/demo", "openai", "ok", 1.0)], target)
    payload = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
    odd = {"choices": [{"message": {"content": "hello"}, "finish_reason": "stop"}], "usage": {"prompt_tokens": "many"}}
    good = dict(odd, usage={"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8})
    kept, lost = RequestContext("demo"), RequestContext("demo")

    async def serve() -> None:
        tracer.answered(lost, outcome, payload, odd)
        tracer.answered(kept, outcome, payload, good)
        tracer.auth_failed(RequestContext("demo"), APIError(401, "bad key"))

    loop = asyncio.new_event_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    try:
        loop.run_until_complete(serve())
    finally:
        loop.close()
    try:
        assert tracer.flush()
        stats = tracer.stats()
        assert errors == []
        assert (stats["written"], stats["dropped_unencodable"]) == (2, 1)
        assert tracer.store.get_trace(kept.trace_id) is not None and tracer.store.get_trace(lost.trace_id) is None
    finally:
        tracer.close()


def test_an_unpicklable_value_in_a_request_is_stored_as_text_and_noted(tmp_path: Path) -> None:
    """The hook pickles what the trace needs; an object pickle refuses (a provider SDK's handle in a
    tool call) must not cost the trace: it is stored as JSON-safe text and the fix is listed."""
    tracer = GatewayTracer.open(load_settings(None, environ={"OPENTRACY_DATA_DIR": str(tmp_path)}))
    target = Target("demo", {"model": "openai/demo"}, "openai")
    outcome = RouteOutcome(Route("demo", None, (target,)), [Attempt("openai/demo", "openai", "ok", 1.0)], target)
    payload = {"model": "demo", "messages": [{"role": "user", "content": "hi"}]}
    answer = {"choices": [{"message": {"content": "hello", "tool_calls": [{"handle": threading.Lock()}]},
                           "finish_reason": "tool_calls"}]}
    ctx = RequestContext("demo")
    try:
        tracer.answered(ctx, outcome, payload, answer)
        assert tracer.flush()
        stored = tracer.store.get_trace(ctx.trace_id)
        assert stored is not None
        assert (stored["response"], stored["messages"]) == ("hello", payload["messages"])
        assert stored["tool_calls"] == [{"handle": "<unencodable: lock>"}]
        assert any("shipping" in problem and "lock" in problem for problem in stored["encoding_errors"])
    finally:
        tracer.close()
