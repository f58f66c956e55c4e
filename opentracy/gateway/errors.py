"""Every error leaves the engine in OpenAI's shape: ``{"error": {message, type, param, code}}``.

Clients built on the official SDK parse exactly this; a stack trace or a provider key in a message
is a bug. FastAPI's own validation errors (422 by default) are re-shaped into OpenAI's 400.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Iterable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from opentracy.gateway.extras import RequestContext, WireJSONResponse, extras_headers

log = logging.getLogger("opentracy.gateway")


class APIError(Exception):
    """An error the gateway answers with; raised anywhere on the request path."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None,
                 headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}
        self.extra = extra or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param,
                          "code": self.code}, **self.extra}

    def response(self) -> JSONResponse:
        return WireJSONResponse(self.body(), status_code=self.status, headers=self.headers)


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every known secret (provider keys, engine keys) in ``text``."""
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, "***")
    return text


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """OpenAI-like wording for the first pydantic error, and the ``param`` it concerns."""
    if not errors:
        return "Invalid request body.", None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return ("We could not parse the JSON body of your request. The OpenAI API expects a JSON "
                "payload (check quoting, trailing commas and encoding)."), None
    loc = [str(p) for p in first.get("loc", ()) if p != "body"]
    # Union members add their class names to the location; they mean nothing to a client.
    loc = [p for p in loc if not (p[:1].isupper() or p in {"str", "list", "dict", "function"})]
    param = "".join(f"[{p}]" if p.isdigit() else (f".{p}" if i else p) for i, p in enumerate(loc)) or None
    if first.get("type") == "missing":
        if param is None:
            return "The request needs a JSON body (see the OpenAI API reference for this route).", None
        return f"Missing required parameter: '{param}'.", param
    if first.get("type") == "extra_forbidden":
        return f"Unrecognized request argument supplied: {param}", param
    detail = str(first.get("msg", "invalid value"))
    if param is None:
        return f"Invalid request body: {detail}.", None
    return f"Invalid value for '{param}': {detail}.", param


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception class FastAPI can raise to an OpenAI-shaped response."""

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param = validation_message(list(exc.errors()))
        error = APIError(400, message, param=param, code="invalid_request")
        _trace_rejection(request, error, exc.body)
        return error.response()

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}.get(exc.status_code)
        message = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404:
            message = f"Unknown route {request.method} {request.url.path}."
        error = APIError(exc.status_code, message, code=code)
        if exc.status_code in (400, 413):  # unparseable or oversized bodies are traced like other bad input
            _trace_rejection(request, error, None)
        return error.response()

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s: %s", request.method, request.url.path, type(exc).__name__,
                  exc_info=exc)
        return APIError(500, "The engine hit an internal error; it has been logged.",
                        type="server_error", code="internal_error").response()


def _trace_rejection(request: Request, error: APIError, body: Any) -> None:
    """Bad input is traced too (status error, what was wrong), and answered with the trace id."""
    payload = body if isinstance(body, dict) else None
    model = payload.get("model") if payload else None
    ctx = RequestContext(requested_model=model if isinstance(model, str) else "",
                         stream=bool(payload.get("stream") is True) if payload else False)
    try:
        request.app.state.tracer.rejected(ctx, error, payload)
    except Exception:  # a malformed body must not turn a 400 into a 500
        log.exception("could not trace a rejected request")
    error.headers.update(extras_headers(ctx))
