"""Shadow traffic: mirror a request to a candidate (say, a distilled student) after the answer.

The client's response is never delayed or changed: mirrors run as background tasks once the primary
answer is ready, at most ``max_concurrent`` at a time (excess mirrors are dropped and counted). Each
mirror is traced as its own call with ``shadow_of`` = the primary's trace id, which is what
``opentracy compare`` joins on.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from opentracy.engine import Engine
from opentracy.gateway.errors import APIError
from opentracy.gateway.extras import RequestContext, answer
from opentracy.routing.aliases import Route
from opentracy.tracing.tracer import Tracer

log = logging.getLogger("opentracy.gateway")


class Shadower:
    """Lives on the app (not the engine) so counters and running mirrors survive a reload."""

    def __init__(self, max_concurrent: int) -> None:
        self._max = max_concurrent
        self._running: set[asyncio.Task[None]] = set()
        self.started = 0
        self.dropped = 0
        self.failed = 0

    def mirror(self, engine: Engine, tracer: Tracer, ctx: RequestContext, route: Route,
               payload: dict[str, Any]) -> None:
        for target in route.shadow:
            if len(self._running) >= self._max:
                self.dropped += 1
                continue
            shadow_ctx = RequestContext(requested_model=ctx.requested_model, user=ctx.user, key_name=ctx.key_name,
                                        client_metadata=ctx.client_metadata, shadow_of=ctx.trace_id)
            task = asyncio.create_task(self._run(engine, tracer, shadow_ctx, Route(route.requested_model, route.alias,
                                                                                   (target,)), payload))
            self.started += 1
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, engine: Engine, tracer: Tracer, ctx: RequestContext, route: Route,
                   payload: dict[str, Any]) -> None:
        try:
            outcome = await engine.router.complete(route, payload, stream=False)
            if outcome.failure is None and outcome.target is not None:
                tracer.answered(ctx, outcome, payload, answer(ctx, outcome))
            else:
                self.failed += 1
                failure = outcome.failure
                tracer.failed(ctx, outcome, payload, APIError(failure.client_status, engine.scrub(failure.message),
                                                              type=failure.client_type, code=failure.client_code))
        except Exception:  # a shadow must never surface anywhere but the logs and counters
            self.failed += 1
            log.exception("shadow call failed")

    async def drain(self, timeout: float = 10.0) -> None:
        """Let running mirrors finish (shutdown), so their traces are written."""
        if self._running:
            await asyncio.wait(set(self._running), timeout=timeout)

    def prometheus(self) -> str:
        lines = []
        for name, value, help_text in (
            ("opentracy_shadow_started_total", self.started, "Shadow calls started."),
            ("opentracy_shadow_dropped_total", self.dropped, "Shadow calls dropped at the concurrency limit."),
            ("opentracy_shadow_failed_total", self.failed, "Shadow calls that failed."),
        ):
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter", f"{name} {value}"]
        lines += ["# HELP opentracy_shadow_running Shadow calls in flight.", "# TYPE opentracy_shadow_running gauge",
                  f"opentracy_shadow_running {len(self._running)}"]
        return "\n".join(lines) + "\n"
