"""Run the real engine (`opentracy serve`) as a subprocess for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

# Fake provider keys with unique markers: tests assert they never reach a client.
FAKE_KEYS = {
    "OPENAI_API_KEY": "sk-test-openai-MARKER-7f3a9c",
    "ANTHROPIC_API_KEY": "sk-ant-test-anthropic-MARKER-2b8e1d",
}


# The tool the gateway and provider tests ask models to call.
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class EngineProcess:
    """A running `opentracy serve`; ``url`` is the OpenAI ``base_url`` root (without /v1)."""

    config: Path
    data_dir: Path
    env: dict[str, str]
    args: list[str] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[str] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self, timeout: float = 90.0) -> "EngineProcess":
        self.log_path = self.data_dir / f"engine-{self.port}.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "w")
        env = {**os.environ, **FAKE_KEYS, "OPENTRACY_DATA_DIR": str(self.data_dir), **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "opentracy.cli", "serve", "--config", str(self.config),
             "--port", str(self.port), *self.args],
            stdout=log, stderr=subprocess.STDOUT, env=env, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"engine exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"engine did not become healthy in {timeout}s:\n{self.logs()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def logs(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""
