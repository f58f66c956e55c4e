"""bench/run.py's report: the targets' verdicts, the table, the summary and the PNG plot.

Everything here reads the report dict ``Bench.report`` builds (the JSON written to bench/results/),
so a saved JSON can be re-rendered without re-running anything.
"""

from __future__ import annotations

import math
import statistics
from pathlib import Path
from typing import Any

from procstat import THREAD_KINDS

SHORT = {"direct": "direct", "ot_trace": "OT trace", "ot_notrace": "OT notrace", "proxy": "proxy", "sdk": "sdk"}


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b) or b <= 0:
        return None
    return a / b


def _get(report: dict[str, Any], scenario: str, target: str, key: str) -> float | None:
    value = report["scenarios"].get(scenario, {}).get(target, {}).get(key)
    return value if isinstance(value, (int, float)) and math.isfinite(value) else None


def verdicts(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets the engine must eventually meet, each with its numbers and pass/fail."""
    found: list[dict[str, Any]] = []
    low, high = "json c=1", f"json c={max(report['args']['concurrency'])}"
    s_low = "stream c=1"

    def check(name: str, value: float | None, limit: float, better: str, detail: str) -> None:
        passed = None if value is None else (value <= limit if better == "<=" else value >= limit)
        found.append({"target": name, "value": value, "limit": f"{better} {limit:g}", "pass": passed,
                      "detail": detail})

    ot = "ot_trace"
    check("added p50 json c=1 / proxy's", ratio(_get(report, low, ot, "total_added_p50_ms"),
                                                _get(report, low, "proxy", "total_added_p50_ms")), 0.5, "<=",
          "OpenTracy (tracing on) added p50 over litellm proxy's added p50")
    check("added p50 json c=1 / bare litellm's", ratio(_get(report, low, ot, "total_added_p50_ms"),
                                                      _get(report, low, "sdk", "total_added_p50_ms")), 1.2, "<=",
          "OpenTracy (tracing on) added p50 over litellm.acompletion's added p50")
    check("added p50 stream total c=1 / proxy's",
          ratio(_get(report, s_low, ot, "total_added_p50_ms"), _get(report, s_low, "proxy", "total_added_p50_ms")),
          0.5, "<=", "streaming, whole response")
    check(f"throughput {high} / proxy's", ratio(_get(report, high, ot, "throughput_rps"),
                                                _get(report, high, "proxy", "throughput_rps")), 2.0, ">=",
          "requests per second at the high concurrency")

    overhead, detail = tracing_overhead(report)
    check("tracing CPU overhead (on/off - 1, mean over scenarios)", overhead, 0.05, "<=", detail)
    traces = report.get("traces") or {}
    lost = None if not traces else traces.get("missing", 0) + traces.get("duplicated", 0)
    check("traces lost or duplicated", lost, 0, "<=", "every request through (b) has exactly one trace")
    check("stretch: added p50 json c=1 (ms)", _get(report, low, ot, "total_added_p50_ms"), 2.0, "<=",
          "OpenTracy (tracing on), absolute")
    return found


def tracing_overhead(report: dict[str, Any]) -> tuple[float | None, str]:
    """Tracing on vs off, CPU per request: the mean over scenarios and the interleaved pairs, with how
    far it can be trusted (the pairs' spread), and the main run's block figure beside it."""
    blocks, block_detail = _block_overhead(report)
    pairs = report.get("tracing_pairs")
    if not pairs:  # a report from before session 14: the block figure was the target's
        return blocks, block_detail
    names = list(pairs[0]["scenarios"])
    pair_means = [statistics.mean(p["scenarios"][n]["all"]["overhead"] for n in names) for p in pairs]
    overhead = statistics.mean(pair_means)
    scenarios = ", ".join(
        f"{n} {100 * statistics.mean(p['scenarios'][n]['all']['overhead'] for p in pairs):+.1f}% "
        f"({statistics.mean(p['scenarios'][n]['all']['diff_us'] for p in pairs):+.0f} µs)" for n in names)
    spread = (f", standard error {100 * statistics.stdev(pair_means) / len(pair_means) ** 0.5:.1f} points"
              if len(pair_means) > 1 else "")
    return overhead, (f"all threads of the engine and its trace process, requests alternating between a traced "
                      f"and an untraced engine; {scenarios}; {len(pairs)} fresh pair(s): "
                      + " / ".join(f"{100 * m:+.1f}%" for m in pair_means) + spread
                      + (f"; the main run's blocks: {100 * blocks:+.1f}%" if blocks is not None else ""))


def _block_overhead(report: dict[str, Any]) -> tuple[float | None, str]:
    """Server CPU per request, traced over untraced, from the blocks of the main run (and, in reports
    from before session 14, of the extra process pairs)."""
    def pair_ratio(entry: dict[str, Any], traced: str) -> float | None:
        other = "ot_notrace" if traced == "ot_trace" else "ot_trace"
        return ratio((entry.get(traced) or {}).get("server_cpu_ms_per_req"),
                     (entry.get(other) or {}).get("server_cpu_ms_per_req"))

    pairs = report.get("pairs") or []
    per_pair = {s: [pair_ratio(report["scenarios"][s], "ot_trace")]
                + [pair_ratio(p["scenarios"].get(s, {}), p["traced"]) for p in pairs] for s in report["scenarios"]}
    known = [r for ratios in per_pair.values() for r in ratios if r is not None]
    overhead = sum(known) / len(known) - 1.0 if known else None

    def pct(r: float | None) -> str:
        return "-" if r is None else f"{(r - 1) * 100:+.0f}%"

    # How far the mean can be trusted: pairs differ by process (A/A pairs: 0-8 %), so the spread of the
    # pairs' own means (over scenarios) gives the standard error.
    by_pair = [[ratios[k] for ratios in per_pair.values() if k < len(ratios) and ratios[k] is not None]
               for k in range(1 + len(pairs))]
    pair_means = [sum(rs) / len(rs) - 1.0 for rs in by_pair if rs]
    spread = (f"; pair means {' / '.join(f'{m * 100:+.1f}%' for m in pair_means)}, standard error "
              f"{statistics.stdev(pair_means) / len(pair_means) ** 0.5 * 100:.1f} points"
              if len(pair_means) > 1 else "")
    slots = ["(b)"] + ["(c)" if p["traced"] == "ot_notrace" else "(b)" for p in pairs]
    return overhead, ("server CPU per request with tracing on vs off, in blocks; per scenario, by pair (traced in "
                      + ", ".join(slots) + "): " + ", ".join(f"{s} " + " / ".join(pct(r) for r in ratios)
                                                        for s, ratios in per_pair.items()) + spread)


def _fmt(value: float | None, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.{digits}f}"


def table(report: dict[str, Any]) -> str:
    targets = list(report["targets"])
    ratio_cols = [("ot_trace", "proxy"), ("ot_trace", "sdk"), ("ot_notrace", "proxy"), ("ot_notrace", "sdk")]
    ratio_cols = [(a, b) for a, b in ratio_cols if a in targets and b in targets]
    head = ["metric"] + [SHORT[t] for t in targets] + [f"{SHORT[a].replace('OT ', '')}÷{SHORT[b]}"
                                                        for a, b in ratio_cols]
    rows: list[list[str]] = []

    def add(label: str, values: dict[str, float | None], digits: int = 2, ratios: bool = True) -> None:
        row = [label] + [_fmt(values.get(t), digits) for t in targets]
        row += [_fmt(ratio(values.get(a), values.get(b))) if ratios else "" for a, b in ratio_cols]
        rows.append(row)

    for name, entry in report["scenarios"].items():
        stream = name.startswith("stream")
        for metric in (("ttft", "total") if stream else ("total",)):
            label = "TTFT" if metric == "ttft" else ("total" if stream else "latency")
            add(f"{name} {label} p50 ms", {t: entry[t].get(f"{metric}_p50_ms") for t in entry})
            for q in (50, 95, 99):
                add(f"{name} {label} added p{q} ms",
                    {t: entry[t].get(f"{metric}_added_p{q}_ms") for t in entry if t != "direct"})
        add(f"{name} req/s", {t: entry[t].get("throughput_rps") for t in entry}, 0)
        add(f"{name} server CPU ms/req", {t: entry[t].get("server_cpu_ms_per_req") for t in entry})
        kinds = {t: entry[t].get("server_threads_cpu_ms_per_req") or {} for t in entry}
        for kind in sorted({k for v in kinds.values() for k in v}, key=THREAD_KINDS.index):
            add(f"  of it: {kind}", {t: v.get(kind) for t, v in kinds.items() if v}, ratios=False)
        add(f"{name} client CPU ms/req", {t: entry[t].get("client_cpu_ms_per_req") for t in entry}, ratios=False)
        rows.append([])
    add("start-up s (median)", {t: v["median"] for t, v in report["startup_s"].items()})
    add("peak RSS MiB", report["peak_rss_mb"], 0)
    add("idle CPU ms/s (before load)", {t: 1000 * v for t, v in report["idle_cpu_rate"].items()}, 1)
    after = report.get("idle_cpu_rate_after") or {}
    if after:
        add("idle CPU ms/s (after each scenario, mean)",
            {t: 1000 * sum(s.get(t, 0.0) for s in after.values()) / len(after) for t in report["targets"]
             if any(t in s for s in after.values())}, 1)
    widths = [max(len(r[i]) for r in rows + [head] if r) for i in range(len(head))]
    sep = "  "

    def line(row: list[str]) -> str:
        return sep.join(cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row))

    out = [line(head), sep.join("-" * w for w in widths)]
    for row in rows:
        out.append(line(row) if row else "")
    return "\n".join(out).rstrip()


def summary(report: dict[str, Any]) -> str:
    lines = []
    traces = report.get("traces")
    if traces:
        lines.append(f"traces (b): {traces.get('requests')} requests -> {traces.get('stored')} stored, "
                     f"missing {traces.get('missing')}, duplicated {traces.get('duplicated')}, "
                     f"unexpected {traces.get('unexpected')}, dropped (metric) {traces.get('dropped_metric')}"
                     + ("" if traces.get("ok") else f"  FAILED {traces.get('error', '')}"))
    emu = report.get("emulator") or {}
    lines.append(f"emulator: {emu.get('total')} requests, {emu.get('violations')} violations")
    errors = {f"{s} {t}": e["errors"] for s, entry in report["scenarios"].items() for t, e in entry.items()
              if e["errors"]}
    lines.append(f"errors: {errors or 'none'}")
    m = report["machine"]
    lines.append(f"machine: load {m['loadavg_before'][0]:.1f} before, {m['loadavg_after'][0]:.1f} after; cpu pressure "
                 f"after: {m.get('cpu_pressure_after') or '?'} (other load on the machine skews all targets; "
                 "the interleaving spreads it evenly)")
    lines.append("targets (OpenTracy = (b), tracing on)"
                 + (": --quick has too few requests to judge these; smoke only" if report["args"]["quick"] else ":"))
    for v in report["verdicts"]:
        state = {True: "PASS", False: "FAIL", None: "n/a "}[v["pass"]]
        lines.append(f"  [{state}] {v['target']}: {_fmt(v['value'], 3)} (want {v['limit']})"
                     + (f"  [{v['detail'].split('; ', 1)[1]}]" if v["target"].startswith("tracing") else ""))
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): no PNG"
    scenarios = list(report["scenarios"])
    targets = list(report["targets"])
    colors = {"direct": "#999999", "ot_trace": "#1f77b4", "ot_notrace": "#6baed6", "proxy": "#d62728",
              "sdk": "#2ca02c"}
    panels = [("added p50 latency, ms (streams: total)", "total_added_p50_ms", False),
              ("throughput, req/s", "throughput_rps", True),
              ("server CPU per request, ms", "server_cpu_ms_per_req", False)]
    fig, axes = plt.subplots(1, len(panels) + 2, figsize=(24, 5.5),
                             gridspec_kw={"width_ratios": [3] * (len(panels) + 1) + [1.3]})
    for ax, (title, key, with_direct) in zip(axes, panels):
        shown = [t for t in targets if with_direct or t != "direct"]
        width = 0.8 / max(1, len(shown))
        for i, t in enumerate(shown):
            values = [_get(report, s, t, key) or 0.0 for s in scenarios]
            ax.bar([x + i * width for x in range(len(scenarios))], values, width, label=SHORT[t], color=colors[t])
        ax.set_xticks([x + width * (len(shown) - 1) / 2 for x in range(len(scenarios))], scenarios, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_yscale("log")
        ax.grid(axis="y", which="both", alpha=0.3)
    axes[1].legend(fontsize=8)
    # OpenTracy (tracing on) relative to the two baselines: < 1 is better for latency and CPU.
    ax = axes[len(panels)]
    ratios = [("added p50 ÷ proxy", "total_added_p50_ms", "proxy", "#d62728", ""),
              ("added p50 ÷ sdk", "total_added_p50_ms", "sdk", "#2ca02c", ""),
              ("req/s ÷ proxy", "throughput_rps", "proxy", "#d62728", "//"),
              ("req/s ÷ sdk", "throughput_rps", "sdk", "#2ca02c", "//")]
    ratios = [r for r in ratios if r[2] in targets and "ot_trace" in targets]
    width = 0.8 / max(1, len(ratios))
    for i, (label, key, base, color, hatch) in enumerate(ratios):
        values = [ratio(_get(report, s, "ot_trace", key), _get(report, s, base, key)) or 0.0 for s in scenarios]
        ax.bar([x + i * width for x in range(len(scenarios))], values, width, label=label, color=color,
               hatch=hatch, alpha=0.8, edgecolor="white")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_xticks([x + width * (len(ratios) - 1) / 2 for x in range(len(scenarios))], scenarios, fontsize=8)
    ax.set_title("OpenTracy (tracing on) ÷ baseline", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[-1]
    servers = [t for t in targets if t in report["startup_s"]]
    ax.bar(range(len(servers)), [report["startup_s"][t]["median"] for t in servers],
           color=[colors[t] for t in servers])
    ax.set_xticks(range(len(servers)), [SHORT[t] for t in servers], fontsize=8, rotation=30)
    ax.set_title("start-up to healthy, s", fontsize=10)
    fig.suptitle(f"OpenTracy bench {report['stamp']}  ({report['machine']['cpus']} CPUs, upstream delay "
                 f"{report['args']['delay_ms']} ms, git {report['versions'].get('git')})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return None
