"""What of a call may be stored: applied to every record, from either source.

- Secrets (provider keys, engine keys) are removed always, whatever the settings: the trace writer
  runs :meth:`TracePolicy.scrub_text` over every text of every encoded row (JSON columns included),
  off the request path and in C-speed string searches rather than a walk of nested values.
- ``OPENTRACY_TRACE_CONTENT=false``: no prompt, response, tool-argument or error text; counts, cost,
  latency and models stay.
- ``OPENTRACY_TRACE_REDACT=true``: PII in all stored text becomes typed placeholders (``[EMAIL]``, …).
The client's response is never touched: this runs on the trace only.
"""

from __future__ import annotations

import json
from typing import Any, Iterable

from opentracy.tracing.record import TraceRecord
from opentracy.tracing.redact import Redactor

SECRET_PLACEHOLDER = "[SECRET]"


class TracePolicy:
    def __init__(self, *, store_content: bool = True, redact: bool = False, secrets: Iterable[str] = ()) -> None:
        self.store_content = store_content
        self.redact = redact
        # Longest first, so a key that contains another is replaced whole.
        self._secrets = tuple(sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True))
        # A secret inside a JSON column is JSON-escaped; the two differ only for unusual characters.
        self._forms = tuple((s, _json_escaped(s) if _json_escaped(s) != s else None) for s in self._secrets)
        self._redactor = Redactor() if redact else None

    @property
    def stores_as_built(self) -> bool:
        """Whether :meth:`apply` leaves every record as it is (content stored, no redaction)."""
        return self.store_content and self._redactor is None

    def apply(self, record: TraceRecord) -> TraceRecord:
        """Content and redaction settings; secrets are removed later, by :meth:`scrub_text` on the row."""
        if not self.store_content:
            _drop_content(record)
        elif self._redactor is not None:
            self._redact(record, self._redactor)
        return record

    def scrub_text(self, text: str) -> str:
        """``text`` (plain or JSON) with every secret replaced."""
        for secret, escaped in self._forms:
            if secret in text:
                text = text.replace(secret, SECRET_PLACEHOLDER)
            if escaped is not None and escaped in text:
                text = text.replace(escaped, SECRET_PLACEHOLDER)
        return text

    def scrub_record(self, record: TraceRecord) -> TraceRecord:
        """Secrets removed from the record's fields themselves (for secrets known for one record only)."""
        if self._secrets:
            self._scrub(record)
        return record

    def _redact(self, record: TraceRecord, redactor: Redactor) -> None:
        record.messages, _ = redactor.redact(record.messages)
        record.response, _ = redactor.redact_text(record.response)
        record.tool_calls, _ = redactor.redact(record.tool_calls)
        record.error_message, _ = redactor.redact_text(record.error_message)
        record.metadata, _ = redactor.redact(record.metadata)
        record.attempts, _ = redactor.redact(record.attempts)
        record.user, _ = redactor.redact_text(record.user)
        record.redacted = True

    def _scrub(self, record: TraceRecord) -> None:
        for name in ("messages", "response", "tool_calls", "error_message", "metadata", "attempts",
                     "request_params", "tools", "user"):
            setattr(record, name, self._scrub_value(getattr(record, name)))

    def _scrub_value(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self._secrets:
                if secret in value:
                    value = value.replace(secret, SECRET_PLACEHOLDER)
            return value
        if isinstance(value, dict):
            return {k: self._scrub_value(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._scrub_value(v) for v in value]
        if hasattr(value, "model_dump"):
            return self._scrub_value(value.model_dump())
        return value


def _json_escaped(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)[1:-1]


def _drop_content(record: TraceRecord) -> None:
    record.messages = []
    record.response = ""
    record.error_message = ""
    record.user = ""
    # Which tool was called is a count-like fact; its arguments are content.
    record.tool_calls = [{"name": _tool_name(c)} for c in record.tool_calls or []]
    record.attempts = [{**a, "error": (a.get("error") or "").split(":", 1)[0] or None}
                       if isinstance(a, dict) else a for a in record.attempts or []]
    record.content_stored = False


def _tool_name(call: Any) -> str:
    if hasattr(call, "model_dump"):
        call = call.model_dump()
    if isinstance(call, dict):
        function = call.get("function") or {}
        return str(function.get("name") or call.get("name") or "")
    return ""
