"""What a provider module plugs into the server, and the fault-aware ways it can answer.

A provider module (openai_format, anthropic_format, ...) builds one `ProviderSpec`: its URL prefix,
header check, error JSON shape and endpoints. Endpoint handlers only build the happy answer; they hand
it to `json_reply` / `sse_reply` / `ChunkStream`, which apply the body-level faults (cut, malformed,
wrong content type, drip) the same way for every provider.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from starlette.types import Receive, Scope, Send

from .state import Fault

Json = dict[str, Any]


class ASGIResponse(Protocol):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None: ...


@dataclass(frozen=True)
class RawRequest:
    """The request as received, for checks that need more than headers and the parsed body
    (query parameters, the undecoded path, the exact body bytes a signature covers)."""

    method: str
    path: str  # URL-decoded
    raw_path: str  # as sent
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-cased names
    body: bytes


@dataclass(frozen=True)
class Call:
    """A validated request, ready to be answered."""

    provider: ProviderSpec
    body: Json
    model: str
    fault: Fault
    seq: int
    headers: Mapping[str, str]


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # below the provider prefix, e.g. "/v1/chat/completions"
    validate: Callable[[Json], list[str]]  # shape problems of the body; [] = fine
    respond: Callable[[Call], ASGIResponse]
    # The model name faults are keyed on; body["model"] unless the provider puts it in the path.
    model_of: Callable[[Json, Mapping[str, str]], str | None] = lambda body, _params: (
        body.get("model") if isinstance(body.get("model"), str) else None
    )


@dataclass(frozen=True)
class ProviderSpec:
    name: str  # "openai"
    prefix: str  # URL prefix on the emulator, "/openai"
    api_base_path: str  # appended to the emulator URL to give litellm's api_base
    check_headers: Callable[[Mapping[str, str]], list[str]]  # auth/version header problems
    error_body: Callable[[int, str], Json]  # the provider's error JSON for a status + message
    request_id_header: str = "x-request-id"
    endpoints: Sequence[Endpoint] = field(default_factory=tuple)
    # Optional: problems with the raw request (query parameters, signatures over path and body).
    check_request: Callable[[RawRequest], list[str]] | None = None
    # Optional: extra headers on error answers for a status (e.g. Bedrock's x-amzn-ErrorType).
    error_headers: Callable[[int], Mapping[str, str]] | None = None


def dumps(payload: Any) -> str:
    return json.dumps(payload, separators=(",", ":"))


class ChunkStream:
    """Send `chunks` as one HTTP body, applying cut / drip faults.

    Cutting returns from the ASGI call with the body incomplete; uvicorn then closes the socket, so
    the client sees a truncated chunked body (or fewer bytes than Content-Length) - a real mid-body drop.
    """

    def __init__(
        self,
        chunks: Sequence[bytes],
        media_type: str,
        fault: Fault,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
        content_length: int | None = None,
        cut_after: int | None = None,
    ) -> None:
        self.chunks = chunks
        self.status = status
        self.drip_s = fault.drip_ms / 1000
        self.cut_after = fault.cut_after_chunks if cut_after is None else cut_after
        hdrs = {"content-type": media_type, **(headers or {})}
        if content_length is not None:
            hdrs["content-length"] = str(content_length)
        elif media_type.startswith("text/event-stream"):
            hdrs["cache-control"] = "no-cache"
        self.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in hdrs.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status, "headers": self.raw_headers})
        gone = asyncio.Event()
        watcher = asyncio.ensure_future(_watch_disconnect(receive, gone))
        try:
            for index, chunk in enumerate(self.chunks):
                if self.cut_after is not None and index >= self.cut_after:
                    return  # incomplete body: uvicorn drops the connection
                if index and self.drip_s:
                    await _sleep_unless(gone, self.drip_s)
                if gone.is_set():
                    return
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if self.cut_after is not None and self.cut_after >= len(self.chunks) > 0:
                return  # cut right before the terminating empty chunk
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            watcher.cancel()


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return


async def _sleep_unless(event: asyncio.Event, seconds: float) -> None:
    try:
        await asyncio.wait_for(event.wait(), timeout=seconds)
    except asyncio.TimeoutError:
        pass


async def pause(receive: Receive, seconds: float) -> None:
    """Sleep, but stop early when the client hangs up (timeouts must not pin server tasks)."""
    if seconds <= 0:
        return
    gone = asyncio.Event()
    watcher = asyncio.ensure_future(_watch_disconnect(receive, gone))
    try:
        await _sleep_unless(gone, seconds)
    finally:
        watcher.cancel()


def json_reply(payload: Json, fault: Fault, status: int = 200, headers: Mapping[str, str] | None = None) -> ChunkStream:
    """A JSON answer; malformed_json truncates it, cut_after_chunks drops the socket mid-body."""
    body = dumps(payload).encode()
    if fault.malformed_json:
        body = body[: max(1, len(body) // 2)]
    media = "text/html; charset=utf-8" if fault.wrong_content_type else "application/json"
    half = max(1, len(body) // 2)
    cut = None if fault.cut_after_chunks is None else min(fault.cut_after_chunks, 1)
    return ChunkStream([body[:half], body[half:]], media, fault, status, headers, len(body), cut_after=cut)


@dataclass(frozen=True)
class SSEEvent:
    data: Any  # JSON-able payload, or a raw str sent verbatim (e.g. "[DONE]")
    event: str | None = None  # the `event:` line, when the provider names its events


def sse_reply(
    events: Iterable[SSEEvent], fault: Fault, headers: Mapping[str, str] | None = None, newline: str = "\n"
) -> ChunkStream:
    """A text/event-stream answer, one chunk per event; malformed_json corrupts the second event.

    `newline` is the line terminator: "\n" (most providers) or "\r\n" (Google's endpoints)."""
    chunks: list[bytes] = []
    for index, ev in enumerate(events):
        data = ev.data if isinstance(ev.data, str) else dumps(ev.data)
        if fault.malformed_json and index == 1:
            data = data[: max(1, len(data) // 2)]
        head = f"event: {ev.event}{newline}" if ev.event else ""
        chunks.append(f"{head}data: {data}{newline}{newline}".encode())
    media = "application/json" if fault.wrong_content_type else "text/event-stream; charset=utf-8"
    return ChunkStream(chunks, media, fault, headers=headers)


def error_reply(spec: ProviderSpec, status: int, message: str, fault: Fault | None, request_id: str) -> ChunkStream:
    """The provider's own error JSON, with retry-after when the fault asks for it."""
    headers = {spec.request_id_header: request_id, **(spec.error_headers(status) if spec.error_headers else {})}
    if fault is not None and fault.retry_after is not None:
        headers["retry-after"] = f"{fault.retry_after:g}"
    # Body faults don't apply to error answers except the content type.
    shaped = Fault(wrong_content_type=fault.wrong_content_type) if fault is not None else Fault()
    return json_reply(spec.error_body(status, message), shaped, status, headers)
