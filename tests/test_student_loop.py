"""From traces to a student, end to end, with the app's code unchanged throughout (README's worked example):
traffic on `smart` → export → student added as shadow → compare → 10 % split → flip, by config reloads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai

from tests.emulator import Emulator
from tests.support import EngineProcess

TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


def config(emu: Emulator, smart: str) -> str:
    return f"""
model_list:
  - model_name: teacher
    litellm_params: {{model: anthropic/claude-sonnet-4-6, api_base: "{emu.base('anthropic')}", api_key: os.environ/ANTHROPIC_API_KEY}}
  - model_name: student
    litellm_params: {{model: openai/my-student, api_base: "{emu.base('openai')}", api_key: student-key}}
    model_info: {{input_cost_per_token: 0.0000001, output_cost_per_token: 0.0000002}}
aliases:
  smart:
{smart}
"""


STAGES = {
    "teacher": "    model: teacher",
    "shadow": "    model: teacher\n    shadow: [student]",
    "split": "    targets:\n      - {model: teacher, weight: 90}\n      - {model: student, weight: 10}",
    "flipped": "    model: student\n    fallbacks: [teacher]",
}


class App:
    """The application: it only ever knows base_url and model="smart"."""

    def __init__(self, base_url: str) -> None:
        self.client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0)

    def ask(self, text: str, user: str | None = None, tools: bool = False) -> openai.types.chat.ChatCompletion:
        extra = {"tools": [TOOL]} if tools else {}
        return self.client.chat.completions.create(model="smart", messages=[{"role": "user", "content": text}],
                                                   user=user or openai.NOT_GIVEN, **extra)


def cli(engine: EngineProcess, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENTRACY_DATA_DIR": str(engine.data_dir)}
    return subprocess.run([sys.executable, "-m", "opentracy.cli", *args, "--config", str(engine.config)],
                          capture_output=True, text=True, env=env, timeout=120)


def stage(engine: EngineProcess, emu: Emulator, name: str) -> None:
    engine.config.write_text(config(emu, STAGES[name]))
    done = cli(engine, "reload")
    assert done.returncode == 0, done.stderr


def wait_for_traces(engine: EngineProcess, count: int) -> list[dict]:
    for _ in range(100):
        rows = httpx.get(f"{engine.url}/admin/traces", params={"last": 1000}).json()["data"]
        if len(rows) >= count:
            return rows
        time.sleep(0.1)
    raise AssertionError(f"expected {count} traces, found {len(rows)}")


def test_teacher_to_student_without_touching_the_app(emu: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(config(emu, STAGES["teacher"]))
    engine = EngineProcess(config=path, data_dir=tmp_path / "data", env={}).start()
    app = App(engine.base_url)
    try:
        # 1. Traffic on `smart`, served by the teacher; one question asked twice, one tool call, one error.
        for text in ("what is rust", "what is rust", "explain tokio", "define latency"):
            assert app.ask(text)._routing["selected_model"] == "anthropic/claude-sonnet-4-6"  # type: ignore[attr-defined]
        app.ask("weather in Paris?", tools=True)
        httpx.post(f"{engine.base_url}/chat/completions", json={"model": "smart", "messages": []})
        wait_for_traces(engine, 6)

        # 2. Export the teacher's answers as fine-tuning data.
        out = tmp_path / "train.jsonl"
        exported = cli(engine, "export", "--alias", "smart", "--since", "1h", "--out", str(out))
        assert exported.returncode == 0, exported.stderr
        lines = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(lines) == 4  # the duplicate question is written once
        assert "1 duplicate" in exported.stderr and "1 error" in exported.stderr
        assert lines[0]["messages"] == [{"role": "user", "content": "what is rust"},
                                        {"role": "assistant", "content":
                                         "Hello from claude-sonnet-4-6! You said: what is rust"}]
        tool_example = next(x for x in lines if "tools" in x)
        assert tool_example["messages"][-1]["tool_calls"][0]["function"]["name"] == "get_weather"

        # 3. (Training happens elsewhere.) The student is mirrored as a shadow: answers do not change.
        stage(engine, emu, "shadow")
        for text in ("alpha beta", "gamma delta", "alpha beta gamma"):
            resp = app.ask(text)
            assert resp.choices[0].message.content.startswith("Hello from claude-sonnet-4-6!")
        time.sleep(1.5)
        compared = cli(engine, "compare", "--alias", "smart", "--since", "1h", "--json")
        assert compared.returncode == 0, compared.stderr
        (report,) = [json.loads(line) for line in compared.stdout.splitlines()]
        assert report["shadow_model"] == "openai/my-student" and report["pairs"] == 3
        assert report["exact_match"] == 0.0  # the emulated student names itself in its answer
        assert report["cost_ratio"] is not None and report["cost_ratio"] < 1  # the student is cheaper
        assert report["shadow_error_rate"] == 0.0
        assert metric(httpx.get(f"{engine.url}/metrics").text, "opentracy_shadow_started_total") == 3

        # 4. A 90/10 split, sticky per user.
        stage(engine, emu, "split")
        served = Counter(app.ask("hi", user=f"user-{i}")._routing["selected_model"] for i in range(60))  # type: ignore[attr-defined]
        assert served["openai/my-student"] > 0 and served["anthropic/claude-sonnet-4-6"] > served["openai/my-student"]
        sticky = {app.ask("hi", user="user-7")._routing["selected_model"] for _ in range(5)}  # type: ignore[attr-defined]
        assert len(sticky) == 1

        # 5. Flip: the student serves `smart`, the teacher stays as its fallback.
        stage(engine, emu, "flipped")
        assert app.ask("hello")._routing["selected_model"] == "openai/my-student"  # type: ignore[attr-defined]

        stats = cli(engine, "stats", "--by", "model", "--since", "1h", "--json")
        by_model = {row["key"]: row for row in map(json.loads, stats.stdout.splitlines())}
        assert by_model["openai/my-student"]["requests"] >= 2 and by_model["anthropic/claude-sonnet-4-6"]["p50_ms"] > 0
    finally:
        engine.stop()


def test_reloads_under_load_fail_no_request_and_bad_config_keeps_running(emu: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(config(emu, STAGES["teacher"]))
    engine = EngineProcess(config=path, data_dir=tmp_path / "data", env={}).start()
    failures: list[str] = []
    answered = Counter()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=10) as client:
            while not stop.is_set():
                r = client.post(f"{engine.base_url}/chat/completions",
                                json={"model": "smart", "messages": [{"role": "user", "content": "hi"}]})
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:200]}")
                else:
                    answered[r.json()["_routing"]["selected_model"]] += 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        for name in ("flipped", "teacher", "split", "flipped", "teacher"):
            time.sleep(0.4)
            engine.config.write_text(config(emu, STAGES[name]))
            assert cli(engine, "reload").returncode == 0
        time.sleep(0.4)
        # An invalid config is refused and the running one stays.
        engine.config.write_text("aliases:\n  smart: {model: no-such-model-anywhere}\n")
        bad = cli(engine, "reload")
        assert bad.returncode == 2 and "the running config stays" in bad.stderr and "aliases.smart" in bad.stderr
        time.sleep(0.4)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        after = httpx.post(f"{engine.base_url}/chat/completions",
                           json={"model": "smart", "messages": [{"role": "user", "content": "hi"}]})
        engine.stop()
    assert failures == []
    assert answered["openai/my-student"] > 0 and answered["anthropic/claude-sonnet-4-6"] > 0
    assert after.status_code == 200 and after.json()["_routing"]["selected_model"] == "anthropic/claude-sonnet-4-6"


def test_sighup_reloads_and_excess_shadows_are_dropped_and_counted(emu: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(config(emu, STAGES["teacher"]))
    engine = EngineProcess(config=path, data_dir=tmp_path / "data", env={"OPENTRACY_MAX_CONCURRENT_SHADOWS": "1"}).start()
    app = App(engine.base_url)
    try:
        path.write_text(config(emu, STAGES["shadow"]))
        assert engine.proc is not None
        engine.proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        emu.delay_ms = 300  # each mirror holds its one slot for a while
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda i: app.ask(f"q{i}"), range(4)))
        assert all(a.choices[0].message.content.startswith("Hello from claude-sonnet-4-6!") for a in answers)
        metrics = httpx.get(f"{engine.url}/metrics").text
        started, dropped = metric(metrics, "opentracy_shadow_started_total"), metric(metrics, "opentracy_shadow_dropped_total")
        assert started >= 1 and dropped >= 1 and started + dropped == 4
    finally:
        engine.stop()
    assert "config reloaded" in engine.logs()


def metric(text: str, name: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(name + " ")]
    return float(line.split()[1])
