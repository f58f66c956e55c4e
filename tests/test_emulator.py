"""The provider emulator, proven with real clients (litellm, the openai SDK, raw httpx)."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx
import litellm
import openai
import pytest

from litellm.exceptions import MidStreamFallbackError

from tests.emulator import Emulator, Fault

GPT = "gpt-4o"
CLAUDE = "claude-sonnet-4-6"
HELLO = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi there friend"}]
HELLO_PROMPT_TOKENS = 5  # "be nice" + "hi there friend"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "detailed": {"type": "boolean"},
            },
            "required": ["city"],
        },
    },
}
pytestmark = pytest.mark.anyio

TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}
WEATHER_ARGS = {"city": "test", "days": 1, "unit": "celsius", "detailed": True}
TOOL_TURN = [
    {"role": "user", "content": "weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": "sunny and warm"},
]


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def running() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


@pytest.fixture
def emu(running: Emulator) -> Emulator:
    running.reset()
    running.delay_ms = 0
    return running


def kw(emu: Emulator, provider: str) -> dict[str, Any]:
    """litellm model + endpoint arguments for a provider; max_retries=0 so a fault surfaces at once."""
    if provider == "openai":
        return {"model": f"openai/{GPT}", "api_base": emu.base("openai"), "api_key": "sk-test", "max_retries": 0}
    return {"model": f"anthropic/{CLAUDE}", "api_base": emu.base("anthropic"), "api_key": "sk-ant-test"}


def upstream(provider: str) -> str:
    return GPT if provider == "openai" else CLAUDE


async def collect(stream: Any) -> tuple[str, list[Any]]:
    chunks = [c async for c in stream]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


def streamed_arguments(chunks: list[Any]) -> tuple[list[str], list[Any]]:
    deltas = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    return [d.function.arguments for d in deltas if d.function and d.function.arguments], deltas


# --- happy paths through litellm -----------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_chat_exact_text_usage_and_stream_equality(emu: Emulator, provider: str) -> None:
    model = upstream(provider)
    full = await litellm.acompletion(messages=HELLO, **kw(emu, provider))
    expected = f"Hello from {model}! You said: hi there friend"
    assert full.choices[0].message.content == expected
    assert full.choices[0].finish_reason == "stop"
    assert (full.usage.prompt_tokens, full.usage.completion_tokens) == (HELLO_PROMPT_TOKENS, len(expected.split()))

    stream = await litellm.acompletion(messages=HELLO, stream=True, stream_options={"include_usage": True}, **kw(emu, provider))
    text, chunks = await collect(stream)
    assert text == expected
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 5
    usage = [c.usage for c in chunks if getattr(c, "usage", None)][-1]
    assert (usage.prompt_tokens, usage.completion_tokens) == (full.usage.prompt_tokens, full.usage.completion_tokens)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert emu.violations == []


async def test_openai_request_as_recorded(emu: Emulator) -> None:
    await litellm.acompletion(messages=HELLO, **kw(emu, "openai"))
    [req] = emu.requests
    assert (req.provider, req.method, req.path, req.model) == ("openai", "POST", "/openai/v1/chat/completions", GPT)
    assert req.headers["authorization"] == "Bearer sk-test"
    assert req.json["messages"] == HELLO
    assert req.violations == ()


async def test_anthropic_request_as_recorded(emu: Emulator) -> None:
    await litellm.acompletion(messages=HELLO, **kw(emu, "anthropic"))
    [req] = emu.requests
    assert (req.provider, req.path, req.model) == ("anthropic", "/anthropic/v1/messages", CLAUDE)
    assert req.headers["x-api-key"] == "sk-ant-test"
    assert req.headers["anthropic-version"] == "2023-06-01"
    assert "authorization" not in req.headers
    assert req.json["system"] == [{"type": "text", "text": "be nice"}]  # system is top level, not a role
    assert [m["role"] for m in req.json["messages"]] == ["user"]
    assert isinstance(req.json["max_tokens"], int)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_sync_completion(emu: Emulator, provider: str) -> None:
    resp = litellm.completion(messages=[{"role": "user", "content": "sync please"}], **kw(emu, provider))
    assert resp.choices[0].message.content == f"Hello from {upstream(provider)}! You said: sync please"
    assert emu.violations == []


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_max_tokens_truncates_with_length_finish(emu: Emulator, provider: str) -> None:
    resp = await litellm.acompletion(messages=HELLO, max_tokens=3, **kw(emu, provider))
    assert resp.choices[0].message.content == f"Hello from {upstream(provider)}!"
    assert resp.choices[0].finish_reason == "length"
    assert resp.usage.completion_tokens == 3


# --- tools ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_tool_call_in_openai_shape(emu: Emulator, provider: str) -> None:
    msgs = [{"role": "user", "content": "weather?"}]
    resp = await litellm.acompletion(messages=msgs, tools=[WEATHER, TIME], **kw(emu, provider))
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather"
    assert call.id.startswith("call_" if provider == "openai" else "toolu_")
    assert json.loads(call.function.arguments) == WEATHER_ARGS
    assert resp.usage.completion_tokens == len(json.dumps(WEATHER_ARGS).split())

    stream = await litellm.acompletion(messages=msgs, tools=[WEATHER, TIME], stream=True, **kw(emu, provider))
    _, chunks = await collect(stream)
    pieces, deltas = streamed_arguments(chunks)
    assert len(pieces) >= 3, "arguments must arrive as several deltas"
    assert json.loads("".join(pieces)) == WEATHER_ARGS
    assert {d.id for d in deltas if d.id} == {call.id}
    assert [d.function.name for d in deltas if d.function and d.function.name] == ["get_weather"]
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    assert emu.violations == []


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_tool_choice_named_and_none(emu: Emulator, provider: str) -> None:
    named = {"type": "function", "function": {"name": "get_time"}}
    msgs = [{"role": "user", "content": "time?"}]
    resp = await litellm.acompletion(messages=msgs, tools=[WEATHER, TIME], tool_choice=named, **kw(emu, provider))
    [call] = resp.choices[0].message.tool_calls
    assert (call.function.name, json.loads(call.function.arguments)) == ("get_time", {"tz": "test"})
    if provider == "anthropic":
        assert emu.requests[-1].json["tool_choice"] == {"type": "tool", "name": "get_time"}
    resp = await litellm.acompletion(messages=msgs, tools=[WEATHER], tool_choice="none", **kw(emu, provider))
    assert resp.choices[0].message.content == f"Hello from {upstream(provider)}! You said: time?"
    assert not resp.choices[0].message.tool_calls
    assert emu.violations == []


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_tool_result_answered_with_text(emu: Emulator, provider: str) -> None:
    resp = await litellm.acompletion(messages=TOOL_TURN, tools=[WEATHER], **kw(emu, provider))
    assert resp.choices[0].message.content == f"Hello from {upstream(provider)}! Tool said: sunny and warm"
    assert resp.usage.prompt_tokens == 6  # "weather in Paris?" + "sunny and warm"
    if provider == "anthropic":
        last = emu.requests[-1].json["messages"][-1]
        assert last["role"] == "user" and last["content"][0]["type"] == "tool_result"
        assert last["content"][0]["tool_use_id"] == "call_1"
    assert emu.violations == []


# --- embeddings ----------------------------------------------------------------------------------


async def test_embeddings_via_litellm_and_openai_sdk(emu: Emulator) -> None:
    resp = await litellm.aembedding(
        model="openai/text-embedding-3-small", input=["hello world", "bye"], api_base=emu.base("openai"), api_key="sk-test"
    )
    first, second = (d["embedding"] for d in resp.data)
    assert len(first) == 8 and math.isclose(sum(v * v for v in first), 1.0, rel_tol=1e-4)
    assert first != second
    assert resp.usage.prompt_tokens == 3
    again = await litellm.aembedding(
        model="openai/text-embedding-3-small", input="hello world", api_base=emu.base("openai"), api_key="sk-test"
    )
    assert again.data[0]["embedding"] == first

    client = openai.OpenAI(base_url=emu.base("openai"), api_key="sk-test", max_retries=0)
    sdk = client.embeddings.create(model="text-embedding-3-small", input="hello world", dimensions=4)
    assert emu.requests[-1].json["encoding_format"] == "base64"  # the SDK asks for base64 and decodes it
    assert len(sdk.data[0].embedding) == 4
    assert emu.violations == []


# --- official openai SDK straight at the OpenAI route -------------------------------------------


def test_openai_sdk_chat_and_stream(emu: Emulator) -> None:
    client = openai.OpenAI(base_url=emu.base("openai"), api_key="sk-test", max_retries=0)
    full = client.chat.completions.create(model=GPT, messages=HELLO)
    assert full.choices[0].message.content == f"Hello from {GPT}! You said: hi there friend"
    stream = client.chat.completions.create(model=GPT, messages=HELLO, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == full.choices[0].message.content
    assert chunks[-1].choices == [] and chunks[-1].usage == full.usage
    with pytest.raises(openai.BadRequestError, match="emulator: Unrecognized request argument supplied: bogus"):
        client.chat.completions.create(model=GPT, messages=HELLO, extra_body={"bogus": 1})
    assert len(emu.violations) == 1


def test_openai_sse_framing_on_the_wire(emu: Emulator) -> None:
    body = {"model": GPT, "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}}
    resp = httpx.post(emu.base("openai") + "/chat/completions", json=body, headers={"Authorization": "Bearer k"})
    assert resp.headers["content-type"].startswith("text/event-stream")
    events = resp.text.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    payloads = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert all(e.startswith("data: {") for e in events[:-2])
    assert {p["object"] for p in payloads} == {"chat.completion.chunk"}
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"]["prompt_tokens"] == HELLO_PROMPT_TOKENS
    assert all(p["usage"] is None for p in payloads[:-1])


def test_anthropic_sse_event_sequence_on_the_wire(emu: Emulator) -> None:
    body = {"model": CLAUDE, "max_tokens": 100, "stream": True, "messages": [{"role": "user", "content": "hi there"}],
            "tools": [{"name": "get_weather", "input_schema": WEATHER["function"]["parameters"]}]}  # fmt: skip
    resp = httpx.post(emu.base("anthropic") + "/v1/messages", json=body, headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
    frames = [f for f in resp.text.split("\n\n") if f]
    names = [f.split("\n")[0].removeprefix("event: ") for f in frames]
    datas = [json.loads(f.split("\n")[1].removeprefix("data: ")) for f in frames]
    assert [d["type"] for d in datas] == names
    deltas = names.count("content_block_delta")
    assert names == ["message_start", "content_block_start", "ping", *["content_block_delta"] * deltas,
                     "content_block_stop", "message_delta", "message_stop"]  # fmt: skip
    assert deltas >= 3
    assert datas[1]["content_block"]["type"] == "tool_use" and datas[1]["content_block"]["id"].startswith("toolu_")
    partial = "".join(d["delta"]["partial_json"] for d in datas if d["type"] == "content_block_delta")
    assert json.loads(partial) == WEATHER_ARGS
    assert datas[-2]["delta"]["stop_reason"] == "tool_use" and datas[-2]["usage"]["output_tokens"] > 0


# --- faults --------------------------------------------------------------------------------------


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
@pytest.mark.parametrize(
    ("status", "errors"),
    [
        (429, (litellm.RateLimitError,)),
        (500, (litellm.InternalServerError,)),
        (503, (litellm.ServiceUnavailableError, litellm.InternalServerError)),
    ],
)
async def test_status_faults_map_to_litellm_errors(emu: Emulator, provider: str, status: int, errors: tuple[type, ...]) -> None:
    emu.fail(upstream(provider), Fault(status=status))
    with pytest.raises(errors) as info:
        await litellm.acompletion(messages=HELLO, **kw(emu, provider))
    assert info.value.status_code == status
    assert "injected fault" in str(info.value)
    resp = await litellm.acompletion(messages=HELLO, **kw(emu, provider))  # times=1: next one is fine
    assert resp.choices[0].message.content.startswith("Hello from")
    assert emu.violations == []


def test_error_shapes_and_retry_after_on_the_wire(emu: Emulator) -> None:
    emu.fail(GPT, Fault(status=429, retry_after=7))
    emu.fail(CLAUDE, Fault(status=529))
    resp = httpx.post(emu.base("openai") + "/chat/completions", json={"model": GPT, "messages": HELLO}, headers={"Authorization": "Bearer k"})
    assert resp.status_code == 429 and resp.headers["retry-after"] == "7"
    assert resp.json()["error"]["code"] == "rate_limit_exceeded" and set(resp.json()["error"]) == {"message", "type", "param", "code"}
    body = {"model": CLAUDE, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    resp = httpx.post(emu.base("anthropic") + "/v1/messages", json=body, headers={"x-api-key": "k", "anthropic-version": "2023-06-01"})
    assert resp.status_code == 529
    assert resp.json()["type"] == "error" and resp.json()["error"]["type"] == "overloaded_error"


async def test_fault_times_queue_wildcard_and_clear(emu: Emulator) -> None:
    emu.fail(GPT, Fault(status=500, times=2))
    emu.fail(GPT, Fault(status=429))
    for expected in (litellm.InternalServerError, litellm.InternalServerError, litellm.RateLimitError):
        with pytest.raises(expected):
            await litellm.acompletion(messages=HELLO, **kw(emu, "openai"))
    await litellm.acompletion(messages=HELLO, **kw(emu, "openai"))
    emu.fail("*", Fault(status=500, times=None))
    for provider in ("openai", "anthropic", "openai"):
        with pytest.raises(litellm.InternalServerError):
            await litellm.acompletion(messages=HELLO, **kw(emu, provider))
    emu.clear_faults()
    await litellm.acompletion(messages=HELLO, **kw(emu, "anthropic"))
    assert [r.fault.status if r.fault else None for r in emu.requests] == [500, 500, 429, None, 500, 500, 500, None]


async def test_openai_sdk_retries_consume_a_one_shot_fault(emu: Emulator) -> None:
    """litellm leaves the openai SDK's own retries on by default (2): a one-shot 503 is invisible."""
    emu.fail(GPT, Fault(status=503, retry_after=0.01))
    args = {k: v for k, v in kw(emu, "openai").items() if k != "max_retries"}
    resp = await litellm.acompletion(messages=HELLO, **args)
    assert resp.choices[0].message.content.startswith("Hello from")
    assert [r.fault is not None for r in emu.requests] == [True, False]


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_cut_stream_is_a_connection_error(emu: Emulator, provider: str) -> None:
    emu.fail(upstream(provider), Fault(cut_after_chunks=4))
    stream = await litellm.acompletion(messages=HELLO, stream=True, **kw(emu, provider))
    received = []
    with pytest.raises(MidStreamFallbackError) as info:
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "" if chunk.choices else "")
    assert isinstance(info.value.original_exception, litellm.APIConnectionError)
    full = f"Hello from {upstream(provider)}! You said: hi there friend"
    assert "".join(received) and full.startswith("".join(received)) and "".join(received) != full


def test_cut_drops_the_socket_mid_body(emu: Emulator) -> None:
    emu.fail(GPT, Fault(cut_after_chunks=3, times=2))
    body = {"model": GPT, "messages": HELLO, "stream": True}
    lines = []
    with pytest.raises(httpx.RemoteProtocolError):
        with httpx.stream("POST", emu.base("openai") + "/chat/completions", json=body, headers={"Authorization": "Bearer k"}) as resp:
            for line in resp.iter_lines():
                lines.append(line)
    assert len([line for line in lines if line.startswith("data: ")]) == 3
    body["stream"] = False  # non-stream: Content-Length promised, half the body sent
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(emu.base("openai") + "/chat/completions", json=body, headers={"Authorization": "Bearer k"})


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_malformed_json_fails_the_client(emu: Emulator, provider: str) -> None:
    emu.fail(upstream(provider), Fault(malformed_json=True, times=2))
    with pytest.raises(litellm.InternalServerError if provider == "openai" else litellm.APIConnectionError):
        await litellm.acompletion(messages=HELLO, **kw(emu, provider))
    with pytest.raises(MidStreamFallbackError):
        await collect(await litellm.acompletion(messages=HELLO, stream=True, **kw(emu, provider)))


def test_wrong_content_type_and_drip(emu: Emulator) -> None:
    emu.fail(GPT, Fault(wrong_content_type=True, times=2, drip_ms=40))
    headers = {"Authorization": "Bearer k"}
    resp = httpx.post(emu.base("openai") + "/chat/completions", json={"model": GPT, "messages": HELLO}, headers=headers)
    assert resp.headers["content-type"].startswith("text/html") and resp.json()["object"] == "chat.completion"
    started = time.monotonic()
    resp = httpx.post(emu.base("openai") + "/chat/completions", json={"model": GPT, "messages": HELLO, "stream": True}, headers=headers)
    chunks = resp.text.count("data: ")
    assert resp.headers["content-type"] == "application/json"
    assert time.monotonic() - started >= 0.04 * (chunks - 1) * 0.9


async def test_delays_make_litellm_time_out(emu: Emulator) -> None:
    emu.fail(CLAUDE, Fault(delay_ms=2000))
    started = time.monotonic()
    with pytest.raises(litellm.Timeout):
        await litellm.acompletion(messages=HELLO, timeout=0.3, **kw(emu, "anthropic"))
    assert time.monotonic() - started < 1.5
    emu.delay_ms = 150
    started = time.monotonic()
    await litellm.acompletion(messages=HELLO, **kw(emu, "openai"))
    assert time.monotonic() - started >= 0.15


# --- validation ----------------------------------------------------------------------------------

ANTHROPIC_HEADERS = {"x-api-key": "k", "anthropic-version": "2023-06-01"}
GOOD_ANTHROPIC = {"model": CLAUDE, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}


@pytest.mark.parametrize(
    ("headers", "body", "problem"),
    [
        (ANTHROPIC_HEADERS, {k: v for k, v in GOOD_ANTHROPIC.items() if k != "max_tokens"}, "max_tokens"),
        ({"anthropic-version": "2023-06-01"}, GOOD_ANTHROPIC, "x-api-key"),
        ({"x-api-key": "k"}, GOOD_ANTHROPIC, "anthropic-version"),
        ({**ANTHROPIC_HEADERS, "Authorization": "Bearer k"}, GOOD_ANTHROPIC, "Authorization"),
        (ANTHROPIC_HEADERS, {**GOOD_ANTHROPIC, "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "hi"}]}, "top-level system"),
        (ANTHROPIC_HEADERS, {**GOOD_ANTHROPIC, "messages": [{"role": "user", "content": [{"type": "text"}]}]}, "text content"),
        (ANTHROPIC_HEADERS, {**GOOD_ANTHROPIC, "tools": [{"name": "t"}]}, "input_schema"),
        (ANTHROPIC_HEADERS, {**GOOD_ANTHROPIC, "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "t", "input": {}}]}, {"role": "user", "content": "b"}]}, "without tool_result"),
        (ANTHROPIC_HEADERS, {**GOOD_ANTHROPIC, "stream_options": {}}, "Extra inputs"),
    ],
)  # fmt: skip
def test_anthropic_wrong_shape_is_400_and_violation(emu: Emulator, headers: dict[str, str], body: dict[str, Any], problem: str) -> None:
    resp = httpx.post(emu.base("anthropic") + "/v1/messages", json=body, headers=headers)
    assert resp.status_code == 400
    err = resp.json()
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    assert err["error"]["message"].startswith("emulator: ") and problem in err["error"]["message"]
    [violation] = emu.violations
    assert problem in violation and "/anthropic/v1/messages" in violation


@pytest.mark.parametrize(
    ("headers", "body", "problem"),
    [
        ({}, {"model": GPT, "messages": HELLO}, "Authorization"),
        ({"Authorization": "k"}, {"model": GPT, "messages": HELLO}, "Authorization"),
        ({"Authorization": "Bearer k"}, {"model": GPT, "messages": []}, "messages"),
        ({"Authorization": "Bearer k"}, {"model": GPT, "messages": [{"role": "robot", "content": "x"}]}, "role"),
        ({"Authorization": "Bearer k"}, {"model": GPT, "messages": HELLO, "stream_options": {"include_usage": True}}, "stream_options"),
        ({"Authorization": "Bearer k"}, {"model": GPT, "messages": [{"role": "tool", "tool_call_id": "x", "content": "r"}]}, "tool_call_id"),
        ({"Authorization": "Bearer k"}, {"model": GPT, "messages": TOOL_TURN[:2] + [{"role": "user", "content": "?"}]}, "not answered"),
    ],
)
def test_openai_wrong_shape_is_400_and_violation(emu: Emulator, headers: dict[str, str], body: dict[str, Any], problem: str) -> None:
    resp = httpx.post(emu.base("openai") + "/chat/completions", json=body, headers=headers)
    assert resp.status_code == 400
    assert resp.json()["error"]["type"] == "invalid_request_error"
    assert resp.json()["error"]["message"].startswith("emulator: ")
    [violation] = emu.violations
    assert problem in violation


async def test_wrong_api_base_is_a_404_violation(emu: Emulator) -> None:
    args = {**kw(emu, "anthropic"), "api_base": emu.base("anthropic") + "/v1"}  # litellm appends /v1/messages again
    with pytest.raises(litellm.NotFoundError):
        await litellm.acompletion(messages=HELLO, **args)
    [violation] = emu.violations
    assert "/anthropic/v1/v1/messages" in violation


def test_faults_do_not_mask_violations(emu: Emulator) -> None:
    emu.fail(CLAUDE, Fault(status=429))
    resp = httpx.post(emu.base("anthropic") + "/v1/messages", json={**GOOD_ANTHROPIC, "messages": []}, headers=ANTHROPIC_HEADERS)
    assert resp.status_code == 400 and len(emu.violations) == 1
    resp = httpx.post(emu.base("anthropic") + "/v1/messages", json=GOOD_ANTHROPIC, headers=ANTHROPIC_HEADERS)
    assert resp.status_code == 429  # the fault was not spent on the bad request


# --- lifecycle -----------------------------------------------------------------------------------


def test_context_manager_stops_the_server() -> None:
    with Emulator() as emu:
        url = emu.url
        assert httpx.get(url + "/health").json() == {"ok": True}
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/health")


def test_standalone_module_runs() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    root = Path(__file__).resolve().parent.parent
    proc = subprocess.Popen([sys.executable, "-m", "tests.emulator", "--port", str(port), "--delay-ms", "1"], cwd=root,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        assert f"http://127.0.0.1:{port}/openai/v1" in proc.stdout.readline()
        assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0
