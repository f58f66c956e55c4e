"""Our trace callback inside a real litellm proxy process (``litellm --config``), end to end.

The proxy runs from its own venv, once per litellm version (``tests/proxy_venv.py``: 1.108.7 as
``litellm[proxy]`` installs it, and 1.110.2, our pin; both with this working tree installed;
pre-build them with ``python -m tests.proxy_venv``). It loads our callback as a team would: on 1.108.7
with ``callbacks: callbacks.opentracy_callback.handler`` (the file copied next to the config), on
1.110.2 with ``callbacks: opentracy.tracing.proxy.handler`` (the installed package); it talks to the
loopback emulator. Requests go through
the official ``openai`` SDK; the proxy is stopped with SIGTERM right after the last answer; the traces
are read back with ``opentracy traces --json`` in a subprocess (chDB allows one data path per
process, and this pytest process may hold another).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import httpx
import openai
import pytest

from tests.emulator import Emulator, Fault
from tests.proxy_venv import INSTALLABLE_PROXY, REPO, ProxyVenv, ProxyVenvError, ensure_proxy_venv, versions
from tests.support import free_port

RUN = uuid.uuid4().hex[:10]
KEYS = {
    "OPENAI_API_KEY": f"sk-proxytest-openai-{RUN}",
    "ANTHROPIC_API_KEY": f"sk-ant-proxytest-anthropic-{RUN}",
    "LITELLM_MASTER_KEY": f"sk-proxytest-master-{RUN}",
}
CLIENT_KEY = f"sk-proxytest-client-{RUN}"
KEY_ALIAS = "team-alpha"
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}

CUSTOM_AUTH = f'''
from fastapi import Request
from litellm.proxy._types import ProxyException, UserAPIKeyAuth

async def user_api_key_auth(request: Request, api_key: str) -> UserAPIKeyAuth:
    if api_key != "{CLIENT_KEY}":
        raise ProxyException(message="invalid proxy key", type="auth_error", param="api_key", code=401)
    return UserAPIKeyAuth(api_key=api_key, key_alias="{KEY_ALIAS}")
'''


FILE_CALLBACK = "callbacks.opentracy_callback.handler"  # callbacks/opentracy_callback.py next to the config
PACKAGE_CALLBACK = "opentracy.tracing.proxy.handler"  # the installed package, no file


def callback_line(proxy: ProxyVenv) -> str:
    """Each config line users may write is run in a real proxy: the file on the installable proxy,
    the package name on our pin."""
    return FILE_CALLBACK if proxy.litellm_version == INSTALLABLE_PROXY else PACKAGE_CALLBACK


def proxy_config(emu: Emulator, callback: str = FILE_CALLBACK) -> str:
    return textwrap.dedent(f"""
        model_list:
          - model_name: gpt-4o
            litellm_params:
              model: openai/gpt-4o
              api_base: {emu.base("openai")}
              api_key: os.environ/OPENAI_API_KEY
          - model_name: fast
            litellm_params:
              model: openai/gpt-4o-mini
              api_base: {emu.base("openai")}
              api_key: os.environ/OPENAI_API_KEY
          - model_name: claude
            litellm_params:
              model: anthropic/claude-sonnet-4-6
              api_base: {emu.base("anthropic")}
              api_key: os.environ/ANTHROPIC_API_KEY
        litellm_settings:
          callbacks: {callback}
        general_settings:
          master_key: os.environ/LITELLM_MASTER_KEY
          custom_auth: custom_auth.user_api_key_auth
    """)


def words(text: str) -> int:
    """The emulator's token count: whitespace-separated words."""
    return len(text.split())


@dataclass
class Sent:
    """One request sent through the proxy, and what the client saw."""

    name: str
    prompt: str
    status: int = 200
    text: str = ""
    call_id: str = ""
    usage: dict[str, int] = field(default_factory=dict)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class ProxyRun:
    sent: dict[str, Sent]
    traces: list[dict[str, Any]]
    raw: str  # `opentracy traces --json` output, as stored
    data_dir: Path
    store_opened_before_first_request: bool
    stop_seconds: float
    proxy_log: str

    def trace(self, name: str) -> dict[str, Any]:
        prompt = self.sent[name].prompt
        found = [t for t in self.traces if prompt in json.dumps(t.get("messages"))]
        assert len(found) == 1, f"{name}: expected one trace with the prompt {prompt!r}, got {len(found)}"
        return found[0]


@pytest.fixture(scope="module", params=versions(), ids=lambda version: f"litellm-{version}")
def proxy_venv(request: pytest.FixtureRequest) -> ProxyVenv:
    try:
        return ensure_proxy_venv(request.param, log=lambda line: print(f"\n[proxy venv] {line}", flush=True))
    except ProxyVenvError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="module")
def proxy_run(proxy_venv: ProxyVenv, emulator_session: Emulator,
              tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProxyRun]:
    emu = emulator_session
    emu.reset()
    root = tmp_path_factory.mktemp("litellm-proxy")
    data_dir = root / "data"
    callback = callback_line(proxy_venv)
    if callback == FILE_CALLBACK:
        (root / "callbacks").mkdir()
        shutil.copy(REPO / "callbacks" / "opentracy_callback.py", root / "callbacks" / "opentracy_callback.py")
    (root / "custom_auth.py").write_text(CUSTOM_AUTH)
    config = root / "config.yaml"
    config.write_text(proxy_config(emu, callback))

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENTRACY_", "VIRTUAL_ENV"))}
    env.update(KEYS, OPENTRACY_DATA_DIR=str(data_dir), LITELLM_LOCAL_MODEL_COST_MAP="True", PYTHONUNBUFFERED="1")
    log_path = root / "proxy.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(proxy_venv.litellm), "--config", str(config), "--port", str(port)],
                                cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    clock = time.monotonic()
    phases: dict[str, float] = {}

    def lap(name: str) -> None:
        nonlocal clock
        phases[name], clock = time.monotonic() - clock, time.monotonic()

    try:
        _wait_healthy(proc, port, log_path)
        lap("start")
        opened_early = (data_dir / "chdb").exists()
        sent = _send_requests(emu, f"http://127.0.0.1:{port}/v1")
        lap("requests")
        # Stop right after the last answer: what is still queued must be written on SIGTERM.
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        lap("stop")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        emu.reset()
    raw = _read_traces(data_dir, root)
    lap("read")
    print(f"\n[litellm {proxy_venv.litellm_version} proxy, callbacks: {callback}] exit {proc.returncode}; "
          + ", ".join(f"{name} {seconds:.1f}s" for name, seconds in phases.items()), flush=True)
    stop_seconds = phases["stop"]
    yield ProxyRun(sent=sent, traces=[json.loads(line) for line in raw.splitlines() if line.strip()], raw=raw,
                   data_dir=data_dir, store_opened_before_first_request=opened_early, stop_seconds=stop_seconds,
                   proxy_log=log_path.read_text(errors="replace"))


def _wait_healthy(proc: subprocess.Popen[bytes], port: int, log_path: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"litellm proxy exited with {proc.returncode}:\n{log_path.read_text()[-5000:]}", pytrace=False)
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"litellm proxy not healthy after {timeout}s:\n{log_path.read_text()[-5000:]}", pytrace=False)


def _send_requests(emu: Emulator, base_url: str) -> dict[str, Sent]:
    client = openai.OpenAI(base_url=base_url, api_key=CLIENT_KEY, max_retries=0, timeout=60)
    sent: dict[str, Sent] = {}

    def chat(name: str, model: str, **extra: Any) -> Sent:
        item = sent[name] = Sent(name, prompt=f"{name} prompt {RUN}")
        messages = [{"role": "user", "content": item.prompt}]
        try:
            if extra.get("stream"):
                chunks = list(client.chat.completions.create(model=model, messages=messages, **extra))
                item.text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                return item
            raw = client.chat.completions.with_raw_response.create(model=model, messages=messages, **extra)
            item.call_id = raw.headers.get("x-litellm-call-id", "")
            response = raw.parse()
            message = response.choices[0].message
            item.text = message.content or ""
            item.usage = {"prompt_tokens": response.usage.prompt_tokens,
                          "completion_tokens": response.usage.completion_tokens}
            item.tool_calls = [c.model_dump() for c in message.tool_calls or []]
        except openai.APIStatusError as exc:
            item.status = exc.status_code
            item.call_id = exc.response.headers.get("x-litellm-call-id", "")
        return item

    chat("plain", "gpt-4o")
    chat("streamed", "claude", stream=True, max_tokens=64)
    chat("tool", "gpt-4o", tools=[WEATHER_TOOL])
    emu.fail("gpt-4o-mini", Fault(status=429, times=None))
    chat("limited", "fast")  # 429 on every try: the proxy retries, then answers 429
    emu.clear_faults()
    emu.fail("claude-sonnet-4-6", Fault(status=429, times=1))
    chat("retried", "claude")  # 429 once, then the proxy's retry succeeds
    emu.clear_faults()
    bad = openai.OpenAI(base_url=base_url, api_key=f"sk-wrong-{RUN}", max_retries=0)
    item = sent["refused"] = Sent("refused", prompt=f"refused prompt {RUN}")
    try:
        bad.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": item.prompt}])
    except openai.APIStatusError as exc:
        item.status = exc.status_code
    return sent


def _read_traces(data_dir: Path, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENTRACY_")}
    env["OPENTRACY_DATA_DIR"] = str(data_dir)
    result = subprocess.run([sys.executable, "-m", "opentracy.cli", "traces", "--json", "--last", "50"],
                            cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"opentracy traces failed ({result.returncode}):\n{result.stderr}"
    return result.stdout


# -- the client saw what a litellm proxy answers ----------------------------------------------------


def test_client_answers(proxy_run: ProxyRun) -> None:
    sent = proxy_run.sent
    assert sent["plain"].status == 200 and sent["plain"].text.startswith("Hello from gpt-4o!")
    assert sent["streamed"].text.startswith("Hello from claude-sonnet-4-6!")
    assert sent["tool"].tool_calls and sent["tool"].tool_calls[0]["function"]["name"] == "get_weather"
    assert sent["limited"].status == 429
    assert sent["retried"].status == 200
    assert sent["refused"].status == 401


# -- one trace per request, as the proxy served it ----------------------------------------------------


def test_one_trace_per_request_all_written_on_sigterm(proxy_run: ProxyRun) -> None:
    assert not proxy_run.store_opened_before_first_request, "the store must open lazily, on the first event"
    assert len(proxy_run.traces) == len(proxy_run.sent), (
        f"{len(proxy_run.traces)} traces for {len(proxy_run.sent)} requests:\n"
        + "\n".join(f"{t['status']} {t['requested_model']} {t['messages']}" for t in proxy_run.traces)
        + f"\n--- proxy log ---\n{proxy_run.proxy_log[-3000:]}")
    for name in proxy_run.sent:
        if name != "refused":  # stored without its prompt (see below)
            proxy_run.trace(name)  # exactly one each
    assert {t["source"] for t in proxy_run.traces} == {"litellm_proxy"}
    assert proxy_run.stop_seconds < 30


def test_plain_trace(proxy_run: ProxyRun) -> None:
    sent, trace = proxy_run.sent["plain"], proxy_run.trace("plain")
    assert trace["status"] == "ok" and trace["http_status"] == 200
    assert trace["requested_model"] == "gpt-4o"
    assert trace["selected_model"] == "openai/gpt-4o" and trace["provider"] == "openai"
    assert trace["api_key_name"] == KEY_ALIAS
    assert trace["prompt_tokens"] == words(sent.prompt) == sent.usage["prompt_tokens"]
    assert trace["completion_tokens"] == words(sent.text) == sent.usage["completion_tokens"]
    assert trace["total_tokens"] == trace["prompt_tokens"] + trace["completion_tokens"]
    assert trace["cost_usd"] > 0
    assert trace["messages"] == [{"role": "user", "content": sent.prompt}]
    assert trace["response"] == sent.text
    assert trace["stream"] is False and trace["ttft_ms"] is None
    assert 0 < trace["latency_ms"] < 30_000
    assert trace["trace_id"] == sent.call_id.replace("-", ""), "x-litellm-call-id finds the trace"


def test_stream_trace(proxy_run: ProxyRun) -> None:
    sent, trace = proxy_run.sent["streamed"], proxy_run.trace("streamed")
    assert trace["status"] == "ok" and trace["stream"] is True
    assert trace["requested_model"] == "claude"
    assert trace["selected_model"] == "anthropic/claude-sonnet-4-6"
    assert trace["prompt_tokens"] == words(sent.prompt)
    assert trace["completion_tokens"] == words(sent.text)
    assert trace["cost_usd"] > 0
    assert trace["response"] == sent.text
    assert trace["ttft_ms"] is not None and 0 < trace["ttft_ms"] <= trace["latency_ms"]


def test_tool_call_trace(proxy_run: ProxyRun) -> None:
    sent, trace = proxy_run.sent["tool"], proxy_run.trace("tool")
    assert trace["status"] == "ok" and trace["finish_reason"] == "tool_calls"
    assert [c["function"]["name"] for c in trace["tool_calls"]] == ["get_weather"]
    assert json.loads(trace["tool_calls"][0]["function"]["arguments"]) == {"city": "test"}
    assert [t["function"]["name"] for t in trace["tools"]] == ["get_weather"]
    assert trace["prompt_tokens"] == words(sent.prompt)
    assert trace["completion_tokens"] == words(sent.tool_calls[0]["function"]["arguments"])
    assert trace["cost_usd"] > 0


def test_failed_request_is_one_error_trace(proxy_run: ProxyRun) -> None:
    trace = proxy_run.trace("limited")
    assert trace["status"] == "error" and trace["http_status"] == 429
    assert trace["error_type"] == "RateLimitError"
    assert "429" in trace["error_message"]
    assert trace["requested_model"] == "fast" and trace["selected_model"] == "openai/gpt-4o-mini"
    assert trace["api_key_name"] == KEY_ALIAS
    assert trace["attempts"] and all(a["status"] == "error" for a in trace["attempts"])
    assert trace["messages"] == [{"role": "user", "content": proxy_run.sent["limited"].prompt}]
    assert trace["cost_usd"] == 0 and trace["completion_tokens"] == 0


def test_retried_request_is_one_ok_trace_with_its_attempts(proxy_run: ProxyRun) -> None:
    sent, trace = proxy_run.sent["retried"], proxy_run.trace("retried")
    assert trace["status"] == "ok" and trace["response"] == sent.text
    assert [a["status"] for a in trace["attempts"]] == ["error", "ok"]
    assert trace["fallback_used"] is False  # a retry of the same deployment
    assert trace["latency_ms"] >= trace["attempts"][-1]["latency_ms"]
    assert trace["completion_tokens"] == words(sent.text) and trace["cost_usd"] > 0


def test_refused_request_is_traced_without_content(proxy_run: ProxyRun) -> None:
    refused = [t for t in proxy_run.traces if t["http_status"] == 401]
    assert len(refused) == 1
    assert refused[0]["status"] == "error" and refused[0]["content_stored"] is False
    assert refused[0]["messages"] == [] and refused[0]["api_key_name"] == ""


def test_no_key_is_stored(proxy_run: ProxyRun) -> None:
    for secret in [*KEYS.values(), CLIENT_KEY, f"sk-wrong-{RUN}"]:
        assert secret not in proxy_run.raw
    assert RUN in proxy_run.raw  # the prompts are there: the check above looked at real rows
