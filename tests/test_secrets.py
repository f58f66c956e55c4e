"""Provider and engine keys never leave the engine: not in responses, headers, logs, traces, or tools."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.conftest import engine_config
from tests.emulator import Emulator, Fault
from tests.support import FAKE_KEYS, EngineProcess

MARKER = "MARKER"  # every fake key below contains it; no output may
ENGINE_KEYS = {"OPENTRACY_API_KEYS": "app:sk-engine-app-MARKER-51", "OPENTRACY_ADMIN_KEYS": "ops:sk-engine-ops-MARKER-52"}
APP, OPS = "sk-engine-app-MARKER-51", "sk-engine-ops-MARKER-52"


def test_no_secret_marker_anywhere(emu: Emulator, tmp_path: Path) -> None:
    assert all(MARKER in key for key in FAKE_KEYS.values())
    config = tmp_path / "config.yaml"
    config.write_text(engine_config(emu) + "general_settings:\n  master_key: sk-master-MARKER-53\n")
    engine = EngineProcess(config=config, data_dir=tmp_path / "data", env=ENGINE_KEYS).start()
    seen: list[str] = []  # every byte a client or operator could see

    def record(response: httpx.Response) -> httpx.Response:
        seen.append(json.dumps(dict(response.headers)))
        seen.append(response.text)
        return response

    client = httpx.Client(base_url=engine.base_url, headers={"authorization": f"Bearer {APP}"}, timeout=30,
                          event_hooks={"response": [lambda r: r.read() and None or record(r)]})
    chat = {"model": "smart", "messages": [{"role": "user", "content": "hello"}]}
    try:
        client.post("/chat/completions", json=chat)
        client.post("/chat/completions", json={**chat, "stream": True})
        emu.fail("gpt-4o", Fault(status=500, message=f"boom for key {FAKE_KEYS['OPENAI_API_KEY']}"))
        client.post("/chat/completions", json=chat)  # fallback; the failed attempt's error is shown
        emu.fail("*", Fault(status=401, times=None,
                            message=f"Incorrect API key provided: {FAKE_KEYS['OPENAI_API_KEY']} / "
                                    f"{FAKE_KEYS['ANTHROPIC_API_KEY']}"))
        client.post("/chat/completions", json=chat)  # both fail, the upstream echoes our keys
        client.post("/chat/completions", json={**chat, "stream": True})
        emu.clear_faults()
        client.post("/chat/completions", json={"model": "smart", "messages": []})
        client.post("/chat/completions", json={"model": "unknown-model-x", "messages": chat["messages"]})
        client.post("/embeddings", json={"model": "embedder", "input": "hi"})
        client.get("/models")
        record(httpx.post(f"{engine.base_url}/chat/completions", json=chat))  # no key
        record(httpx.post(f"{engine.base_url}/chat/completions", json=chat, headers={"x-api-key": "sk-wrong"}))
        for path in ("/health", "/metrics", "/openapi.json"):
            record(httpx.get(f"{engine.url}{path}"))
        # A user pastes a provider key into a prompt: the answer is theirs, the trace must not keep it.
        pasted = httpx.post(f"{engine.base_url}/chat/completions", headers={"authorization": f"Bearer {APP}"},
                            json={"model": "gpt-4o", "messages": [
                                {"role": "user", "content": f"my key is {FAKE_KEYS['OPENAI_API_KEY']}"}]})
        assert pasted.status_code == 200
        time.sleep(1.5)  # the writer flushes every 0.5 s
        admin = {"authorization": f"Bearer {OPS}"}
        rows = httpx.get(f"{engine.url}/admin/traces", params={"last": 1000}, headers=admin).json()["data"]
        assert len(rows) >= 11
        for row in rows:
            full = httpx.get(f"{engine.url}/admin/traces/{row['trace_id']}", headers=admin)
            assert full.status_code == 200
            seen.append(full.text)
    finally:
        engine.stop()
    seen.append(engine.logs())
    check = subprocess.run([sys.executable, "-m", "opentracy.cli", "check-config", str(config)],
                           capture_output=True, text=True, timeout=120,
                           env={**os.environ, **FAKE_KEYS, **ENGINE_KEYS})
    assert check.returncode == 0, check.stderr
    seen += [check.stdout, check.stderr]

    leaks = [text for text in seen if MARKER in text]
    assert leaks == [], leaks[0][:2000]
