"""What tracing costs, measured precisely: two engines under one request stream, one request each in turn.

    python bench/trace_ab.py                       # (b) tracing on vs (c) off, JSON and stream, c=1 and 64
    python bench/trace_ab.py --aa                  # both off: the harness's own bias (~+1 %)
    python bench/trace_ab.py --scenarios json-1 --env-for ot_trace:OPENTRACY_TRACE_CONTENT=false

Why next to ``run.py``: ``run.py`` measures its tracing target this way too (``interleaved.py``, 4
pairs); this is that measurement alone, for A/B runs of one setting, more pairs or one scenario. Each
client lane sends a request to one engine, then the same request to the other, so both engines see
the same moments; CPU is each thread's run time from ``/proc/<pid>/task/*/schedstat`` (nanoseconds,
via ``procstat.threads``) per chunk of requests. Within one pair the chunks agree to ~3-15 µs per
request; what is left is the process pair itself: two fresh servers' own CPU per request differs by
up to ±4 % (memory layout, which engine starts first; ``--aa`` shows it), more than tracing costs.
So ``--pairs`` averages over fresh pairs with the traced slot swapped (6 by default, ~7 min), and the
standard error printed is the pairs' (session 12, bench/README.md).

Output: per scenario, CPU per request of the event-loop thread and of the whole process, the
difference (traced minus untraced) with its standard error, and the mean over scenarios; the JSON
goes to ``bench/results/trace-ab-<stamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402 - the benchmark's process handling, config and constants
from interleaved import SLOTS  # noqa: E402
SCENARIOS = {"json-1": (False, 1), "json-64": (False, 64), "stream-1": (True, 1), "stream-64": (True, 64)}


def standard_error(pairs: list[dict[str, Any]], key: str) -> float:
    """Of the mean over pairs, from the pairs' spread; for one pair, the spread of its chunks."""
    if len(pairs) == 1:
        return pairs[0]["se_us"]
    return statistics.stdev(p[key] for p in pairs) / len(pairs) ** 0.5


def run_pair(args: argparse.Namespace, traced_slot: str) -> dict[str, Any]:
    """One fresh process pair; ``traced_slot`` is the slot whose engine traces (the other does not)."""
    env_for = list(args.env_for)
    if args.aa:
        env_for.append("ot_trace:OPENTRACY_TRACING=false")
    elif traced_slot == "ot_notrace":  # swap: the engine started second traces
        env_for += ["ot_trace:OPENTRACY_TRACING=false", "ot_notrace:OPENTRACY_TRACING=true"]
    argv = ["--quick", "--startup-runs", "1", "--skip", "proxy", "--skip", "sdk",
            "--delay-ms", str(args.delay_ms)]
    for item in args.server_env:
        argv += ["--server-env", item]
    for item in env_for:
        argv += ["--env-for", item]
    runner = bench.Bench(bench.parse_args(argv))
    try:
        runner.start()
        swap = traced_slot == "ot_notrace" and not args.aa
        results = {name: runner.tracing_cost(bench.Scenario(*SCENARIOS[name]), args.chunks, args.requests, swap)
                   for name in args.scenarios}
        return {"traced_slot": traced_slot, "scenarios": results}
    finally:
        for name in list(runner.procs):
            runner.procs.pop(name).stop()
        shutil.rmtree(runner.work, ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--scenarios", type=lambda s: s.split(","), default=list(SCENARIOS),
                        help=f"comma-separated, of {', '.join(SCENARIOS)} (default all)")
    parser.add_argument("--chunks", type=int, default=20, help="measured chunks per scenario (default 20)")
    parser.add_argument("--requests", type=int, default=400,
                        help="requests per engine per chunk for JSON (default 400; streams a quarter)")
    parser.add_argument("--pairs", type=int, default=6,
                        help="fresh process pairs, traced slot alternating (default 6)")
    parser.add_argument("--aa", action="store_true", help="both engines untraced: the harness's own bias")
    parser.add_argument("--delay-ms", type=int, default=0, help="emulator latency before every answer")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--env-for", action="append", default=[], metavar="SLOT:KEY=VALUE",
                        help="environment for one engine (ot_trace: the traced one in the first pair)")
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/trace-ab-<stamp>.json)")
    args = parser.parse_args(argv)
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(bench.REPO)
    started = time.time()
    pairs = [run_pair(args, SLOTS[i % 2]) for i in range(args.pairs)]
    report: dict[str, Any] = {"stamp": time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(started)), "aa": args.aa,
                              "args": {k: str(v) for k, v in vars(args).items()}, "pairs": pairs,
                              "versions": bench.versions(""), "duration_s": round(time.time() - started, 1)}
    print(f"\n{'A/A (both untraced)' if args.aa else 'tracing on vs off'}: CPU per request, "
          f"{args.pairs} fresh process pair(s), requests alternating between the two engines")
    print(f"{'scenario':10s} {'thread':6s} {'traced ms':>9s} {'untraced':>9s} {'diff us':>8s} {'se':>5s} "
          f"{'overhead':>9s}  by pair")
    means = []
    for name in args.scenarios:
        for kind in ("main", "all"):
            rows = [pair["scenarios"][name][kind] for pair in pairs]
            overhead = statistics.mean(r["overhead"] for r in rows)
            if kind == "all":
                means.append(overhead)
            mean = {key: statistics.mean(r[key] for r in rows) for key in ("traced_ms", "untraced_ms", "diff_us")}
            print(f"{name:10s} {'loop' if kind == 'main' else 'all':6s} {mean['traced_ms']:9.3f} "
                  f"{mean['untraced_ms']:9.3f} {mean['diff_us']:+8.1f} {standard_error(rows, 'diff_us'):5.1f} "
                  f"{100 * overhead:+8.1f}%  "
                  + " ".join(f"{100 * r['overhead']:+.1f}%" for r in rows))
    report["mean_overhead"] = statistics.mean(means)
    print(f"mean over scenarios (all threads): {100 * report['mean_overhead']:+.1f} %")
    if args.pairs > 1:
        print("se: standard error of the mean over pairs (the pairs differ by more than chunks within one do)")
    out = args.out or bench.RESULTS / f"trace-ab-{report['stamp']}{'-aa' if args.aa else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
