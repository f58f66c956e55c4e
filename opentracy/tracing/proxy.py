"""Tracing inside a team's own litellm proxy: ``handler``, a litellm ``CustomLogger`` instance.

In the proxy's ``config.yaml`` (opentracy installed in the proxy's environment)::

    litellm_settings:
      callbacks: opentracy.tracing.proxy.handler

or, with ``callbacks/opentracy_callback.py`` copied next to the config file,
``callbacks: callbacks.opentracy_callback.handler`` (litellm loads ``<config dir>/callbacks/
opentracy_callback.py`` by path, else imports the dotted module: ``get_instance_fn`` in
``litellm/proxy/types_utils/utils.py``). Settings come from the environment, as for the gateway; the
store is opened at the first event and written out on SIGTERM
(:class:`~opentracy.tracing.proxy_tracer.ProxyTracer`).

This module turns the proxy's events into one trace per request. How the proxy calls us (measured on
litellm 1.108.7 and 1.110.2, see tests/test_litellm_proxy.py):

- A success is reported once (``async_log_success_event``), after retries and fallbacks.
- A failure is reported per *request*, not per attempt, by ``async_post_call_failure_hook``;
  ``async_log_failure_event`` (and, for errors raised by the proxy itself, also the sync
  ``log_failure_event``) fires too, for the first failed attempt, even when a retry then succeeds.
  So failure events of proxy calls are held by ``litellm_call_id`` as attempts and written only when
  the request's outcome is known: joined to its success, or as the request's failure. One request,
  one trace. Its ``trace_id`` is the call id without dashes: the ``x-litellm-call-id`` response
  header finds it (``opentracy traces show <x-litellm-call-id>``).

Outside a proxy (``litellm.callbacks = [handler]`` in a script) every event is recorded as it comes.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

import opentracy  # noqa: F401  (sets LITELLM_LOCAL_MODEL_COST_MAP before litellm loads)
from opentracy.tracing.callback import OpenTracyLogger, record_from_litellm
from opentracy.tracing.proxy_tracer import ProxyTracer
from opentracy.tracing.record import TraceRecord

log = logging.getLogger("opentracy.tracing.proxy")

SOURCE = "litellm_proxy"
MAX_TRACKED_CALLS = 10_000  # call ids remembered (done, or with failed attempts)
PENDING_MAX_AGE = 600.0  # s: a failed attempt whose request never reported an outcome is written then
_AUTH_HEADER_WORDS = ("authorization", "api-key", "api_key", "apikey", "token")


@dataclass
class _FailedCall:
    record: TraceRecord
    attempts: list[Any] = field(default_factory=list)
    starts: set[float] = field(default_factory=set)
    started: float = 0.0
    seen: float = field(default_factory=time.monotonic)
    secrets: tuple[str, ...] = ()


class ProxyLogger(OpenTracyLogger):
    """``OpenTracyLogger`` for a litellm proxy: one trace per request, failures included."""

    def __init__(self, tracer: ProxyTracer | None = None) -> None:
        self.tracer = tracer or ProxyTracer()
        super().__init__(self.tracer.submit)
        self._lock = threading.Lock()
        self._done: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._failed: collections.OrderedDict[str, _FailedCall] = collections.OrderedDict()
        self._attempts_seen: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.tracer.before_close = lambda: self._expire(force=True)

    # litellm hook names and parameter names, exactly.
    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore[no-untyped-def]
        self._safely(self._success, kwargs, response_obj, start_time, end_time)

    def log_success_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore[no-untyped-def]
        self._safely(self._success, kwargs, response_obj, start_time, end_time)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore[no-untyped-def]
        self._safely(self._failure, kwargs, response_obj, start_time, end_time)

    def log_failure_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore[no-untyped-def]
        self._safely(self._failure, kwargs, response_obj, start_time, end_time)

    async def async_post_call_failure_hook(self, request_data, original_exception, user_api_key_dict,  # type: ignore[no-untyped-def]
                                           traceback_str=None):
        self._safely(self._request_failed, request_data, original_exception, user_api_key_dict)
        return None  # never change the error the client gets

    def shutdown(self) -> None:
        """Write what is held, flush and close the store (also run at exit)."""
        self.tracer.close()

    # -- events ---------------------------------------------------------------------------------

    @staticmethod
    def _safely(method: Any, *args: Any) -> None:
        try:
            method(*args)
        except Exception:  # tracing must never break a call
            log.exception("opentracy: could not trace a litellm proxy call")

    def _success(self, kwargs: Mapping[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
        call_id = _call_id(kwargs)
        with self._lock:
            if not self._claim(call_id):
                return
            failed = self._failed.pop(call_id, None) if call_id else None
        record = self._record(kwargs, response_obj, start_time, end_time, ok=True)
        secrets = _call_secrets(kwargs)
        if failed is not None:  # retried (or fell back) after failed attempts: one trace, all attempts
            record.attempts = failed.attempts + list(record.attempts)
            _cover_from(record, failed.started)
            record.fallback_used = any(isinstance(a, dict) and a.get("model") != record.selected_model
                                       for a in failed.attempts)
            secrets += failed.secrets
        self.tracer.submit(record, secrets)
        self._expire()

    def _failure(self, kwargs: Mapping[str, Any], response_obj: Any, start_time: Any, end_time: Any) -> None:
        call_id = _call_id(kwargs)
        record = self._record(kwargs, response_obj, start_time, end_time, ok=False)
        started = record.start_time.timestamp()
        if not call_id or not _is_proxy_call(kwargs):
            # No proxy around to report the request's outcome: record each failed attempt as it comes
            # (once: sync and async failure hooks may both report it).
            with self._lock:
                attempt = f"{call_id}@{started}"
                if call_id in self._done or attempt in self._attempts_seen:
                    return
                self._attempts_seen[attempt] = None
                _trim(self._attempts_seen)
            self._submit(record, kwargs)
            return
        with self._lock:
            if call_id in self._done:
                return
            failed = self._failed.get(call_id)
            if failed is None:
                failed = self._failed[call_id] = _FailedCall(record, started=started)
                _trim(self._failed)
            elif started in failed.starts:
                return  # the same attempt reported twice (sync and async failure hooks)
            failed.record = record
            failed.attempts.extend(record.attempts)
            failed.starts.add(started)
            failed.seen = time.monotonic()
            self._failed.move_to_end(call_id)  # oldest news first: _expire() looks at the front only
            failed.secrets = tuple(set(failed.secrets) | set(_call_secrets(kwargs)))
        self._expire()

    def _request_failed(self, request_data: Mapping[str, Any], error: Exception, user_api_key_dict: Any) -> None:
        call_id = _call_id(request_data)
        with self._lock:
            if not self._claim(call_id):
                return
            failed = self._failed.pop(call_id, None) if call_id else None
        if failed is not None:
            record = failed.record
            record.attempts = failed.attempts
            _cover_from(record, failed.started)
        else:  # failed before any provider call (auth, unknown model, ...)
            record = self._record(request_data, None, None, None, ok=False)
            _cover_from(record, record.start_time.timestamp())
        record.status = "error"
        record.http_status = _status_code(error, record.http_status)
        if not record.error_type or record.error_type == "error":
            record.error_type = type(error).__name__
        record.error_message = _error_text(error) or record.error_message
        if request_data.get("model"):
            record.requested_model = str(request_data["model"])
        key_alias = getattr(user_api_key_dict, "key_alias", None)
        if key_alias:
            record.api_key_name = str(key_alias)
        if record.http_status in (401, 403) and not key_alias:
            # Refused by the proxy's auth: an unauthenticated caller does not get to write prompts.
            record.messages, record.response, record.tool_calls, record.tools = [], "", [], []
            record.content_stored = False
        self.tracer.submit(record, _call_secrets(request_data) + (failed.secrets if failed else ()))

    # -- helpers --------------------------------------------------------------------------------

    def _claim(self, call_id: str) -> bool:
        """Mark a call id as recorded; False if it already was. Caller holds the lock."""
        if not call_id:
            return True
        if call_id in self._done:
            return False
        self._done[call_id] = None
        _trim(self._done)
        return True

    def _record(self, kwargs: Mapping[str, Any], response_obj: Any, start_time: Any, end_time: Any, *,
                ok: bool) -> TraceRecord:
        record = record_from_litellm(kwargs, response_obj, start_time, end_time, ok=ok)
        record.source = SOURCE
        call_id = _call_id(kwargs)
        if call_id:
            record.trace_id = call_id.replace("-", "").lower()
        body = _proxy_request(kwargs).get("body")
        if isinstance(body, Mapping) and body.get("model"):
            record.requested_model = str(body["model"])  # what the client asked, before any group alias
        return record

    def _submit(self, record: TraceRecord, kwargs: Mapping[str, Any]) -> None:
        self.tracer.submit(record, _call_secrets(kwargs))

    def _expire(self, force: bool = False) -> None:
        """Write failed calls whose request never reported an outcome (or all of them, at exit)."""
        cutoff = time.monotonic() - PENDING_MAX_AGE
        expired = []
        with self._lock:
            while self._failed and (force or next(iter(self._failed.values())).seen < cutoff):
                expired.append(self._failed.popitem(last=False)[1])
        for failed in expired:
            failed.record.attempts = failed.attempts
            self.tracer.submit(failed.record, failed.secrets)


def _call_id(kwargs: Mapping[str, Any]) -> str:
    value = kwargs.get("litellm_call_id") or (kwargs.get("litellm_params") or {}).get("litellm_call_id")
    return str(value) if value else ""


def _proxy_request(kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    value = (kwargs.get("litellm_params") or {}).get("proxy_server_request") or kwargs.get("proxy_server_request")
    return value if isinstance(value, Mapping) else {}


def _is_proxy_call(kwargs: Mapping[str, Any]) -> bool:
    if _proxy_request(kwargs):
        return True
    params = kwargs.get("litellm_params") or {}
    for key in ("metadata", "litellm_metadata"):
        metadata = params.get(key) or {}
        if isinstance(metadata, Mapping) and "user_api_key_hash" in metadata:
            return True
    return False


def _call_secrets(kwargs: Mapping[str, Any]) -> tuple[str, ...]:
    """Keys this call carried: the provider key litellm used, the key the client presented."""
    found = []
    params = kwargs.get("litellm_params") or {}
    for value in (kwargs.get("api_key"), params.get("api_key") if isinstance(params, Mapping) else None):
        if isinstance(value, str):
            found.append(value)
    headers = _proxy_request(kwargs).get("headers") or {}
    if isinstance(headers, Mapping):
        for name, value in headers.items():
            if isinstance(value, str) and any(word in str(name).lower() for word in _AUTH_HEADER_WORDS):
                found.append(value.split(" ", 1)[1] if value.lower().startswith("bearer ") else value)
    return tuple(v.strip() for v in found if len(v.strip()) >= 6)


def _cover_from(record: TraceRecord, started: float) -> None:
    """Make the trace span the whole request, from its first attempt to now or the last end."""
    ended = max(record.end_time.timestamp(), started)
    if record.status != "ok":
        ended = max(ended, time.time())
    record.start_time = datetime.fromtimestamp(started).astimezone()
    record.end_time = datetime.fromtimestamp(ended).astimezone()
    record.latency_ms = (ended - started) * 1000.0


def _status_code(error: Exception, default: int) -> int:
    for name in ("status_code", "code"):
        value = getattr(error, name, None)
        try:
            code = int(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if 100 <= code <= 599:
            return code
    return default if default and default != 200 else 500


def _error_text(error: Exception) -> str:
    message = getattr(error, "message", None)
    return str(message) if isinstance(message, str) and message else str(error)


def _trim(calls: collections.OrderedDict[str, Any]) -> None:
    while len(calls) > MAX_TRACKED_CALLS:
        calls.popitem(last=False)


handler = ProxyLogger()
"""The instance a litellm proxy config names: ``callbacks: opentracy.tracing.proxy.handler``."""

__all__ = ["ProxyLogger", "ProxyTracer", "handler"]
