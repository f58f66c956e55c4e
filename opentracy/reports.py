"""Plain-text tables for the terminal: traces, stats per group, primary-vs-shadow comparison."""

from __future__ import annotations

from typing import Any

TRACE_COLUMNS = (("time", 19), ("trace", 12), ("status", 9), ("alias", 12), ("model", 30), ("tokens", 11),
                 ("cost $", 10), ("ms", 8), ("ttft", 7))


def table(columns: tuple[tuple[str, int], ...], rows: list[tuple[str, ...]]) -> list[str]:
    lines = ["  ".join(name.ljust(width) for name, width in columns)]
    lines += ["  ".join(cell[:width].ljust(width) for cell, (_, width) in zip(cells, columns)) for cells in rows]
    return lines


def trace_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no traces match"
    cells = [(
        str(row.get("start_time", ""))[:19].replace("T", " "),
        str(row.get("trace_id", ""))[:12],
        str(row.get("status", "")),
        str(row.get("alias") or "-"),
        f"{row.get('selected_model') or row.get('requested_model') or '-'}{'*' if row.get('fallback_used') else ''}",
        f"{row.get('prompt_tokens', 0)}/{row.get('completion_tokens', 0)}",
        f"{float(row.get('cost_usd') or 0):.6f}",
        f"{float(row.get('latency_ms') or 0):.0f}",
        _ms(row.get("ttft_ms"), digits=0),
    ) for row in rows]
    return "\n".join([*table(TRACE_COLUMNS, cells), f"{len(rows)} trace(s); * = served by a fallback"])


def stats_table(rows: list[dict[str, Any]], by: str, since: str) -> str:
    if not rows:
        return f"no traces in the last {since}"
    columns = ((by, 28), ("requests", 9), ("errors", 7), ("p50 ms", 9), ("p95 ms", 9), ("ttft p50", 9),
               ("ttft p95", 9), ("tokens in/out", 16), ("cost $", 11))
    cells = [(str(r["key"]), str(r["requests"]), f"{r['error_rate'] * 100:.1f}%", _ms(r["p50_ms"]), _ms(r["p95_ms"]),
              _ms(r["ttft_p50_ms"]), _ms(r["ttft_p95_ms"]), f"{r['prompt_tokens']}/{r['completion_tokens']}",
              f"{r['cost_usd']:.6f}") for r in rows]
    return "\n".join(table(columns, cells))


def compare_report(rows: list[dict[str, Any]], alias: str, since: str) -> str:
    if not rows:
        return (f"no shadow traffic for alias {alias!r} in the last {since} "
                f"(add `shadow: [...]` to the alias and reload)")
    lines = []
    for r in rows:
        lines += [
            f"{alias}: {', '.join(r['primary_models'])}  vs  shadow {r['shadow_model']}",
            f"  pairs {r['pairs']} (both answered: {r['compared']})",
            f"  exact match        {_pct(r['exact_match'])}",
            f"  normalised match   {_pct(r['normalised_match'])}",
            f"  same tool + args   {_pct(r['same_tool_and_arguments'])} of {r['tool_calls_compared']} tool calls",
            f"  cost ratio         {_x(r['cost_ratio'])} (shadow / primary)",
            f"  latency ratio p50  {_x(r['latency_ratio_p50'])}",
            f"  error rate         primary {_pct(r['primary_error_rate'])}, shadow {_pct(r['shadow_error_rate'])}",
        ]
    return "\n".join(lines)


def _ms(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{float(value):.{digits}f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}x"
