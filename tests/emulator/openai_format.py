"""OpenAI wire format: POST /v1/chat/completions (JSON and SSE) and POST /v1/embeddings.

Mirrors api.openai.com: `Authorization: Bearer <key>`, unknown body parameters rejected, errors as
{"error": {"message", "type", "param", "code"}}, streams as `data: {chunk}\\n\\n` ... `data: [DONE]\\n\\n`
with an optional usage-only final chunk (`stream_options.include_usage`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any

from .replies import Conversation, Reply, Tool, embedding, floats_to_base64, pieces, plan_reply, split_even, words
from .wire import Call, ChunkStream, Endpoint, Json, ProviderSpec, SSEEvent, json_reply, sse_reply

CHAT_PARAMS = frozenset(
    {
        "model", "messages", "stream", "stream_options", "temperature", "top_p", "n", "stop", "max_tokens",
        "max_completion_tokens", "presence_penalty", "frequency_penalty", "logit_bias", "logprobs",
        "top_logprobs", "user", "tools", "tool_choice", "parallel_tool_calls", "response_format", "seed",
        "service_tier", "store", "metadata", "modalities", "audio", "prediction", "reasoning_effort",
        "functions", "function_call", "web_search_options", "verbosity", "prompt_cache_key",
        "prompt_cache_retention", "safety_identifier",
    }
)  # fmt: skip
EMBEDDING_PARAMS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
PART_TYPES = frozenset({"text", "image_url", "input_audio", "file", "refusal"})
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
EMBEDDING_DIMS = 8

_ERROR_KINDS: Mapping[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "unsupported_country_region_territory"),
    404: ("invalid_request_error", "model_not_found"),
    408: ("timeout", None),
    409: ("invalid_request_error", "conflict"),
    422: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}


def error_body(status: int, message: str) -> Json:
    kind, code = _ERROR_KINDS.get(status, ("server_error", None))
    return {"error": {"message": message, "type": kind, "param": None, "code": code}}


def check_headers(headers: Mapping[str, str]) -> list[str]:
    auth = headers.get("authorization", "")
    if not auth.startswith("Bearer ") or not auth.removeprefix("Bearer ").strip():
        return [f"Authorization must be 'Bearer <api key>', got {auth[:20]!r}"]
    return []


# --- validation -------------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def _check_content(where: str, content: Any) -> list[str]:
    if isinstance(content, str):
        return []
    if not isinstance(content, list) or not content:
        return [f"{where}.content must be a string or a non-empty list of parts"]
    problems = []
    for j, part in enumerate(content):
        if not isinstance(part, dict) or part.get("type") not in PART_TYPES:
            problems.append(f"{where}.content[{j}] has invalid type {part!r:.60}")
        elif part["type"] == "text" and not isinstance(part.get("text"), str):
            problems.append(f"{where}.content[{j}].text must be a string")
    return problems


def _check_tool_calls(where: str, calls: Any) -> list[str]:
    if not isinstance(calls, list) or not calls:
        return [f"{where}.tool_calls must be a non-empty list"]
    problems = []
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(call, dict) or not isinstance(call.get("id"), str) or call.get("type") != "function":
            problems.append(f"{where}.tool_calls[{j}] needs a string id and type 'function'")
        elif not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not isinstance(fn.get("arguments"), str):
            problems.append(f"{where}.tool_calls[{j}].function needs string name and arguments")
    return problems


def _check_messages(messages: Any) -> list[str]:
    if not isinstance(messages, list) or not messages:
        return ["messages must be a non-empty list"]
    problems: list[str] = []
    open_calls: set[str] = set()  # tool_call ids still waiting for their role=tool answer
    for i, msg in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(msg, dict) or msg.get("role") not in ROLES:
            problems.append(f"{where}.role must be one of {sorted(ROLES)}")
            continue
        role, content = msg["role"], msg.get("content")
        if role != "tool" and open_calls:
            problems.append(f"{where}: tool_calls {sorted(open_calls)} were not answered by role=tool messages")
            open_calls = set()
        if role == "assistant" and msg.get("tool_calls") is not None:
            problems += _check_tool_calls(where, msg["tool_calls"])
            open_calls = {c["id"] for c in msg["tool_calls"] if isinstance(c, dict) and isinstance(c.get("id"), str)}
            if content is not None:
                problems += _check_content(where, content)
        elif role == "tool":
            if msg.get("tool_call_id") not in open_calls:
                problems.append(f"{where}.tool_call_id {msg.get('tool_call_id')!r} answers no preceding tool_calls")
            open_calls.discard(msg.get("tool_call_id"))
            problems += _check_content(where, content)
        elif not (role == "assistant" and msg.get("function_call") is not None):
            problems += _check_content(where, content)
    return problems


def check_tool_call_id_length(messages: Any, limit: int = 40) -> list[str]:
    """api.openai.com (and Azure) reject tool call ids longer than 40 characters in the history."""
    problems = []
    for i, msg in enumerate(messages if isinstance(messages, list) else ()):
        calls = msg.get("tool_calls") if isinstance(msg, dict) else None
        for j, call in enumerate(calls if isinstance(calls, list) else ()):
            call_id = call.get("id") if isinstance(call, dict) else None
            if isinstance(call_id, str) and len(call_id) > limit:
                problems.append(f"Invalid 'messages[{i}].tool_calls[{j}].id': string too long. Expected a string with "
                                f"maximum length {limit}, but got a string with length {len(call_id)} instead.")
        call_id = msg.get("tool_call_id") if isinstance(msg, dict) else None
        if isinstance(call_id, str) and len(call_id) > limit:
            problems.append(f"Invalid 'messages[{i}].tool_call_id': string too long. Expected a string with maximum "
                            f"length {limit}, but got a string with length {len(call_id)} instead.")
    return problems


def _check_tools(body: Json) -> list[str]:
    tools, choice = body.get("tools"), body.get("tool_choice")
    problems: list[str] = []
    names: list[str] = []
    if tools is not None:
        if not isinstance(tools, list) or not tools:
            return ["tools must be a non-empty list"]
        for i, tool in enumerate(tools):
            fn = tool.get("function") if isinstance(tool, dict) else None
            if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(fn, dict):
                problems.append(f"tools[{i}] must be {{'type': 'function', 'function': {{...}}}}")
            elif not isinstance(fn.get("name"), str) or not TOOL_NAME.match(fn["name"]):
                problems.append(f"tools[{i}].function.name must match {TOOL_NAME.pattern}")
            elif "parameters" in fn and not isinstance(fn["parameters"], dict):
                problems.append(f"tools[{i}].function.parameters must be a JSON schema object")
            else:
                names.append(fn["name"])
    if choice is None or choice in ("none", "auto", "required"):
        return problems
    named = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or choice.get("type") != "function" or named not in names:
        problems.append(f"tool_choice {choice!r:.80} is not none/auto/required or a function in tools")
    return problems


def validate_chat(body: Json) -> list[str]:
    problems = [f"Unrecognized request argument supplied: {k}" for k in sorted(set(body) - CHAT_PARAMS)]
    if not isinstance(body.get("model"), str) or not body["model"]:
        problems.append("model must be a non-empty string")
    problems += _check_messages(body.get("messages"))
    problems += check_tool_call_id_length(body.get("messages"))
    problems += _check_tools(body)
    if "stream" in body and not isinstance(body["stream"], bool):
        problems.append("stream must be a boolean")
    if body.get("stream_options") is not None and body.get("stream") is not True:
        problems.append("The 'stream_options' parameter is only allowed when 'stream' is enabled.")
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            problems.append(f"{key} must be a positive integer")
    return problems


def validate_embeddings(body: Json) -> list[str]:
    problems = [f"Unrecognized request argument supplied: {k}" for k in sorted(set(body) - EMBEDDING_PARAMS)]
    if not isinstance(body.get("model"), str) or not body["model"]:
        problems.append("model must be a non-empty string")
    inputs = body.get("input")
    ok = isinstance(inputs, str) or (
        isinstance(inputs, list)
        and inputs
        and (
            all(isinstance(x, str) for x in inputs)
            or all(isinstance(x, int) for x in inputs)
            or all(isinstance(x, list) and all(isinstance(t, int) for t in x) for x in inputs)
        )
    )
    if not ok:
        problems.append("input must be a string, a list of strings, or token id list(s)")
    if body.get("encoding_format") not in (None, "float", "base64"):
        problems.append("encoding_format must be 'float' or 'base64'")
    return problems


# --- answers ----------------------------------------------------------------------------------


def conversation(body: Json) -> Conversation:
    messages: list[Json] = body["messages"]
    last = messages[-1]
    tool_result = None
    if last["role"] in ("tool", "function"):
        trailing = []
        for msg in reversed(messages):
            if msg["role"] not in ("tool", "function"):
                break
            trailing.insert(0, _text_of(msg.get("content")))
        tool_result = " ".join(trailing)
    user_text = next((_text_of(m.get("content")) for m in reversed(messages) if m["role"] == "user"), "")
    tools = tuple(
        Tool(t["function"]["name"], t["function"].get("parameters") or {}) for t in body.get("tools") or ()
    )
    choice = body.get("tool_choice")
    return Conversation(
        model=body["model"],
        texts=tuple(_text_of(m.get("content")) for m in messages),
        last_user_text=user_text,
        tool_result=tool_result,
        tools=tools,
        forced_tool=choice["function"]["name"] if isinstance(choice, dict) else None,
        tools_disabled=choice == "none",
        max_tokens=body.get("max_completion_tokens") or body.get("max_tokens"),
    )


def _usage(reply: Reply) -> Json:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


_FINISH = {"stop": "stop", "length": "length", "tool": "tool_calls"}


def _tool_call_id(reply: Reply) -> str:
    assert reply.tool_call is not None
    return f"call_{reply.tool_call.id_seed}"


def _envelope(call: Call, obj: str) -> Json:
    return {
        "id": f"chatcmpl-emu{call.seq:020d}",
        "object": obj,
        "created": int(time.time()),
        "model": call.model,
        "service_tier": "default",
        "system_fingerprint": "fp_emulator",
    }


def chat(call: Call) -> ChunkStream:
    reply = plan_reply(conversation(call.body))
    rid = {"x-request-id": f"req_emu{call.seq:020d}"}
    if call.body.get("stream"):
        return sse_reply(_chunks(call, reply), call.fault, rid)
    message: Json = {"role": "assistant", "content": reply.text, "refusal": None, "annotations": []}
    if reply.tool_call is not None:
        fn = {"name": reply.tool_call.name, "arguments": reply.tool_call.arguments_json}
        message["tool_calls"] = [{"id": _tool_call_id(reply), "type": "function", "function": fn}]
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": _FINISH[reply.finish]}
    payload = {**_envelope(call, "chat.completion"), "choices": [choice], "usage": _usage(reply)}
    return json_reply(payload, call.fault, headers=rid)


def _chunks(call: Call, reply: Reply) -> list[SSEEvent]:
    """Role chunk, one chunk per word (or per argument slice), finish chunk, usage chunk, [DONE]."""
    include_usage = bool((call.body.get("stream_options") or {}).get("include_usage"))
    base = _envelope(call, "chat.completion.chunk")
    if include_usage:
        base["usage"] = None

    def chunk(delta: Json, finish: str | None = None) -> SSEEvent:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return SSEEvent({**base, "choices": [choice]})

    if reply.tool_call is not None:
        tc = reply.tool_call
        head = {"index": 0, "id": _tool_call_id(reply), "type": "function", "function": {"name": tc.name, "arguments": ""}}
        events = [chunk({"role": "assistant", "content": None, "tool_calls": [head], "refusal": None})]
        for piece in split_even(tc.arguments_json, 4):
            events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    else:
        events = [chunk({"role": "assistant", "content": "", "refusal": None})]
        events += [chunk({"content": piece}) for piece in pieces(reply.text or "")]
    events.append(chunk({}, _FINISH[reply.finish]))
    if include_usage:
        events.append(SSEEvent({**base, "choices": [], "usage": _usage(reply)}))
    events.append(SSEEvent("[DONE]"))
    return events


def embeddings(call: Call) -> ChunkStream:
    raw = call.body["input"]
    inputs: list[Any] = [raw] if isinstance(raw, str) or (raw and isinstance(raw[0], int)) else raw
    texts = [x if isinstance(x, str) else " ".join(map(str, x)) for x in inputs]
    dims = call.body.get("dimensions") or EMBEDDING_DIMS
    base64 = call.body.get("encoding_format") == "base64"
    data = []
    for index, text in enumerate(texts):
        vector = embedding(call.model, text, dims)
        data.append({"object": "embedding", "index": index, "embedding": floats_to_base64(vector) if base64 else vector})
    tokens = sum(words(t) for t in texts)
    payload = {
        "object": "list",
        "data": data,
        "model": call.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
    return json_reply(payload, call.fault, headers={"x-request-id": f"req_emu{call.seq:020d}"})


PROVIDER = ProviderSpec(
    name="openai",
    prefix="/openai",
    api_base_path="/openai/v1",  # litellm / the openai SDK append "/chat/completions", "/embeddings"
    check_headers=check_headers,
    error_body=error_body,
    request_id_header="x-request-id",
    endpoints=(
        Endpoint("POST", "/v1/chat/completions", validate_chat, chat),
        Endpoint("POST", "/v1/embeddings", validate_embeddings, embeddings),
    ),
)
