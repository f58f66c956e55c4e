"""App factory, request pipeline and the in-thread uvicorn runner (`Emulator`).

Every request goes through one pipeline: parse -> check headers/body -> record -> emulator delay ->
fault lookup by upstream model -> fault delay/status -> provider handler. Provider modules only know
their wire format; adding one = writing a module with a `PROVIDER` spec and listing it in PROVIDERS.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from . import (
    anthropic_format,
    azure_format,
    bedrock_format,
    cerebras_format,
    cohere_format,
    deepseek_format,
    fireworks_format,
    gemini_format,
    groq_format,
    mistral_format,
    openai_format,
    perplexity_format,
    sambanova_format,
    together_format,
)
from .state import EmulatorState, Fault, RecordedRequest
from .wire import ASGIResponse, Call, Endpoint, ProviderSpec, RawRequest, error_reply, json_reply, pause

PROVIDERS: tuple[ProviderSpec, ...] = (
    openai_format.PROVIDER,
    anthropic_format.PROVIDER,
    gemini_format.PROVIDER,
    groq_format.PROVIDER,
    mistral_format.PROVIDER,
    deepseek_format.PROVIDER,
    together_format.PROVIDER,
    fireworks_format.PROVIDER,
    cerebras_format.PROVIDER,
    sambanova_format.PROVIDER,
    perplexity_format.PROVIDER,
    cohere_format.PROVIDER,
    bedrock_format.PROVIDER,
    azure_format.PROVIDER,
)
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
Handler = Callable[[Request], Awaitable[ASGIResponse]]


def _lower_headers(request: Request) -> dict[str, str]:
    return {k.lower(): v for k, v in request.headers.items()}


def _raw_path(request: Request) -> str:
    raw = request.scope.get("raw_path")
    return raw.decode("latin-1") if isinstance(raw, bytes) else request.url.path


def _endpoint_handler(spec: ProviderSpec, ep: Endpoint) -> Handler:
    async def handle(request: Request) -> ASGIResponse:
        state: EmulatorState = request.app.state.emulator
        headers = _lower_headers(request)
        problems = spec.check_headers(headers)
        body: object = None
        raw = await request.body()
        raw_path = _raw_path(request)
        if spec.check_request is not None:
            query = dict(request.query_params)
            problems += spec.check_request(RawRequest(request.method, request.url.path, raw_path, query, headers, raw))
        if ep.method != "GET":
            if not headers.get("content-type", "").startswith("application/json"):
                problems.append(f"content-type must be application/json, got {headers.get('content-type')!r}")
            try:
                body = json.loads(raw)
            except ValueError:
                problems.append("body is not valid JSON")
        if body is not None and not isinstance(body, dict):
            problems.append("body must be a JSON object")
        elif isinstance(body, dict):
            problems += ep.validate(body)
        json_body = body if isinstance(body, dict) else {}
        model = ep.model_of(json_body, request.path_params)
        fault = None if problems else state.take_fault(model)
        seq = state.record(
            RecordedRequest(
                spec.name, request.method, request.url.path, headers, body, model, fault, tuple(problems),
                request.url.query, raw_path,
            )
        )
        rid = f"req_emu{seq:020d}"
        if problems:
            return error_reply(spec, 400, "emulator: " + "; ".join(problems), None, rid)
        await pause(request.receive, (state.delay_ms + (fault.delay_ms if fault else 0)) / 1000)
        if fault is not None and fault.status is not None:
            message = fault.message or f"injected fault: HTTP {fault.status} for model {model}"
            return error_reply(spec, fault.status, message, fault, rid)
        return ep.respond(Call(spec, json_body, model or "", fault or Fault(), seq, headers))

    return handle


def _unknown_path_handler(spec: ProviderSpec | None) -> Handler:
    async def handle(request: Request) -> ASGIResponse:
        state: EmulatorState = request.app.state.emulator
        raw = await request.body()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode(errors="replace")
        problem = f"no such endpoint: {request.method} {request.url.path}"
        name = spec.name if spec else "unknown"
        seq = state.record(
            RecordedRequest(
                name, request.method, request.url.path, _lower_headers(request), body, None, None, (problem,),
                request.url.query, _raw_path(request),
            )
        )
        return error_reply(spec or PROVIDERS[0], 404, f"emulator: {problem}", None, f"req_emu{seq:020d}")

    return handle


def build_app(state: EmulatorState, providers: Sequence[ProviderSpec] = PROVIDERS) -> Starlette:
    """The ASGI app: every provider's endpoints under its prefix, 404 + violation for anything else."""

    async def health(_: Request) -> ASGIResponse:
        return json_reply({"ok": True}, Fault())

    routes = [Route("/health", health, methods=["GET"])]
    for spec in providers:
        for ep in spec.endpoints:
            routes.append(Route(spec.prefix + ep.path, _endpoint_handler(spec, ep), methods=[ep.method]))
        routes.append(Route(spec.prefix + "/{rest:path}", _unknown_path_handler(spec), methods=_METHODS))
    routes.append(Route("/{rest:path}", _unknown_path_handler(None), methods=_METHODS))
    app = Starlette(routes=routes)
    app.state.emulator = state
    return app


class _DropCutNoise(logging.Filter):
    """Hide uvicorn's "returned without completing response" line for deliberate cuts, in our thread only."""

    def __init__(self, thread_id: int) -> None:
        super().__init__()
        self.thread_id = thread_id

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.thread == self.thread_id and "without completing response" in record.getMessage())


class Emulator:
    """A provider emulator on 127.0.0.1 in a background thread. See the package docstring."""

    def __init__(self, delay_ms: int = 0, host: str = "127.0.0.1", port: int = 0) -> None:
        self._state = EmulatorState(delay_ms=delay_ms)
        self._host = host
        self._port = port
        self._providers = {spec.name: spec for spec in PROVIDERS}
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._log_filter: _DropCutNoise | None = None

    # --- lifecycle ------------------------------------------------------------------------
    def start(self) -> Emulator:
        if self._server is not None:
            return self
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets it knows are TCP; without it a
        # reply written in pieces stalls ~40 ms (Nagle + delayed ACK).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, self._port))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            build_app(self._state),
            log_config=None,  # don't reconfigure the process' logging
            access_log=False,
            lifespan="off",
            ws="none",
            timeout_graceful_shutdown=1,
            timeout_keep_alive=30,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"emulator:{self._port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("emulator failed to start")
            time.sleep(0.005)
        assert thread.ident is not None
        self._log_filter = _DropCutNoise(thread.ident)
        logging.getLogger("uvicorn.error").addFilter(self._log_filter)
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(timeout=5)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5)
        if self._log_filter is not None:
            logging.getLogger("uvicorn.error").removeFilter(self._log_filter)
        self._server = self._thread = self._log_filter = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # --- addresses --------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("emulator not started")
        return f"http://{self._host}:{self._port}"

    @property
    def port(self) -> int:
        return self._port

    @property
    def providers(self) -> list[str]:
        return list(self._providers)

    def base(self, provider: str) -> str:
        """The api_base to hand litellm (or the provider's SDK) for `provider`."""
        try:
            return self.url + self._providers[provider].api_base_path
        except KeyError:
            raise KeyError(f"unknown provider {provider!r}; known: {sorted(self._providers)}") from None

    # --- faults, log ------------------------------------------------------------------------
    def fail(self, model: str, fault: Fault) -> None:
        """Apply `fault` to the next request(s) whose upstream model is `model` ("*" = any model)."""
        self._state.arm(model, fault)

    def clear_faults(self) -> None:
        self._state.clear_faults()

    @property
    def requests(self) -> list[RecordedRequest]:
        return self._state.requests

    @property
    def violations(self) -> list[str]:
        return self._state.violations

    @property
    def delay_ms(self) -> int:
        return self._state.delay_ms

    @delay_ms.setter
    def delay_ms(self, value: int) -> None:
        self._state.delay_ms = value

    def reset(self) -> None:
        """Forget faults, recorded requests and violations."""
        self._state.reset()
