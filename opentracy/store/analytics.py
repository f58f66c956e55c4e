"""The questions teams ask of their traces: how is each alias/model doing (stats), how close is the
shadow to the primary (compare), and the teacher's answers as training data (export rows).

Aggregation runs in ClickHouse; only per-pair agreement (text normalisation, tool-call equality) is
computed here, over the joined primary/shadow pairs.
"""

from __future__ import annotations

import json
import re
import statistics
import unicodedata
from datetime import datetime, timedelta, timezone
from typing import Any, Iterator

from opentracy.store.clickhouse import TraceStore, trace_filter
from opentracy.store.migrations import TRACES_TABLE

GROUP_KEYS = {"alias": "if(alias = '', '-', alias)", "model": "if(selected_model = '', '-', selected_model)",
              "provider": "if(provider = '', '-', provider)"}
EXPORT_PAGE = 1000


def _since_param(since: timedelta | None) -> str:
    moment = datetime.now(timezone.utc) - (since or timedelta(days=365 * 100))
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def stats(store: TraceStore, by: str = "alias", since: timedelta | None = None) -> list[dict[str, Any]]:
    """Per group: requests, error rate, p50/p95 latency and TTFT, tokens, cost. Shadow calls excluded."""
    if by not in GROUP_KEYS:
        raise ValueError(f"by must be one of {', '.join(GROUP_KEYS)}")
    sql = f"""
        SELECT {GROUP_KEYS[by]} AS key, count() AS requests,
               countIf(status != 'ok') / count() AS error_rate,
               quantile(0.5)(latency_ms) AS p50_ms, quantile(0.95)(latency_ms) AS p95_ms,
               quantile(0.5)(ttft_ms) AS ttft_p50_ms, quantile(0.95)(ttft_ms) AS ttft_p95_ms,
               sum(prompt_tokens) AS prompt_tokens, sum(completion_tokens) AS completion_tokens,
               sum(cost_usd) AS cost_usd
        FROM {TRACES_TABLE}
        WHERE start_time >= {{since:DateTime64(6, 'UTC')}} AND shadow_of = ''
        GROUP BY key ORDER BY requests DESC, key"""
    rows = store.select(sql, {"since": _since_param(since)})
    for row in rows:
        for name in ("p50_ms", "p95_ms", "ttft_p50_ms", "ttft_p95_ms"):
            value = row.get(name)
            row[name] = None if value is None or value != value else round(float(value), 3)  # NaN: no data
        row["error_rate"] = round(float(row["error_rate"]), 4)
        row["cost_usd"] = float(row["cost_usd"])
    return rows


def compare(store: TraceStore, alias: str, since: timedelta | None = None) -> list[dict[str, Any]]:
    """Primary vs each shadow target over the same requests (joined on ``shadow_of``)."""
    sql = f"""
        SELECT s.selected_model AS shadow_model, p.selected_model AS primary_model,
               p.status AS p_status, s.status AS s_status, p.response AS p_response, s.response AS s_response,
               p.tool_calls AS p_tools, s.tool_calls AS s_tools, p.cost_usd AS p_cost, s.cost_usd AS s_cost,
               p.latency_ms AS p_latency, s.latency_ms AS s_latency
        FROM {TRACES_TABLE} AS s
        INNER JOIN (SELECT trace_id, selected_model, status, response, tool_calls, cost_usd, latency_ms
                    FROM {TRACES_TABLE}
                    WHERE alias = {{alias:String}} AND shadow_of = ''
                      AND start_time >= {{since:DateTime64(6, 'UTC')}}) AS p
            ON s.shadow_of = p.trace_id
        WHERE s.shadow_of != ''"""
    pairs = store.select(sql, {"alias": alias, "since": _since_param(since)})
    by_shadow: dict[str, list[dict[str, Any]]] = {}
    for pair in pairs:
        by_shadow.setdefault(pair["shadow_model"], []).append(pair)
    return [_summarise(alias, shadow, rows) for shadow, rows in sorted(by_shadow.items())]


def _summarise(alias: str, shadow: str, pairs: list[dict[str, Any]]) -> dict[str, Any]:
    both_ok = [p for p in pairs if p["p_status"] == "ok" and p["s_status"] == "ok"]
    with_tools = [p for p in both_ok if _calls(p["p_tools"])]
    exact = sum(p["p_response"] == p["s_response"] and _calls(p["p_tools"]) == _calls(p["s_tools"]) for p in both_ok)
    normalised = sum(normalise(p["p_response"]) == normalise(p["s_response"]) for p in both_ok)
    same_tool = sum(_calls(p["p_tools"]) == _calls(p["s_tools"]) for p in with_tools)
    p_cost, s_cost = sum(p["p_cost"] for p in both_ok), sum(p["s_cost"] for p in both_ok)
    p_lat = [p["p_latency"] for p in both_ok]
    s_lat = [p["s_latency"] for p in both_ok]
    return {
        "alias": alias,
        "primary_models": sorted({p["primary_model"] for p in pairs}),
        "shadow_model": shadow,
        "pairs": len(pairs),
        "compared": len(both_ok),
        "exact_match": _ratio(exact, len(both_ok)),
        "normalised_match": _ratio(normalised, len(both_ok)),
        "tool_calls_compared": len(with_tools),
        "same_tool_and_arguments": _ratio(same_tool, len(with_tools)),
        "cost_ratio": round(s_cost / p_cost, 4) if p_cost else None,
        "latency_ratio_p50": round(statistics.median(s_lat) / statistics.median(p_lat), 4)
        if p_lat and statistics.median(p_lat) else None,
        "primary_error_rate": _ratio(sum(p["p_status"] != "ok" for p in pairs), len(pairs)),
        "shadow_error_rate": _ratio(sum(p["s_status"] != "ok" for p in pairs), len(pairs)),
    }


def normalise(text: str | None) -> str:
    """Case, punctuation, accents and spacing do not count as disagreement."""
    folded = unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode().lower()
    return " ".join(re.sub(r"[^\w\s]", " ", folded).split())


def _calls(tool_calls: Any) -> list[tuple[str, Any]]:
    """Tool calls as (name, parsed arguments): ids and argument formatting do not count."""
    if isinstance(tool_calls, str):  # selected under an alias, so still JSON text
        try:
            tool_calls = json.loads(tool_calls) if tool_calls else []
        except ValueError:
            return [("<unreadable>", tool_calls)]
    calls = []
    for call in tool_calls or []:
        if not isinstance(call, dict):
            continue
        function = (call or {}).get("function") or {}
        arguments = function.get("arguments")
        try:
            arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
        except ValueError:
            pass
        calls.append((str(function.get("name")), arguments))
    return calls


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def iter_traces(store: TraceStore, *, alias: str | None = None, model: str | None = None,
                status: str | None = None, since: timedelta | None = None) -> Iterator[dict[str, Any]]:
    """Every matching primary trace, oldest first, a page at a time (keyset pagination)."""
    condition, params = trace_filter(alias=alias, model=model, status=status, since=since)
    where = [condition, "shadow_of = ''"]
    cursor = ("1970-01-01 00:00:00.000000", "")
    while True:
        page = store.select(
            f"SELECT * FROM {TRACES_TABLE} WHERE {' AND '.join(where)} AND (start_time, trace_id) > "
            "({after_time:DateTime64(6, 'UTC')}, {after_id:String}) ORDER BY start_time, trace_id "
            f"LIMIT {EXPORT_PAGE}",
            {**params, "after_time": cursor[0], "after_id": cursor[1]})
        yield from page
        if len(page) < EXPORT_PAGE:
            return
        last = page[-1]
        cursor = (last["start_time"].strftime("%Y-%m-%d %H:%M:%S.%f"), last["trace_id"])
