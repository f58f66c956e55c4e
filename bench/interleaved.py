"""CPU per request of two engines under one request stream: each client lane sends a request to one
engine, then the same request to the other, so both engines see the same moments.

Why: measuring one engine at a time, in blocks, lets the machine's speed drift between the blocks
(here, on a shared VM, by ±10 % from one second to the next); a tracing figure measured that way had
a standard error of 2.4-7 points even over several process pairs. Interleaved, the chunks of one pair
agree to ~3-15 µs a request. Used by ``run.py`` (its tracing target) and ``trace_ab.py``.

Inserts: the traced engine's trace process inserts its rows 10,000 at a time (or every 120 s), so
without care a scenario is charged the insert its predecessor's rows filled, or none (a 20-chunk JSON
scenario sends ~8,800 requests). With ``flush`` URLs each scenario starts with an empty batch and ends
by writing out its own rows (the admin read route flushes first, as for any user), and that insert's
CPU is spread over the scenario's requests: 7-8 µs a JSON request (8,000 rows), close to steady
state; a scenario of fewer rows (streams: 2,000) pays more of an insert's fixed cost than it would
in a 10,000-row batch.
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
                  concurrency: int, chunks: int, per_lane: int,
                  flush: dict[str, tuple[str, dict[str, str]]] | None = None) -> dict[str, dict[str, Any]]:
    """CPU ms per request, per chunk and slot, ``main`` (the event loop) and ``all`` (every thread of
    the engine and its trace process), and with ``flush`` (per slot: URL and headers of a read that
    writes out the open batch) ``flush_main`` / ``flush_all``, the CPU ms of writing out the
    scenario's rows, per request. ``concurrency`` requests in flight at each engine."""
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

        async def write_out() -> None:
            for slot, (url, flush_headers) in (flush or {}).items():  # the untraced engine answers 404
                async with session.get(url, headers=flush_headers) as resp:
                    await resp.read()
                    if resp.status not in (200, 404):
                        raise RuntimeError(f"{slot}: flush: HTTP {resp.status}")

        lanes = 2 * concurrency  # each lane has one request in flight, at either engine
        for _ in range(2):  # warm-up
            await asyncio.gather(*(lane(k) for k in range(lanes)))
        await write_out()  # what earlier scenarios and the warm-up left is not this scenario's
        out: dict[str, dict[str, Any]] = {s: {"main": [], "all": []} for s in SLOTS}
        n = per_lane * lanes  # requests per engine in a chunk
        for _ in range(chunks):
            before = {s: cpu_seconds(pids[s]) for s in SLOTS}
            await asyncio.gather(*(lane(k) for k in range(lanes)))
            after = {s: cpu_seconds(pids[s]) for s in SLOTS}
            for s in SLOTS:
                out[s]["main"].append(1e3 * (after[s][0] - before[s][0]) / n)
                out[s]["all"].append(1e3 * (after[s][1] - before[s][1]) / n)
        if flush:
            before = {s: cpu_seconds(pids[s]) for s in SLOTS}
            await write_out()
            after = {s: cpu_seconds(pids[s]) for s in SLOTS}
            for s in SLOTS:
                out[s]["flush_main"] = 1e3 * (after[s][0] - before[s][0]) / (n * chunks)
                out[s]["flush_all"] = 1e3 * (after[s][1] - before[s][1]) / (n * chunks)
        return out


def per_lane(requests: int, concurrency: int, stream: bool) -> int:
    """Requests per lane for ``requests`` per engine per chunk (a quarter of that for streams)."""
    return max(1, requests // (2 * concurrency) // (4 if stream else 1))


def summarize(samples: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Traced minus untraced: means (the scenario's own insert included when measured), the chunks'
    standard error, the overhead."""
    result: dict[str, Any] = {}
    for kind in ("main", "all"):
        traced, plain = samples["ot_trace"][kind], samples["ot_notrace"][kind]
        diffs = [a - b for a, b in zip(traced, plain)]
        flushed = [samples[s].get(f"flush_{kind}", 0.0) for s in ("ot_trace", "ot_notrace")]
        base = statistics.mean(plain) + flushed[1]
        diff = statistics.mean(diffs) + flushed[0] - flushed[1]
        result[kind] = {"traced_ms": statistics.mean(traced) + flushed[0], "untraced_ms": base,
                        "diff_us": 1e3 * diff,
                        "se_us": 1e3 * statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else 0.0,
                        "overhead": diff / base, "insert_us": round(1e3 * (flushed[0] - flushed[1]), 1),
                        "chunks_diff_us": [round(1e3 * d, 1) for d in diffs]}
    return result
