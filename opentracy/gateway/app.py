"""The FastAPI app factory. All state hangs off ``app.state``; nothing lives at module level."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

import litellm
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from opentracy import __version__
from opentracy.config import Settings
from opentracy.engine import Engine
from opentracy.gateway.admin import router as admin_router
from opentracy.gateway.errors import install_error_handlers
from opentracy.gateway.limits import BodySizeLimit
from opentracy.gateway.reload import reload_on_signal
from opentracy.gateway.routes import router
from opentracy.routing import provider_fixes
from opentracy.routing.direct import DirectOpenAI
from opentracy.gateway.shadow import Shadower
from opentracy.tracing.tracer import Tracer


def create_app(settings: Settings, tracer: Tracer | None = None) -> FastAPI:
    """Build the app for ``settings``; ``tracer`` defaults to the no-op one (tracing off).

    The tracer is opened by the caller (``opentracy serve``) so a store that cannot be opened stops
    the start with a clear message before the server binds; the app registers it and closes it.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        litellm.suppress_debug_info = True  # no provider-list banners on stdout for each error
        provider_fixes.install()  # what litellm gets wrong about some providers (routing/provider_fixes.py)
        # litellm leaves ~500k long-lived objects after import; without this every full collection
        # stops the event loop for ~0.35 s under load (bench/README.md). Freeze them out of the GC.
        gc.collect()
        gc.freeze()
        with contextlib.suppress(NotImplementedError, RuntimeError):  # no SIGHUP on some platforms
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, reload_on_signal, app)
        try:
            yield
        finally:
            await app.state.shadower.drain()
            await app.state.direct.close()
            app.state.tracer.close()  # flushes queued traces (to the store, or the spool)

    app = FastAPI(title="OpenTracy", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.direct = DirectOpenAI()  # one connection pool for OpenAI-format upstreams, across reloads
    app.state.engine = Engine.build(settings, app.state.direct)
    app.state.tracer = tracer or Tracer()
    app.state.started_at = time.time()
    app.state.shadower = Shadower(settings.engine.max_concurrent_shadows)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(admin_router)
    app.add_middleware(BodySizeLimit, max_bytes=settings.engine.max_body_bytes)
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, minus the 422 it adds to every body route: validation errors are 400 here."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for path in schema.get("paths", {}).values():
            for operation in path.values():
                operation.get("responses", {}).pop("422", None)
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema
