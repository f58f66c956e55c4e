"""Shared fixtures: one loopback provider emulator and one running engine per test session."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path
from typing import Iterator

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import pytest

from opentracy.store import TraceStore
from tests.emulator import Emulator
from tests.support import EngineProcess


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one chDB data directory of this test process (shared by every test file)."""
    return tmp_path_factory.getbasetemp() / "chdb"


def database_store_fixture(database: str):  # type: ignore[no-untyped-def]
    """A module-scoped ``shared_store`` fixture: the session's chDB path, in a database of its own."""

    @pytest.fixture(scope="module")
    def shared_store(chdb_path: Path):  # type: ignore[no-untyped-def]
        store = TraceStore(f"chdb://{chdb_path}?database={database}")
        yield store
        store.close()

    return shared_store


def empty_store_fixture():  # type: ignore[no-untyped-def]
    """A ``store`` fixture over the module's ``shared_store``, emptied before each test."""

    @pytest.fixture()
    def store(shared_store):  # type: ignore[no-untyped-def]
        shared_store._connected().command("TRUNCATE TABLE opentracy_traces")
        return shared_store

    return store


@pytest.fixture(scope="session")
def emulator_session() -> Iterator[Emulator]:
    with Emulator() as emu:
        yield emu


@pytest.fixture
def emu(emulator_session: Emulator) -> Iterator[Emulator]:
    """The session's emulator, with faults, requests and violations forgotten before each test."""
    emulator_session.reset()
    emulator_session.delay_ms = 0
    yield emulator_session
    emulator_session.reset()


def engine_config(emu: Emulator) -> str:
    """A config in the litellm proxy format pointing at the emulator, as a team would write it."""
    return textwrap.dedent(f"""
        model_list:
          - model_name: gpt-4o
            litellm_params:
              model: openai/gpt-4o
              api_base: {emu.base("openai")}
              api_key: os.environ/OPENAI_API_KEY
          - model_name: gpt-4o-mini
            litellm_params:
              model: openai/gpt-4o-mini
              api_base: {emu.base("openai")}
              api_key: os.environ/OPENAI_API_KEY
          - model_name: claude
            litellm_params:
              model: anthropic/claude-sonnet-4-6
              api_base: {emu.base("anthropic")}
              api_key: os.environ/ANTHROPIC_API_KEY
          - model_name: embedder
            litellm_params:
              model: openai/text-embedding-3-small
              api_base: {emu.base("openai")}
              api_key: os.environ/OPENAI_API_KEY
          - model_name: demo
            litellm_params:
              model: openai/demo
              api_key: no-key-needed
              mock_response: "Hello from the demo model"
            model_info:
              input_cost_per_token: 0.000001
              output_cost_per_token: 0.000002
        aliases:
          smart:
            model: gpt-4o
            fallbacks: [claude]
          claude-first:
            model: claude
            fallbacks: [gpt-4o-mini]
          student:
            model: {{model: openai/my-student, api_base: "{emu.base("openai")}", api_key: student-key}}
          nothing-listens:
            model: {{model: openai/gpt-4o, api_base: "http://127.0.0.1:9/v1", api_key: unused-key}}
          nothing-listens-then-claude:
            model: nothing-listens
            fallbacks: [claude]
        router_settings:
          timeout: 3
          routing_strategy: simple-shuffle
        litellm_settings:
          set_verbose: false
    """)


@pytest.fixture(scope="session")
def engine(emulator_session: Emulator, tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    root = tmp_path_factory.mktemp("engine")
    config = root / "config.yaml"
    config.write_text(engine_config(emulator_session))
    process = EngineProcess(config=config, data_dir=root / "data", env={}).start()
    yield process
    process.stop()
