"""The ``opentracy`` command: serve the gateway, read its traces, and manage it."""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import opentracy  # noqa: F401  (sets LITELLM_LOCAL_MODEL_COST_MAP before litellm loads)
from opentracy import reports
from opentracy.config import ConfigError, Settings, load_engine_options, load_settings, looks_like_secret_name

if TYPE_CHECKING:
    from opentracy.tracing.gateway import GatewayTracer
    from opentracy.tracing.reader import TraceSource

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
    except BrokenPipeError:  # `opentracy traces --json | head`: the reader left, nothing is wrong
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opentracy", description=__doc__)
    parser.add_argument("--version", action="version", version=f"opentracy {opentracy.__version__}")
    sub = parser.add_subparsers(dest="command")

    serve = sub.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", help=f"litellm proxy config (default: ./{DEFAULT_CONFIG} if present)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1,
                       help="worker processes (more than one needs a ClickHouse server store)")
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    serve.add_argument("--insecure-no-auth", action="store_true",
                       help="allow a non-loopback address with no engine key (anyone reaching it spends your keys)")
    serve.set_defaults(handler=_serve)

    reload = sub.add_parser("reload", help="make the running server apply its config file again")
    _add_source_arguments(reload)
    reload.set_defaults(handler=_reload)

    export = sub.add_parser("export", help="traces -> fine-tuning JSONL (OpenAI chat format)")
    export.add_argument("--alias")
    export.add_argument("--model")
    export.add_argument("--since", help="e.g. 7d")
    export.add_argument("--status", default="ok", help="ok (default), error, cancelled or all")
    export.add_argument("--format", default="openai", choices=["openai", "pairs"])
    export.add_argument("--out", help="file to write (default: stdout)")
    _add_source_arguments(export)
    export.set_defaults(handler=_export)

    stats = sub.add_parser("stats", help="requests, errors, latency, TTFT, tokens and cost per group")
    stats.add_argument("--by", default="alias", choices=["alias", "model", "provider"])
    stats.add_argument("--since", default="24h")
    stats.add_argument("--json", action="store_true")
    _add_source_arguments(stats)
    stats.set_defaults(handler=_stats)

    compare = sub.add_parser("compare", help="primary vs shadow over the same requests")
    compare.add_argument("--alias", required=True)
    compare.add_argument("--since", default="7d")
    compare.add_argument("--json", action="store_true")
    _add_source_arguments(compare)
    compare.set_defaults(handler=_compare)

    hash_key = sub.add_parser("hash-key", help="print the sha256: form of an engine key (read from stdin)")
    hash_key.set_defaults(handler=_hash_key)

    traces = sub.add_parser("traces", help="list recorded traces, or `traces show TRACE_ID`")
    traces.add_argument("action", nargs="*", metavar="show TRACE_ID")
    traces.add_argument("--last", type=int, default=20)
    traces.add_argument("--alias")
    traces.add_argument("--model")
    traces.add_argument("--status", choices=["ok", "error", "cancelled"])
    traces.add_argument("--since", help="e.g. 30m, 1h, 7d")
    traces.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    _add_source_arguments(traces)
    traces.set_defaults(handler=_traces)

    check = sub.add_parser("check-config", help="validate a config and print what it serves")
    check.add_argument("path", nargs="?", default=DEFAULT_CONFIG)
    check.set_defaults(handler=_check_config)
    return parser


def _add_source_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help=f"engine config, for where traces live (default: ./{DEFAULT_CONFIG})")
    parser.add_argument("--server", help="read through a running engine, e.g. http://127.0.0.1:8080")
    parser.add_argument("--api-key", default=os.environ.get("OPENTRACY_API_KEY"),
                        help="engine key for --server (default: $OPENTRACY_API_KEY)")


def _config_path(given: str | None) -> Path | None:
    if given:
        return Path(given)
    default = Path(DEFAULT_CONFIG)
    return default if default.exists() else None


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from opentracy.gateway.app import create_app
    from opentracy.store import StoreError, parse_store_url
    from opentracy.tracing.reader import ENGINE_FILE

    settings = load_settings(_config_path(args.config))
    if not settings.auth_required and not _is_loopback(args.host):
        if not args.insecure_no_auth:
            print(f"opentracy: refusing to serve on {args.host} with no engine key: anyone who reaches it could "
                  "spend your provider keys. Set OPENTRACY_API_KEYS=name:key (or general_settings.master_key "
                  "in the config), bind 127.0.0.1, or pass --insecure-no-auth.", file=sys.stderr)
            return 2
        print(f"WARNING: serving on {args.host} with NO authentication (--insecure-no-auth). Anyone who can "
              "reach this port can use every provider key of this engine.", file=sys.stderr, flush=True)
    embedded = parse_store_url(settings.engine.clickhouse_url).embedded
    if args.workers != 1:
        if embedded and settings.engine.tracing:
            print("opentracy: --workers > 1 needs a ClickHouse server: the embedded store (chDB) allows one "
                  "process per data directory. Set OPENTRACY_CLICKHOUSE_URL=http://user:pass@host:8123/db, "
                  "or run one worker.", file=sys.stderr)
        else:
            print("opentracy: --workers > 1 is not supported yet; run one process per port behind a "
                  "load balancer.", file=sys.stderr)
        return 2
    tracer = None
    if settings.engine.tracing:
        try:
            tracer = _open_tracer(settings)
        except StoreError as exc:
            print(f"opentracy: cannot open the trace store: {exc}", file=sys.stderr)
            return 2
    app = create_app(settings, tracer)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("opentracy").setLevel(args.log_level.upper())
    _print_banner(settings, args.host, args.port)
    engine_file = settings.engine.data_dir / ENGINE_FILE
    local_host = "127.0.0.1" if args.host in ("0.0.0.0", "::", "") else args.host
    engine_file.parent.mkdir(parents=True, exist_ok=True)
    engine_file.write_text(json.dumps({"url": f"http://{_url_host(local_host)}:{args.port}", "pid": os.getpid()}))
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level, access_log=False)
    finally:
        engine_file.unlink(missing_ok=True)
        if tracer is not None:
            tracer.close()  # normally done by the app's shutdown; here if uvicorn never started
    return 0


def _open_tracer(settings: Settings) -> "GatewayTracer":
    """The tracer, once the embedded store is free: a restart right after a ``kill -9`` finds the killed
    server's trace process still writing out its queue, and waits for it rather than failing."""
    from opentracy.store import StoreLockedError
    from opentracy.tracing.gateway import GatewayTracer
    from opentracy.tracing.reader import running_server, wait_for_store

    try:
        return GatewayTracer.open(settings)
    except StoreLockedError as exc:
        if running_server(settings.engine.data_dir) or not wait_for_store(exc):
            raise  # a live server holds it (refused at once), or the holder kept it
        return GatewayTracer.open(settings)


def _open(args: argparse.Namespace) -> "TraceSource":
    from opentracy.tracing.reader import open_source

    return open_source(load_engine_options(_config_path(args.config)), args.server, args.api_key)


def _with_source(args: argparse.Namespace, work: Callable[["TraceSource"], int]) -> int:
    """Run ``work`` against the store or the running server; errors become one-line messages."""
    import httpx

    try:
        source = _open(args)
    except RuntimeError as exc:
        print(f"opentracy: {exc}", file=sys.stderr)
        return 2
    try:
        return work(source)
    except (RuntimeError, ValueError, OSError) as exc:
        print(f"opentracy: {exc}", file=sys.stderr)
        return 2
    except httpx.HTTPError as exc:  # --server given, and it does not answer
        print(f"opentracy: cannot reach the server: {exc}", file=sys.stderr)
        return 2
    finally:
        source.close()


def _traces(args: argparse.Namespace) -> int:
    def work(source: "TraceSource") -> int:
        if args.action:
            if args.action[0] != "show" or len(args.action) != 2:
                print("usage: opentracy traces show TRACE_ID", file=sys.stderr)
                return 2
            row = source.get(args.action[1])
            if row is None:
                print(f"opentracy: no trace {args.action[1]!r}", file=sys.stderr)
                return 1
            print(json.dumps(row, indent=2, ensure_ascii=False, default=str))
            return 0
        rows = source.query(last=args.last, alias=args.alias, model=args.model, status=args.status,
                            since=args.since)
        if args.json:
            for row in rows:
                print(json.dumps(row, ensure_ascii=False, default=str))
        else:
            print(reports.trace_table(rows))
        return 0

    return _with_source(args, work)


def _reload(args: argparse.Namespace) -> int:
    from opentracy.tracing.reader import ServerSource, running_server

    url = args.server or running_server(load_engine_options(_config_path(args.config)).data_dir)
    if not url:
        print("opentracy: no running server found; pass --server http://HOST:PORT", file=sys.stderr)
        return 2
    server = ServerSource(url, args.api_key)
    try:
        result = server.reload()
    except RuntimeError as exc:
        print(f"opentracy: {exc}", file=sys.stderr)
        return 2
    finally:
        server.close()
    print(f"reloaded {result['config']}: aliases {', '.join(result['aliases']) or '-'}; "
          f"models {', '.join(result['models']) or '-'}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from opentracy.export import NoContentError, export

    # "ok" reads every status so the summary can say how many errors and cancellations were skipped.
    status = None if args.status in ("ok", "all") else args.status

    def work(source: "TraceSource") -> int:
        rows = source.export_rows(alias=args.alias, model=args.model, status=status, since=args.since)
        out = open(args.out, "w", encoding="utf-8") if args.out else sys.stdout
        progress = _progress if sys.stderr.isatty() else None
        try:
            summary = export(rows, out, fmt=args.format, include_failed=args.status != "ok", progress=progress)
        except NoContentError as exc:
            print(f"opentracy: {exc}", file=sys.stderr)
            return 2
        finally:
            if args.out:
                out.close()
        if progress:
            print(file=sys.stderr)
        print(summary.describe(args.out or "stdout"), file=sys.stderr)
        return 0

    return _with_source(args, work)


def _progress(count: int) -> None:
    if count % 100 == 0 or count < 100:
        print(f"\rexporting: {count} traces read", end="", file=sys.stderr, flush=True)


def _stats(args: argparse.Namespace) -> int:
    def work(source: "TraceSource") -> int:
        rows = source.stats(by=args.by, since=args.since)
        print("\n".join(json.dumps(r, default=str) for r in rows) if args.json
              else reports.stats_table(rows, args.by, args.since))
        return 0

    return _with_source(args, work)


def _compare(args: argparse.Namespace) -> int:
    def work(source: "TraceSource") -> int:
        rows = source.compare(alias=args.alias, since=args.since)
        print("\n".join(json.dumps(r) for r in rows) if args.json
              else reports.compare_report(rows, args.alias, args.since))
        return 0

    return _with_source(args, work)


def _hash_key(args: argparse.Namespace) -> int:
    from opentracy.keys import hashed_form

    key = sys.stdin.readline().strip()
    if not key:
        print("opentracy: give the key on stdin, e.g. `echo -n sk-... | opentracy hash-key`", file=sys.stderr)
        return 2
    print(hashed_form(key))
    return 0


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if _is_ipv6(host) else host


def _print_banner(settings: Settings, host: str, port: int) -> None:
    shown_host = _url_host(host)
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
    lines.append(f"  auth:    {'engine keys required' if settings.auth_required else 'off'}")
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
