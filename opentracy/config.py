"""Load a litellm proxy ``config.yaml`` (plus our ``aliases:`` and ``opentracy:`` sections) into
immutable :class:`Settings`.

A config a team already runs under ``litellm --config`` must start this engine unchanged, so every
section litellm's proxy knows is accepted; the keys we do not act on are collected in
``Settings.ignored`` and printed once at start-up instead of being silently dropped. Everything that
can be wrong with a config is found here, at start, with a message that names the key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import yaml

from opentracy.keys import HASHED_PREFIX, EngineKey, KeyFormatError, parse_key, parse_key_list

ENV_REFERENCE_PREFIX = "os.environ/"

# Keys of each litellm proxy section that the engine acts on; everything else is listed as ignored.
HONOURED_ROUTER_SETTINGS = {"num_retries", "timeout", "fallbacks", "model_group_alias"}
HONOURED_LITELLM_SETTINGS = {"drop_params", "request_timeout", "num_retries"}
HONOURED_GENERAL_SETTINGS = {"master_key"}
KNOWN_TOP_LEVEL = {
    "model_list", "router_settings", "litellm_settings", "general_settings",
    "environment_variables", "aliases", "opentracy",
}
# Deployment fields that steer litellm's Router rather than the provider call itself.
ROUTER_ONLY_PARAMS = {"rpm", "tpm", "weight", "order", "max_parallel_requests", "region_name_filter"}


class ConfigError(ValueError):
    """A config problem, phrased for the operator: which key, what is wrong, what to do."""


@dataclass(frozen=True, slots=True)
class Deployment:
    """One ``model_list`` entry: a public name and the litellm params that call it."""

    model_name: str
    litellm_params: Mapping[str, Any]
    model_info: Mapping[str, Any]

    @property
    def model(self) -> str:
        return str(self.litellm_params["model"])


@dataclass(frozen=True, slots=True)
class AliasSpec:
    """An ``aliases:`` entry as written.

    ``split`` holds the entries traffic is divided between (one entry for a plain ``model:``), with
    their ``weights``; the entry not picked for a request follow as fallbacks, then ``fallbacks``.
    ``shadow`` targets receive a copy of each request after the answer, never affecting it. A target
    is a ``model_list`` name, another alias, or a litellm model string, optionally with litellm params
    (``{model: openai/student, api_base: http://student:8000/v1}``).
    """

    name: str
    split: tuple[Mapping[str, Any], ...]
    weights: tuple[float, ...]
    fallbacks: tuple[Mapping[str, Any], ...] = ()
    shadow: tuple[Mapping[str, Any], ...] = ()

    @property
    def targets(self) -> tuple[Mapping[str, Any], ...]:
        """Every target in declared order (split, then fallbacks)."""
        return (*self.split, *self.fallbacks)


@dataclass(frozen=True, slots=True)
class EngineOptions:
    """The ``opentracy:`` section and ``OPENTRACY_*`` environment; env beats file."""

    data_dir: Path
    clickhouse_url: str
    trace_content: bool = True
    trace_redact: bool = False
    trace_ttl_days: int | None = None
    max_body_bytes: int = 10 * 1024 * 1024
    tracing: bool = True
    spool_max_bytes: int = 1 << 30
    api_keys: tuple[EngineKey, ...] = ()
    max_messages: int = 2048
    max_concurrent_upstream: int = 256
    upstream_queue_seconds: float = 10.0  # how long a request may wait for an upstream slot
    stream_idle_timeout: float = 60.0
    connect_timeout: float = 10.0
    passthrough: bool = True  # serve litellm model strings that the config does not name
    max_concurrent_shadows: int = 16
    direct: bool = True  # OpenAI-format upstreams without litellm's per-call work (routing/direct.py)
    trace_flush_seconds: float | None = None  # the trace writer's batch interval; None: see trace_flush_interval

    @property
    def trace_flush_interval(self) -> float:
        """Seconds the trace writer batches before one insert, unless ``batch_size`` rows come first.

        Embedded store: 120 s. A chDB insert costs the engine's CPU per insert more than per row
        (measured: 39 us a row in 500-row inserts, 18-20 in 2000-row ones, ~7 in 10,000-row ones,
        writer and chDB threads), nobody reads the store but through the engine (whose reads flush
        first), and the writer's journal keeps the open batch through a crash; from ~85 requests/s
        on, the 10,000-row batch fills first anyway. A ClickHouse server: 5 s, so that dashboards
        reading it directly are at most that far behind.
        """
        if self.trace_flush_seconds is not None:
            return self.trace_flush_seconds
        from opentracy.store import parse_store_url  # asked when the writer starts, after the store opened

        return 120.0 if parse_store_url(self.clickhouse_url).embedded else 5.0


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything the engine needs, validated. Built once; replaced whole on reload."""

    path: Path | None
    deployments: tuple[Deployment, ...]
    aliases: Mapping[str, AliasSpec]
    router_fallbacks: Mapping[str, tuple[str, ...]]
    model_group_alias: Mapping[str, str]
    num_retries: int
    timeout: float | None
    drop_params: bool
    master_key: str | None
    engine: EngineOptions
    ignored: tuple[str, ...] = ()
    secrets: frozenset[str] = field(default_factory=frozenset)

    @property
    def model_names(self) -> tuple[str, ...]:
        """Names from ``model_list`` in first-seen order (several deployments may share one)."""
        return tuple(dict.fromkeys(d.model_name for d in self.deployments))

    @property
    def auth_required(self) -> bool:
        """Whether any engine key is configured (otherwise the engine is open: loopback use only)."""
        return bool(self.master_key or self.engine.api_keys)

    def deployments_for(self, model_name: str) -> tuple[Deployment, ...]:
        return tuple(d for d in self.deployments if d.model_name == model_name)


def load_settings(path: str | os.PathLike[str] | None, environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate a config file; ``path=None`` gives an empty config (pass-through only)."""
    environ = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    config_path = Path(path).resolve() if path is not None else None
    if config_path is not None:
        raw = _read_yaml(config_path)
    return parse_settings(raw, config_path, environ)


def load_engine_options(path: str | os.PathLike[str] | None,
                        environ: Mapping[str, str] | None = None) -> EngineOptions:
    """Only the ``opentracy:`` section and ``OPENTRACY_*``: what tools that read traces need, without
    validating models or requiring provider keys."""
    environ = os.environ if environ is None else environ
    config_path = Path(path).resolve() if path is not None else None
    raw = _read_yaml(config_path) if config_path is not None else {}
    return _parse_engine_options(_mapping(raw, "opentracy"), config_path, environ)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; pass --config PATH or create it") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}; fix the file and start again") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping (model_list:, aliases:, ...)")
    return data


def parse_settings(raw: Mapping[str, Any], path: Path | None, environ: Mapping[str, str]) -> Settings:
    """Validate a parsed config mapping. Separate from file reading so reload and tests share it."""
    ignored: list[str] = [f"{key} (top-level section)" for key in raw if key not in KNOWN_TOP_LEVEL]
    env = dict(environ)
    for name, value in _mapping(raw, "environment_variables").items():
        # The config's environment_variables fill gaps; a variable already exported wins.
        env.setdefault(str(name), str(value))
        os.environ.setdefault(str(name), str(value))

    secrets: set[str] = set()
    deployments = tuple(_parse_deployment(i, item, env, secrets) for i, item in enumerate(_list(raw, "model_list")))

    router = _mapping(raw, "router_settings")
    litellm_settings = _mapping(raw, "litellm_settings")
    general = _mapping(raw, "general_settings")
    ignored += [f"router_settings.{k}" for k in router if k not in HONOURED_ROUTER_SETTINGS]
    ignored += [f"litellm_settings.{k}" for k in litellm_settings if k not in HONOURED_LITELLM_SETTINGS]
    ignored += [f"general_settings.{k}" for k in general if k not in HONOURED_GENERAL_SETTINGS]

    master_key = general.get("master_key")
    if master_key is not None:
        master_key = str(_resolve_env(master_key, "general_settings.master_key", env))
        try:
            parse_key("master", master_key, admin=True, where="general_settings.master_key")
        except KeyFormatError as exc:
            raise ConfigError(str(exc)) from None
        if not master_key.startswith(HASHED_PREFIX):
            secrets.add(master_key)

    group_alias = _parse_group_alias(router.get("model_group_alias") or {})
    router_fallbacks = _parse_router_fallbacks(router.get("fallbacks") or [])
    aliases = {
        str(name): _parse_alias(str(name), spec) for name, spec in _mapping(raw, "aliases").items()
    }
    engine = _parse_engine_options(_mapping(raw, "opentracy"), path, env)
    engine_section = _mapping(raw, "opentracy")
    for env_name, key in (("OPENTRACY_API_KEYS", "api_keys"), ("OPENTRACY_ADMIN_KEYS", "admin_keys")):
        secrets.update(_plaintext_keys(env.get(env_name, engine_section.get(key))))
    secrets.update(value for name, value in env.items() if looks_like_secret_name(name) and len(value) >= 8)

    settings = Settings(
        path=path,
        deployments=deployments,
        aliases=MappingProxyType(aliases),
        router_fallbacks=MappingProxyType(router_fallbacks),
        model_group_alias=MappingProxyType(group_alias),
        num_retries=_non_negative_int(router.get("num_retries", litellm_settings.get("num_retries", 0)),
                                      "router_settings.num_retries"),
        timeout=_optional_float(router.get("timeout", litellm_settings.get("request_timeout")),
                                "router_settings.timeout"),
        drop_params=bool(litellm_settings.get("drop_params", False)),
        master_key=master_key,
        engine=engine,
        ignored=tuple(ignored),
        secrets=frozenset(s for s in secrets if s),
    )
    # Resolution problems (unknown targets, cycles) are config errors too: find them now.
    from opentracy.routing.aliases import ModelResolver

    ModelResolver(settings).validate()
    return settings


def _parse_deployment(index: int, item: Any, env: Mapping[str, str], secrets: set[str]) -> Deployment:
    where = f"model_list[{index}]"
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: each entry must be a mapping with model_name and litellm_params")
    name = item.get("model_name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.model_name: missing; give the name clients send as `model`")
    params = item.get("litellm_params")
    if not isinstance(params, dict) or not isinstance(params.get("model"), str):
        raise ConfigError(f"{where}.litellm_params.model: missing; e.g. `model: openai/gpt-4o`")
    resolved = {}
    for key, value in params.items():
        resolved[key] = _resolve_env(value, f"{where}.litellm_params.{key}", env)
        if looks_like_secret_name(key) and isinstance(resolved[key], str):
            secrets.add(resolved[key])
    info = item.get("model_info") or {}
    if not isinstance(info, dict):
        raise ConfigError(f"{where}.model_info: must be a mapping (e.g. input_cost_per_token: 0.000001)")
    return Deployment(name, MappingProxyType(resolved), MappingProxyType(dict(info)))


def _parse_alias(name: str, spec: Any) -> AliasSpec:
    where = f"aliases.{name}"
    if isinstance(spec, str):
        spec = {"model": spec}
    if not isinstance(spec, dict):
        raise ConfigError(f"{where}: must be a model name or a mapping with `model:` (or `targets:`), "
                          f"optional `fallbacks:` and `shadow:`")
    unknown = set(spec) - {"model", "targets", "fallbacks", "shadow"}
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; an alias takes model or targets, "
                          f"fallbacks and shadow")
    if ("model" in spec) == ("targets" in spec):
        raise ConfigError(f"{where}: give exactly one of `model:` (one target) or `targets:` (a weighted split)")
    if "model" in spec:
        split, weights = (_parse_target(spec["model"], f"{where}.model"),), (1.0,)
    else:
        entries = _list(spec, "targets", where)
        if not entries:
            raise ConfigError(f"{where}.targets: must list at least one target")
        split = tuple(_parse_target({k: v for k, v in e.items() if k != "weight"} if isinstance(e, dict) else e,
                                    f"{where}.targets[{i}]") for i, e in enumerate(entries))
        weights = tuple(_weight(e, f"{where}.targets[{i}].weight") for i, e in enumerate(entries))
        if not sum(weights) > 0:
            raise ConfigError(f"{where}.targets: the weights add up to 0; give at least one a positive weight")
    fallbacks = tuple(_parse_target(t, f"{where}.fallbacks[{i}]")
                      for i, t in enumerate(_list(spec, "fallbacks", where)))
    shadow = tuple(_parse_target(t, f"{where}.shadow[{i}]") for i, t in enumerate(_list(spec, "shadow", where)))
    return AliasSpec(name, split, weights, fallbacks, shadow)


def _weight(entry: Any, where: str) -> float:
    value = entry.get("weight", 1) if isinstance(entry, dict) else 1
    try:
        weight = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if weight < 0:
        raise ConfigError(f"{where}: must not be negative")
    return weight


def _parse_target(target: Any, where: str) -> Mapping[str, Any]:
    if isinstance(target, str) and target:
        return MappingProxyType({"model": target})
    if isinstance(target, dict) and isinstance(target.get("model"), str):
        return MappingProxyType(dict(target))
    raise ConfigError(f"{where}: a target is a model name or a mapping with `model:` (plus litellm params)")


def _parse_group_alias(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise ConfigError("router_settings.model_group_alias: must map alias names to model_list names")
    result = {}
    for alias, target in raw.items():
        # litellm also accepts {model: name, hidden: true}.
        result[str(alias)] = str(target["model"] if isinstance(target, dict) else target)
    return result


def _parse_router_fallbacks(raw: Any) -> dict[str, tuple[str, ...]]:
    if not isinstance(raw, list):
        raise ConfigError("router_settings.fallbacks: must be a list like [{gpt-4o: [claude]}]")
    result: dict[str, tuple[str, ...]] = {}
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise ConfigError(f"router_settings.fallbacks[{i}]: must be a mapping {{model: [fallbacks]}}")
        for group, fallbacks in entry.items():
            if isinstance(fallbacks, str):
                fallbacks = [fallbacks]
            result[str(group)] = tuple(str(f) for f in fallbacks or [])
    return result


def _parse_engine_options(section: Mapping[str, Any], path: Path | None, env: Mapping[str, str]) -> EngineOptions:
    def pick(env_name: str, key: str, default: Any) -> Any:
        return env[env_name] if env_name in env else section.get(key, default)

    data_dir = Path(pick("OPENTRACY_DATA_DIR", "data_dir", ".opentracy")).expanduser()
    if not data_dir.is_absolute():
        data_dir = (Path.cwd() / data_dir).resolve()
    clickhouse_url = str(pick("OPENTRACY_CLICKHOUSE_URL", "clickhouse_url", f"chdb://{data_dir / 'chdb'}"))
    ttl = pick("OPENTRACY_TRACE_TTL_DAYS", "trace_ttl_days", None)
    flush = pick("OPENTRACY_TRACE_FLUSH_SECONDS", "trace_flush_seconds", None)
    keys = [*_keys(pick("OPENTRACY_API_KEYS", "api_keys", ""), admin=False, where="OPENTRACY_API_KEYS"),
            *_keys(pick("OPENTRACY_ADMIN_KEYS", "admin_keys", ""), admin=True, where="OPENTRACY_ADMIN_KEYS")]
    return EngineOptions(
        data_dir=data_dir,
        clickhouse_url=clickhouse_url,
        trace_content=_bool(pick("OPENTRACY_TRACE_CONTENT", "trace_content", True), "OPENTRACY_TRACE_CONTENT"),
        trace_redact=_bool(pick("OPENTRACY_TRACE_REDACT", "trace_redact", False), "OPENTRACY_TRACE_REDACT"),
        trace_ttl_days=None if ttl in (None, "", 0, "0") else _non_negative_int(ttl, "OPENTRACY_TRACE_TTL_DAYS"),
        max_body_bytes=_non_negative_int(pick("OPENTRACY_MAX_BODY_BYTES", "max_body_bytes", 10 * 1024 * 1024),
                                         "OPENTRACY_MAX_BODY_BYTES"),
        tracing=_bool(pick("OPENTRACY_TRACING", "tracing", True), "OPENTRACY_TRACING"),
        spool_max_bytes=_non_negative_int(pick("OPENTRACY_SPOOL_MAX_BYTES", "spool_max_bytes", 1 << 30),
                                          "OPENTRACY_SPOOL_MAX_BYTES"),
        api_keys=tuple(keys),
        max_messages=_non_negative_int(pick("OPENTRACY_MAX_MESSAGES", "max_messages", 2048), "OPENTRACY_MAX_MESSAGES"),
        max_concurrent_upstream=_non_negative_int(
            pick("OPENTRACY_MAX_CONCURRENT_UPSTREAM", "max_concurrent_upstream", 256),
            "OPENTRACY_MAX_CONCURRENT_UPSTREAM"),
        upstream_queue_seconds=_positive_float(pick("OPENTRACY_UPSTREAM_QUEUE_SECONDS", "upstream_queue_seconds", 10),
                                               "OPENTRACY_UPSTREAM_QUEUE_SECONDS"),
        stream_idle_timeout=_positive_float(pick("OPENTRACY_STREAM_IDLE_TIMEOUT", "stream_idle_timeout", 60),
                                            "OPENTRACY_STREAM_IDLE_TIMEOUT"),
        connect_timeout=_positive_float(pick("OPENTRACY_CONNECT_TIMEOUT", "connect_timeout", 10),
                                        "OPENTRACY_CONNECT_TIMEOUT"),
        passthrough=_bool(pick("OPENTRACY_PASSTHROUGH", "passthrough", True), "OPENTRACY_PASSTHROUGH"),
        max_concurrent_shadows=_non_negative_int(pick("OPENTRACY_MAX_CONCURRENT_SHADOWS", "max_concurrent_shadows", 16),
                                                 "OPENTRACY_MAX_CONCURRENT_SHADOWS"),
        direct=_bool(pick("OPENTRACY_DIRECT", "direct", True), "OPENTRACY_DIRECT"),
        trace_flush_seconds=None if flush in (None, "") else _positive_float(flush, "OPENTRACY_TRACE_FLUSH_SECONDS"),
    )


def _keys(raw: Any, *, admin: bool, where: str) -> list[EngineKey]:
    try:
        return [key for key, _ in parse_key_list(raw, admin=admin, where=where)]
    except KeyFormatError as exc:
        raise ConfigError(str(exc)) from None


def _plaintext_keys(raw: Any) -> list[str]:
    try:
        return [plain for _, plain in parse_key_list(raw, admin=False, where="keys") if plain]
    except KeyFormatError:
        return []


def _resolve_env(value: Any, where: str, env: Mapping[str, str]) -> Any:
    if isinstance(value, str) and value.startswith(ENV_REFERENCE_PREFIX):
        name = value[len(ENV_REFERENCE_PREFIX):]
        if name not in env:
            raise ConfigError(f"{where}: environment variable {name} is not set; export {name}=... "
                              f"(or add it under environment_variables:) and start again")
        return env[name]
    return value


def looks_like_secret_name(name: str) -> bool:
    """``api_key``, ``AWS_SECRET_ACCESS_KEY``, ``aws_session_token`` — not ``input_cost_per_token``."""
    words = set(name.lower().replace("-", "_").split("_"))
    return bool(words & {"key", "secret", "token", "password", "credentials", "pat"}) and "per" not in words


def _mapping(raw: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = raw.get(key) or {}
    if not isinstance(value, dict):
        raise ConfigError(f"{key}: must be a mapping")
    return value


def _list(raw: Mapping[str, Any], key: str, where: str = "") -> list[Any]:
    value = raw.get(key) or []
    if not isinstance(value, list):
        raise ConfigError(f"{where + '.' if where else ''}{key}: must be a list")
    return value


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{where}: expected true or false, got {value!r}")


def _non_negative_int(value: Any, where: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a whole number, got {value!r}") from None
    if number < 0:
        raise ConfigError(f"{where}: must not be negative")
    return number


def _positive_float(value: Any, where: str) -> float:
    number = _optional_float(value, where)
    if number is None or number <= 0:
        raise ConfigError(f"{where}: must be a positive number of seconds")
    return number


def _optional_float(value: Any, where: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected seconds as a number, got {value!r}") from None
