"""Where a traced request's CPU goes, by thread: one traced engine and its trace process.

    python bench/trace_threads.py                  # JSON, c=1: 3 rounds of 10,000 requests
    python bench/trace_threads.py --concurrency 64 --stream

Why next to ``trace_ab.py``: that one measures what tracing adds, all threads of two engines, and
its figure moves by ±20 µs from one process pair to the next (the servers' own CPU differs by more
than tracing costs). The trace process's share can be read directly, without a second engine: here,
CPU per request of each kind of thread (``/proc/<pid>/task/*/schedstat``, nanoseconds), round by
round. Rounds of one run mostly agree within 2-4 µs, so compare changes in the same hour (the same
code read 24-25 µs a JSON request in one hour, 30-33 in a busier one); session 12's orjson
(bench/README.md) cut it by 20 µs, which ``trace_ab.py`` runs had not resolved in session 11.
The load comes from run.py's load generator, in its own process.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import procstat  # noqa: E402
import run as bench  # noqa: E402 - the benchmark's process handling, config and constants

SETTLE = 1.2  # seconds after a round for its last shipment (every 0.5 s) to be encoded and journaled


def cpu_by_kind(server: int) -> collections.Counter[str]:
    """CPU seconds so far of the server's and its trace process's threads, by kind."""
    seconds: collections.Counter[str] = collections.Counter()
    for pid in procstat.tree(server):
        where = "server" if pid == server else "trace process"
        for kind, value in procstat.thread_cpu(pid).items():
            if pid != server and kind == "event loop":
                kind = "main thread"  # the trace process serves its socket there; no event loop
            seconds[f"{where}: {kind}"] += value
    return seconds


def load(runner: bench.Bench, scenario: bench.Scenario, requests: int) -> None:
    """``requests`` requests to the traced engine from run.py's load generator (its own process)."""
    out = runner.block("ot_trace", scenario, requests, None)
    if out["errors"]:
        raise RuntimeError(f"{out['errors']} requests failed, e.g. {out['error_sample'][:1]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="per round (default 10,000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    runner = bench.Bench(bench.parse_args(["--quick", "--startup-runs", "1", "--skip", "proxy", "--skip", "sdk",
                                           "--skip", "ot_notrace"]))
    scenario, requests = bench.Scenario(args.stream, args.concurrency), args.requests
    rounds: list[dict[str, float]] = []
    try:
        runner.start()
        server = runner.procs["ot_trace"].pid
        load(runner, scenario, 2000)  # warm-up
        time.sleep(SETTLE)
        for _ in range(args.rounds):
            before = cpu_by_kind(server)
            load(runner, scenario, requests)
            time.sleep(SETTLE)
            after = cpu_by_kind(server)
            rounds.append({kind: 1e6 * (after[kind] - before[kind]) / requests for kind in after})
    finally:
        for name in list(runner.procs):
            runner.procs.pop(name).stop()
        shutil.rmtree(runner.work, ignore_errors=True)
    print(f"\nCPU µs per request by thread, {'stream' if args.stream else 'JSON'} c={args.concurrency}, "
          f"{args.rounds} rounds of {requests:,} requests")
    for kind in sorted(rounds[0], key=lambda k: -rounds[0][k]):
        print(f"{kind:36s}" + "".join(f"{r.get(kind, 0.0):9.1f}" for r in rounds))
    print(f"{'all':36s}" + "".join(f"{sum(r.values()):9.1f}" for r in rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
