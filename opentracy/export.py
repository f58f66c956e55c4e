"""Traces → training data: OpenAI chat fine-tuning JSONL (or plain prompt/response pairs).

One line per answered call: the request's messages with the assistant's answer last, tool
definitions and tool calls kept in OpenAI's format. Errors and cancelled calls are skipped by
default, exact duplicates once written are skipped, and every skip is counted by reason.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable, TextIO

FORMATS = ("openai", "pairs")


class NoContentError(RuntimeError):
    """The traces hold no text (OPENTRACY_TRACE_CONTENT=false): there is nothing to train on."""


@dataclass
class ExportSummary:
    written: int = 0
    redacted: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def describe(self, out_name: str) -> str:
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(self.skipped.items())) or "none"
        lines = [f"wrote {self.written} rows to {out_name}; skipped: {skipped}"]
        if self.redacted:
            lines.append(f"note: {self.redacted} of the rows written hold redacted text "
                         "([EMAIL], [PHONE], ... placeholders: OPENTRACY_TRACE_REDACT was on)")
        return "\n".join(lines)


def example_from_trace(trace: dict[str, Any], fmt: str = "openai") -> dict[str, Any] | None:
    """The training example for one trace, or None when it has no answer to learn from."""
    messages = [m for m in trace.get("messages") or [] if isinstance(m, dict)]
    tool_calls = [c for c in trace.get("tool_calls") or [] if isinstance(c, dict) and c.get("function")]
    answer: dict[str, Any] = {"role": "assistant", "content": trace.get("response") or None}
    if tool_calls:
        answer["tool_calls"] = [{"id": c.get("id"), "type": "function",
                                 "function": {"name": c["function"].get("name"),
                                              "arguments": c["function"].get("arguments")}} for c in tool_calls]
    if not messages or (answer["content"] is None and not tool_calls):
        return None
    if fmt == "pairs":
        prompt = "\n".join(f"{m.get('role')}: {_text(m.get('content'))}" for m in messages)
        completion = answer["content"] or json.dumps(answer.get("tool_calls"), ensure_ascii=False)
        return {"prompt": prompt, "response": completion}
    example: dict[str, Any] = {"messages": [*messages, answer]}
    if trace.get("tools"):
        example["tools"] = trace["tools"]
    return example


def export(traces: Iterable[dict[str, Any]], out: TextIO, *, fmt: str = "openai", include_failed: bool = False,
           progress: Any = None) -> ExportSummary:
    """Write examples as JSON lines; raise :class:`NoContentError` if traces exist but hold no text."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    summary = ExportSummary()
    seen: set[str] = set()
    stored_text = False
    for index, trace in enumerate(traces, start=1):
        if progress is not None:
            progress(index)
        if not trace.get("content_stored", True):
            summary.skipped["without content (OPENTRACY_TRACE_CONTENT=false)"] += 1
            continue
        stored_text = True
        if trace.get("status") != "ok" and not include_failed:
            summary.skipped[str(trace.get("status") or "error")] += 1
            continue
        example = example_from_trace(trace, fmt)
        if example is None:
            summary.skipped["without messages or answer"] += 1
            continue
        line = json.dumps(example, ensure_ascii=False, sort_keys=True)
        if line in seen:
            summary.skipped["duplicate"] += 1
            continue
        seen.add(line)
        out.write(line + "\n")
        summary.written += 1
        summary.redacted += bool(trace.get("redacted"))
    if summary.skipped and not stored_text:
        raise NoContentError("the matching traces hold no prompt or response text (OPENTRACY_TRACE_CONTENT="
                             "false when they were recorded): there is nothing to export")
    return summary


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)
