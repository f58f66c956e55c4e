"""Request limits enforced before a body is parsed."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from opentracy.gateway.errors import APIError
from opentracy.gateway.extras import RequestContext, extras_headers


class BodySizeLimit:
    """413 in OpenAI's shape for bodies over ``max_bytes``, declared or streamed (chunked)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.max_bytes:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Raised inside the app's body read, so the app's error handler answers 413.
                    raise HTTPException(413, too_large_message(self.max_bytes))
            return message

        await self.app(scope, limited_receive, send)

    async def _reject(self, scope: Scope, send: Send) -> None:
        error = APIError(413, too_large_message(self.max_bytes), code="request_too_large")
        ctx = RequestContext(requested_model="")
        scope["app"].state.tracer.rejected(ctx, error, None)
        body = json.dumps(error.body()).encode()
        headers = {"content-type": "application/json", "content-length": str(len(body)), **extras_headers(ctx)}
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(k.encode(), v.encode()) for k, v in headers.items()]})
        await send({"type": "http.response.body", "body": body})


def too_large_message(max_bytes: int) -> str:
    return f"Request body too large: the limit is {max_bytes} bytes (OPENTRACY_MAX_BODY_BYTES)."
