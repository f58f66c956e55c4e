"""The direct path for OpenAI-format upstreams (opentracy/routing/direct.py) against litellm's own path.

Two engines on one config and one emulator: one with the direct path (the default), one with
``OPENTRACY_DIRECT=false`` (every call through ``litellm.acompletion``). The upstream must receive
the same body from both, clients must get the same answers and the same errors, and calls litellm
would rewrite must still go through litellm. Which path served a call is visible to the emulator:
litellm's OpenAI SDK sends its own User-Agent (``AsyncOpenAI/Python``), aiohttp another.
"""

from __future__ import annotations

from typing import Any, Iterator

import httpx
import pytest
import yaml

from tests.conftest import engine_config
from tests.emulator import Emulator, Fault
from tests.support import EngineProcess

LITELLM_AGENT = "AsyncOpenAI/Python"


@pytest.fixture(scope="module")
def engines(emulator_session: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, EngineProcess]]:
    root = tmp_path_factory.mktemp("direct")
    config = root / "config.yaml"
    settings = yaml.safe_load(engine_config(emulator_session))
    base = emulator_session.base("openai")
    settings["model_list"] += [
        {"model_name": "tuned", "litellm_params": {
            "model": "openai/my-student", "api_base": base, "api_key": "student-key",
            "temperature": 0.1, "max_tokens": 64, "extra_headers": {"x-team": "search"}}},
        {"model_name": "o3-mini", "litellm_params": {"model": "openai/o3-mini", "api_base": base, "api_key": "k-1"}},
        {"model_name": "gpt-5", "litellm_params": {"model": "openai/gpt-5", "api_base": base, "api_key": "k-1"}},
    ]
    config.write_text(yaml.safe_dump(settings))
    running = {
        "direct": EngineProcess(config=config, data_dir=root / "direct", env={}).start(),
        "litellm": EngineProcess(config=config, data_dir=root / "litellm", env={"OPENTRACY_DIRECT": "false"}).start(),
    }
    yield running
    for process in running.values():
        process.stop()


def call(engine: EngineProcess, emu: Emulator, body: dict[str, Any]) -> tuple[httpx.Response, dict[str, Any], str]:
    """One request; returns the response, the body the upstream received and the caller's User-Agent."""
    before = len(emu.requests)
    response = httpx.post(f"{engine.base_url}/chat/completions", json=body, timeout=30)
    received = emu.requests[before:]
    assert received, f"nothing reached the upstream: {response.status_code} {response.text[:300]}"
    last = received[-1]
    return response, last.json, last.headers.get("user-agent", "")


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "pattern": "(?<city>[A-Z][a-z]+)"},  # not a Python regex: litellm drops it
        "unit": {"type": "string", "enum": ["c", "f"]}}, "required": ["city"]}}}]

REQUESTS: dict[str, dict[str, Any]] = {
    "plain": {"messages": [{"role": "user", "content": "hello"}]},
    "sampling": {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
                 "temperature": 0.3, "top_p": 0.9, "max_tokens": 50, "stop": ["\n\n", "END"], "seed": 7, "n": 2,
                 "presence_penalty": 0.5, "frequency_penalty": 0.1, "logit_bias": {"50256": -100},
                 "metadata": {"team": "search"}},
    "json_schema": {"messages": [{"role": "user", "content": "a person"}], "response_format": {
        "type": "json_schema", "json_schema": {"name": "person", "schema": {
            "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}}},
    "tools": {"messages": [{"role": "user", "content": "weather in Paris?"}], "tools": TOOLS,
              "tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "parallel_tool_calls": False},
    "tool_round_trip": {"messages": [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
            "name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "21C and sunny"}], "tools": TOOLS},
    "image_url_as_string": {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": "https://example.com/cat.png"}]}]},
    "stream": {"messages": [{"role": "user", "content": "tell me more"}], "stream": True},
    "stream_with_usage": {"messages": [{"role": "user", "content": "tell me more"}], "stream": True,
                          "stream_options": {"include_usage": True}},
}


@pytest.mark.parametrize("model", ["gpt-4o-mini", "tuned"])
@pytest.mark.parametrize("name", sorted(REQUESTS))
def test_upstream_receives_what_litellm_sends(engines: dict[str, EngineProcess], emu: Emulator, name: str,
                                              model: str) -> None:
    """``tuned`` is an OpenAI-compatible server (unknown model) with sampling defaults and a header in its
    litellm_params, as teams configure a self-hosted model."""
    body = {"model": model, **REQUESTS[name]}
    direct_response, direct_body, direct_agent = call(engines["direct"], emu, body)
    direct_headers = emu.requests[-1].headers
    litellm_response, litellm_body, litellm_agent = call(engines["litellm"], emu, body)
    litellm_headers = emu.requests[-1].headers
    assert LITELLM_AGENT not in direct_agent and LITELLM_AGENT in litellm_agent
    assert direct_body == litellm_body
    for header in ("authorization", "x-team", "content-type"):
        assert direct_headers.get(header) == litellm_headers.get(header)
    assert direct_response.status_code == litellm_response.status_code == 200
    assert emu.violations == []


@pytest.mark.parametrize("name", ["plain", "sampling", "tools"])
def test_clients_get_the_same_answer(engines: dict[str, EngineProcess], emu: Emulator, name: str) -> None:
    body = {"model": "gpt-4o-mini", **REQUESTS[name]}
    direct, litellm = (call(engines[e], emu, body)[0].json() for e in ("direct", "litellm"))
    assert _comparable(direct) == _comparable(litellm)
    assert direct["_cost"] == litellm["_cost"] > 0


def test_streams_carry_the_same_events(engines: dict[str, EngineProcess], emu: Emulator) -> None:
    body = {"model": "gpt-4o-mini", **REQUESTS["stream_with_usage"]}
    events = {}
    for name, engine in engines.items():
        with httpx.stream("POST", f"{engine.base_url}/chat/completions", json=body, timeout=30) as response:
            lines = [line for line in response.iter_lines() if line.startswith("data: ")]
        assert lines[-1] == "data: [DONE]"
        events[name] = [httpx.Response(200, content=line[6:]).json() for line in lines[:-1]]
    direct, litellm = events["direct"], events["litellm"]
    # The direct path relays the upstream's chunks as they are; litellm rebuilds them, with nulls of its
    # own (moderation, obfuscation, null token details) and its cost inside usage.
    assert [_comparable(e, litellm_extras=True) for e in direct] == [_comparable(e, litellm_extras=True)
                                                                      for e in litellm]
    assert direct[-1]["_cost"] == litellm[-1]["_cost"] > 0


@pytest.mark.parametrize("model, extra, why", [
    ("o3-mini", {"max_tokens": 20}, "o-series: litellm renames max_tokens"),
    ("gpt-5", {"temperature": 1}, "gpt-5: litellm maps its parameters"),
    ("gpt-4o-mini", {"top_k": 5}, "a parameter OpenAI does not take: litellm drops or refuses it"),
    ("gpt-4o-mini", {"reasoning_effort": "low"}, "not a gpt-4o-mini parameter for litellm"),
    ("tuned", {"user": "u-1"}, "litellm passes `user` only to OpenAI's own models"),
])
def test_calls_litellm_would_rewrite_go_through_litellm(engines: dict[str, EngineProcess], emu: Emulator, model: str,
                                                        extra: dict[str, Any], why: str) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
    sent = {}
    for name, engine in engines.items():
        before = len(emu.requests)
        response = httpx.post(f"{engine.base_url}/chat/completions", json=body, timeout=30)
        received = emu.requests[before:]
        sent[name] = (response.status_code, [(r.headers.get("user-agent", "").split("/")[0], r.json) for r in received])
    assert sent["direct"] == sent["litellm"], why  # litellm's client (or litellm's own refusal) on both


@pytest.mark.parametrize("status, message", [
    (400, "This model's maximum context length is 128000 tokens. However, your messages resulted in 130000 tokens."),
    (400, "Invalid value for 'temperature'."),
    (401, "Incorrect API key provided."),
    (404, "The model does not exist."),
    (429, "Rate limit reached for requests."),
    (500, "The server had an error while processing your request."),
    (503, "The engine is currently overloaded."),
])
def test_upstream_errors_are_classified_alike(engines: dict[str, EngineProcess], emu: Emulator, status: int,
                                              message: str) -> None:
    seen = {}
    for name, engine in engines.items():
        emu.fail("gpt-4o-mini", Fault(status=status, message=message, times=None))
        response = httpx.post(f"{engine.base_url}/chat/completions", timeout=30,
                              json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        emu.clear_faults()
        error = response.json()["error"]
        attempts = response.json()["_routing"]["attempts"]
        assert message.split(".")[0] in error["message"]
        seen[name] = (response.status_code, error["type"], error["code"],
                      [(a["status"], a["http_status"], a["error"].split(":")[0]) for a in attempts])
    assert seen["direct"] == seen["litellm"]


def test_fallback_after_a_failed_direct_call(engines: dict[str, EngineProcess], emu: Emulator) -> None:
    emu.fail("gpt-4o", Fault(status=429, times=None))
    try:
        answer = httpx.post(f"{engines['direct'].base_url}/chat/completions", timeout=30, json={
            "model": "smart", "messages": [{"role": "user", "content": "hi"}]}).json()
    finally:
        emu.clear_faults()
    routing = answer["_routing"]
    assert routing["fallback_used"] and routing["selected_model"] == "anthropic/claude-sonnet-4-6"
    assert [a["status"] for a in routing["attempts"]] == ["error", "ok"]
    assert routing["attempts"][0]["http_status"] == 429


@pytest.mark.parametrize("path", ["direct", "litellm"])
def test_proxy_from_the_environment_is_used(emu: Emulator, tmp_path_factory: pytest.TempPathFactory,
                                            path: str) -> None:
    """HTTP_PROXY carries the call on both paths, as litellm's httpx client does; NO_PROXY exempts hosts.

    The emulator doubles as the forward proxy (it answers absolute-form requests). A model on a host that
    does not resolve works only through it; a model on the emulator's own address works, with a dead
    proxy configured, only if NO_PROXY exempts that address.
    """
    root = tmp_path_factory.mktemp(f"proxy-{path}")
    base = emu.base("openai")
    unresolvable = base.replace("127.0.0.1", "upstream.opentracy.invalid")
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump({"model_list": [
        {"model_name": "behind-proxy", "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": unresolvable,
                                                          "api_key": "k-1"}},
    ]}))
    env = {"HTTP_PROXY": emu.url, "http_proxy": emu.url, "NO_PROXY": "", "no_proxy": ""}
    if path == "litellm":
        env["OPENTRACY_DIRECT"] = "false"
    engine = EngineProcess(config=config, data_dir=root / "proxied", env=env).start()
    try:
        before = len(emu.requests)
        response = httpx.post(f"{engine.base_url}/chat/completions", timeout=30, json={
            "model": "behind-proxy", "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 200, response.text
        assert emu.requests[before:][-1].headers["host"].startswith("upstream.opentracy.invalid")
    finally:
        engine.stop()
    if path == "litellm":
        return
    config.write_text(yaml.safe_dump({"model_list": [
        {"model_name": "exempt", "litellm_params": {"model": "openai/gpt-4o-mini", "api_base": base,
                                                    "api_key": "k-1"}},
    ]}))
    dead_proxy = "http://127.0.0.1:9"
    engine = EngineProcess(config=config, data_dir=root / "exempt", env={
        "HTTP_PROXY": dead_proxy, "http_proxy": dead_proxy, "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}).start()
    try:
        response = httpx.post(f"{engine.base_url}/chat/completions", timeout=30, json={
            "model": "exempt", "messages": [{"role": "user", "content": "hi"}]})
        assert response.status_code == 200, response.text
    finally:
        engine.stop()


def _comparable(data: dict[str, Any], litellm_extras: bool = False) -> dict[str, Any]:
    """The answer without what differs between any two calls (ids, times, latencies), and optionally
    without the nulls and usage details only litellm adds."""
    skip = {"id", "created", "_latency_ms", "_routing", "system_fingerprint"}
    kept = {k: v for k, v in data.items() if k not in skip and not (litellm_extras and v is None)}
    if litellm_extras and kept.get("usage"):
        kept["usage"] = {k: kept["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    return kept
