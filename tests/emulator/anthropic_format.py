"""Anthropic wire format: POST /v1/messages (JSON and SSE).

Mirrors api.anthropic.com: `x-api-key` + `anthropic-version` (and no Authorization beside them),
`max_tokens` required, no "system" role (system is top level), tool_use/tool_result pairing between
adjacent turns, unknown body fields rejected, errors as {"type":"error","error":{"type","message"}},
streams as named SSE events: message_start, content_block_start, ping, content_block_delta...,
content_block_stop, message_delta (stop_reason + usage), message_stop.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .replies import Conversation, Reply, Tool, pieces, plan_reply, split_even
from .wire import Call, ChunkStream, Endpoint, Json, ProviderSpec, SSEEvent, json_reply, sse_reply

MESSAGE_PARAMS = frozenset(
    {
        "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream", "temperature",
        "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier", "container", "mcp_servers",
        "context_management", "output_config", "output_format", "inference_geo",
    }
)  # fmt: skip
BLOCK_TYPES = frozenset(
    {
        "text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking", "search_result",
        "server_tool_use", "web_search_tool_result", "web_fetch_tool_result", "code_execution_tool_result",
        "bash_code_execution_tool_result", "text_editor_code_execution_tool_result", "mcp_tool_use",
        "mcp_tool_result", "container_upload", "tool_search_tool_result", "tool_reference",
    }
)  # fmt: skip
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
TOOL_USE_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")

_ERROR_TYPES: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def error_body(status: int, message: str) -> Json:
    kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
    return {"type": "error", "error": {"type": kind, "message": message}}


def check_headers(headers: Mapping[str, str]) -> list[str]:
    problems = []
    if not headers.get("x-api-key", "").strip():
        problems.append("x-api-key header is required")
    if not VERSION.match(headers.get("anthropic-version", "")):
        problems.append("anthropic-version header (e.g. 2023-06-01) is required")
    if "authorization" in headers:
        problems.append("Authorization header must not be sent to Anthropic (credential goes in x-api-key)")
    return problems


# --- validation -------------------------------------------------------------------------------


def _blocks(content: Any) -> list[Json]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return [b for b in content if isinstance(b, dict)] if isinstance(content, list) else []


def _check_block(where: str, role: str, block: Any) -> list[str]:
    kind = block.get("type") if isinstance(block, dict) else None
    if kind not in BLOCK_TYPES:
        return [f"{where}: unknown content block {block!r:.60}"]
    if kind == "text" and (not isinstance(block.get("text"), str) or not block["text"].strip()):
        return [f"{where}: text content blocks must contain non-whitespace text"]
    if kind == "tool_use":
        ok = isinstance(block.get("id"), str) and isinstance(block.get("name"), str) and isinstance(block.get("input"), dict)
        problems = [] if ok else [f"{where}: tool_use needs string id, string name and object input"]
        if ok and not TOOL_USE_ID.match(block["id"]):
            problems.append(f"{where}.id: String should match pattern '^[a-zA-Z0-9_-]+$'")
        return problems + ([f"{where}: tool_use is only allowed in assistant turns"] if role != "assistant" else [])
    if kind == "tool_result":
        problems = [] if isinstance(block.get("tool_use_id"), str) else [f"{where}: tool_result needs tool_use_id"]
        if not problems and not TOOL_USE_ID.match(block["tool_use_id"]):
            problems.append(f"{where}.tool_use_id: String should match pattern '^[a-zA-Z0-9_-]+$'")
        inner = block.get("content")
        if inner is not None and not isinstance(inner, str):
            if not isinstance(inner, list):
                problems.append(f"{where}: tool_result content must be a string or a list of blocks")
            else:
                problems += [p for j, b in enumerate(inner) for p in _check_block(f"{where}.content[{j}]", "user", b)]
        return problems + ([f"{where}: tool_result is only allowed in user turns"] if role != "user" else [])
    if kind in ("image", "document") and not isinstance(block.get("source"), dict):
        return [f"{where}: {kind} needs a source object"]
    return []


def _check_messages(messages: Any) -> list[str]:
    if not isinstance(messages, list) or not messages:
        return ["messages must be a non-empty list"]
    problems: list[str] = []
    pending: set[str] = set()  # tool_use ids of the previous assistant turn
    for i, msg in enumerate(messages):
        where = f"messages.{i}"
        role = msg.get("role") if isinstance(msg, dict) else None
        if role == "system":
            problems.append(f"{where}: role 'system' is not allowed; use the top-level system parameter")
            continue
        if role not in ("user", "assistant"):
            problems.append(f"{where}.role must be 'user' or 'assistant'")
            continue
        content = msg.get("content")
        if not isinstance(content, (str, list)):
            problems.append(f"{where}.content must be a string or a list of content blocks")
            continue
        final_assistant = role == "assistant" and i == len(messages) - 1
        if not content and not final_assistant:
            problems.append(f"{where}: all messages must have non-empty content except the final assistant message")
        if isinstance(content, list):
            problems += [p for j, b in enumerate(content) for p in _check_block(f"{where}.content.{j}", role, b)]
        blocks = _blocks(content)
        results = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
        if pending - results:
            problems.append(f"{where}: tool_use ids {sorted(pending - results)} were found without tool_result blocks immediately after")
        if results - pending:
            problems.append(f"{where}: unexpected tool_use_id {sorted(map(str, results - pending))} in tool_result blocks")
        pending = {b["id"] for b in blocks if b.get("type") == "tool_use" and isinstance(b.get("id"), str)}
    return problems


def _check_tools(body: Json) -> list[str]:
    tools, choice = body.get("tools"), body.get("tool_choice")
    problems: list[str] = []
    names: list[str] = []
    if tools is not None and not isinstance(tools, list):
        return ["tools must be a list"]
    for i, tool in enumerate(tools or ()):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not TOOL_NAME.match(tool["name"]):
            problems.append(f"tools.{i}.name must match {TOOL_NAME.pattern}")
            continue
        names.append(tool["name"])
        schema = tool.get("input_schema")
        if tool.get("type") in (None, "custom") and (not isinstance(schema, dict) or schema.get("type") != "object"):
            problems.append(f"tools.{i}.input_schema must be a JSON schema with type 'object'")
    if choice is not None:
        kind = choice.get("type") if isinstance(choice, dict) else None
        if kind not in ("auto", "any", "tool", "none"):
            problems.append(f"tool_choice {choice!r:.80} must be an object with type auto/any/tool/none")
        elif kind == "tool" and choice.get("name") not in names:
            problems.append(f"tool_choice names {choice.get('name')!r}, which is not in tools")
    return problems


def validate_messages(body: Json) -> list[str]:
    problems = [f"{k}: Extra inputs are not permitted" for k in sorted(set(body) - MESSAGE_PARAMS)]
    if not isinstance(body.get("model"), str) or not body["model"]:
        problems.append("model: Field required (non-empty string)")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        problems.append("max_tokens: Field required (positive integer)")
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        if not isinstance(system, list) or not all(isinstance(b, dict) and b.get("type") == "text" for b in system):
            problems.append("system must be a string or a list of text blocks")
    problems += _check_messages(body.get("messages"))
    problems += _check_tools(body)
    if "stream" in body and not isinstance(body["stream"], bool):
        problems.append("stream must be a boolean")
    temperature = body.get("temperature")
    if temperature is not None and not (isinstance(temperature, (int, float)) and 0 <= temperature <= 1):
        problems.append("temperature must be between 0 and 1")
    return problems


# --- answers ----------------------------------------------------------------------------------


def _text(content: Any) -> str:
    """Text of a content value, including tool_result contents (for prompt token counting)."""
    out = []
    for block in _blocks(content):
        if block.get("type") == "text":
            out.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            out.append(_text(block.get("content") or ""))
    return " ".join(out)


def conversation(body: Json) -> Conversation:
    messages: list[Json] = body["messages"]
    last_blocks = _blocks(messages[-1]["content"]) if messages[-1]["role"] == "user" else []
    results = [b for b in last_blocks if b.get("type") == "tool_result"]
    user_text = next(
        (" ".join(b["text"] for b in _blocks(m["content"]) if b.get("type") == "text") for m in reversed(messages) if m["role"] == "user"),
        "",
    )
    system = body.get("system")
    custom = [t for t in body.get("tools") or () if t.get("type") in (None, "custom")]
    choice = body.get("tool_choice") or {}
    return Conversation(
        model=body["model"],
        texts=(_text(system or ""), *(_text(m["content"]) for m in messages)),
        last_user_text=user_text,
        tool_result=" ".join(_text(b.get("content") or "") for b in results) if results else None,
        tools=tuple(Tool(t["name"], t.get("input_schema") or {}) for t in custom),
        forced_tool=choice.get("name") if choice.get("type") == "tool" else None,
        tools_disabled=choice.get("type") == "none",
        max_tokens=body["max_tokens"],
    )


_STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}


def _content(reply: Reply) -> Json:
    if reply.tool_call is not None:
        tc = reply.tool_call
        return {"type": "tool_use", "id": f"toolu_{tc.id_seed}", "name": tc.name, "input": tc.arguments}
    return {"type": "text", "text": reply.text or ""}


def _message(call: Call, reply: Reply, content: list[Json], stop: str | None, output_tokens: int) -> Json:
    return {
        "id": f"msg_emu{call.seq:020d}",
        "type": "message",
        "role": "assistant",
        "model": call.model,
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {
            "input_tokens": reply.prompt_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": output_tokens,
            "service_tier": "standard",
        },
    }


def messages(call: Call) -> ChunkStream:
    reply = plan_reply(conversation(call.body))
    rid = {"request-id": f"req_emu{call.seq:020d}"}
    if call.body.get("stream"):
        return sse_reply(_events(call, reply), call.fault, rid)
    payload = _message(call, reply, [_content(reply)], _STOP[reply.finish], reply.completion_tokens)
    return json_reply(payload, call.fault, headers=rid)


def _events(call: Call, reply: Reply) -> list[SSEEvent]:
    def ev(payload: Json) -> SSEEvent:
        return SSEEvent(payload, event=payload["type"])

    block = _content(reply)
    if reply.tool_call is not None:
        start = {**block, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in ["", *split_even(reply.tool_call.arguments_json, 4)]]
    else:
        start = {**block, "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in pieces(reply.text or "")]
    return [
        ev({"type": "message_start", "message": _message(call, reply, [], None, 1)}),
        ev({"type": "content_block_start", "index": 0, "content_block": start}),
        ev({"type": "ping"}),
        *(ev({"type": "content_block_delta", "index": 0, "delta": d}) for d in deltas),
        ev({"type": "content_block_stop", "index": 0}),
        ev(
            {
                "type": "message_delta",
                "delta": {"stop_reason": _STOP[reply.finish], "stop_sequence": None},
                "usage": {"output_tokens": reply.completion_tokens},
            }
        ),
        ev({"type": "message_stop"}),
    ]


PROVIDER = ProviderSpec(
    name="anthropic",
    prefix="/anthropic",
    api_base_path="/anthropic",  # litellm appends "/v1/messages" (main.py _complete_anthropic -> ensure_api_route)
    check_headers=check_headers,
    error_body=error_body,
    request_id_header="request-id",
    endpoints=(Endpoint("POST", "/v1/messages", validate_messages, messages),),
)
