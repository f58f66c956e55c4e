"""The ``opentracy`` command: serve | check-config (and, as they land, traces | stats | export | reload)."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import opentracy  # noqa: F401  (sets LITELLM_LOCAL_MODEL_COST_MAP before litellm loads)
from opentracy.config import ConfigError, Settings, looks_like_secret_name, load_settings

DEFAULT_CONFIG = "litellm_config.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        print(f"opentracy: config error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opentracy", description=__doc__)
    parser.add_argument("--version", action="version", version=f"opentracy {opentracy.__version__}")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help=f"litellm proxy config (default: ./{DEFAULT_CONFIG} if present)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.set_defaults(handler=_serve)

    check = sub.add_parser("check-config", help="validate a config and print what it serves")
    check.add_argument("path", nargs="?", default=DEFAULT_CONFIG)
    check.set_defaults(handler=_check_config)
    return parser


def _config_path(given: str | None) -> Path | None:
    if given:
        return Path(given)
    default = Path(DEFAULT_CONFIG)
    return default if default.exists() else None


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from opentracy.gateway.app import create_app

    path = _config_path(args.config)
    settings = load_settings(path)
    app = create_app(settings)
    _print_banner(settings, args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    return 0


def _print_banner(settings: Settings, host: str, port: int) -> None:
    shown_host = f"[{host}]" if _is_ipv6(host) else host
    lines = [f"OpenTracy {opentracy.__version__} serving on http://{shown_host}:{port}/v1"]
    lines.append(f"  config:  {settings.path or '(none: litellm model strings pass through)'}")
    for name, spec in settings.aliases.items():
        chain = " -> ".join(str(t["model"]) for t in spec.targets)
        lines.append(f"  alias:   {name} = {chain}")
    for name in settings.model_names:
        models = ", ".join(d.model for d in settings.deployments_for(name))
        lines.append(f"  model:   {name} ({models})")
    lines.append("  also:    any litellm model string, e.g. openai/gpt-4o, with provider keys from the environment")
    lines.append(f"  traces:  {settings.engine.clickhouse_url}")
    lines.append(f"  auth:    {'engine keys required' if settings.master_key or settings.engine.api_keys else 'off'}")
    if settings.ignored:
        lines.append(f"  ignored config keys (accepted, not acted on): {', '.join(settings.ignored)}")
    print("\n".join(lines), flush=True)


def _check_config(args: argparse.Namespace) -> int:
    from opentracy.routing.aliases import ModelResolver

    settings = load_settings(args.path)
    resolver = ModelResolver(settings)
    print(f"{args.path}: OK")
    for name in resolver.served_names():
        route = resolver.resolve(name)
        kind = "alias" if route.alias else "model"
        print(f"{kind} {name}:")
        for i, target in enumerate(route.targets):
            role = "primary " if i == 0 else "fallback"
            print(f"  {role} {target.model} [{target.provider}] {_masked(target.params)}")
    if settings.ignored:
        print(f"ignored (accepted, not acted on): {', '.join(settings.ignored)}")
    return 0


def _masked(params: Mapping[str, Any]) -> str:
    shown = {k: ("***" if looks_like_secret_name(k) else v) for k, v in params.items() if k != "model"}
    return " ".join(f"{k}={v}" for k, v in shown.items())


def _is_ipv6(host: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address)
    except ValueError:
        return False


if __name__ == "__main__":
    sys.exit(main())
