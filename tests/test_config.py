"""Config loading: litellm proxy configs start unchanged; bad configs fail at start, naming the key."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from opentracy.config import ConfigError, load_settings
from opentracy.routing.aliases import ModelResolver, UnknownModelError

TEAM_CONFIG = """
model_list:
  - model_name: gpt-4o
    litellm_params:
      model: openai/gpt-4o
      api_key: os.environ/TEAM_OPENAI_KEY
      rpm: 600
    model_info:
      input_cost_per_token: 0.0000025
  - model_name: claude
    litellm_params:
      model: anthropic/claude-sonnet-4-6
      api_key: os.environ/TEAM_ANTHROPIC_KEY
router_settings:
  routing_strategy: simple-shuffle
  num_retries: 2
  timeout: 30
  fallbacks: [{"gpt-4o": ["claude"]}, {"claude": ["gpt-4o"]}]
  model_group_alias: {"gpt-4": "gpt-4o"}
litellm_settings:
  drop_params: true
  success_callback: ["langfuse"]
  cache: true
general_settings:
  master_key: sk-team-master-123456
  database_url: postgresql://x
environment_variables:
  TEAM_ANTHROPIC_KEY: sk-ant-from-file-123456
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_team_litellm_config_loads_unchanged(tmp_path: Path) -> None:
    path = write(tmp_path, TEAM_CONFIG)
    settings = load_settings(path, {"TEAM_OPENAI_KEY": "sk-openai-from-env-123456"})
    assert settings.num_retries == 2 and settings.timeout == 30 and settings.drop_params
    assert settings.master_key == "sk-team-master-123456"
    assert set(settings.ignored) == {"router_settings.routing_strategy", "litellm_settings.success_callback",
                                     "litellm_settings.cache", "general_settings.database_url"}
    resolver = ModelResolver(settings)
    route = resolver.resolve("gpt-4")  # model_group_alias
    assert [t.model for t in route.targets] == ["openai/gpt-4o", "anthropic/claude-sonnet-4-6"]
    assert route.targets[0].params["api_key"] == "sk-openai-from-env-123456"
    assert route.targets[0].params["input_cost_per_token"] == 0.0000025  # model_info price travels
    assert "rpm" not in route.targets[0].params  # router-only keys are not sent to the provider
    # environment_variables fill in keys the environment lacks
    assert resolver.resolve("claude").targets[0].params["api_key"] == "sk-ant-from-file-123456"
    assert {"sk-openai-from-env-123456", "sk-team-master-123456"} <= settings.secrets


def test_resolution_order_alias_then_model_list_then_passthrough(tmp_path: Path) -> None:
    path = write(tmp_path, """
        model_list:
          - model_name: smart
            litellm_params: {model: openai/from-model-list, api_key: x}
          - model_name: local
            litellm_params: {model: openai/local-model, api_key: x}
        aliases:
          smart:
            model: local
            fallbacks: [anthropic/claude-sonnet-4-6, {model: openai/student, api_base: "http://student:8000/v1"}]
    """)
    resolver = ModelResolver(load_settings(path, {}))
    route = resolver.resolve("smart")
    assert route.alias == "smart"
    assert [t.model for t in route.targets] == ["openai/local-model", "anthropic/claude-sonnet-4-6", "openai/student"]
    assert route.targets[2].params["api_base"] == "http://student:8000/v1"
    assert resolver.resolve("gpt-4o").targets[0].provider == "openai"
    with pytest.raises(UnknownModelError):
        resolver.resolve("no-such-model")


@pytest.mark.parametrize("text, fragment", [
    ("model_list: [\n  - model_name: a\n", "malformed YAML at line"),
    ("aliases:\n  smart:\n    model: definitely-not-a-model\n", "aliases.smart"),
    ("model_list:\n  - model_name: a\n    litellm_params:\n      model: openai/a\n      api_key: os.environ/MISSING_KEY_XYZ\n",
     "model_list[0].litellm_params.api_key: environment variable MISSING_KEY_XYZ is not set"),
    ("aliases:\n  a: {model: b}\n  b: {model: a}\n", "fallback cycle: a -> b -> a"),
    ("aliases:\n  a: {model: gpt-4o, fallbacks: gpt-4}\n", "aliases.a.fallbacks"),
    ("router_settings:\n  fallbacks: [{nope: [gpt-4o]}]\n", "router_settings.fallbacks"),
    ("model_list:\n  - model_name: a\n", "model_list[0].litellm_params.model"),
])
def test_bad_config_fails_naming_the_key(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text), {})
    assert fragment in str(info.value)


def test_env_beats_file_for_engine_options(tmp_path: Path) -> None:
    path = write(tmp_path, "opentracy:\n  trace_redact: false\n  data_dir: /tmp/from-file\n")
    settings = load_settings(path, {"OPENTRACY_TRACE_REDACT": "true", "OPENTRACY_API_KEYS": "ci:sk-ci-1234567,sk-bare-7654321"})
    assert settings.engine.trace_redact is True
    assert str(settings.engine.data_dir) == "/tmp/from-file"
    assert settings.engine.clickhouse_url == "chdb:///tmp/from-file/chdb"
    assert [(k.name, k.admin) for k in settings.engine.api_keys] == [("ci", False), ("key-2", False)]
    assert {"sk-ci-1234567", "sk-bare-7654321"} <= settings.secrets


def test_trace_flush_interval_depends_on_the_store_unless_set(tmp_path: Path) -> None:
    path = write(tmp_path, "opentracy:\n  data_dir: /tmp/flush\n")
    assert load_settings(path, {}).engine.trace_flush_interval == 120  # embedded: reads flush first
    server = {"OPENTRACY_CLICKHOUSE_URL": "http://ch:8123/db"}
    assert load_settings(path, server).engine.trace_flush_interval == 5  # others read the server directly
    assert load_settings(path, {**server, "OPENTRACY_TRACE_FLUSH_SECONDS": "12"}).engine.trace_flush_interval == 12
    file_set = write(tmp_path, "opentracy:\n  trace_flush_seconds: 2.5\n")
    assert load_settings(file_set, {}).engine.trace_flush_interval == 2.5
    with pytest.raises(ConfigError, match="OPENTRACY_TRACE_FLUSH_SECONDS"):
        load_settings(path, {"OPENTRACY_TRACE_FLUSH_SECONDS": "0"})


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "opentracy.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def test_check_config_masks_secrets_and_exits_nonzero_on_errors(tmp_path: Path) -> None:
    import os

    path = write(tmp_path, TEAM_CONFIG)
    env = {**os.environ, "TEAM_OPENAI_KEY": "sk-openai-from-env-123456"}
    ok = run_cli("check-config", str(path), env=env)
    assert ok.returncode == 0, ok.stderr
    assert "model gpt-4:" in ok.stdout and "fallback anthropic/claude-sonnet-4-6" in ok.stdout
    for secret in ("sk-openai-from-env-123456", "sk-ant-from-file-123456", "sk-team-master-123456"):
        assert secret not in ok.stdout + ok.stderr
    bad = run_cli("check-config", str(write(tmp_path, "aliases:\n  a: {model: b}\n  b: {model: a}\n")))
    assert bad.returncode == 2 and "fallback cycle" in bad.stderr and "Traceback" not in bad.stderr
