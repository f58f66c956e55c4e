"""Engine keys: plain, hashed, admin; and a server that will not expose itself without one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from opentracy.config import ConfigError, load_settings
from opentracy.gateway.auth import KeyRing
from opentracy.gateway.errors import APIError
from opentracy.keys import hashed_form
from tests.emulator import Emulator
from tests.support import EngineProcess


def ring(tmp_path: Path, config: str, env: dict[str, str]) -> KeyRing:
    path = tmp_path / "c.yaml"
    path.write_text(config)
    return KeyRing.from_settings(load_settings(path, env))


def test_plain_hashed_and_admin_keys(tmp_path: Path) -> None:
    keys = ring(tmp_path, f"general_settings:\n  master_key: {hashed_form('sk-master-secret')}\n",
                {"OPENTRACY_API_KEYS": f"app:sk-app-1,ops:{hashed_form('sk-ops-2')}",
                 "OPENTRACY_ADMIN_KEYS": "root:sk-root-3"})
    assert keys.authenticate("Bearer sk-app-1", None) == "app"
    assert keys.authenticate(None, "sk-ops-2") == "ops"  # configured only as its hash
    assert keys.authenticate("Bearer sk-master-secret", None, admin=True) == "master"
    assert keys.authenticate(None, "sk-root-3", admin=True) == "root"
    with pytest.raises(APIError) as forbidden:
        keys.authenticate("Bearer sk-app-1", None, admin=True)
    assert forbidden.value.status == 403 and forbidden.value.code == "admin_required"
    for bad in ("Bearer sk-app-", "Bearer " + hashed_form("sk-app-1"), "Basic sk-app-1"):
        with pytest.raises(APIError) as info:
            keys.authenticate(bad, None)
        assert info.value.status == 401


def test_open_when_no_keys_and_bad_hash_is_a_config_error(tmp_path: Path) -> None:
    assert ring(tmp_path, "", {}).authenticate(None, None, admin=True) is None
    with pytest.raises(ConfigError, match="64 hex digits"):
        ring(tmp_path, "", {"OPENTRACY_API_KEYS": "app:sha256:abc"})


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "opentracy.cli", "serve", "--config", os.devnull, *args],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=60)


def test_refuses_public_bind_without_a_key(tmp_path: Path) -> None:
    refused = serve("--host", "0.0.0.0", "--port", "1", env={"OPENTRACY_DATA_DIR": str(tmp_path)})
    assert refused.returncode == 2 and "OPENTRACY_API_KEYS" in refused.stderr and "--insecure-no-auth" in refused.stderr


def test_insecure_flag_serves_with_a_loud_warning(emulator_session: Emulator, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("")
    engine = EngineProcess(config=config, data_dir=tmp_path / "d", env={},
                           args=["--host", "0.0.0.0", "--insecure-no-auth"]).start()
    try:
        assert httpx.get(f"{engine.url}/health").status_code == 200
    finally:
        engine.stop()
    assert "WARNING" in engine.logs() and "NO authentication" in engine.logs()


def test_admin_routes_need_an_admin_key(emulator_session: Emulator, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("")
    engine = EngineProcess(config=config, data_dir=tmp_path / "d",
                           env={"OPENTRACY_API_KEYS": "app:sk-app-xyz", "OPENTRACY_ADMIN_KEYS": "ops:sk-ops-xyz"}).start()
    try:
        url = f"{engine.url}/admin/traces"
        assert httpx.get(url).status_code == 401
        assert httpx.get(url, headers={"authorization": "Bearer sk-app-xyz"}).status_code == 403
        assert httpx.get(url, headers={"authorization": "Bearer sk-ops-xyz"}).status_code == 200
        metrics = httpx.get(f"{engine.url}/metrics").text
        assert "opentracy_auth_failures_total 2" in metrics
    finally:
        engine.stop()


def test_hash_key_command() -> None:
    out = subprocess.run([sys.executable, "-m", "opentracy.cli", "hash-key"], input="sk-some-key\n",
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == hashed_form("sk-some-key")
