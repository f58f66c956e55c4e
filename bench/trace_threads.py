"""Where a traced request's CPU goes, by thread: one traced engine and its trace process.

    python bench/trace_threads.py                  # JSON, c=1: 3 rounds of 10,000 requests
    python bench/trace_threads.py --concurrency 64 --stream

Why next to ``trace_ab.py``: that one measures what tracing adds, all threads of two engines, and
its figure moves by ±20 µs from one process pair to the next (the servers' own CPU differs by more
than tracing costs). The trace process's share can be read directly, without a second engine: here,
CPU per request of each kind of thread (``/proc/<pid>/task/*/schedstat``, nanoseconds), round by
round. A change to the trace process shows here at ±2 µs; session 12's orjson (bench/README.md) cut
it by 20 µs a JSON request, which ``trace_ab.py`` runs had not resolved in session 11.
"""

from __future__ import annotations

import argparse
import asyncio
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


async def drive(url: str, requests: int, concurrency: int, stream: bool) -> None:
    import aiohttp

    body = {"model": bench.MODEL, "messages": bench.MESSAGES, "stream": stream}
    headers = {"authorization": f"Bearer {bench.ENGINE_KEY}"}
    async with aiohttp.ClientSession() as session:
        async def lane(count: int) -> None:
            for _ in range(count):
                async with session.post(url, json=body, headers=headers) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"HTTP {resp.status}")

        await asyncio.gather(*(lane(requests // concurrency) for _ in range(concurrency)))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000, help="per round (default 10,000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--stream", action="store_true")
    args = parser.parse_args()
    runner = bench.Bench(bench.parse_args(["--quick", "--startup-runs", "1", "--skip", "proxy", "--skip", "sdk",
                                           "--skip", "ot_notrace"]))
    requests = args.requests - args.requests % args.concurrency
    rounds: list[dict[str, float]] = []
    try:
        runner.start()
        url, server = runner.urls_ot["ot_trace"] + "/v1/chat/completions", runner.procs["ot_trace"].pid
        asyncio.run(drive(url, 2000 - 2000 % args.concurrency, args.concurrency, args.stream))  # warm-up
        time.sleep(SETTLE)
        for _ in range(args.rounds):
            before = cpu_by_kind(server)
            asyncio.run(drive(url, requests, args.concurrency, args.stream))
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
