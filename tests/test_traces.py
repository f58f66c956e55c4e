"""Every call becomes a trace in the real ClickHouse engine (chDB), read back as users read it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import httpx
import openai
import pytest

from opentracy.store.spool import SEGMENT_SUFFIX
from tests.conftest import engine_config
from tests.emulator import Emulator, Fault
from tests.support import FAKE_KEYS, EngineProcess

# uvicorn re-raises SIGTERM after a graceful shutdown, so the exit status says "terminated by SIGTERM".
GRACEFUL = (0, -signal.SIGTERM)
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {
    "type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}


def wait_trace(engine: EngineProcess, trace_id: str, timeout: float = 10.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(f"{engine.url}/admin/traces/{trace_id}")
        if r.status_code == 200:
            return r.json()
        time.sleep(0.1)
    raise AssertionError(f"trace {trace_id} never arrived; engine log:\n{engine.logs()[-3000:]}")


def list_traces(engine: EngineProcess, **params: object) -> list[dict]:
    r = httpx.get(f"{engine.url}/admin/traces", params=params)
    assert r.status_code == 200, r.text
    return r.json()["data"]


@pytest.fixture
def client(engine: EngineProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=engine.base_url, api_key="unused", max_retries=0)


def test_success_with_fallback_is_one_full_trace(client: openai.OpenAI, engine: EngineProcess, emu: Emulator) -> None:
    emu.fail("gpt-4o", Fault(status=503))
    resp = client.chat.completions.create(model="smart", messages=[{"role": "user", "content": "trace me now"}],
                                          temperature=0.3, user="user-42", metadata={"team": "search"})
    trace = wait_trace(engine, resp._routing["trace_id"])  # type: ignore[attr-defined]
    assert trace["status"] == "ok" and trace["source"] == "gateway" and trace["http_status"] == 200
    assert trace["alias"] == "smart" and trace["requested_model"] == "smart"
    assert trace["selected_model"] == "anthropic/claude-sonnet-4-6" and trace["provider"] == "anthropic"
    assert trace["fallback_used"] is True
    assert [a["status"] for a in trace["attempts"]] == ["error", "ok"]
    assert (trace["prompt_tokens"], trace["completion_tokens"], trace["total_tokens"]) == (3, 8, 11)
    assert trace["cost_usd"] == pytest.approx(resp._cost, rel=1e-6) and trace["cost_usd"] > 0  # type: ignore[attr-defined]
    assert trace["latency_ms"] >= trace["attempts"][1]["latency_ms"] > 0
    assert trace["messages"] == [{"role": "user", "content": "trace me now"}]
    assert trace["response"] == resp.choices[0].message.content
    assert trace["request_params"].get("temperature") == 0.3
    assert trace["user"] == "user-42" and trace["metadata"] == {"team": "search"}
    assert trace["stream"] is False and trace["ttft_ms"] is None
    assert trace["content_stored"] is True and trace["redacted"] is False
    assert len(list_traces(engine, last=1000)) == len({t["trace_id"] for t in list_traces(engine, last=1000)})


def test_stream_and_tool_calls_are_traced(client: openai.OpenAI, engine: EngineProcess, emu: Emulator) -> None:
    chunks = list(client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "find it"}],
                                                 tools=[TOOL], stream=True))
    trace = wait_trace(engine, chunks[-1]._routing["trace_id"])  # type: ignore[attr-defined]
    assert trace["stream"] is True and trace["ttft_ms"] is not None and 0 < trace["ttft_ms"] <= trace["latency_ms"]
    assert trace["finish_reason"] == "tool_calls"
    assert trace["tools"][0]["function"]["name"] == "lookup"
    call = trace["tool_calls"][0]
    assert call["function"]["name"] == "lookup" and json.loads(call["function"]["arguments"]) == {"q": "test"}


def test_rejected_and_failed_requests_are_traced(engine: EngineProcess, emu: Emulator) -> None:
    bad = httpx.post(f"{engine.base_url}/chat/completions", json={"model": "smart", "messages": [{"role": "x"}]})
    unknown = httpx.post(f"{engine.base_url}/chat/completions",
                         json={"model": "nope-model", "messages": [{"role": "user", "content": "hi"}]})
    emu.fail("*", Fault(status=429, times=None))
    exhausted = httpx.post(f"{engine.base_url}/chat/completions",
                           json={"model": "smart", "messages": [{"role": "user", "content": "hi"}]})
    statuses = {}
    for response in (bad, unknown, exhausted):
        trace = wait_trace(engine, response.headers["x-opentracy-trace-id"])
        assert trace["status"] == "error"
        statuses[trace["http_status"]] = trace
    assert set(statuses) == {400, 404, 429}
    assert statuses[404]["requested_model"] == "nope-model" and statuses[404]["error_type"] == "model_not_found"
    assert [a["status"] for a in statuses[429]["attempts"]] == ["error", "error"]
    assert statuses[429]["alias"] == "smart" and "rate_limit" in statuses[429]["error_type"] + statuses[429]["error_message"]


def test_abandoned_stream_is_traced_as_cancelled_with_partial_output(engine: EngineProcess, emu: Emulator) -> None:
    emu.fail("gpt-4o", Fault(drip_ms=150))
    words = " ".join(f"w{i}" for i in range(40))
    with httpx.stream("POST", f"{engine.base_url}/chat/completions", timeout=10,
                      json={"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": words}]}) as r:
        trace_id = r.headers["x-opentracy-trace-id"]
        received = 0
        for line in r.iter_lines():
            received += line.startswith("data: ")
            if received >= 3:
                break  # the client goes away mid-stream
    trace = wait_trace(engine, trace_id)
    assert trace["status"] == "cancelled" and trace["http_status"] == 499
    assert trace["response"].startswith("Hello from gpt-4o!") and len(trace["response"]) < 60
    assert trace["selected_model"] == "openai/gpt-4o"


def test_traces_cli_reads_through_the_running_server(client: openai.OpenAI, engine: EngineProcess,
                                                     emu: Emulator) -> None:
    resp = client.chat.completions.create(model="smart", messages=[{"role": "user", "content": "for the cli"}])
    trace_id = resp._routing["trace_id"]  # type: ignore[attr-defined]
    wait_trace(engine, trace_id)
    env = {**os.environ, "OPENTRACY_DATA_DIR": str(engine.data_dir)}
    cli = [sys.executable, "-m", "opentracy.cli", "traces", "--config", str(engine.config)]
    table = subprocess.run([*cli, "--alias", "smart", "--last", "5"], capture_output=True, text=True, env=env,
                           timeout=60)
    assert table.returncode == 0, table.stderr
    assert trace_id[:12] in table.stdout and "openai/gpt-4o" in table.stdout
    lines = subprocess.run([*cli, "--json", "--status", "ok", "--since", "1h"], capture_output=True, text=True,
                           env=env, timeout=60).stdout.splitlines()
    rows = [json.loads(line) for line in lines]
    assert rows and all(r["status"] == "ok" for r in rows) and trace_id in {r["trace_id"] for r in rows}
    shown = subprocess.run([*cli, "show", trace_id[:10]], capture_output=True, text=True, env=env, timeout=60)
    assert json.loads(shown.stdout)["response"] == resp.choices[0].message.content


def test_metrics_count_traces(engine: EngineProcess) -> None:
    text = httpx.get(f"{engine.url}/metrics").text
    written = [line for line in text.splitlines() if line.startswith("opentracy_traces_written_total ")]
    assert written and float(written[0].split()[1]) > 0


# -- privacy ----------------------------------------------------------------------------------------

PII_PROMPT = f"Mail alice@example.com or call +1 415-555-0132; my key is {FAKE_KEYS['OPENAI_API_KEY']}"


def start_engine(emu: Emulator, tmp_path: Path, **env: str) -> EngineProcess:
    config = tmp_path / "config.yaml"
    config.write_text(engine_config(emu))
    return EngineProcess(config=config, data_dir=tmp_path / "data", env=env).start()


@pytest.mark.parametrize("env, expect", [
    ({}, "secrets-only"),
    ({"OPENTRACY_TRACE_REDACT": "true"}, "redacted"),
    ({"OPENTRACY_TRACE_CONTENT": "false"}, "no-content"),
])
def test_privacy_settings(emu: Emulator, tmp_path: Path, env: dict, expect: str) -> None:
    engine = start_engine(emu, tmp_path, **env)
    try:
        client = openai.OpenAI(base_url=engine.base_url, api_key="unused", max_retries=0)
        resp = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": PII_PROMPT}])
        # The client's answer is never touched by trace settings.
        assert "alice@example.com" in resp.choices[0].message.content
        trace = wait_trace(engine, resp._routing["trace_id"])  # type: ignore[attr-defined]
    finally:
        engine.stop()
    stored = json.dumps(trace)
    assert FAKE_KEYS["OPENAI_API_KEY"] not in stored  # whatever the settings
    assert trace["prompt_tokens"] > 0 and trace["cost_usd"] > 0  # numbers are always kept
    if expect == "secrets-only":
        assert "alice@example.com" in trace["messages"][0]["content"] and "[SECRET]" in stored
    elif expect == "redacted":
        assert trace["redacted"] is True
        content = trace["messages"][0]["content"]
        assert "[EMAIL]" in content and "[PHONE]" in content and "alice@" not in stored and "555-0132" not in stored
    else:
        assert trace["content_stored"] is False and trace["messages"] == [] and trace["response"] == ""
        assert "alice" not in stored


# -- durability -------------------------------------------------------------------------------------

def count_with_cli(data_dir: Path, config: Path) -> list[dict]:
    env = {**os.environ, "OPENTRACY_DATA_DIR": str(data_dir)}
    out = subprocess.run([sys.executable, "-m", "opentracy.cli", "traces", "--json", "--last", "10000",
                          "--config", str(config)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def test_store_down_then_back_loses_and_duplicates_nothing(emu: Emulator, tmp_path: Path) -> None:
    """The store is unreachable while traffic flows; traces wait in the spool and all arrive later."""
    config = tmp_path / "config.yaml"
    config.write_text(engine_config(emu))
    down = EngineProcess(config=config, data_dir=tmp_path / "data",
                         env={"OPENTRACY_CLICKHOUSE_URL": "http://default:@127.0.0.1:9/default"}).start()
    client = openai.OpenAI(base_url=down.base_url, api_key="unused", max_retries=0)
    sent = set()
    try:
        for i in range(30):
            resp = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": f"n{i}"}])
            sent.add(resp._routing["trace_id"])  # type: ignore[attr-defined]
        metrics = httpx.get(f"{down.url}/metrics").text
    finally:
        assert down.stop() in GRACEFUL  # SIGTERM: graceful, the queue goes to the spool
    assert "opentracy_traces_written_total 0" in metrics
    # The store is back (embedded this time, same data dir): the spool replays at start.
    up = EngineProcess(config=config, data_dir=tmp_path / "data", env={}).start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            rows = list_traces(up, last=1000)
            if len(rows) >= len(sent):
                break
            time.sleep(0.2)
    finally:
        up.stop()
    ids = [r["trace_id"] for r in rows]
    assert set(ids) == sent and len(ids) == len(sent)


def test_sigterm_flushes_queued_traces(emu: Emulator, tmp_path: Path) -> None:
    engine = start_engine(emu, tmp_path)
    client = openai.OpenAI(base_url=engine.base_url, api_key="unused", max_retries=0)
    sent = {client.chat.completions.create(model="demo", messages=[{"role": "user", "content": str(i)}])
            ._routing["trace_id"] for i in range(20)}  # type: ignore[attr-defined]
    assert engine.stop() in GRACEFUL
    assert {r["trace_id"] for r in count_with_cli(engine.data_dir, engine.config)} == sent


def _store_process(engine: EngineProcess) -> int:
    """The pid of the server's trace process (opentracy/tracing/process.py)."""
    assert engine.proc is not None
    tasks = Path(f"/proc/{engine.proc.pid}/task")
    children = [pid for task in tasks.iterdir() for pid in (task / "children").read_text().split()]
    assert len(children) == 1, children  # started by whichever thread (re)started it
    return int(children[0])


def _running(pid: int) -> bool:
    try:  # an orphan's zombie may wait for a reaper that never comes (PID 1 in a container): not running
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sigterm_to_the_whole_process_group_still_stores_every_trace(emu: Emulator, tmp_path: Path) -> None:
    """The embedded store runs in a child of the server. A SIGTERM to the process group (`timeout`,
    supervisors that signal the group) reaches that child too; it must stay until the server has
    written out its queued traces through it."""
    engine = start_engine(emu, tmp_path)
    client = openai.OpenAI(base_url=engine.base_url, api_key="unused", max_retries=0)
    sent = {client.chat.completions.create(model="demo", messages=[{"role": "user", "content": str(i)}])
            ._routing["trace_id"] for i in range(10)}  # type: ignore[attr-defined]
    try:
        os.kill(_store_process(engine), signal.SIGTERM)  # first, as a group signal may arrive
    finally:
        assert engine.stop() in GRACEFUL
    assert not list((engine.data_dir / "spool").glob(f"*{SEGMENT_SUFFIX}"))  # inserted, not spooled for later
    assert {r["trace_id"] for r in count_with_cli(engine.data_dir, engine.config)} == sent


def test_the_store_process_does_not_outlive_a_killed_server(emu: Emulator, tmp_path: Path) -> None:
    """After kill -9 of the server its store process must go too: it would hold the data directory."""
    engine = start_engine(emu, tmp_path)
    child = _store_process(engine)
    assert engine.proc is not None
    engine.proc.kill()
    engine.proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while _running(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(child)
    engine.start()  # the same data directory: not locked
    try:
        assert httpx.get(f"{engine.url}/health", timeout=5).json()["tracing"]["store_up"] is not False
    finally:
        engine.stop()


def test_a_store_process_that_dies_is_replaced_and_no_trace_is_lost(emu: Emulator, tmp_path: Path) -> None:
    """The OOM killer (or a crash) takes the embedded store's process: the server starts a new one on
    its next store call and every trace, before and after, is readable through the running server."""
    engine = start_engine(emu, tmp_path)
    client = openai.OpenAI(base_url=engine.base_url, api_key="unused", max_retries=0)

    def send(n: int) -> set[str]:
        return {client.chat.completions.create(model="demo", messages=[{"role": "user", "content": str(i)}])
                ._routing["trace_id"] for i in range(n)}  # type: ignore[attr-defined]

    try:
        sent = send(5)
        first = _store_process(engine)
        os.kill(first, signal.SIGKILL)
        sent |= send(5)
        assert {r["trace_id"] for r in count_with_cli(engine.data_dir, engine.config)} == sent  # via the server
        second = _store_process(engine)
        assert second != first and _running(second)
    finally:
        assert engine.stop() in GRACEFUL


def _send_and_wait_shipped(engine: EngineProcess, n: int) -> set[str]:
    """Send ``n`` requests; return their trace ids once the trace process acknowledged them all, which it
    does after its writer journaled them (the embedded store itself inserts only every 120 s)."""
    client = openai.OpenAI(base_url=engine.base_url, api_key="unused", max_retries=0)
    sent = {client.chat.completions.create(model="demo", messages=[{"role": "user", "content": str(i)}])
            ._routing["trace_id"] for i in range(n)}  # type: ignore[attr-defined]
    deadline = time.monotonic() + 30
    while "opentracy_trace_outbox 0\n" not in httpx.get(f"{engine.url}/metrics", timeout=5).text:
        assert time.monotonic() < deadline, "the outbox never emptied"
        time.sleep(0.1)
    return sent


def test_traces_cli_after_a_crash_of_server_and_trace_process_delivers_the_journal(
        emu: Emulator, tmp_path: Path) -> None:
    # The whole engine dies at once (the OOM killer, `docker kill`): nothing wrote out the writer's batch,
    # only its journal holds it. The CLI, reading the store itself since no server runs, delivers it first.
    engine = start_engine(emu, tmp_path)
    sent = _send_and_wait_shipped(engine, 20)
    assert engine.proc is not None
    child = _store_process(engine)
    os.kill(engine.proc.pid, signal.SIGSTOP)  # so it cannot start a new trace process in between
    os.kill(child, signal.SIGKILL)
    engine.proc.kill()
    engine.proc.wait(timeout=30)
    assert (engine.data_dir / "spool" / "journal").stat().st_size > 0
    # engine.json survives a kill -9, and its pid may still exist (an unreaped zombie, a reused pid):
    # here a live process that is not a server. The CLI must see that nobody answers there.
    (engine.data_dir / "engine.json").write_text(json.dumps({"pid": os.getpid(), "url": "http://127.0.0.1:9"}))
    assert {r["trace_id"] for r in count_with_cli(engine.data_dir, engine.config)} == sent
    assert {r["trace_id"] for r in count_with_cli(engine.data_dir, engine.config)} == sent  # once, not twice


def _kill_server_while_its_trace_process_is_busy(engine: EngineProcess, until: Callable[[], bool]) -> None:
    """kill -9 of the server while its trace process is still writing out (held still until ``until()``;
    a queue of 20 takes it ~60 ms here, a large one under load longer): meanwhile it holds the store."""
    assert engine.proc is not None
    child = _store_process(engine)
    os.kill(child, signal.SIGSTOP)
    engine.proc.kill()
    engine.proc.wait(timeout=30)

    def resume() -> None:
        deadline = time.monotonic() + 60
        while not until() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(child, signal.SIGCONT)

    threading.Thread(target=resume, daemon=True).start()


def test_traces_cli_right_after_a_kill_9_of_the_server_waits_and_shows_the_last_requests(
        emu: Emulator, tmp_path: Path) -> None:
    # The CLI started in that moment waits for the trace process instead of failing ("held by process N").
    engine = start_engine(emu, tmp_path)
    sent = _send_and_wait_shipped(engine, 20)
    resume_at = time.monotonic() + 2.0  # the CLI opens the store ~0.5 s after it starts
    _kill_server_while_its_trace_process_is_busy(engine, until=lambda: time.monotonic() > resume_at)
    assert {r["trace_id"] for r in count_with_cli(engine.data_dir, engine.config)} == sent
    assert {r["trace_id"] for r in count_with_cli(engine.data_dir, engine.config)} == sent  # once, not twice


def test_a_server_restarted_right_after_a_kill_9_waits_for_the_old_trace_process(
        emu: Emulator, tmp_path: Path) -> None:
    # A supervisor restarts at once, while the killed server's trace process still holds the store.
    engine = start_engine(emu, tmp_path)
    sent = _send_and_wait_shipped(engine, 20)
    _kill_server_while_its_trace_process_is_busy(engine, until=lambda: "waiting up to" in engine.logs())
    engine.start()
    try:
        assert {r["trace_id"] for r in count_with_cli(engine.data_dir, engine.config)} == sent  # via the server
    finally:
        assert engine.stop() in GRACEFUL


def test_embedded_store_refuses_a_second_process_and_multiple_workers(engine: EngineProcess) -> None:
    env = {**os.environ, **FAKE_KEYS, "OPENTRACY_DATA_DIR": str(engine.data_dir)}
    second = subprocess.run([sys.executable, "-m", "opentracy.cli", "serve", "--config", str(engine.config),
                             "--port", "1"], capture_output=True, text=True, env=env, timeout=120)
    assert second.returncode == 2 and "go through" in second.stderr.lower() + second.stdout.lower()
    workers = subprocess.run([sys.executable, "-m", "opentracy.cli", "serve", "--config", str(engine.config),
                              "--workers", "2"], capture_output=True, text=True, env=env, timeout=120)
    assert workers.returncode == 2 and "ClickHouse server" in workers.stderr
