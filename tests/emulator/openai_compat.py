"""OpenAI-compatible chat dialects: providers that take /chat/completions with their own quirks.

Groq, Mistral, DeepSeek, Together, Fireworks, Cerebras, SambaNova, Perplexity and Azure OpenAI take
OpenAI's request shape and answer in OpenAI's response / chunk shape, but each differs where a gateway
notices: which body fields it accepts, where usage sits in a stream (own chunk, on the finish chunk,
cumulative on every chunk), finish-reason names, tool-call id rules, whole vs. sliced tool-call deltas,
extra top-level fields. A `Dialect` names those differences; `chat_endpoint` validates and answers.
The request checks and `Conversation` reduction are openai_format's, so every dialect answers the same
conversation with the same text and usage.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from . import openai_format
from .replies import Reply, ToolCall, pieces, plan_reply, split_even, words
from .wire import Call, ChunkStream, Endpoint, Json, SSEEvent, json_reply, sse_reply

OPENAI_FINISH: Mapping[str, str] = {"stop": "stop", "length": "length", "tool": "tool_calls"}


@dataclass(frozen=True)
class StreamPoint:
    """Where a chunk sits in the stream, for dialects that decorate chunks."""

    index: int  # 0-based position among the content chunks
    text_so_far: str  # reply text sent up to and including this chunk
    completion_so_far: int  # completion tokens up to and including this chunk
    final: bool  # the chunk carrying finish_reason


def _no_checks(_: Json) -> list[str]:
    return []


def _nothing(*_: Any) -> None:
    return None


@dataclass(frozen=True)
class Dialect:
    name: str
    params: frozenset[str]  # body fields the provider accepts
    unknown_param: Callable[[str], str] = lambda k: f"Unrecognized request argument supplied: {k}"
    model_required: bool = True  # Azure takes the model from the path
    check: Callable[[Json], list[str]] = _no_checks  # provider-specific body rules
    tools: bool = True  # False: `tools` in the body is a violation
    extra_tool_choices: frozenset[str] = frozenset()  # tool_choice strings beyond none/auto/required
    finish: Mapping[str, str] = field(default_factory=lambda: dict(OPENAI_FINISH))
    stream_finish: Mapping[str, str] | None = None  # finish names in streams, when they differ
    # Where usage goes in a stream: "chunk" = its own chunk with choices [] (OpenAI), "finish" = on the
    # finish-reason chunk, "every" = cumulative usage on every chunk (Perplexity).
    stream_usage: Literal["chunk", "finish", "every"] = "chunk"
    stream_usage_always: bool = False  # sent without stream_options.include_usage
    whole_tool_call: bool = False  # tool call streamed in one delta (name + all arguments)
    tool_call_id: Callable[[ToolCall], str] = lambda tc: f"call_{tc.id_seed}"
    tool_call_type: bool = True  # tool calls carry "type": "function"
    tool_call_content: Any = None  # message.content next to tool_calls (Mistral sends "")
    usage_extra: Callable[[Reply, int], Json] = lambda _reply, _completion: {}  # (reply, completion tokens so far)
    envelope_extra: Callable[[Call], Json] = lambda _call: {}  # extra top-level fields on bodies and chunks
    decorate_response: Callable[[Call, Reply, Json], None] = _nothing
    decorate_chunk: Callable[[Call, Reply, Json, StreamPoint], None] = _nothing
    prelude_chunks: Callable[[Call], list[Json]] = lambda _call: []  # sent before the role chunk (Azure)
    object_chunk: str = "chat.completion.chunk"
    done_marker: bool = True  # end with data: [DONE]
    request_id_header: str = "x-request-id"
    id_prefix: str = "chatcmpl-"


# --- validation -------------------------------------------------------------------------------


def validator(dialect: Dialect) -> Callable[[Json], list[str]]:
    def validate(body: Json) -> list[str]:
        problems = [dialect.unknown_param(k) for k in sorted(set(body) - dialect.params)]
        if (dialect.model_required or "model" in body) and (not isinstance(body.get("model"), str) or not body["model"]):
            problems.append("model must be a non-empty string")
        problems += openai_format._check_messages(body.get("messages"))
        if body.get("tools") is not None and not dialect.tools:
            problems.append(f"tools are not supported by {dialect.name}")
        choice = body.get("tool_choice")
        extra = isinstance(choice, str) and choice in dialect.extra_tool_choices
        checked = {**body, "tool_choice": "required"} if extra else body
        problems += openai_format._check_tools(checked)
        if "stream" in body and not isinstance(body["stream"], bool):
            problems.append("stream must be a boolean")
        if body.get("stream_options") is not None and body.get("stream") is not True:
            problems.append("stream_options is only allowed when stream is true")
        for key in ("max_tokens", "max_completion_tokens"):
            value = body.get(key)
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                problems.append(f"{key} must be a positive integer")
        if isinstance(body.get("messages"), list):
            problems += dialect.check(body)
        return problems

    return validate


# --- answers ----------------------------------------------------------------------------------


def _usage(dialect: Dialect, reply: Reply, completion: int | None = None) -> Json:
    done = reply.completion_tokens if completion is None else completion
    counts = {"prompt_tokens": reply.prompt_tokens, "completion_tokens": done, "total_tokens": reply.prompt_tokens + done}
    return {**counts, **dialect.usage_extra(reply, done)}


def _envelope(dialect: Dialect, call: Call, obj: str) -> Json:
    return {
        "id": f"{dialect.id_prefix}emu{call.seq:020d}",
        "object": obj,
        "created": int(time.time()),
        "model": call.model,
        **dialect.envelope_extra(call),
    }


def _tool_call(dialect: Dialect, tc: ToolCall, arguments: str, with_index: bool) -> Json:
    out: Json = {"id": dialect.tool_call_id(tc)}
    if dialect.tool_call_type:
        out["type"] = "function"
    out["function"] = {"name": tc.name, "arguments": arguments}
    if with_index:
        out["index"] = 0
    return out


def reply_for(call: Call) -> Reply:
    return plan_reply(openai_format.conversation({**call.body, "model": call.model}))


def respond(dialect: Dialect, call: Call) -> ChunkStream:
    reply = reply_for(call)
    rid = {dialect.request_id_header: f"req_emu{call.seq:020d}"}
    if call.body.get("stream"):
        return sse_reply(stream_events(dialect, call, reply), call.fault, rid)
    message: Json = {"role": "assistant", "content": reply.text}
    if reply.tool_call is not None:
        message["content"] = dialect.tool_call_content
        message["tool_calls"] = [_tool_call(dialect, reply.tool_call, reply.tool_call.arguments_json, False)]
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": dialect.finish[reply.finish]}
    payload = {**_envelope(dialect, call, "chat.completion"), "choices": [choice], "usage": _usage(dialect, reply)}
    dialect.decorate_response(call, reply, payload)
    return json_reply(payload, call.fault, headers=rid)


def stream_events(dialect: Dialect, call: Call, reply: Reply) -> list[SSEEvent]:
    """Prelude, role chunk, one chunk per word (or the tool call), finish chunk, usage, [DONE]."""
    asked = bool((call.body.get("stream_options") or {}).get("include_usage"))
    send_usage = asked or dialect.stream_usage_always
    finish_names = dialect.stream_finish or dialect.finish
    deltas: list[Json] = []
    texts: list[str] = []
    if reply.tool_call is not None:
        tc = reply.tool_call
        if dialect.whole_tool_call:
            deltas.append({"role": "assistant", "content": dialect.tool_call_content,
                           "tool_calls": [_tool_call(dialect, tc, tc.arguments_json, True)]})
        else:
            deltas.append({"role": "assistant", "content": None, "tool_calls": [_tool_call(dialect, tc, "", True)]})
            deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": p}}]} for p in split_even(tc.arguments_json, 4)]
        texts = [""] * len(deltas)
    else:
        deltas.append({"role": "assistant", "content": ""})
        texts.append("")
        for piece in pieces(reply.text or ""):
            deltas.append({"content": piece})
            texts.append(piece)
    events = [SSEEvent(chunk) for chunk in dialect.prelude_chunks(call)]
    base = _envelope(dialect, call, dialect.object_chunk)
    sent = ""
    total_pieces = len(deltas)
    for index, (delta, text) in enumerate([*zip(deltas, texts), ({}, "")]):
        final = index == total_pieces
        sent += text
        done = words(sent) if reply.tool_call is None else (reply.completion_tokens if final else 0)
        chunk: Json = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                            "finish_reason": finish_names[reply.finish] if final else None}]}
        if send_usage and (dialect.stream_usage == "every" or (final and dialect.stream_usage == "finish")):
            chunk["usage"] = _usage(dialect, reply, reply.completion_tokens if final else done)
        dialect.decorate_chunk(call, reply, chunk, StreamPoint(index, sent, done, final))
        events.append(SSEEvent(chunk))
    if send_usage and dialect.stream_usage == "chunk":
        events.append(SSEEvent({**base, "choices": [], "usage": _usage(dialect, reply)}))
    if dialect.done_marker:
        events.append(SSEEvent("[DONE]"))
    return events


def chat_endpoint(dialect: Dialect, path: str, model_of: Callable[[Json, Mapping[str, str]], str | None] | None = None) -> Endpoint:
    if model_of is None:
        return Endpoint("POST", path, validator(dialect), lambda call: respond(dialect, call))
    return Endpoint("POST", path, validator(dialect), lambda call: respond(dialect, call), model_of)


def bearer(headers: Mapping[str, str]) -> list[str]:
    return openai_format.check_headers(headers)


# Parameters OpenAI's own API takes; dialects start from it and add or remove.
OPENAI_PARAMS = openai_format.CHAT_PARAMS
