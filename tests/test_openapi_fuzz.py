"""schemathesis against the engine's own /openapi.json: no 5xx and no response that breaks the schema."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import engine_config
from tests.emulator import Emulator
from tests.support import EngineProcess

CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance,negative_data_rejection")


def test_schemathesis_finds_no_server_error_and_no_schema_violation(emulator_session: Emulator, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(engine_config(emulator_session))
    # Pass-through off: generated model names must never leave this machine for a real provider.
    engine = EngineProcess(config=config, data_dir=tmp_path / "data", env={"OPENTRACY_PASSTHROUGH": "false"}).start()
    try:
        run = subprocess.run(
            [str(Path(sys.executable).parent / "schemathesis"), "run", f"{engine.url}/openapi.json",
             "--checks", CHECKS, "--max-examples", "25", "--workers", "1", "--seed", "20261126"],
            capture_output=True, text=True, timeout=600)
        assert httpx.get(f"{engine.url}/health").status_code == 200  # still up after the fuzzing
    finally:
        engine.stop()
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert " passed" in run.stdout and "failed" not in run.stdout.split("SUMMARY")[-1].lower()

