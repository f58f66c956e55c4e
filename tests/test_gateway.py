"""The request path, end to end: the official openai SDK → `opentracy serve` → emulated providers."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.emulator import Emulator, Fault
from tests.support import FAKE_KEYS, WEATHER_TOOL, EngineProcess


@pytest.fixture
def client(engine: EngineProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=engine.base_url, api_key="client-key-not-for-providers", max_retries=0)


def test_alias_primary_fails_and_fallback_serves(client: openai.OpenAI, emu: Emulator) -> None:
    emu.fail("gpt-4o", Fault(status=500))
    resp = client.chat.completions.create(model="smart", messages=[{"role": "user", "content": "Say hi"}])

    assert resp.choices[0].message.content == "Hello from claude-sonnet-4-6! You said: Say hi"
    routing = resp._routing  # type: ignore[attr-defined]
    assert routing["alias"] == "smart" and routing["requested_model"] == "smart"
    assert routing["selected_model"] == "anthropic/claude-sonnet-4-6"
    assert routing["provider"] == "anthropic" and routing["fallback_used"] is True
    assert [(a["model"], a["status"]) for a in routing["attempts"]] == [
        ("openai/gpt-4o", "error"), ("anthropic/claude-sonnet-4-6", "ok")]
    assert "server" in routing["attempts"][0]["error"]
    assert resp._cost > 0  # type: ignore[attr-defined]  # claude-sonnet-4-6 is in litellm's price map
    assert resp._latency_ms > 0  # type: ignore[attr-defined]
    assert resp.usage is not None and resp.usage.prompt_tokens == 2 and resp.usage.completion_tokens == 7
    # One request each, no hidden retries at the failing provider.
    assert [r.provider for r in emu.requests] == ["openai", "anthropic"]
    assert emu.violations == []


def test_fallback_has_no_backoff_sleep(client: openai.OpenAI, emu: Emulator) -> None:
    """litellm's Router would sleep ~5 s before a fallback; the alias must move on at once."""
    emu.fail("gpt-4o", Fault(status=503, times=None))
    resp = client.chat.completions.create(model="smart", messages=[{"role": "user", "content": "x"}])
    routing = resp._routing  # type: ignore[attr-defined]
    failed, served = routing["attempts"]
    overhead = resp._latency_ms - failed["latency_ms"] - served["latency_ms"]  # type: ignore[attr-defined]
    assert routing["fallback_used"] and overhead < 500, routing


def test_response_headers_and_exact_openai_shape(engine: EngineProcess, emu: Emulator) -> None:
    r = httpx.post(f"{engine.base_url}/chat/completions",
                   json={"model": "gpt-4o", "messages": [{"role": "user", "content": "hello there"}]})
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["role"] == "assistant"
    assert "provider_specific_fields" not in json.dumps(body)
    assert r.headers["x-opentracy-trace-id"] == body["_routing"]["trace_id"]
    assert float(r.headers["x-opentracy-cost"]) == pytest.approx(body["_cost"], rel=1e-6)
    assert float(r.headers["x-opentracy-latency-ms"]) > 0
    assert r.headers["x-opentracy-selected-model"] == "openai/gpt-4o"
    assert body["_routing"]["alias"] is None and body["_routing"]["fallback_used"] is False


def test_client_key_is_never_forwarded_to_a_provider(client: openai.OpenAI, emu: Emulator) -> None:
    client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}])
    client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    anthropic_req, openai_req = emu.requests
    assert anthropic_req.headers["x-api-key"] == FAKE_KEYS["ANTHROPIC_API_KEY"]
    assert openai_req.headers["authorization"] == f"Bearer {FAKE_KEYS['OPENAI_API_KEY']}"
    assert all("client-key-not-for-providers" not in json.dumps(r.headers) for r in emu.requests)


def test_streaming_print_loop_and_extras_on_last_chunk(client: openai.OpenAI, emu: Emulator) -> None:
    plain = client.chat.completions.create(model="smart", messages=[{"role": "user", "content": "stream me please"}])
    stream = client.chat.completions.create(model="smart", messages=[{"role": "user", "content": "stream me please"}],
                                            stream=True)
    parts, chunks = [], []
    for chunk in stream:  # the seed's print loop
        chunks.append(chunk)
        parts.append(chunk.choices[0].delta.content or "")
    assert "".join(parts) == plain.choices[0].message.content
    assert len(chunks) > 3
    last = chunks[-1]
    assert last.choices[0].finish_reason == "stop"
    assert last._cost == pytest.approx(plain._cost)  # type: ignore[attr-defined]
    assert last._routing["selected_model"] == "openai/gpt-4o"  # type: ignore[attr-defined]
    assert last._latency_ms > 0  # type: ignore[attr-defined]
    assert all(getattr(c, "usage", None) is None for c in chunks)  # not asked for: not sent
    # The upstream was asked for exact usage even though the client was not.
    assert emu.requests[-1].json["stream_options"] == {"include_usage": True}


def test_streaming_usage_when_client_asks(client: openai.OpenAI, emu: Emulator) -> None:
    stream = client.chat.completions.create(model="claude-first", messages=[{"role": "user", "content": "one two three"}],
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    final = chunks[-1]
    assert final.choices == [] and final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (3, 8)
    assert final._cost > 0 and final._routing["provider"] == "anthropic"  # type: ignore[attr-defined]
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from claude-sonnet-4-6! You said: one two three"


def test_stream_falls_back_before_first_chunk(client: openai.OpenAI, emu: Emulator) -> None:
    emu.fail("gpt-4o", Fault(status=429))
    chunks = list(client.chat.completions.create(model="smart", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True))
    assert chunks[-1]._routing["fallback_used"] is True  # type: ignore[attr-defined]
    assert "claude-sonnet-4-6" in "".join(c.choices[0].delta.content or "" for c in chunks)


def test_stream_cut_midway_gives_client_an_error(client: openai.OpenAI, emu: Emulator) -> None:
    emu.fail("gpt-4o", Fault(cut_after_chunks=3))
    with pytest.raises(openai.APIError) as info:
        for _ in client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "a b c d e f"}],
                                                stream=True):
            pass
    assert "upstream stream failed" in str(info.value)


@pytest.mark.parametrize("model", ["claude", "gpt-4o"])
def test_tool_calls_come_back_in_openai_shape(client: openai.OpenAI, emu: Emulator, model: str) -> None:
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    resp = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL])
    call = resp.choices[0].message.tool_calls[0]
    assert resp.choices[0].finish_reason == "tool_calls"
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"city": "test"}

    # Streamed: argument deltas reassemble to the same call.
    stream = client.chat.completions.create(model=model, messages=messages, tools=[WEATHER_TOOL], stream=True)
    args, names, finish = "", set(), None
    for chunk in stream:
        for delta_call in chunk.choices[0].delta.tool_calls or []:
            args += delta_call.function.arguments or ""
            names.add(delta_call.function.name)
        finish = chunk.choices[0].finish_reason or finish
    assert json.loads(args) == {"city": "test"} and "get_weather" in names and finish == "tool_calls"

    # The tool result goes back and the provider answers with text.
    follow = client.chat.completions.create(model=model, tools=[WEATHER_TOOL], messages=[
        *messages,
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
    ])
    assert follow.choices[0].message.content.endswith("Tool said: sunny, 21C")
    assert emu.violations == []


def test_alias_target_with_its_own_params(client: openai.OpenAI, emu: Emulator) -> None:
    resp = client.chat.completions.create(model="student", messages=[{"role": "user", "content": "hi"}])
    assert resp.choices[0].message.content.startswith("Hello from my-student!")
    assert emu.requests[-1].headers["authorization"] == "Bearer student-key"


def test_embeddings_models_and_health(client: openai.OpenAI, engine: EngineProcess, emu: Emulator) -> None:
    emb = client.embeddings.create(model="embedder", input=["hello world", "bye"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 8
    assert emb.usage.prompt_tokens == 3
    ids = [m.id for m in client.models.list()]
    assert {"smart", "claude-first", "student", "gpt-4o", "claude", "demo"} <= set(ids)
    health = httpx.get(f"{engine.url}/health").json()
    assert health["status"] == "ok"


def test_keyless_demo_model(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}])
    assert resp.choices[0].message.content == "Hello from the demo model"
    assert resp._cost > 0  # type: ignore[attr-defined]  # priced by model_info


# -- errors ----------------------------------------------------------------------------------------

def error_of(response: httpx.Response) -> dict:
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}, body
    assert "Traceback" not in response.text
    for key in FAKE_KEYS.values():
        assert key not in response.text
    return body["error"]


def post(engine: EngineProcess, body: object, **kwargs: object) -> httpx.Response:
    if isinstance(body, (bytes, str)):
        return httpx.post(f"{engine.base_url}/chat/completions", content=body,
                          headers={"content-type": "application/json"}, **kwargs)  # type: ignore[arg-type]
    return httpx.post(f"{engine.base_url}/chat/completions", json=body, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("body, param", [
    (b"{not json", None),
    ({"messages": [{"role": "user", "content": "hi"}]}, "model"),
    ({"model": "smart"}, "messages"),
    ({"model": "smart", "messages": []}, "messages"),
    ({"model": "smart", "messages": [{"role": "wizard", "content": "hi"}]}, "messages[0].role"),
    ({"model": "smart", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}, "stream"),
    ({"model": "smart", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}, "temperature"),
    ({"model": "smart", "messages": [{"role": "user", "content": "hi"}], "api_base": "http://evil"}, "api_base"),
])
def test_bad_requests_are_400_in_openai_shape(engine: EngineProcess, emu: Emulator, body: object,
                                              param: str | None) -> None:
    r = post(engine, body)
    assert r.status_code == 400
    error = error_of(r)
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert emu.requests == []  # nothing reached a provider


def test_unknown_model_is_404_listing_served_models(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-nonexistent-model", messages=[{"role": "user", "content": "hi"}])
    assert "smart" in info.value.message and "claude-first" in info.value.message


def test_body_too_large_is_413(engine: EngineProcess) -> None:
    huge = {"model": "smart", "messages": [{"role": "user", "content": "x" * (11 * 1024 * 1024)}]}
    r = post(engine, huge)
    assert r.status_code == 413 and error_of(r)["code"] == "request_too_large"


@pytest.mark.parametrize("fault, status, error_class", [
    (Fault(status=429, times=None), 429, openai.RateLimitError),
    (Fault(status=500, times=None), 502, openai.InternalServerError),
    (Fault(delay_ms=4000, times=None), 504, openai.APIStatusError),
])
def test_upstream_failure_after_all_fallbacks(client: openai.OpenAI, engine: EngineProcess, emu: Emulator,
                                              fault: Fault, status: int, error_class: type) -> None:
    emu.fail("*", fault)
    with pytest.raises(error_class) as info:
        client.chat.completions.create(model="smart", messages=[{"role": "user", "content": "hi"}])
    assert info.value.status_code == status
    body = info.value.response.json()
    assert [a["status"] for a in body["_routing"]["attempts"]] == ["error", "error"]
    assert "x-opentracy-trace-id" in info.value.response.headers
    error_of(info.value.response)


def test_upstream_400_is_returned_at_once_without_fallback(client: openai.OpenAI, emu: Emulator) -> None:
    emu.fail("gpt-4o", Fault(status=400, message="bad tool schema"))
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="smart", messages=[{"role": "user", "content": "hi"}])
    assert "bad tool schema" in info.value.message
    assert len(emu.requests) == 1  # the fallback would reject it too: not tried


def test_engine_key_required_when_configured(emulator_session: Emulator, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "config.yaml"
    config.write_text("general_settings:\n  master_key: sk-engine-master-MARKER-91\n")
    engine = EngineProcess(config=config, data_dir=tmp_path / "data",
                           env={"OPENTRACY_API_KEYS": "ci-app:sk-engine-app-MARKER-92"}).start()
    try:
        body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}],
                "mock_testing_marker": None}
        body.pop("mock_testing_marker")
        missing = post(engine, body)
        assert missing.status_code == 401 and error_of(missing)["code"] == "missing_api_key"
        wrong = post(engine, body, headers={"authorization": "Bearer sk-wrong"})
        assert wrong.status_code == 401 and error_of(wrong)["code"] == "invalid_api_key"
        assert "sk-engine" not in wrong.text
        models = httpx.get(f"{engine.base_url}/models", headers={"x-api-key": "sk-engine-app-MARKER-92"})
        assert models.status_code == 200
        master = httpx.get(f"{engine.base_url}/models", headers={"authorization": "Bearer sk-engine-master-MARKER-91"})
        assert master.status_code == 200
    finally:
        engine.stop()
    assert "MARKER" not in engine.logs()
