"""Fault registry, request log and violation list shared by every provider module.

All mutable state lives on one `EmulatorState` object owned by the `Emulator`; the server
thread and the test thread both touch it, so every access goes through one lock.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

WILDCARD_MODEL = "*"


@dataclass(frozen=True)
class Fault:
    """What to do wrong on the next request(s) for one upstream model.

    status:             answer with this HTTP status in the provider's own error JSON shape.
    delay_ms:           wait this long before answering (on top of the emulator-wide delay).
    times:              how many requests the fault applies to; None = forever.
    cut_after_chunks:   send this many body chunks (SSE events; for a plain JSON reply 0 = headers
                        only, anything else = half the body) then drop the connection mid-body.
    malformed_json:     the JSON body (or the first content event of a stream) is truncated JSON.
    wrong_content_type: body unchanged, Content-Type says text/html (JSON) or application/json (SSE).
    drip_ms:            pause between stream chunks.
    retry_after:        seconds, sent as a `retry-after` header with a `status` error.
    message:            error message override for `status` faults.
    """

    status: int | None = None
    delay_ms: int = 0
    times: int | None = 1
    cut_after_chunks: int | None = None
    malformed_json: bool = False
    wrong_content_type: bool = False
    drip_ms: int = 0
    retry_after: float | None = None
    message: str | None = None

    def __post_init__(self) -> None:
        if self.times is not None and self.times < 1:
            raise ValueError("Fault.times must be >= 1 or None (forever)")
        if self.status is not None and not 400 <= self.status <= 599:
            raise ValueError("Fault.status must be an HTTP error status (400-599)")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the emulator received it (headers lower-cased, body parsed).

    `path` is URL-decoded; `raw_path` is as sent (e.g. Bedrock's "%3A" in model ids); `query` is the
    raw query string ("api-version=2024-10-21", "alt=sse").
    """

    provider: str
    method: str
    path: str
    headers: dict[str, str]
    json: Any
    model: str | None
    fault: Fault | None = None
    violations: tuple[str, ...] = ()
    query: str = ""
    raw_path: str = ""


@dataclass
class _Armed:
    fault: Fault
    remaining: int | None


@dataclass
class EmulatorState:
    """Everything a running emulator remembers; `Emulator` exposes it, handlers update it."""

    delay_ms: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _faults: dict[str, deque[_Armed]] = field(default_factory=dict, repr=False)
    _requests: list[RecordedRequest] = field(default_factory=list, repr=False)
    _violations: list[str] = field(default_factory=list, repr=False)
    _seq: int = 0

    def arm(self, model: str, fault: Fault) -> None:
        """Queue `fault` for `model` (FIFO: a second fault starts once the first is used up)."""
        with self._lock:
            self._faults.setdefault(model, deque()).append(_Armed(fault, fault.times))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def take_fault(self, model: str | None) -> Fault | None:
        """The fault that applies to this request, consuming one of its `times`."""
        with self._lock:
            for key in (model, WILDCARD_MODEL):
                queue = self._faults.get(key) if key is not None else None
                if not queue:
                    continue
                armed = queue[0]
                if armed.remaining is not None:
                    armed.remaining -= 1
                    if armed.remaining <= 0:
                        queue.popleft()
                return armed.fault
        return None

    def record(self, request: RecordedRequest) -> int:
        """Log a request (and its violations); returns its 1-based sequence number."""
        with self._lock:
            self._requests.append(request)
            self._violations.extend(f"{request.method} {request.path}: {v}" for v in request.violations)
            self._seq += 1
            return self._seq

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def violations(self) -> list[str]:
        with self._lock:
            return list(self._violations)

    def reset(self) -> None:
        """Forget faults, requests and violations (for a session-scoped emulator between tests)."""
        with self._lock:
            self._faults.clear()
            self._requests.clear()
            self._violations.clear()
