"""Hostile input and misbehaving upstreams: always a clear OpenAI-shaped answer and a trace, never a 5xx
from the engine itself, and the server stays up."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import engine_config
from tests.emulator import Emulator, Fault
from tests.support import EngineProcess

OK_MESSAGES = [{"role": "user", "content": "hi"}]
TOOL_OK = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}

# (name, raw body bytes or JSON-able object, extra headers, expected status)
MALFORMED: list[tuple[str, object, dict[str, str], int]] = [
    ("invalid json", b'{"model": "smart", "messages": [', {}, 400),
    ("trailing comma", b'{"model": "smart", "messages": [],}', {}, 400),
    ("body is an array", [1, 2, 3], {}, 400),
    ("body is a string", "hello", {}, 400),
    ("body is null", None, {}, 400),
    ("empty body", b"", {}, 400),
    ("invalid utf-8", b'{"model": "smart", "messages": [{"role": "user", "content": "\xff\xfe"}]}', {}, 400),
    ("deeply nested", b'{"model": "smart", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", {}, 400),
    ("messages not a list", {"model": "smart", "messages": "hi"}, {}, 400),
    ("empty messages", {"model": "smart", "messages": []}, {}, 400),
    ("unknown role", {"model": "smart", "messages": [{"role": "wizard", "content": "hi"}]}, {}, 400),
    ("role wrong type", {"model": "smart", "messages": [{"role": 7, "content": "hi"}]}, {}, 400),
    ("content wrong type", {"model": "smart", "messages": [{"role": "user", "content": 42}]}, {}, 400),
    ("user without content", {"model": "smart", "messages": [{"role": "user"}]}, {}, 400),
    ("tool without id", {"model": "smart", "messages": [{"role": "tool", "content": "x"}]}, {}, 400),
    ("content part without type", {"model": "smart", "messages": [{"role": "user", "content": [{"text": "x"}]}]}, {}, 400),
    ("model missing", {"messages": OK_MESSAGES}, {}, 400),
    ("model empty", {"model": "", "messages": OK_MESSAGES}, {}, 400),
    ("model wrong type", {"model": ["smart"], "messages": OK_MESSAGES}, {}, 400),
    ("model huge", {"model": "m" * 10_000, "messages": OK_MESSAGES}, {}, 400),
    ("stream as string", {"model": "smart", "messages": OK_MESSAGES, "stream": "true"}, {}, 400),
    ("stream as number", {"model": "smart", "messages": OK_MESSAGES, "stream": 1}, {}, 400),
    ("include_usage wrong type", {"model": "smart", "messages": OK_MESSAGES, "stream": True,
                                  "stream_options": {"include_usage": "yes"}}, {}, 400),
    ("temperature out of range", {"model": "smart", "messages": OK_MESSAGES, "temperature": 9}, {}, 400),
    ("max_tokens negative", {"model": "smart", "messages": OK_MESSAGES, "max_tokens": -1}, {}, 400),
    ("n not an int", {"model": "smart", "messages": OK_MESSAGES, "n": 1.5}, {}, 400),
    ("tools not a list", {"model": "smart", "messages": OK_MESSAGES, "tools": TOOL_OK}, {}, 400),
    ("tool type wrong", {"model": "smart", "messages": OK_MESSAGES,
                         "tools": [{"type": "retrieval", "function": TOOL_OK["function"]}]}, {}, 400),
    ("tool schema not an object", {"model": "smart", "messages": OK_MESSAGES, "tools": [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]}, {}, 400),
    ("tool properties broken", {"model": "smart", "messages": OK_MESSAGES, "tools": [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": [1]}}}]}, {}, 400),
    ("tool name invalid", {"model": "smart", "messages": OK_MESSAGES, "tools": [
        {"type": "function", "function": {"name": "has spaces!", "parameters": {"type": "object"}}}]}, {}, 400),
    ("tool_choice nonsense", {"model": "smart", "messages": OK_MESSAGES, "tool_choice": "sometimes"}, {}, 400),
    ("steering litellm", {"model": "smart", "messages": OK_MESSAGES, "mock_response": "pwned"}, {}, 400),
    ("stealing keys", {"model": "smart", "messages": OK_MESSAGES, "api_base": "http://attacker.example"}, {}, 400),
    ("unknown model", {"model": "no-such-model-xyz", "messages": OK_MESSAGES}, {}, 404),
    ("huge content", {"model": "smart", "messages": [{"role": "user", "content": "x" * (11 << 20)}]}, {}, 413),
    ("huge chunked", b"x", {"x-chunked": "1"}, 413),
]


def send(engine: EngineProcess, body: object, headers: dict[str, str]) -> httpx.Response:
    url = f"{engine.base_url}/chat/completions"
    if headers.pop("x-chunked", None):  # no content-length: the limit must hold while reading
        def chunks():  # type: ignore[no-untyped-def]
            for _ in range(12):
                yield b" " * (1 << 20)
        return httpx.post(url, content=chunks(), headers={"content-type": "application/json"}, timeout=30)
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url, content=content, headers={"content-type": "application/json", **headers}, timeout=30)


def trace_of(engine: EngineProcess, response: httpx.Response) -> dict:
    trace_id = response.headers["x-opentracy-trace-id"]
    for _ in range(100):
        r = httpx.get(f"{engine.url}/admin/traces/{trace_id}")
        if r.status_code == 200:
            return r.json()
        time.sleep(0.1)
    raise AssertionError(f"no trace for {trace_id}")


def assert_openai_error(response: httpx.Response) -> dict:
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"} and error["message"]
    assert "Traceback" not in response.text and 'File "' not in response.text
    return error


@pytest.mark.parametrize("name, body, headers, status", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_request(engine: EngineProcess, emu: Emulator, name: str, body: object,
                           headers: dict[str, str], status: int) -> None:
    r = send(engine, body, dict(headers))
    assert r.status_code == status, r.text[:500]
    assert_openai_error(r)
    trace = trace_of(engine, r)
    assert trace["status"] == "error" and trace["http_status"] == status
    assert emu.requests == []  # nothing reached a provider
    assert httpx.get(f"{engine.url}/health").status_code == 200  # still up


@pytest.fixture
def client(engine: EngineProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=engine.base_url, api_key="unused", max_retries=0)


def test_connection_refused_falls_back_or_is_a_502(client: openai.OpenAI, engine: EngineProcess) -> None:
    resp = client.chat.completions.create(model="nothing-listens-then-claude", messages=OK_MESSAGES)
    assert resp._routing["fallback_used"] and resp._routing["attempts"][0]["error"].startswith("connection")  # type: ignore[attr-defined]
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="nothing-listens", messages=OK_MESSAGES)
    assert info.value.status_code == 502
    trace = trace_of(engine, info.value.response)
    assert trace["status"] == "error" and trace["http_status"] == 502 and trace["error_type"] == "connection"


@pytest.mark.parametrize("fault", [Fault(malformed_json=True, times=None), Fault(status=502, times=None),
                                   Fault(cut_after_chunks=0, times=None)], ids=["malformed-json", "502", "reset"])
def test_broken_upstream_answers_are_502_with_a_trace(client: openai.OpenAI, engine: EngineProcess,
                                                      emu: Emulator, fault: Fault) -> None:
    emu.fail("gpt-4o", fault)
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="gpt-4o", messages=OK_MESSAGES)
    assert info.value.status_code == 502
    assert_openai_error(info.value.response)
    assert trace_of(engine, info.value.response)["status"] == "error"


def test_wrong_content_type_from_upstream_still_answers(client: openai.OpenAI, emu: Emulator) -> None:
    emu.fail("gpt-4o", Fault(wrong_content_type=True))
    assert client.chat.completions.create(model="gpt-4o", messages=OK_MESSAGES).choices[0].message.content


def test_reset_mid_stream_ends_with_an_error_event_and_a_trace(engine: EngineProcess, emu: Emulator) -> None:
    emu.fail("gpt-4o", Fault(cut_after_chunks=2))
    with httpx.stream("POST", f"{engine.base_url}/chat/completions", timeout=10, json={
            "model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "a b c d e f g"}]}) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] != "[DONE]" and "error" in json.loads(events[-1])
    trace = trace_of(engine, r)
    assert trace["status"] == "error" and trace["response"].startswith("Hello")


HALF_EMOJI = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "half an emoji \\ud83d here"}]'


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_half_an_emoji_is_relayed_as_sent_and_traced(engine: EngineProcess, stream: bool) -> None:
    """A lone surrogate (valid JSON as an escape; text cut mid-emoji) reaches the provider, whose echo
    comes back escaped the same way, never as a 500; the trace stores U+FFFD and says so."""
    body = HALF_EMOJI + (b', "stream": true}' if stream else b"}")
    r = httpx.post(f"{engine.base_url}/chat/completions", content=body,
                   headers={"content-type": "application/json"}, timeout=10)
    assert r.status_code == 200, r.text[:300]
    if stream:
        chunks = [json.loads(line[6:]) for line in r.text.splitlines()
                  if line.startswith("data: ") and line != "data: [DONE]"]
        text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    else:
        text = r.json()["choices"][0]["message"]["content"]
    assert text.endswith("You said: half an emoji \ud83d here")
    trace = trace_of(engine, r)
    assert trace["status"] == "ok" and trace["response"].endswith("half an emoji \ufffd here")
    assert trace["messages"] == [{"role": "user", "content": "half an emoji \ufffd here"}]
    assert any("lone surrogates" in note for note in trace["encoding_errors"])


def test_slow_drip_is_cut_by_the_idle_timeout(emu: Emulator, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(engine_config(emu))
    engine = EngineProcess(config=config, data_dir=tmp_path / "data",
                           env={"OPENTRACY_STREAM_IDLE_TIMEOUT": "0.5"}).start()
    try:
        emu.fail("gpt-4o", Fault(drip_ms=1500))
        started = time.monotonic()
        with httpx.stream("POST", f"{engine.base_url}/chat/completions", timeout=20, json={
                "model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "one two three"}]}) as r:
            events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
        elapsed = time.monotonic() - started
        error = json.loads(events[-1])["error"]
        assert "OPENTRACY_STREAM_IDLE_TIMEOUT" in error["message"] and error["type"] == "timeout_error"
        assert elapsed < 5  # 8 chunks at 1.5 s would take 12 s
        trace = trace_of(engine, r)
        assert trace["status"] == "error"
    finally:
        engine.stop()


def test_message_count_and_concurrency_limits(emu: Emulator, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(engine_config(emu))
    engine = EngineProcess(config=config, data_dir=tmp_path / "data", env={
        "OPENTRACY_MAX_MESSAGES": "3", "OPENTRACY_MAX_CONCURRENT_UPSTREAM": "1",
        "OPENTRACY_UPSTREAM_QUEUE_SECONDS": "0.3"}).start()
    try:
        many = send(engine, {"model": "gpt-4o", "messages": OK_MESSAGES * 4}, {})
        assert many.status_code == 400 and assert_openai_error(many)["code"] == "too_many_messages"
        emu.delay_ms = 1500  # the one slot stays busy
        with httpx.Client(timeout=10) as client, ThreadPoolExecutor(2) as pool:
            first = pool.submit(client.post, f"{engine.base_url}/chat/completions",
                                json={"model": "gpt-4o", "messages": OK_MESSAGES})
            time.sleep(0.3)
            second = client.post(f"{engine.base_url}/chat/completions", json={"model": "gpt-4o", "messages": OK_MESSAGES})
            assert first.result().status_code == 200
        assert second.status_code == 503 and second.headers["retry-after"] == "1"
        assert assert_openai_error(second)["code"] == "engine_overloaded"
        assert trace_of(engine, second)["http_status"] == 503
    finally:
        emu.delay_ms = 0
        engine.stop()


def test_stream_that_stops_before_done(engine: EngineProcess, emu: Emulator) -> None:
    """The upstream sends every event but `[DONE]`, then hangs up: the client gets a clear ending."""
    body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "a b c"}]}
    with httpx.stream("POST", f"{emu.base('openai')}/chat/completions", json=body,
                      headers={"authorization": "Bearer sk-x"}) as direct:
        upstream_events = [line for line in direct.iter_lines() if line.startswith("data: ")]
    assert upstream_events[-1] == "data: [DONE]"
    emu.fail("gpt-4o", Fault(cut_after_chunks=len(upstream_events) - 1))
    with httpx.stream("POST", f"{engine.base_url}/chat/completions", json=body, timeout=10) as r:
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    # Every word arrived, but the connection broke instead of ending: litellm reports it
    # (MidStreamFallbackError) and the client is told, after the text it already has.
    text = "".join((json.loads(e).get("choices") or [{}])[0].get("delta", {}).get("content") or ""
                   for e in events[:-1])
    assert text == "Hello from gpt-4o! You said: a b c"
    assert "connection" in json.loads(events[-1])["error"]["message"]
    trace = trace_of(engine, r)
    assert trace["status"] == "error" and trace["response"] == text
    assert trace_of(engine, r)["selected_model"] == "openai/gpt-4o"
