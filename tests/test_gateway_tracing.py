"""GatewayTracer, the gateway's side of tracing, against the real embedded engine (chDB).

The end-to-end behaviour (one trace per request, through a running engine) is in tests/test_traces.py;
this file holds what a running engine cannot be made to show on demand.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from opentracy.config import load_settings
from opentracy.gateway.errors import APIError
from opentracy.gateway.extras import RequestContext
from opentracy.routing.aliases import Route, Target
from opentracy.routing.router import Attempt, RouteOutcome
from opentracy.store import TraceStore
from opentracy.tracing.gateway import GatewayTracer
from tests.conftest import database_store_fixture, empty_store_fixture

shared_store = database_store_fixture("test_gateway_tracing")


store = empty_store_fixture()


def test_a_gateway_record_that_cannot_be_built_is_counted_not_lost_silently(store: TraceStore,
                                                                              tmp_path: Path) -> None:
    """The gateway builds records on the event loop after answering; one whose builder raises (here an
    upstream's usage that is not a number) must not surface as asyncio's "Exception in callback" or
    take other records with it: the writer tries it once more and counts it as ``unencodable``."""
    tracer = GatewayTracer(load_settings(None, environ={"OPENTRACY_DATA_DIR": str(tmp_path)}), store)
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
        await asyncio.sleep(0.2)  # the batch is encoded on the loop (ENCODE_DELAY)

    loop = asyncio.new_event_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    try:
        loop.run_until_complete(serve())
    finally:
        loop.close()
    try:
        assert tracer.flush()
        stats = tracer.writer.stats()
        assert errors == []
        assert (stats["written"], stats["dropped_unencodable"]) == (2, 1)
        assert store.get_trace(kept.trace_id) is not None and store.get_trace(lost.trace_id) is None
    finally:
        tracer.writer.close()  # the store is the shared test store: not tracer.close()
