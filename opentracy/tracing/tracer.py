"""The hooks the gateway calls on every request, whatever its outcome.

:class:`Tracer` here is the no-op used when tracing is off; it defines the hooks the routes call,
so the request path is the same with tracing on or off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentracy.gateway.errors import APIError
    from opentracy.gateway.extras import RequestContext
    from opentracy.gateway.streaming import StreamResult
    from opentracy.routing.router import RouteOutcome


class Tracer:
    """No-op tracer: the hooks the gateway calls on every request."""

    def reconfigure(self, settings: Any) -> None:
        """A reload: apply the new config's trace settings (content, redaction, secrets)."""

    def answered(self, ctx: "RequestContext", outcome: "RouteOutcome", payload: dict[str, Any],
                 answer: dict[str, Any], *, request_body: bytes | None = None,
                 answer_body: bytes | None = None) -> None:
        """A JSON answer (chat completion or embeddings) as sent to the client, extras included; with
        the request's body and the answer's when the route has them (then both are traced as sent)."""

    def auth_failed(self, ctx: "RequestContext", error: "APIError") -> None:
        pass

    def rejected(self, ctx: "RequestContext", error: "APIError", payload: dict[str, Any] | None) -> None:
        pass

    def failed(self, ctx: "RequestContext", outcome: "RouteOutcome", payload: dict[str, Any],
               error: "APIError") -> None:
        pass

    def stream_ended(self, ctx: "RequestContext", outcome: "RouteOutcome", payload: dict[str, Any],
                     result: "StreamResult", *, request_body: bytes | None = None) -> None:
        pass

    def health(self) -> dict[str, Any]:
        return {"enabled": False}

    def prometheus(self) -> str:
        return ""

    def close(self) -> None:
        pass
