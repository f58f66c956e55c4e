"""The litellm ``CustomLogger`` that turns each litellm call into one :class:`TraceRecord`.

Used inside an existing litellm proxy, through :class:`opentracy.tracing.proxy.ProxyLogger`
(``source = "litellm_proxy"``). The gateway does not use it: it records each request itself
(:mod:`opentracy.tracing.gateway`), including the calls that never go through litellm.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any, Callable, Mapping

from litellm.integrations.custom_logger import CustomLogger

from opentracy import __version__
from opentracy.tracing.record import PARAMS_NOT_RECORDED, TraceRecord

log = logging.getLogger("opentracy.tracing")


Sink = Callable[[TraceRecord], None]


class OpenTracyLogger(CustomLogger):
    """Hook names and parameters are exactly litellm's: ``(kwargs, response_obj, start_time, end_time)``."""

    def __init__(self, sink: Sink) -> None:
        super().__init__()
        self._sink = sink

    async def async_log_success_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore[no-untyped-def]
        self._emit(kwargs, response_obj, start_time, end_time, ok=True)

    async def async_log_failure_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore[no-untyped-def]
        self._emit(kwargs, response_obj, start_time, end_time, ok=False)

    def log_success_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore[no-untyped-def]
        self._emit(kwargs, response_obj, start_time, end_time, ok=True)

    def log_failure_event(self, kwargs, response_obj, start_time, end_time):  # type: ignore[no-untyped-def]
        self._emit(kwargs, response_obj, start_time, end_time, ok=False)

    def _emit(self, kwargs: Mapping[str, Any], response_obj: Any, start_time: Any, end_time: Any, *, ok: bool) -> None:
        try:
            self._sink(record_from_litellm(kwargs, response_obj, start_time, end_time, ok=ok))
        except Exception:  # tracing must never break a call
            log.exception("could not build a trace record from a litellm callback")


def record_from_litellm(kwargs: Mapping[str, Any], response_obj: Any, start_time: Any, end_time: Any, *,
                        ok: bool) -> TraceRecord:
    """One litellm call (its ``standard_logging_object``) as a trace record."""
    slo: Mapping[str, Any] = kwargs.get("standard_logging_object") or {}
    started = _seconds(slo.get("startTime"), start_time)
    ended = _seconds(slo.get("endTime"), end_time)
    first_token = _seconds(slo.get("completionStartTime"), kwargs.get("completion_start_time"))
    stream = bool(slo.get("stream") or kwargs.get("stream"))
    provider = str(slo.get("custom_llm_provider") or kwargs.get("custom_llm_provider") or "")
    hidden = slo.get("hidden_params") or {}
    model = str(slo.get("model") or kwargs.get("model") or "")
    selected = str(hidden.get("litellm_model_name") or (f"{provider}/{model}" if provider and "/" not in model
                                                         else model))
    params = dict(slo.get("model_parameters") or kwargs.get("optional_params") or {})
    choice = _first_choice(slo.get("response") if ok else None)
    message = choice.get("message") or {}
    error = slo.get("error_information") or {}
    attempt = {"model": selected, "status": "ok" if ok else "error",
               "error": None if ok else str(slo.get("error_str") or ""),
               "latency_ms": round((ended - started) * 1000.0, 3)}

    record = TraceRecord(
        start_time=datetime.fromtimestamp(started).astimezone(),
        end_time=datetime.fromtimestamp(ended).astimezone(),
        provider=provider,
        selected_model=selected,
        status="ok" if ok else "error",
        error_type="" if ok else str(error.get("error_class") or "error"),
        error_message="" if ok else str(slo.get("error_str") or ""),
        http_status=200 if ok else _int(error.get("error_code"), 500),
        stream=stream,
        ttft_ms=(first_token - started) * 1000.0 if stream and first_token else None,
        latency_ms=(ended - started) * 1000.0,
        prompt_tokens=_int(slo.get("prompt_tokens")),
        completion_tokens=_int(slo.get("completion_tokens")),
        total_tokens=_int(slo.get("total_tokens")),
        cost_usd=float(slo.get("response_cost") or 0.0),
        attempts=[attempt],
        messages=slo.get("messages") or kwargs.get("messages") or [],
        response=message.get("content") or "",
        tools=params.pop("tools", None) or [],
        tool_calls=message.get("tool_calls") or [],
        finish_reason=str(choice.get("finish_reason") or ""),
        request_params={k: v for k, v in params.items() if k not in PARAMS_NOT_RECORDED},
        user=str(slo.get("end_user") or kwargs.get("user") or ""),
        source="litellm_proxy",
        version=__version__,
    )
    _add_proxy_facts(record, slo)
    return record


def _add_proxy_facts(record: TraceRecord, slo: Mapping[str, Any]) -> None:
    """Inside a litellm proxy: the client asked for the model group; the key has an alias."""
    metadata = slo.get("metadata") or {}
    record.requested_model = str(slo.get("model_group") or record.selected_model)
    record.api_key_name = str(metadata.get("user_api_key_alias") or "")
    tags = slo.get("request_tags") or []
    requester = metadata.get("requester_metadata") or {}
    record.metadata = {**({"tags": list(tags)} if tags else {}), **dict(requester)}


def _first_choice(response: Any) -> Mapping[str, Any]:
    if hasattr(response, "model_dump"):
        response = response.model_dump()
    if isinstance(response, Mapping):
        choices = response.get("choices") or []
        if choices and isinstance(choices[0], Mapping):
            return choices[0]
    return {}


def _seconds(value: Any, fallback: Any = None) -> float:
    for candidate in (value, fallback):
        if isinstance(candidate, (int, float)) and not isinstance(candidate, bool):
            return float(candidate)
        if isinstance(candidate, datetime):
            return candidate.timestamp()
    return time.time()


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
