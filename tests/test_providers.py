"""Fourteen providers through the running engine, each on its own wire format (tests/emulator).

One engine (`opentracy serve`) with a `p-<provider>` model per provider pointing at the loopback
emulator and an `fb-<provider>` alias falling back to another provider; the official openai SDK as
client. Per provider: a plain answer, the same answer streamed, a tool call round trip (sliced
argument deltas reassembling to JSON), a 429 and a 5xx with and without fallback, exact usage and
cost, and the traces the engine wrote. The emulator checks every request it gets (`violations`).

Cases marked with `litellm_bug(...)` cover litellm mistranslations fixed at the engine's boundary
(docs/providers.md lists them).
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx
import litellm
import openai
import pytest

from tests.emulator import Emulator, Fault
from tests.emulator import bedrock_format, gemini_format, perplexity_format
from tests.support import WEATHER_TOOL, EngineProcess


@dataclass(frozen=True)
class Provider:
    name: str  # emulator provider, and the `p-<name>` / `fb-<name>` names in the engine config
    model: str  # the litellm model string
    upstream: str  # the model as the provider sees it (faults are keyed on it, replies name it)
    key_env: str | None  # environment variable holding the fake key (None: AWS credentials)
    params: dict[str, str] = field(default_factory=dict)  # extra litellm_params
    tools: bool = True


PROVIDERS = [
    Provider("openai", "openai/gpt-4o-mini", "gpt-4o-mini", "OPENAI_API_KEY"),
    Provider("anthropic", "anthropic/claude-sonnet-4-6", "claude-sonnet-4-6", "ANTHROPIC_API_KEY"),
    Provider("gemini", "gemini/gemini-2.5-flash", "gemini-2.5-flash", "GEMINI_API_KEY"),
    Provider("groq", "groq/openai/gpt-oss-20b", "openai/gpt-oss-20b", "GROQ_API_KEY"),
    Provider("mistral", "mistral/mistral-small-latest", "mistral-small-latest", "MISTRAL_API_KEY"),
    Provider("deepseek", "deepseek/deepseek-chat", "deepseek-chat", "DEEPSEEK_API_KEY"),
    Provider("together", "together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo",
             "meta-llama/Llama-3.3-70B-Instruct-Turbo", "TOGETHERAI_API_KEY"),
    Provider("fireworks", "fireworks_ai/accounts/fireworks/models/kimi-k2-instruct",
             "accounts/fireworks/models/kimi-k2-instruct", "FIREWORKS_AI_API_KEY"),
    Provider("cerebras", "cerebras/llama-3.3-70b", "llama-3.3-70b", "CEREBRAS_API_KEY"),
    Provider("sambanova", "sambanova/Meta-Llama-3.3-70B-Instruct", "Meta-Llama-3.3-70B-Instruct",
             "SAMBANOVA_API_KEY"),
    Provider("perplexity", "perplexity/sonar", "sonar", "PERPLEXITYAI_API_KEY", tools=False),
    Provider("cohere", "cohere/command-r-plus-08-2024", "command-r-plus-08-2024", "COHERE_API_KEY"),
    Provider("bedrock", "bedrock/anthropic.claude-3-5-haiku-20241022-v1:0",
             "anthropic.claude-3-5-haiku-20241022-v1:0", None, {"aws_region_name": "us-east-1"}),
    Provider("azure", "azure/gpt-4o", "gpt-4o", "AZURE_API_KEY", {"api_version": "2024-10-21"}),
]
BY_NAME = {p.name: p for p in PROVIDERS}
FAKE_ENV = {p.key_env: f"fake-{p.name}-key-MARKER" for p in PROVIDERS if p.key_env} | {
    "AWS_ACCESS_KEY_ID": bedrock_format.AWS_ACCESS_KEY_ID,
    "AWS_SECRET_ACCESS_KEY": bedrock_format.AWS_SECRET_ACCESS_KEY,
    "AWS_REGION_NAME": "us-east-1",
    # litellm fetches a HuggingFace tokenizer for llama-3 / command-r models on the first stream and
    # blocks the event loop ~25 s retrying on a closed network; test_no_tokenizer_download_on_request_path
    # shows it on an engine without this setting.
    "HF_HUB_OFFLINE": "1",
}

SYSTEM = "be nice"

def fallback_for(p: Provider) -> Provider:
    return BY_NAME["anthropic"] if p.name == "openai" else BY_NAME["openai"]


def messages(p: Provider, text: str = "hello matrix") -> list[dict[str, str]]:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{text} {p.name}"}]


def expected_text(p: Provider, text: str = "hello matrix") -> str:
    return f"Hello from {p.upstream}! You said: {text} {p.name}"


PROMPT_TOKENS = 5  # "be nice" + "hello matrix <name>"
COMPLETION_TOKENS = 8  # "Hello from <model>! You said: hello matrix <name>"

# litellm mistranslations, each fixed at the engine's boundary (opentracy/routing/provider_fixes.py,
# gateway/extras.py, routing/failover.py; docs/providers.md lists them). The tests they mark prove the fix.
def litellm_bug(reason: str) -> pytest.MarkDecorator:
    """Labels a test with the litellm defect it covers (a plain label: the fix must hold)."""
    return pytest.mark.litellm_bug(reason=reason)


COHERE_STREAM = litellm_bug((
    "litellm 1.110.2 cannot read Cohere v2 SSE: CohereV2ModelResponseIterator json.loads() every raw line, "
    "so `event: message-start` fails (llms/cohere/common_utils.py:387-401), and message-end is looked for "
    "under chunk['event'] / chunk['data'] (common_utils.py:290-307,346) which Cohere never sends"))
COHERE_USAGE = litellm_bug((
    "litellm reports Cohere usage.tokens (input includes Cohere's prompt template) instead of "
    "usage.billed_units, so prompt_tokens and cost are inflated (llms/cohere/chat/v2_transformation.py:247-249)"))
PERPLEXITY_COST = litellm_bug((
    "the engine prices tokens only (pricing.cost_usd: litellm.cost_per_token without usage_object) and drops "
    "Perplexity's reported usage.cost.total_cost (request fee), which litellm's own response_cost honours"))
SAMBANOVA_RETRIES = litellm_bug((
    "litellm drops max_retries=0 for SambaNova (SambanovaConfig.get_supported_openai_params lacks 'max_retries', "
    "llms/sambanova/chat.py:57-75), so openai.py:779 builds its SDK client with max_retries=2: a 429/5xx is "
    "retried twice with back-off inside one attempt, hiding the failure and delaying the fallback"))
BEDROCK_500 = litellm_bug((
    "litellm re-raises Bedrock's HTTP 500 (InternalServerException) as ServiceUnavailableError with status 503 "
    "(litellm_core_utils/exception_mapping_utils.py:1091-1092), so _routing.attempts[].http_status and the "
    "trace say 503; the provider's 500 is only in the exception chain (BedrockError.__context__)"))
MISTRAL_FOREIGN_IDS = litellm_bug((
    "Mistral accepts only 9-character [a-zA-Z0-9] tool call ids; litellm forwards ids issued by other providers "
    "unchanged (llms/mistral/chat/transformation.py:806-821 _handle_tool_call_message), so a conversation that "
    "started on OpenAI (call_...) cannot fall back to or continue on Mistral"))
NOT_OPENAI_SHAPE = litellm_bug((
    "litellm carries its own bookkeeping and provider fields into the OpenAI shape and extras.clean only drops "
    "None values: Gemini answers get vertex_ai_grounding_metadata / _url_context_metadata / _safety_results / "
    "_citation_metadata (+ _safety_ratings on chunks) as [], message.images and message.thinking_blocks as [], "
    "tool_calls[].provider_specific_fields.thought_signature (already encoded in the tool call id); Together's "
    "stream deltas keep Together's token_id"))
AZURE_PRELUDE = litellm_bug((
    "Azure opens every stream with a content-filter chunk (choices [], id '', model '', prompt_filter_results); "
    "litellm passes it on and the engine forwards it, so `chunk.choices[0]` - the openai SDK print loop - raises "
    "IndexError on the first chunk"))
PREFIXED_MODEL = litellm_bug((
    "non-streamed `model` gets a litellm provider prefix for providers called through the OpenAI SDK "
    "(llms/openai/openai.py:774-775 model_response.model = f'{custom_llm_provider}/{model}': cerebras, sambanova, "
    "perplexity) and for Fireworks (llms/fireworks_ai/chat/transformation.py:780-781), while their stream chunks "
    "(but Perplexity's) carry the provider's own name"))
COHERE_TOOL_CHOICE = litellm_bug((
    "litellm drops tool_choice for Cohere: get_optional_params maps Cohere v2 params with the v1 CohereChatConfig "
    "(utils.py:5719-5725), whose map_openai_params has no tool_choice branch (llms/cohere/chat/transformation.py:"
    "183-213): 'none' still calls a tool, a named function is ignored; Cohere v2 takes tool_choice REQUIRED / NONE"))
BEDROCK_TOOL_CHOICE_NONE = litellm_bug((
    "Converse has no toolChoice 'none' and litellm raises UnsupportedParamsError for it "
    "(llms/bedrock/chat/converse_transformation.py:786-796 map_tool_choice_values; with drop_params it drops "
    "tool_choice but still offers the tools), so the client's tool_choice='none' is a 400; leaving the tools "
    "out says the same to Bedrock"))
BEDROCK_TOOL_CONTENT = litellm_bug((
    "litellm returns content '' next to Bedrock tool calls (OpenAI sends null): "
    "llms/bedrock/chat/converse_transformation.py:2771,3077 starts content_str at '' and always sets it"))


def marked(**marks: Any) -> list[Any]:
    """The providers as pytest params, with per-test xfail marks: marked(cohere=COHERE_STREAM)."""
    return [pytest.param(p, id=p.name, marks=marks.get(p.name, ())) for p in PROVIDERS]


def engine_config(emu: Emulator) -> str:
    entries = []
    for p in PROVIDERS:
        params: dict[str, str] = {"model": p.model, **p.params}
        if p.name == "bedrock":
            params["aws_bedrock_runtime_endpoint"] = emu.base(p.name)
        else:
            params["api_base"] = emu.base(p.name)
        if p.key_env:
            params["api_key"] = f"os.environ/{p.key_env}"
        lines = "\n".join(f"      {k}: {json.dumps(v)}" for k, v in params.items())
        entries.append(f"  - model_name: p-{p.name}\n    litellm_params:\n{lines}")
    aliases = "\n".join(f"  fb-{p.name}: {{model: p-{p.name}, fallbacks: [p-{fallback_for(p).name}]}}" for p in PROVIDERS)
    return "model_list:\n" + "\n".join(entries) + "\naliases:\n" + aliases + "\n" + textwrap.dedent("""\
        router_settings:
          timeout: 10
        """)


@pytest.fixture(scope="module")
def emu() -> Iterator[Emulator]:
    with Emulator() as emulator:
        yield emulator


@pytest.fixture(scope="module")
def tokenizer_engine(emu: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Future[EngineProcess]]:
    """An engine without HF_HUB_OFFLINE for test_no_tokenizer_download_on_request_path, started in the
    background while the matrix runs (an engine takes ~10 s to start)."""
    root = tmp_path_factory.mktemp("providers-hf")
    config = root / "config.yaml"
    config.write_text(engine_config(emu))
    env = {k: v for k, v in FAKE_ENV.items() if k != "HF_HUB_OFFLINE"}
    env["HF_ENDPOINT"] = "http://127.0.0.1:9"  # refused at once; litellm's download still retries ~25 s
    process = EngineProcess(config=config, data_dir=root / "data", env=env)
    with ThreadPoolExecutor(max_workers=1) as pool:
        started = pool.submit(process.start)
        yield started
        started.exception()  # wait for the start before stopping
        process.stop(timeout=2)


@pytest.fixture(scope="module")
def engine(emu: Emulator, tokenizer_engine: Future[EngineProcess],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    root = tmp_path_factory.mktemp("providers")
    config = root / "config.yaml"
    config.write_text(engine_config(emu))
    process = EngineProcess(config=config, data_dir=root / "data", env=FAKE_ENV).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def traced() -> dict[str, list[dict[str, Any]]]:
    """trace_id -> what the test expects of the trace, per provider; read by the trace tests at the end."""
    return {p.name: [] for p in PROVIDERS}


@pytest.fixture
def client(engine: EngineProcess, emu: Emulator) -> openai.OpenAI:
    emu.reset()
    return openai.OpenAI(base_url=engine.base_url, api_key="client-key", max_retries=0, timeout=20)


def upstream_requests(emu: Emulator, p: Provider) -> list[Any]:
    return [r for r in emu.requests if r.provider == p.name]


# --- answers ----------------------------------------------------------------------------------


def expected_cost(p: Provider) -> float:
    """What the request costs at the provider: litellm's prices for the exact tokens, or the bill the
    provider itself reports (Perplexity's usage.cost.total_cost includes a per-request search fee)."""
    if p.name == "perplexity":
        return perplexity_format.reported_cost(PROMPT_TOKENS, COMPLETION_TOKENS)["total_cost"]
    _, provider, _, _ = litellm.get_llm_provider(p.model)
    prompt, completion = litellm.cost_per_token(model=p.model, custom_llm_provider=provider,
                                                prompt_tokens=PROMPT_TOKENS, completion_tokens=COMPLETION_TOKENS)
    return prompt + completion


@pytest.mark.parametrize("p", marked())
def test_plain_answer(client: openai.OpenAI, emu: Emulator, traced: dict, p: Provider) -> None:
    resp = client.chat.completions.create(model=f"p-{p.name}", messages=messages(p))
    assert resp.choices[0].message.content == expected_text(p)
    assert resp.choices[0].finish_reason == "stop"
    routing = resp._routing  # type: ignore[attr-defined]
    assert routing["selected_model"] == p.model and routing["fallback_used"] is False
    assert [a["status"] for a in routing["attempts"]] == ["ok"]
    assert resp._cost > 0 and resp._latency_ms > 0  # type: ignore[attr-defined]
    [request] = upstream_requests(emu, p)
    assert request.model == p.upstream
    traced[p.name].append({"trace_id": routing["trace_id"], "stream": False, "provider": routing["provider"],
                           "cost": resp._cost})  # type: ignore[attr-defined]
    assert emu.violations == []


@pytest.mark.parametrize("p", marked(cohere=COHERE_STREAM, perplexity=PERPLEXITY_COST, azure=AZURE_PRELUDE))
def test_streamed_answer(client: openai.OpenAI, emu: Emulator, traced: dict, p: Provider) -> None:
    chunks = list(client.chat.completions.create(model=f"p-{p.name}", messages=messages(p, "stream me"), stream=True,
                                                 stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected_text(p, "stream me")
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) >= 5  # really streamed
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    final = chunks[-1]
    assert final.choices == [] and final.usage is not None
    assert [c for c in chunks if not c.choices] == [final]  # only the usage chunk the client asked for
    assert (final.usage.prompt_tokens, final.usage.completion_tokens) == (PROMPT_TOKENS, COMPLETION_TOKENS)
    assert final._cost == pytest.approx(expected_cost(p), rel=1e-6)  # type: ignore[attr-defined]
    assert final._routing["selected_model"] == p.model  # type: ignore[attr-defined]
    [request] = upstream_requests(emu, p)
    assert request.model == p.upstream
    traced[p.name].append({"trace_id": final._routing["trace_id"], "stream": True,  # type: ignore[attr-defined]
                           "provider": final._routing["provider"], "cost": final._cost})  # type: ignore[attr-defined]
    assert emu.violations == []


# --- tools ------------------------------------------------------------------------------------


def _tool_case(p: Provider) -> Any:
    marks = [COHERE_STREAM] if p.name == "cohere" else []
    if p.name == "bedrock":
        marks.append(BEDROCK_TOOL_CONTENT)
    return pytest.param(p, id=p.name, marks=marks)


@pytest.mark.parametrize("p", [_tool_case(p) for p in PROVIDERS if p.tools])
def test_tool_call_round_trip(client: openai.OpenAI, emu: Emulator, p: Provider) -> None:
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    resp = client.chat.completions.create(model=f"p-{p.name}", messages=ask, tools=[WEATHER_TOOL])
    choice = resp.choices[0]
    [call] = choice.message.tool_calls
    assert choice.finish_reason == "tool_calls" and call.type == "function"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "test"}
    assert call.id
    # The result goes back (in the provider's own shape, via litellm) and the provider answers in text.
    follow = client.chat.completions.create(model=f"p-{p.name}", tools=[WEATHER_TOOL], messages=[
        *ask, {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21C"},
    ])
    assert follow.choices[0].message.content == f"Hello from {p.upstream}! Tool said: sunny, 21C"
    assert follow.choices[0].finish_reason == "stop"

    stream = client.chat.completions.create(model=f"p-{p.name}", messages=ask, tools=[WEATHER_TOOL], stream=True)
    args, names, ids, finish = "", set(), set(), []
    for chunk in stream:
        for delta in chunk.choices[0].delta.tool_calls or () if chunk.choices else ():
            assert delta.index == 0
            args += delta.function.arguments or "" if delta.function else ""
            names.add(delta.function.name if delta.function else None)
            ids.add(delta.id)
        finish += [c.finish_reason for c in chunk.choices if c.finish_reason]
    assert json.loads(args) == {"city": "test"} and "get_weather" in names and finish == ["tool_calls"]
    assert len(ids - {None}) == 1
    assert choice.message.content is None  # OpenAI's shape: no text beside the tool call
    assert emu.violations == []


@pytest.mark.parametrize("p", [pytest.param(p, id=p.name, marks=[MISTRAL_FOREIGN_IDS] if p.name == "mistral" else [])
                               for p in PROVIDERS if p.tools])
def test_tool_history_from_another_provider(client: openai.OpenAI, emu: Emulator, p: Provider) -> None:
    """A conversation whose tool call was issued elsewhere (an OpenAI id) continues on this provider."""
    call = {"id": "call_Xq3b8c1d2e3f4a5b6c7d8e9f", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    resp = client.chat.completions.create(model=f"p-{p.name}", tools=[WEATHER_TOOL], messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "rainy, 12C"},
    ])
    assert resp.choices[0].message.content == f"Hello from {p.upstream}! Tool said: rainy, 12C"
    assert emu.violations == []


TIME_TOOL = {"type": "function", "function": {"name": "get_time", "description": "Time in a timezone",
                                             "parameters": {"type": "object", "properties": {"tz": {"type": "string"}}}}}


def _tool_choice_cases() -> list[Any]:
    cases = []
    for choice, expected in (("none", None), ("required", "get_weather"),
                             ({"type": "function", "function": {"name": "get_time"}}, "get_time")):
        label = choice if isinstance(choice, str) else "named"
        for p in PROVIDERS:
            if not p.tools:
                continue
            marks = [COHERE_TOOL_CHOICE] if p.name == "cohere" and label != "required" else []
            if p.name == "bedrock" and label == "none":
                marks.append(BEDROCK_TOOL_CHOICE_NONE)
            cases.append(pytest.param(p, choice, expected, id=f"{label}-{p.name}", marks=marks))
    return cases


@pytest.mark.parametrize("p, choice, expected", _tool_choice_cases())
def test_tool_choice_is_honoured(client: openai.OpenAI, emu: Emulator, p: Provider, choice: Any,
                                 expected: str | None) -> None:
    resp = client.chat.completions.create(model=f"p-{p.name}", messages=[{"role": "user", "content": "Weather?"}],
                                          tools=[WEATHER_TOOL, TIME_TOOL], tool_choice=choice)
    message = resp.choices[0].message
    if expected is None:
        assert message.tool_calls is None and message.content == f"Hello from {p.upstream}! You said: Weather?"
    else:
        assert [c.function.name for c in message.tool_calls or ()] == [expected]
    assert emu.violations == []


@pytest.mark.parametrize("p", [p for p in PROVIDERS if not p.tools], ids=lambda p: p.name)
def test_tools_refused_where_the_provider_has_none(client: openai.OpenAI, emu: Emulator, p: Provider) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=f"p-{p.name}", messages=messages(p), tools=[WEATHER_TOOL])
    assert info.value.body["type"] == "invalid_request_error" and "tools" in info.value.message
    assert upstream_requests(emu, p) == []
    assert emu.violations == []


# --- failures ---------------------------------------------------------------------------------


FAILURES = [(429, 429, openai.RateLimitError), (500, 502, openai.InternalServerError),
            (503, 502, openai.InternalServerError)]


def _failure_cases() -> list[Any]:
    cases = []
    for status, client_status, error_class in FAILURES:
        for p in PROVIDERS:
            marks = [SAMBANOVA_RETRIES] if p.name == "sambanova" else []
            if p.name == "bedrock" and status == 500:
                marks.append(BEDROCK_500)
            cases.append(pytest.param(p, status, client_status, error_class, id=f"{status}-{p.name}", marks=marks))
    return cases


@pytest.mark.parametrize("p, status, client_status, error_class", _failure_cases())
def test_provider_failure_falls_back_or_maps_to_openai_error(client: openai.OpenAI, emu: Emulator, traced: dict,
                                                            p: Provider, status: int, client_status: int,
                                                            error_class: type) -> None:
    other = fallback_for(p)
    emu.fail(p.upstream, Fault(status=status))
    resp = client.chat.completions.create(model=f"fb-{p.name}", messages=messages(p))
    assert resp.choices[0].message.content == f"Hello from {other.upstream}! You said: hello matrix {p.name}"
    routing = resp._routing  # type: ignore[attr-defined]
    assert routing["fallback_used"] is True and routing["selected_model"] == other.model
    failed, served = routing["attempts"]
    assert (failed["model"], failed["status"], failed["http_status"]) == (p.model, "error", status), failed
    assert served["status"] == "ok" and served["model"] == other.model
    traced[p.name].append({"trace_id": routing["trace_id"], "stream": False, "fallback": p.model,
                           "provider": routing["provider"], "cost": resp._cost})  # type: ignore[attr-defined]

    emu.fail(p.upstream, Fault(status=status))
    with pytest.raises(error_class) as info:
        client.chat.completions.create(model=f"p-{p.name}", messages=messages(p))
    assert info.value.status_code == client_status
    body = info.value.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == ("rate_limit_error" if status == 429 else "upstream_error")
    [attempt] = body["_routing"]["attempts"]
    assert attempt["http_status"] == status and attempt["model"] == p.model
    assert all("MARKER" not in v for v in (info.value.response.text, json.dumps(dict(info.value.response.headers))))
    assert len(upstream_requests(emu, p)) == 2  # one try each, no hidden retries
    assert emu.violations == []


# --- usage and cost ---------------------------------------------------------------------------


@pytest.mark.parametrize("p", marked(cohere=COHERE_USAGE, perplexity=PERPLEXITY_COST))
def test_usage_is_exact_and_cost_is_the_providers_price(client: openai.OpenAI, emu: Emulator, p: Provider) -> None:
    resp = client.chat.completions.create(model=f"p-{p.name}", messages=messages(p))
    assert resp.usage is not None
    assert (resp.usage.prompt_tokens, resp.usage.completion_tokens, resp.usage.total_tokens) == (
        PROMPT_TOKENS, COMPLETION_TOKENS, PROMPT_TOKENS + COMPLETION_TOKENS)
    assert resp._cost == pytest.approx(expected_cost(p), rel=1e-6)  # type: ignore[attr-defined]
    assert float(resp._cost) > 0  # type: ignore[attr-defined]
    assert emu.violations == []


# --- the engine's side of the wire ------------------------------------------------------------


@pytest.mark.parametrize("p", marked())
def test_provider_saw_its_own_wire_format(client: openai.OpenAI, emu: Emulator, p: Provider) -> None:
    client.chat.completions.create(model=f"p-{p.name}", messages=messages(p), max_tokens=50, temperature=0.5)
    [request] = upstream_requests(emu, p)
    headers = request.headers
    key = FAKE_ENV.get(p.key_env or "", "")
    if p.name == "anthropic":
        assert headers["x-api-key"] == key and "authorization" not in headers
    elif p.name == "gemini":
        assert headers["x-goog-api-key"] == key and request.path.endswith(":generateContent")
        config = gemini_format.field(request.json, "generationConfig")
        assert gemini_format.field(config, "maxOutputTokens") == 50 and config["temperature"] == 0.5
        assert gemini_format.field(request.json, "systemInstruction") == {"parts": [{"text": SYSTEM}]}
    elif p.name == "azure":
        assert headers["api-key"] == key and "api-version=2024-10-21" in request.query
        assert request.path == "/azure/openai/deployments/gpt-4o/chat/completions"
    elif p.name == "bedrock":
        auth = headers["authorization"]
        assert bedrock_format.SIGV4.match(auth) and f"Credential={bedrock_format.AWS_ACCESS_KEY_ID}/" in auth
        assert "/us-east-1/bedrock/aws4_request" in auth
        assert request.raw_path.endswith("/model/anthropic.claude-3-5-haiku-20241022-v1%3A0/converse")
        assert request.json["inferenceConfig"] == {"maxTokens": 50, "temperature": 0.5}
        assert request.json["system"] == [{"text": SYSTEM}]
    elif p.name == "cohere":
        assert headers["authorization"] == f"Bearer {key}" and request.path == "/cohere/v2/chat"
        assert request.json["max_tokens"] == 50
    else:
        assert headers["authorization"] == f"Bearer {key}"
    assert "client-key" not in json.dumps(headers)
    assert emu.violations == []


OPENAI_MESSAGE_KEYS = {"role", "content", "tool_calls", "refusal", "annotations", "audio", "function_call",
                       "reasoning_content"}


def litellm_leaks(body: dict[str, Any]) -> list[str]:
    """litellm-internal fields in what should be OpenAI's shape (provider extras such as Perplexity's
    citations or Groq's x_groq are passed on; litellm's own bookkeeping is not)."""
    leaks = ["provider_specific_fields"] if "provider_specific_fields" in json.dumps(body) else []
    leaks += [k for k in body if k.startswith("vertex_ai_")]
    for choice in body.get("choices") or ():
        part = choice.get("message") or choice.get("delta") or {}
        leaks += [f"message.{k}" for k in part if k not in OPENAI_MESSAGE_KEYS]
    return leaks


def _sse(resp: httpx.Response) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in resp.text.splitlines() if line.startswith("data: ") and line != "data: [DONE]"]


@pytest.mark.parametrize("p", marked(gemini=NOT_OPENAI_SHAPE, together=NOT_OPENAI_SHAPE, cohere=COHERE_STREAM))
def test_answers_are_in_openai_shape(engine: EngineProcess, emu: Emulator, p: Provider) -> None:
    emu.reset()
    url = f"{engine.base_url}/chat/completions"
    bodies = [httpx.post(url, json={"model": f"p-{p.name}", "messages": messages(p)}, timeout=20).json()]
    if p.tools:
        bodies.append(httpx.post(url, json={"model": f"p-{p.name}", "messages": [{"role": "user", "content": "Weather?"}],
                                            "tools": [WEATHER_TOOL]}, timeout=20).json())
    stream = httpx.post(url, json={"model": f"p-{p.name}", "messages": messages(p), "stream": True}, timeout=20)
    chunks = _sse(stream)
    assert chunks and all("error" not in c for c in chunks), chunks[-1:]
    for body in [*bodies, *chunks]:
        assert litellm_leaks(body) == [], body
    assert emu.violations == []


@pytest.mark.parametrize("p", marked(**{n: PREFIXED_MODEL for n in ("fireworks", "cerebras", "sambanova", "perplexity")},
                                     cohere=COHERE_STREAM, azure=AZURE_PRELUDE))
def test_response_model_is_the_providers_model(engine: EngineProcess, emu: Emulator, p: Provider) -> None:
    """`model` names the model as the provider reported it, the same whether streamed or not."""
    emu.reset()
    url = f"{engine.base_url}/chat/completions"
    body = httpx.post(url, json={"model": f"p-{p.name}", "messages": messages(p)}, timeout=20).json()
    chunks = _sse(httpx.post(url, json={"model": f"p-{p.name}", "messages": messages(p), "stream": True}, timeout=20))
    assert chunks and {c.get("model") for c in chunks} == {p.upstream}
    assert body["model"] == p.upstream
    assert emu.violations == []


# --- traces -----------------------------------------------------------------------------------


def _wait_for_traces(engine: EngineProcess, wanted: set[str], timeout: float = 15.0) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    rows: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline:
        resp = httpx.get(f"{engine.url}/admin/traces", params={"last": 500}, timeout=10)
        assert resp.status_code == 200, resp.text
        rows = {r["trace_id"]: r for r in resp.json()["data"]}
        if wanted <= set(rows):
            break
        time.sleep(0.2)
    return rows


@pytest.mark.parametrize("p", marked(cohere=COHERE_USAGE, perplexity=PERPLEXITY_COST))
def test_traces_carry_provider_model_tokens_cost_and_timings(engine: EngineProcess, traced: dict, p: Provider) -> None:
    expected = traced[p.name]
    assert expected, "the answer tests above record what to look for"
    rows = _wait_for_traces(engine, {e["trace_id"] for e in expected})
    for want in expected:
        row = rows.get(want["trace_id"])
        assert row is not None, f"no trace {want['trace_id']} for {p.name}"
        assert row["status"] == "ok" and row["provider"] == want["provider"]
        assert row["cost_usd"] == pytest.approx(want["cost"], rel=1e-6) and row["cost_usd"] > 0
        assert 0 < row["latency_ms"]
        if "fallback" in want:  # the provider failed; the fallback served and the trace says so
            assert row["fallback_used"] is True and row["selected_model"] == fallback_for(p).model
            assert row["attempts"][0]["model"] == p.model and row["attempts"][0]["status"] == "error"
            continue
        assert row["selected_model"] == p.model and row["requested_model"] == f"p-{p.name}"
        assert (row["prompt_tokens"], row["completion_tokens"]) == (PROMPT_TOKENS, COMPLETION_TOKENS)
        assert row["stream"] is want["stream"]
        if want["stream"]:
            assert row["ttft_ms"] is not None and 0 < row["ttft_ms"] <= row["latency_ms"]
        assert row["response"].startswith(f"Hello from {p.upstream}!")


# --- the request path must not wait on the network for a tokenizer ----------------------------


@litellm_bug((
    "litellm computes a response_cost when a stream opens (CustomStreamWrapper -> completion_cost -> "
    "token_counter) and, for llama-3 / command-r models, downloads a HuggingFace tokenizer first "
    "(utils.py:2852 _select_tokenizer_helper); on a closed network that blocks the event loop ~25 s. "
    "Fix: litellm.disable_hf_tokenizer_download = True at engine start"))
def test_no_tokenizer_download_on_request_path(tokenizer_engine: Future[EngineProcess]) -> None:
    engine = tokenizer_engine.result(timeout=60)
    client = openai.OpenAI(base_url=engine.base_url, api_key="k", max_retries=0, timeout=3)
    started = time.monotonic()
    chunks = list(client.chat.completions.create(model="p-cerebras", messages=messages(BY_NAME["cerebras"]), stream=True))
    assert chunks and time.monotonic() - started < 2.5
