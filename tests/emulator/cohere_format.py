"""Cohere v2 Chat wire format: POST /v2/chat (api.cohere.com/v2/chat), JSON and typed SSE.

Mirrors Cohere's v2 API: `Authorization: Bearer <key>`; `model` and `messages` required; roles system /
user / assistant / tool, assistant `tool_calls` answered by `tool` messages (`tool_call_id`); tools in
OpenAI's function shape; `tool_choice` only "REQUIRED" or "NONE"; sampling as `p` / `k`, stops as
`stop_sequences`; unknown fields rejected. Answers: `message.content` as a list of text blocks, or
`tool_plan` + `tool_calls` with finish_reason TOOL_CALL; finish_reason COMPLETE / MAX_TOKENS; usage as
`billed_units` (what is paid: the emulator's word counts) and `tokens` (what the model processed:
input includes Cohere's prompt template, PROMPT_TEMPLATE_TOKENS more). Streams are SSE with an `event:`
line per event: message-start, content-start, content-delta..., content-end (or tool-plan-delta...,
tool-call-start, tool-call-delta..., tool-call-end), message-end {finish_reason, usage}; no [DONE].
Errors {"id", "message"}.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from .replies import Conversation, Reply, Tool, pieces, plan_reply, split_even
from .wire import Call, ChunkStream, Endpoint, Json, ProviderSpec, SSEEvent, json_reply, sse_reply

PARAMS = frozenset(
    {
        "model", "messages", "stream", "tools", "strict_tools", "documents", "citation_options", "response_format",
        "safety_mode", "max_tokens", "stop_sequences", "temperature", "seed", "frequency_penalty",
        "presence_penalty", "k", "p", "logprobs", "tool_choice", "thinking", "priority",
    }
)  # fmt: skip
ROLES = frozenset({"system", "user", "assistant", "tool"})
USER_PARTS = frozenset({"text", "image_url", "document"})
TOOL_PARTS = frozenset({"text", "document"})
PROMPT_TEMPLATE_TOKENS = 66  # Cohere's docs example: billed input 5, tokens.input 71


def error_body(status: int, message: str) -> Json:
    return {"id": str(uuid.uuid4()), "message": message}


def check_headers(headers: Mapping[str, str]) -> list[str]:
    auth = headers.get("authorization", "")
    scheme, _, key = auth.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        return [f"no api key supplied: Authorization must be 'Bearer <api key>', got {auth[:20]!r}"]
    return []


# --- validation -------------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text":
                out.append(str(part.get("text", "")))
            elif isinstance(part, dict) and part.get("type") == "document":
                doc = part.get("document") or {}
                out.append(str(doc.get("data", "")) if isinstance(doc, dict) else "")
        return " ".join(out)
    return ""


def _check_content(where: str, content: Any, allowed: frozenset[str], required: bool = True) -> list[str]:
    if content is None and not required:
        return []
    if isinstance(content, str):
        return []
    if not isinstance(content, list) or (required and not content):
        return [f"{where}.content must be a string or a non-empty list of content blocks"]
    return [f"{where}.content[{j}]: invalid content type {p.get('type') if isinstance(p, dict) else p!r}"
            for j, p in enumerate(content) if not isinstance(p, dict) or p.get("type") not in allowed]


def _check_messages(messages: Any) -> list[str]:
    if not isinstance(messages, list) or not messages:
        return ["invalid request: messages must be a non-empty list"]
    problems: list[str] = []
    open_calls: set[str] = set()
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        role = msg.get("role") if isinstance(msg, dict) else None
        if role not in ROLES:
            problems.append(f"{where}.role must be one of {sorted(ROLES)}")
            continue
        if role != "tool" and open_calls:
            problems.append(f"{where}: tool calls {sorted(open_calls)} have no tool message answering them")
            open_calls = set()
        extra = set(msg) - {"role", "content", "tool_calls", "tool_plan", "citations", "tool_call_id"}
        if extra:
            problems.append(f"{where}: unknown fields {sorted(extra)}")
        if role in ("system", "user"):
            problems += _check_content(where, msg.get("content"), USER_PARTS)
        elif role == "assistant":
            calls = msg.get("tool_calls")
            problems += _check_content(where, msg.get("content"), frozenset({"text", "thinking"}), required=not calls)
            for j, call in enumerate(calls or ()):
                fn = call.get("function") if isinstance(call, dict) else None
                if not isinstance(call, dict) or not isinstance(call.get("id"), str) or not isinstance(fn, dict) \
                        or not isinstance(fn.get("name"), str) or not isinstance(fn.get("arguments"), str):
                    problems.append(f"{where}.tool_calls[{j}] needs id, function.name and function.arguments (string)")
                else:
                    open_calls.add(call["id"])
        else:  # tool
            call_id = msg.get("tool_call_id")
            if call_id not in open_calls:
                problems.append(f"{where}.tool_call_id {call_id!r} answers no preceding tool call")
            open_calls.discard(call_id)
            problems += _check_content(where, msg.get("content"), TOOL_PARTS)
    return problems


def _check_tools(body: Json) -> list[str]:
    problems: list[str] = []
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            return ["tools must be a list"]
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict) \
                    or not isinstance(fn.get("name"), str):
                problems.append(f"tools[{i}] must be {{'type': 'function', 'function': {{'name', 'parameters'}}}}")
    choice = body.get("tool_choice")
    if choice is not None and choice not in ("REQUIRED", "NONE"):
        problems.append(f"invalid request: tool_choice must be one of REQUIRED, NONE (got {choice!r})")
    return problems


def validate(body: Json) -> list[str]:
    problems = [f"invalid request: unknown field {k!r}" for k in sorted(set(body) - PARAMS)]
    if not isinstance(body.get("model"), str) or not body["model"]:
        problems.append("invalid request: model must be a non-empty string")
    problems += _check_messages(body.get("messages"))
    problems += _check_tools(body)
    if "stream" in body and not isinstance(body["stream"], bool):
        problems.append("stream must be a boolean")
    limit = body.get("max_tokens")
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        problems.append("max_tokens must be a positive integer")
    return problems


# --- answers ----------------------------------------------------------------------------------


def conversation(body: Json) -> Conversation:
    messages: list[Json] = body["messages"]
    trailing = []
    for msg in reversed(messages):
        if msg["role"] != "tool":
            break
        trailing.insert(0, _text_of(msg.get("content")))
    user_text = next((_text_of(m.get("content")) for m in reversed(messages) if m["role"] == "user"), "")
    tools = tuple(Tool(t["function"]["name"], t["function"].get("parameters") or {}) for t in body.get("tools") or ())
    return Conversation(
        model=body["model"],
        texts=tuple(_text_of(m.get("content")) for m in messages),
        last_user_text=user_text,
        tool_result=" ".join(trailing) if trailing else None,
        tools=tools,
        tools_disabled=body.get("tool_choice") == "NONE",
        max_tokens=body.get("max_tokens"),
    )


_FINISH = {"stop": "COMPLETE", "length": "MAX_TOKENS", "tool": "TOOL_CALL"}


def _usage(reply: Reply) -> Json:
    return {
        "billed_units": {"input_tokens": reply.prompt_tokens, "output_tokens": reply.completion_tokens},
        "tokens": {"input_tokens": reply.prompt_tokens + PROMPT_TEMPLATE_TOKENS, "output_tokens": reply.completion_tokens},
    }


def tool_call_id(reply: Reply) -> str:
    assert reply.tool_call is not None
    return f"{reply.tool_call.name}_{reply.tool_call.id_seed[:12]}"


def tool_plan(reply: Reply) -> str:
    assert reply.tool_call is not None
    return f"I will call {reply.tool_call.name} to answer."


def chat(call: Call) -> ChunkStream:
    reply = plan_reply(conversation(call.body))
    rid = {"x-request-id": f"emu{call.seq:020d}"}
    if call.body.get("stream"):
        return sse_reply(_events(call, reply), call.fault, rid)
    message: Json = {"role": "assistant"}
    if reply.tool_call is not None:
        tc = reply.tool_call
        message["tool_plan"] = tool_plan(reply)
        message["tool_calls"] = [{"id": tool_call_id(reply), "type": "function",
                                  "function": {"name": tc.name, "arguments": tc.arguments_json}}]
    else:
        message["content"] = [{"type": "text", "text": reply.text or ""}]
    payload = {"id": str(uuid.UUID(int=call.seq)), "finish_reason": _FINISH[reply.finish], "message": message,
               "usage": _usage(reply)}
    return json_reply(payload, call.fault, headers=rid)


def _events(call: Call, reply: Reply) -> list[SSEEvent]:
    def ev(payload: Json) -> SSEEvent:
        return SSEEvent(payload, event=payload["type"])

    start = {"role": "assistant", "content": [], "tool_plan": "", "tool_calls": [], "citations": []}
    events = [ev({"id": str(uuid.UUID(int=call.seq)), "type": "message-start", "delta": {"message": start}})]
    if reply.tool_call is not None:
        tc = reply.tool_call
        events += [ev({"type": "tool-plan-delta", "delta": {"message": {"tool_plan": p}}}) for p in pieces(tool_plan(reply))]
        head = {"id": tool_call_id(reply), "type": "function", "function": {"name": tc.name, "arguments": ""}}
        events.append(ev({"type": "tool-call-start", "index": 0, "delta": {"message": {"tool_calls": head}}}))
        for part in split_even(tc.arguments_json, 4):
            delta = {"message": {"tool_calls": {"function": {"arguments": part}}}}
            events.append(ev({"type": "tool-call-delta", "index": 0, "delta": delta}))
        events.append(ev({"type": "tool-call-end", "index": 0}))
    else:
        events.append(ev({"type": "content-start", "index": 0,
                          "delta": {"message": {"content": {"type": "text", "text": ""}}}}))
        events += [ev({"type": "content-delta", "index": 0, "delta": {"message": {"content": {"text": p}}}})
                   for p in pieces(reply.text or "")]
        events.append(ev({"type": "content-end", "index": 0}))
    events.append(ev({"type": "message-end", "delta": {"finish_reason": _FINISH[reply.finish], "usage": _usage(reply)}}))
    return events


PROVIDER = ProviderSpec(
    name="cohere",
    prefix="/cohere",
    api_base_path="/cohere/v2/chat",  # litellm posts to api_base as given (default https://api.cohere.com/v2/chat)
    check_headers=check_headers,
    error_body=error_body,
    request_id_header="x-request-id",
    endpoints=(Endpoint("POST", "/v2/chat", validate, chat),),
)
