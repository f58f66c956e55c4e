"""Load generator worker for bench/run.py (not run by hand).

    python bench/_loadgen.py http      # aiohttp client: the upstream directly, OpenTracy, litellm's proxy
    python bench/_loadgen.py litellm   # bare litellm.acompletion in this process (the "SDK" baseline)

Reads one JSON command per stdin line, runs a block of ``n`` requests with ``concurrency`` in flight,
and prints ``@@BENCH {result}`` (latencies in ms, first-byte times for streams, errors, wall time,
trace ids from ``x-opentracy-trace-id``). The orchestrator reads /proc of this process and of the
server around each block, so CPU is measured outside.

Why aiohttp and a separate process: at c=64 on 2 cores the client must cost far less than what it
measures. aiohttp parses HTTP in C (llhttp), keeps a connection pool (one keep-alive connection per
in-flight request, reused across blocks), and here sends pre-encoded bodies and does not parse the
JSON it gets back (it checks the status, that ``"choices"`` is there, and that a stream ends with
``[DONE]``). The same client measures the upstream directly, so its cost is in the baseline too;
bench/run.py reports the client's own CPU per request next to the servers'.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import time
from typing import Any, Awaitable, Callable

MARK = "@@BENCH "


class Block:
    def __init__(self, want_trace_ids: bool) -> None:
        self.lat: list[float] = []
        self.ttft: list[float] = []
        self.errors = 0
        self.error_sample: list[str] = []
        self.trace_ids: list[str] = []
        self.cpu = 0.0  # this process's CPU time during the block (all threads), seconds
        self.want_trace_ids = want_trace_ids

    def error(self, text: str) -> None:
        self.errors += 1
        if len(self.error_sample) < 3:
            self.error_sample.append(text[:300])


async def run_block(n: int, concurrency: int, one: Callable[[Block], Awaitable[None]], block: Block) -> float:
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while issued < n:
            issued += 1
            try:
                await one(block)
            except Exception as exc:  # counted; the block goes on
                block.error(f"{type(exc).__name__}: {exc}")

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, n))))
    block.cpu = time.process_time() - cpu
    return time.perf_counter() - started


class HttpClient:
    def __init__(self) -> None:
        import aiohttp

        self._aiohttp = aiohttp
        self._session: Any = None

    async def session(self) -> Any:
        if self._session is None:
            aiohttp = self._aiohttp
            # Idle connections are dropped after 2 s, before a server's keep-alive timeout (uvicorn: 5 s)
            # can close one just as it is reused (aiohttp would then fail it: ServerDisconnectedError).
            # Blocks of other targets run in between, so a block may open fresh connections: loopback
            # connects cost ~0.1 ms, the same for every target.
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=2.0, ttl_dns_cache=None)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                                  timeout=aiohttp.ClientTimeout(total=300))
        return self._session

    async def block(self, cmd: dict[str, Any]) -> dict[str, Any]:
        session = await self.session()
        url, body = cmd["url"], cmd["body"].encode()
        headers = {"content-type": "application/json", **cmd.get("headers", {})}
        stream = cmd["stream"]
        result = Block(cmd.get("want_trace_ids", False))

        async def one(block: Block) -> None:
            started = time.perf_counter()
            first = None
            async with session.post(url, data=body, headers=headers) as resp:
                if block.want_trace_ids:
                    trace_id = resp.headers.get("x-opentracy-trace-id")
                    if trace_id:
                        block.trace_ids.append(trace_id)
                if stream:
                    tail = b""
                    async for piece in resp.content.iter_any():
                        if first is None and b"data:" in piece:
                            first = time.perf_counter()
                        tail = (tail + piece)[-64:]
                    ok = resp.status == 200 and tail.rstrip().endswith(b"data: [DONE]")
                    data = tail
                else:
                    data = await resp.read()
                    ok = resp.status == 200 and b'"choices"' in data
            ended = time.perf_counter()
            if not ok:
                block.error(f"HTTP {resp.status}: {data[:200]!r}")
                return
            block.lat.append((ended - started) * 1000.0)
            if stream:
                block.ttft.append(((first or ended) - started) * 1000.0)

        wall = await run_block(cmd["n"], cmd["concurrency"], one, result)
        return _result(result, wall)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


class LitellmClient:
    """Bare ``litellm.acompletion`` in this process: what litellm itself adds, with no server."""

    def __init__(self) -> None:
        os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"  # before the import: no price-list fetch
        import litellm

        litellm.suppress_debug_info = True
        self._litellm = litellm

    async def block(self, cmd: dict[str, Any]) -> dict[str, Any]:
        acompletion = self._litellm.acompletion
        kwargs = dict(cmd["litellm_kwargs"])
        stream = cmd["stream"]
        if stream:
            kwargs.update(stream=True, stream_options={"include_usage": True})
        result = Block(False)

        async def one(block: Block) -> None:
            started = time.perf_counter()
            first = None
            if stream:
                chunks = 0
                response = await acompletion(**kwargs)
                async for _chunk in response:
                    if first is None:
                        first = time.perf_counter()
                    chunks += 1
                ok = chunks > 1
            else:
                response = await acompletion(**kwargs)
                ok = bool(response.choices and response.choices[0].message.content)
            ended = time.perf_counter()
            if not ok:
                block.error(f"bad response: {str(response)[:200]}")
                return
            block.lat.append((ended - started) * 1000.0)
            if stream:
                block.ttft.append(((first or ended) - started) * 1000.0)

        wall = await run_block(cmd["n"], cmd["concurrency"], one, result)
        return _result(result, wall)

    async def close(self) -> None:
        pass


def _result(block: Block, wall: float) -> dict[str, Any]:
    return {"lat": [round(x, 4) for x in block.lat], "ttft": [round(x, 4) for x in block.ttft],
            "errors": block.errors, "error_sample": block.error_sample, "wall": wall,
            "trace_ids": block.trace_ids, "cpu": block.cpu}


async def serve(kind: str) -> None:
    client = HttpClient() if kind == "http" else LitellmClient()
    gc.collect()
    gc.freeze()  # what is loaded by now is never collected: fewer, shorter GC pauses mid-block
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(MARK + json.dumps({"ready": True, "pid": os.getpid()}), flush=True)
    try:
        while line := await reader.readline():
            cmd = json.loads(line)
            if cmd.get("cmd") == "quit":
                break
            out = await client.block(cmd)
            sys.stdout.write(MARK + json.dumps(out) + "\n")
            sys.stdout.flush()
    finally:
        await client.close()


if __name__ == "__main__":
    asyncio.run(serve(sys.argv[1] if len(sys.argv) > 1 else "http"))
