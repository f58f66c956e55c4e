"""Provider-neutral, deterministic answers: what the model "says", tool arguments, token counts.

Every provider module reduces its request to a `Conversation` and renders the `Reply` in its own
wire format, so the same conversation gets the same text and usage from every provider.

Rules (documented in the package docstring, tests assert them exactly):
  * text reply       = f"Hello from {model}! You said: {last user text[:200]}"
  * after a tool     = f"Hello from {model}! Tool said: {tool result text[:200]}"
  * tool call        = when tools are offered and tool choice is not "none": call the named tool,
                       else the first one, with arguments built from its JSON schema (`sample_value`)
  * prompt tokens    = whitespace-separated words in all text of system + messages (incl. tool results,
                       excl. tool-call arguments and tool definitions)
  * completion tokens= words of the reply text, or of the JSON arguments string for a tool call
  * a text reply longer than max_tokens words is cut to max_tokens words (finish "length")
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import struct
from dataclasses import dataclass
from typing import Any, Literal

_PIECE_RE = re.compile(r"\s*\S+|\s+$")
Finish = Literal["stop", "length", "tool"]


@dataclass(frozen=True)
class Tool:
    name: str
    schema: dict[str, Any]


@dataclass(frozen=True)
class Conversation:
    """What a provider request boils down to."""

    model: str
    texts: tuple[str, ...]  # every prompt text, for the prompt token count
    last_user_text: str
    tool_result: str | None  # text of the tool result(s) when the last turn answers a tool call
    tools: tuple[Tool, ...] = ()
    forced_tool: str | None = None  # tool choice names a tool
    tools_disabled: bool = False  # tool choice "none"
    max_tokens: int | None = None


@dataclass(frozen=True)
class ToolCall:
    id_seed: str
    name: str
    arguments: dict[str, Any]

    @property
    def arguments_json(self) -> str:
        return json.dumps(self.arguments)


@dataclass(frozen=True)
class Reply:
    text: str | None
    tool_call: ToolCall | None
    prompt_tokens: int
    completion_tokens: int
    finish: Finish


def words(text: str) -> int:
    return len(text.split())


def pieces(text: str) -> list[str]:
    """Split into word pieces that concatenate back to `text` (leading whitespace kept)."""
    return _PIECE_RE.findall(text) or [text]


def split_even(text: str, parts: int) -> list[str]:
    """Split into `parts` non-empty slices (fewer if the text is shorter) that join back to `text`."""
    if not text:
        return [text]
    size = math.ceil(len(text) / parts)
    return [text[i : i + size] for i in range(0, len(text), size)]


def stable_id(*seed: object, length: int = 24) -> str:
    return hashlib.sha256("\x00".join(map(str, seed)).encode()).hexdigest()[:length]


def sample_value(schema: Any, depth: int = 0) -> Any:
    """Deterministic value for a JSON schema: string "test" (or first enum), integer 1, number 1.5,
    boolean true, array [one item], object {every property}, anything else null."""
    if not isinstance(schema, dict) or depth > 8:
        return None
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return sample_value(schema[key][0], depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "string":
        return "test"
    if kind == "integer":
        return 1
    if kind == "number":
        return 1.5
    if kind == "boolean":
        return True
    if kind == "array":
        return [sample_value(schema.get("items", {"type": "string"}), depth + 1)]
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {name: sample_value(sub, depth + 1) for name, sub in props.items()}
    return None


def plan_reply(conv: Conversation) -> Reply:
    prompt = sum(words(t) for t in conv.texts)
    if conv.tool_result is None and conv.tools and not conv.tools_disabled:
        tool = next((t for t in conv.tools if t.name == conv.forced_tool), conv.tools[0])
        args = sample_value(tool.schema)
        call = ToolCall(stable_id(conv.model, tool.name, prompt), tool.name, args if isinstance(args, dict) else {})
        return Reply(None, call, prompt, max(1, words(call.arguments_json)), "tool")
    if conv.tool_result is not None:
        text = f"Hello from {conv.model}! Tool said: {conv.tool_result[:200]}"
    else:
        text = f"Hello from {conv.model}! You said: {conv.last_user_text[:200]}"
    finish: Finish = "stop"
    if conv.max_tokens is not None and words(text) > conv.max_tokens:
        text, finish = "".join(pieces(text)[: conv.max_tokens]), "length"
    return Reply(text, None, prompt, words(text), finish)


def embedding(model: str, text: str, dims: int = 8) -> list[float]:
    """Unit vector derived from sha256(model, text): same input, same vector."""
    raw = hashlib.sha256(f"{model}\x00{text}".encode()).digest()
    while len(raw) < dims:
        raw += hashlib.sha256(raw).digest()
    values = [(b - 127.5) / 127.5 for b in raw[:dims]]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def floats_to_base64(values: list[float]) -> str:
    """OpenAI's encoding_format="base64": little-endian float32 array, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
