"""The emulator's provider formats on the wire: framing, auth checks and the violations they record.

tests/test_providers.py drives them through the engine; these pin what each format sends and
refuses, with raw httpx (and litellm where its decoding is the point), without an engine.
"""

from __future__ import annotations

import json
import os
import struct
import time
from collections.abc import Iterator

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import httpx
import litellm
import pytest

from tests.emulator import Emulator, Fault
from tests.emulator import bedrock_format, cohere_format, eventstream, perplexity_format
from tests.emulator.wire import RawRequest

BEARER = {"authorization": "Bearer k"}
HELLO = [{"role": "system", "content": "be nice"}, {"role": "user", "content": "hi there"}]
TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


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
    return running


def sse_data(text: str) -> list[dict]:
    return [json.loads(line[5:]) for line in text.splitlines() if line.startswith("data:") and line[5:].strip() != "[DONE]"]


def test_every_provider_is_listed_with_its_api_base(emu: Emulator) -> None:
    assert emu.providers == ["openai", "anthropic", "gemini", "groq", "mistral", "deepseek", "together", "fireworks",
                             "cerebras", "sambanova", "perplexity", "cohere", "bedrock", "azure"]
    assert emu.base("gemini").endswith("/gemini/v1beta") and emu.base("cohere").endswith("/cohere/v2/chat")


# --- Gemini -------------------------------------------------------------------------------------


def test_gemini_key_in_query_or_header_and_sse_with_crlf(emu: Emulator) -> None:
    base = emu.base("gemini") + "/models/gemini-2.5-flash"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi there"}]}],
            "systemInstruction": {"parts": [{"text": "be nice"}]}}
    plain = httpx.post(base + ":generateContent", params={"key": "k"}, json=body).json()
    assert plain["candidates"][0]["content"]["parts"] == [{"text": "Hello from gemini-2.5-flash! You said: hi there"}]
    assert plain["usageMetadata"]["promptTokenCount"] == 4
    stream = httpx.post(base + ":streamGenerateContent", params={"alt": "sse"}, json=body, headers={"x-goog-api-key": "k"})
    assert stream.headers["content-type"].startswith("text/event-stream") and "\r\n\r\n" in stream.text
    events = sse_data(stream.text)
    assert "".join(e["candidates"][0]["content"]["parts"][0]["text"] for e in events) == plain["candidates"][0]["content"]["parts"][0]["text"]
    assert events[-1]["candidates"][0]["finishReason"] == "STOP" and "finishReason" not in events[0]["candidates"][0]
    assert emu.violations == []


@pytest.mark.parametrize("params, body, problem", [
    ({}, {"contents": [{"parts": [{"text": "x"}]}]}, "unregistered callers"),
    ({"key": "k"}, {"contents": [{"parts": [{"text": "x"}]}], "temperature": 1}, 'Unknown name "temperature"'),
    ({"key": "k"}, {"contents": [{"role": "user", "parts": []}]}, "parts must not be empty"),
    ({"key": "k"}, {"contents": [{"role": "user", "parts": [{"functionResponse": {"name": "f", "response": {}}}]}]},
     "function response turn comes immediately after a function call turn"),
])
def test_gemini_wrong_shapes_are_violations(emu: Emulator, params: dict, body: dict, problem: str) -> None:
    resp = httpx.post(emu.base("gemini") + "/models/gemini-2.5-flash:generateContent", params=params, json=body)
    assert resp.status_code == 400 and resp.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert any(problem in v for v in emu.violations), emu.violations


def test_gemini_stream_without_alt_sse_is_a_violation(emu: Emulator) -> None:
    httpx.post(emu.base("gemini") + "/models/gemini-2.5-flash:streamGenerateContent", params={"key": "k"},
               json={"contents": [{"parts": [{"text": "x"}]}]})
    assert any("alt=sse" in v for v in emu.violations)


# --- Bedrock ------------------------------------------------------------------------------------


def test_event_stream_frames_round_trip_with_both_crcs() -> None:
    frame = eventstream.event("contentBlockDelta", b'{"delta":{"text":"hi"}}')
    total, headers_len, prelude_crc = struct.unpack(">III", frame[:12])
    assert total == len(frame) and prelude_crc == eventstream.crc32(frame[:8])
    assert struct.unpack(">I", frame[-4:])[0] == eventstream.crc32(frame[:-4])
    [(headers, payload)] = list(eventstream.decode(frame))
    assert headers == {":event-type": "contentBlockDelta", ":content-type": "application/json", ":message-type": "event"}
    assert payload == b'{"delta":{"text":"hi"}}' and 12 + headers_len + len(payload) + 4 == total
    with pytest.raises(ValueError):
        list(eventstream.decode(frame[:-1] + bytes([frame[-1] ^ 1])))


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", bedrock_format.AWS_ACCESS_KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", bedrock_format.AWS_SECRET_ACCESS_KEY)
    monkeypatch.setenv("AWS_REGION_NAME", "eu-west-3")


BEDROCK_MODEL = "bedrock/anthropic.claude-3-5-haiku-20241022-v1:0"


@pytest.mark.anyio
async def test_bedrock_sigv4_is_verified_and_the_event_stream_decodes(emu: Emulator, aws: None) -> None:
    stream = await litellm.acompletion(model=BEDROCK_MODEL, messages=HELLO, stream=True, max_retries=0,
                                       aws_bedrock_runtime_endpoint=emu.base("bedrock"))
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Hello from anthropic.claude-3-5-haiku-20241022-v1:0! You said: hi there"
    [request] = emu.requests
    assert request.raw_path == "/bedrock/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse-stream"
    match = bedrock_format.SIGV4.match(request.headers["authorization"])
    assert match and match["region"] == "eu-west-3" and match["service"] == "bedrock"
    assert match["date"] == request.headers["x-amz-date"][:8]
    assert emu.violations == []  # the signature was recomputed from the raw request and matched


@pytest.mark.anyio
async def test_bedrock_wrong_secret_is_a_signature_violation(emu: Emulator, aws: None,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-emulator-secret")
    with pytest.raises(litellm.BadRequestError):
        await litellm.acompletion(model=BEDROCK_MODEL, messages=HELLO, max_retries=0, api_base=emu.base("bedrock"))
    assert any("signature we calculated does not match" in v for v in emu.violations)


def test_bedrock_sigv4_checks_shape_date_and_body() -> None:
    body = b'{"messages":[]}'
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    headers = {"host": "127.0.0.1:1", "x-amz-date": amz_date, "content-type": "application/json"}
    raw = RawRequest("POST", "/bedrock/model/m/converse", "/bedrock/model/m/converse", {}, headers, body)
    signed = ["content-type", "host", "x-amz-date"]
    sig = bedrock_format.expected_signature(raw, signed, amz_date, "us-east-1", "bedrock",
                                            bedrock_format.AWS_SECRET_ACCESS_KEY)
    auth = (f"AWS4-HMAC-SHA256 Credential={bedrock_format.AWS_ACCESS_KEY_ID}/{amz_date[:8]}/us-east-1/bedrock/aws4_request, "
            f"SignedHeaders={';'.join(signed)}, Signature={sig}")
    ok = RawRequest(raw.method, raw.path, raw.raw_path, {}, {**headers, "authorization": auth}, body)
    assert bedrock_format.check_request(ok) == []
    tampered = RawRequest(raw.method, raw.path, raw.raw_path, {}, ok.headers, body + b" ")
    assert "signature" in bedrock_format.check_request(tampered)[0]
    stale = {**ok.headers, "x-amz-date": "20200101T000000Z"}
    assert any("expired" in p for p in bedrock_format.check_request(RawRequest("POST", raw.path, raw.raw_path, {}, stale, body)))
    bad = {**headers, "authorization": "AWS4-HMAC-SHA256 Credential=AKID, Signature=xyz"}
    assert "not a valid AWS SigV4" in bedrock_format.check_request(RawRequest("POST", raw.path, raw.raw_path, {}, bad, body))[0]


def test_bedrock_errors_carry_x_amzn_errortype(emu: Emulator) -> None:
    emu.fail("m", Fault(status=429))
    body = {"messages": [{"role": "user", "content": [{"text": "hi"}]}]}
    resp = httpx.post(emu.base("bedrock") + "/model/m/converse", json=body, headers={"authorization": "Bearer ABSK-test"})
    assert resp.status_code == 429 and resp.json() == {"message": "injected fault: HTTP 429 for model m"}
    assert resp.headers["x-amzn-errortype"].startswith("ThrottlingException:")


def test_bedrock_tool_blocks_need_a_tool_config(emu: Emulator) -> None:
    messages = [{"role": "user", "content": [{"text": "hi"}]},
                {"role": "assistant", "content": [{"toolUse": {"toolUseId": "t1", "name": "f", "input": {}}}]},
                {"role": "user", "content": [{"toolResult": {"toolUseId": "t1", "content": [{"text": "ok"}]}}]}]
    resp = httpx.post(emu.base("bedrock") + "/model/m/converse", json={"messages": messages},
                      headers={"authorization": "Bearer ABSK-test"})
    assert resp.status_code == 400 and "toolConfig field must be defined" in resp.json()["message"]


# --- Cohere -------------------------------------------------------------------------------------


def test_cohere_v2_sse_has_event_lines_and_billed_units(emu: Emulator) -> None:
    resp = httpx.post(emu.base("cohere"), headers=BEARER,
                      json={"model": "command-r-plus-08-2024", "messages": HELLO, "stream": True})
    lines = resp.text.splitlines()
    assert lines[0] == "event: message-start" and lines[1].startswith('data: {"id"')
    types = [e["type"] for e in sse_data(resp.text)]
    assert types[:2] == ["message-start", "content-start"] and types[-2:] == ["content-end", "message-end"]
    end = sse_data(resp.text)[-1]["delta"]
    assert end["finish_reason"] == "COMPLETE"
    assert end["usage"]["billed_units"]["input_tokens"] == 4
    assert end["usage"]["tokens"]["input_tokens"] == 4 + cohere_format.PROMPT_TEMPLATE_TOKENS
    assert "[DONE]" not in resp.text and emu.violations == []


def test_cohere_tool_call_and_tool_choice_values(emu: Emulator) -> None:
    body = {"model": "command-r-plus-08-2024", "messages": HELLO, "tools": [TOOL]}
    answer = httpx.post(emu.base("cohere"), headers=BEARER, json=body).json()
    assert answer["finish_reason"] == "TOOL_CALL" and answer["message"]["tool_plan"]
    assert json.loads(answer["message"]["tool_calls"][0]["function"]["arguments"]) == {"city": "test"}
    refused = httpx.post(emu.base("cohere"), headers=BEARER, json={**body, "tool_choice": "auto"})
    assert refused.status_code == 400 and "REQUIRED, NONE" in refused.json()["message"]


# --- OpenAI-compatible dialects -----------------------------------------------------------------


def test_mistral_rejects_foreign_tool_call_ids_and_unknown_fields(emu: Emulator) -> None:
    messages = [{"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [{"id": "call_abc", "type": "function",
                                                      "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "call_abc", "content": "ok"}]
    resp = httpx.post(emu.base("mistral") + "/chat/completions", headers=BEARER,
                      json={"model": "mistral-small-latest", "messages": messages, "seed": 1})
    assert resp.status_code == 400 and resp.json()["object"] == "error"
    assert any("must be a-z, A-Z, 0-9, with a length of 9" in v for v in emu.violations)
    assert any("body.seed: Extra inputs are not permitted" in v for v in emu.violations)


def test_mistral_streams_whole_tool_calls_with_usage_on_the_finish_chunk(emu: Emulator) -> None:
    resp = httpx.post(emu.base("mistral") + "/chat/completions", headers=BEARER,
                      json={"model": "mistral-small-latest", "messages": HELLO, "tools": [TOOL], "stream": True})
    chunks = sse_data(resp.text)
    [call] = chunks[0]["choices"][0]["delta"]["tool_calls"]
    assert len(call["id"]) == 9 and call["id"].isalnum() and json.loads(call["function"]["arguments"]) == {"city": "test"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls" and chunks[-1]["usage"]["prompt_tokens"] == 4


def test_groq_x_groq_and_null_assistant_fields(emu: Emulator) -> None:
    resp = httpx.post(emu.base("groq") + "/chat/completions", headers=BEARER,
                      json={"model": "openai/gpt-oss-20b", "messages": HELLO, "stream": True})
    chunks = sse_data(resp.text)
    assert chunks[0]["x_groq"]["id"] and chunks[-1]["x_groq"]["usage"]["completion_tokens"] == 7
    assert all("usage" not in c for c in chunks)  # the usage chunk only when include_usage is asked
    bad = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "function_call": None},
           {"role": "user", "content": "z"}]
    httpx.post(emu.base("groq") + "/chat/completions", headers=BEARER, json={"model": "m", "messages": bad})
    assert any("messages.1.function_call : value must be set" in v for v in emu.violations)


def test_deepseek_and_together_stream_usage_on_the_finish_chunk(emu: Emulator) -> None:
    deepseek = sse_data(httpx.post(emu.base("deepseek") + "/chat/completions", headers=BEARER, json={
        "model": "deepseek-chat", "messages": HELLO, "stream": True, "stream_options": {"include_usage": True}}).text)
    assert deepseek[-1]["choices"][0]["finish_reason"] == "stop" and deepseek[-1]["usage"]["prompt_cache_miss_tokens"] == 4
    together = sse_data(httpx.post(emu.base("together") + "/chat/completions", headers=BEARER, json={
        "model": "meta-llama/Llama-3.3-70B-Instruct-Turbo", "messages": HELLO, "stream": True}).text)
    assert together[-1]["choices"][0]["finish_reason"] == "eos" and together[-1]["usage"]["completion_tokens"] == 7
    assert together[1]["choices"][0]["text"] == together[1]["choices"][0]["delta"]["content"] == "Hello"


def test_perplexity_citations_cumulative_chunks_and_alternation(emu: Emulator) -> None:
    chunks = sse_data(httpx.post(emu.base("perplexity") + "/chat/completions", headers=BEARER,
                                 json={"model": "sonar", "messages": HELLO, "stream": True}).text)
    assert all(c["object"] == "chat.completion" and c["citations"] for c in chunks)
    assert chunks[-1]["choices"][0]["message"]["content"] == "Hello from sonar! You said: hi there"
    assert chunks[-1]["usage"]["cost"] == perplexity_format.reported_cost(4, 7)
    assert [c["usage"]["completion_tokens"] for c in chunks][-2:] == [7, 7]
    httpx.post(emu.base("perplexity") + "/chat/completions", headers=BEARER, json={
        "model": "sonar", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]})
    assert any("should be alternating" in v for v in emu.violations)


def test_azure_needs_api_version_and_opens_streams_with_a_filter_chunk(emu: Emulator) -> None:
    url = emu.base("azure") + "/openai/deployments/gpt-4o/chat/completions"
    missing = httpx.post(url, headers={"api-key": "k"}, json={"messages": HELLO})
    assert missing.status_code == 400 and any("api-version" in v for v in emu.violations)
    emu.reset()
    stream = httpx.post(url, params={"api-version": "2024-10-21"}, headers={"api-key": "k"},
                        json={"messages": HELLO, "stream": True})
    first, second = sse_data(stream.text)[:2]
    assert first["choices"] == [] and first["prompt_filter_results"] and first["model"] == ""
    assert second["model"] == "gpt-4o" and emu.violations == []
    emu.fail("gpt-4o", Fault(status=429))
    assert httpx.post(url, params={"api-version": "2024-10-21"}, headers={"api-key": "k"},
                      json={"messages": HELLO}).json() == {"error": {"code": "429", "message": "injected fault: HTTP 429 for model gpt-4o"}}


def test_openai_rejects_tool_call_ids_longer_than_40(emu: Emulator) -> None:
    long_id = "call_" + "x" * 60
    messages = [{"role": "user", "content": "x"},
                {"role": "assistant", "tool_calls": [{"id": long_id, "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": long_id, "content": "ok"}]
    resp = httpx.post(emu.base("openai") + "/chat/completions", headers=BEARER, json={"model": "gpt-4o", "messages": messages})
    assert resp.status_code == 400 and "maximum length 40" in resp.json()["error"]["message"]


@pytest.mark.parametrize("provider, model", [
    ("gemini", "gemini-2.5-flash"), ("cohere", "command-r-plus-08-2024"), ("mistral", "mistral-small-latest"),
    ("perplexity", "sonar"), ("azure", "gpt-4o"),
])
def test_status_faults_use_each_providers_error_shape(emu: Emulator, provider: str, model: str) -> None:
    emu.fail(model, Fault(status=503, retry_after=1))
    urls = {"gemini": f"{emu.base('gemini')}/models/{model}:generateContent?key=k", "cohere": emu.base("cohere"),
            "azure": f"{emu.base('azure')}/openai/deployments/{model}/chat/completions?api-version=2024-10-21"}
    headers = {"azure": {"api-key": "k"}, "gemini": {}}.get(provider, BEARER)
    body = {"contents": [{"parts": [{"text": "x"}]}]} if provider == "gemini" else {"model": model, "messages": HELLO}
    resp = httpx.post(urls.get(provider, emu.base(provider) + "/chat/completions"), headers=headers, json=body)
    assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
    assert "injected fault: HTTP 503" in json.dumps(resp.json())
