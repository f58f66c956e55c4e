"""CPU per request of two engines under one request stream: each client lane sends a request to one
engine, then the same request to the other, so both engines see the same moments.

Why: measuring one engine at a time, in blocks, lets the machine's speed drift between the blocks
(here, on a shared VM, by ±10 % from one second to the next); a tracing figure measured that way had
a standard error of 2.4-7 points even over several process pairs. Interleaved, the chunks of one pair
agree to ~3-15 µs a request. Used by ``run.py`` (its tracing target) and ``trace_ab.py``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
from typing import Any

import procstat

SLOTS = ("ot_trace", "ot_notrace")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(event-loop thread, all threads of the process and its children) CPU seconds so far."""
    loop = total = 0.0
    for process in procstat.tree(pid):
        for (tid, _name), seconds in procstat.threads(process).items():
            total += seconds
            if tid == pid:
                loop = seconds
    return loop, total


async def measure(urls: dict[str, str], pids: dict[str, int], body: dict[str, Any], headers: dict[str, str],
                  concurrency: int, chunks: int, per_lane: int) -> dict[str, dict[str, list[float]]]:
    """CPU ms per request, per chunk and slot, ``main`` (the event loop) and ``all`` (every thread of
    the engine and its trace process). ``concurrency`` requests in flight at each engine."""
    import aiohttp

    stream = bool(body.get("stream"))
    data = json.dumps(body).encode()
    headers = {"content-type": "application/json", **headers}
    connector = aiohttp.TCPConnector(limit=0, keepalive_timeout=30)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def one(slot: str) -> None:
            async with session.post(urls[slot], data=data, headers=headers) as resp:
                text = await resp.read()
                if resp.status != 200 or not (b"[DONE]" in text if stream else b'"choices"' in text):
                    raise RuntimeError(f"{slot}: HTTP {resp.status}: {text[:200]!r}")

        async def lane(offset: int) -> None:
            for i in range(per_lane):  # A then B, then B then A: neither engine always goes first
                first, second = SLOTS if (i + offset) % 2 == 0 else SLOTS[::-1]
                await one(first)
                await one(second)

        lanes = 2 * concurrency  # each lane has one request in flight, at either engine
        for _ in range(2):  # warm-up
            await asyncio.gather(*(lane(k) for k in range(lanes)))
        out: dict[str, dict[str, list[float]]] = {s: {"main": [], "all": []} for s in SLOTS}
        for _ in range(chunks):
            before = {s: cpu_seconds(pids[s]) for s in SLOTS}
            await asyncio.gather(*(lane(k) for k in range(lanes)))
            after = {s: cpu_seconds(pids[s]) for s in SLOTS}
            n = per_lane * lanes  # requests per engine in the chunk
            for s in SLOTS:
                out[s]["main"].append(1e3 * (after[s][0] - before[s][0]) / n)
                out[s]["all"].append(1e3 * (after[s][1] - before[s][1]) / n)
        return out


def per_lane(requests: int, concurrency: int, stream: bool) -> int:
    """Requests per lane for ``requests`` per engine per chunk (a quarter of that for streams)."""
    return max(1, requests // (2 * concurrency) // (4 if stream else 1))


def summarize(samples: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    """Traced minus untraced, per chunk: means, the chunks' standard error, the overhead."""
    result: dict[str, Any] = {}
    for kind in ("main", "all"):
        traced, plain = samples["ot_trace"][kind], samples["ot_notrace"][kind]
        diffs = [a - b for a, b in zip(traced, plain)]
        base = statistics.mean(plain)
        result[kind] = {"traced_ms": statistics.mean(traced), "untraced_ms": base,
                        "diff_us": 1e3 * statistics.mean(diffs),
                        "se_us": 1e3 * statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else 0.0,
                        "overhead": statistics.mean(diffs) / base,
                        "chunks_diff_us": [round(1e3 * d, 1) for d in diffs]}
    return result
