#!/usr/bin/env python
"""Where OpenTracy's CPU goes under load: py-spy on a running ``opentracy serve`` (tracing on).

    python bench/profile.py [--seconds 20] [--concurrency 1,64] [--stream] [--target ot_trace|ot_notrace|sdk|proxy]
    python bench/profile.py --analyse bench/results/profile-<stamp>/json-c1.txt.gz

Starts the emulator, one ``opentracy serve`` and the aiohttp load generator (the same processes as
bench/run.py), warms up, then for each concurrency keeps the server busy while
``py-spy record --nonblocking --gil`` samples it twice: once as collapsed stacks (analysed here) and once
as an SVG flame graph (to look at). Writes both into ``bench/results/profile-<stamp>/`` and prints:

- where the GIL time goes, by phase of a request (litellm's provider call, its cost calculation,
  its logging, OpenTracy's route, the trace callback and writer, ...), in % and ms per request;
- the share of samples per layer (litellm, OpenTracy, FastAPI/Starlette, uvicorn/h11, asyncio,
  pydantic, the trace writer thread, ...), by the innermost frame that belongs to a layer we know;
- the top functions by self time and by inclusive time.

Needs py-spy (``pip install py-spy``; bench-only) and permission to ptrace the server (root here).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import procstat  # noqa: E402
import run as bench  # noqa: E402  (bench/run.py: processes, config, load generator protocol)

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>.*?)(?::(?P<line>\d+))?\)$")

# Layer of a frame by its file path; the first match wins.
LAYERS = [
    ("opentracy.tracing", "/opentracy/tracing/"),
    ("opentracy.store", "/opentracy/store/"),
    ("opentracy.gateway", "/opentracy/gateway/"),
    ("opentracy.routing", "/opentracy/routing/"),
    ("opentracy (other)", "/opentracy/"),
    ("litellm.logging", "/litellm/litellm_core_utils/litellm_logging"),
    ("litellm.streaming", "/litellm/litellm_core_utils/streaming"),
    ("litellm.cost", "/litellm/cost_calculator"),
    ("litellm.http (aiohttp/httpx transport)", "/litellm/llms/custom_httpx/"),
    ("litellm.openai provider", "/litellm/llms/openai/"),
    ("litellm (other)", "/litellm/"),
    ("openai SDK", "/openai/"),
    ("aiohttp", "/aiohttp/"),
    ("httpx/httpcore", "/httpx/"),
    ("httpx/httpcore", "/httpcore/"),
    ("pydantic", "/pydantic/"),
    ("pydantic", "/pydantic_core/"),
    ("fastapi", "/fastapi/"),
    ("starlette", "/starlette/"),
    ("uvicorn", "/uvicorn/"),
    ("h11", "/h11/"),
    ("anyio", "/anyio/"),
    ("clickhouse-connect / chDB", "/clickhouse_connect/"),
    ("clickhouse-connect / chDB", "/chdb/"),
    ("tiktoken/tokenizers", "/tiktoken/"),
    ("asyncio", "/asyncio/"),
    ("json", "/json/"),
    ("logging", "/logging/"),
    ("copy", "/copy.py"),
    ("uuid", "/uuid.py"),
    ("threading/queue", "/threading.py"),
    ("threading/queue", "/queue.py"),
    ("typing", "/typing.py"),
    ("python stdlib", "/lib/python3"),
]


def layer_of(path: str) -> str | None:
    for name, needle in LAYERS:
        if needle in path:
            return name
    return None


# Where a sample's time goes, judged from its whole stack (first rule that matches wins).
PHASES = [
    ("OpenTracy trace record (build, policy, submit)",
     lambda n, f: bool(n & {"GatewayTracer.answered", "GatewayTracer.stream_ended"})),
    ("OpenTracy trace writer thread (encode, chDB insert)", lambda n, f: any(x.startswith("TraceWriter.") for x in n)),
    ("litellm: rebuild the whole stream for logging (stream_chunk_builder)", lambda n, f: "stream_chunk_builder" in n),
    ("litellm: success logging (standard logging payload)",
     lambda n, f: bool(n & {"Logging.async_success_handler", "Logging.dispatch_success_handlers",
                             "LoggingWorker._process_log_task", "_client_async_logging_helper", "Logging.success_handler"})),
    ("litellm: response cost + hidden params", lambda n, f: "update_response_metadata" in n),
    ("litellm: stream, SSE read + parse (openai SDK AsyncStream)",
     lambda n, f: bool(n & {"AsyncStream.__stream__", "AsyncStream.__aiter__"})),
    ("litellm: stream, per-chunk processing (CustomStreamWrapper)", lambda n, f: "CustomStreamWrapper.__anext__" in n),
    ("litellm: provider call (openai SDK, httpx, aiohttp transport)",
     lambda n, f: bool(n & {"_resolve_dispatched_chat_response", "OpenAIChatCompletion.acompletion"})),
    ("litellm: sync completion() in the executor thread", lambda n, f: "_WorkItem.run" in n),
    ("OpenTracy direct path: body via litellm's OpenAI transformation",
     lambda n, f: "DirectOpenAI.prepare" in n),
    ("OpenTracy direct path: HTTP (aiohttp) and SSE/JSON parsing",
     lambda n, f: bool(n & {"DirectOpenAI.complete", "DirectOpenAI.stream", "_chunks"})),
    ("litellm: acompletion set-up (function_setup, Logging, executor hop)",
     lambda n, f: bool(n & {"PublicDispatch.arun", "acompletion"})),
    ("OpenTracy stream relay (stream_events: clean, sse, wait_for)", lambda n, f: "stream_events" in n),
    ("OpenTracy request path (routes, auth, extras, cost, FastAPI below it)",
     lambda n, f: any("/opentracy/" in x and "cli.py" not in x for x in f)),
    ("uvicorn / h11 / Starlette (no OpenTracy frame)",
     lambda n, f: bool(n & {"H11Protocol.data_received", "RequestResponseCycle.run_asgi", "FastAPI.__call__",
                             "StreamingResponse.stream_response", "H11Protocol.on_response_complete"})),
    ("event loop, GIL hand-offs, other", lambda n, f: True),
]


def parse_collapsed(text: str) -> list[tuple[list[tuple[str, str]], int]]:
    stacks = []
    for line in text.splitlines():
        line = line.strip()
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        frames = []
        for raw in stack.split(";"):
            m = FRAME.match(raw)
            frames.append((m.group("func"), m.group("file")) if m else (raw, ""))
        stacks.append((frames, int(count)))
    return stacks


def short_path(path: str) -> str:
    for marker in ("site-packages/", "/opentracy/", "/lib/python3.11/"):
        if marker in path:
            head = "opentracy/" if marker == "/opentracy/" else ""
            return head + path.split(marker, 1)[1]
    return path


def analyse(stacks: list[tuple[list[tuple[str, str]], int]], top: int = 25) -> dict[str, object]:
    total = sum(c for _, c in stacks) or 1
    self_time: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    layers: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    opentracy_inclusive: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        if not frames:
            continue
        func, path = frames[-1]
        self_time[f"{func} ({short_path(path)})"] += count
        seen = set()
        for f, p in frames:
            key = f"{f} ({short_path(p)})"
            if key not in seen:
                seen.add(key)
                inclusive[key] += count
                if "/opentracy/" in p:
                    opentracy_inclusive[key] += count
        # the innermost frame whose layer we know (C extensions show as the Python caller)
        for f, p in reversed(frames):
            name = layer_of(p)
            if name is not None:
                layers[name] += count
                break
        else:
            layers["(unknown)"] += count
        threads[frames[0][0] if frames[0][1] == "" else "main"] += count

    phases: collections.Counter[str] = collections.Counter()
    for frames, count in stacks:
        names = {f for f, _ in frames}
        full = [f"{f} ({p})" for f, p in frames]
        for label, test in PHASES:
            if test(names, full):
                phases[label] += count
                break

    def pct(counter: collections.Counter[str], n: int) -> list[tuple[str, float]]:
        return [(k, round(100.0 * v / total, 1)) for k, v in counter.most_common(n)]

    return {"samples": total, "phases": pct(phases, 40), "layers": pct(layers, 40), "self": pct(self_time, top),
            "inclusive": pct(inclusive, top), "opentracy_inclusive": pct(opentracy_inclusive, top),
            "threads": pct(threads, 10)}


def thread_cpu(pid: int) -> dict[str, tuple[float, float]]:
    """Per thread of ``pid``: CPU seconds (exact) and when sampled, keyed ``"<tid>:<name>"``."""
    now = time.monotonic()
    return {f"{tid}:{name}": (seconds, now) for (tid, name), seconds in procstat.threads(pid).items()}


def thread_shares(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> list[tuple[str, float]]:
    """CPU per thread name over the window, in % of one core (threads of one name summed)."""
    if not after:
        return []
    window = max(t for _, t in after.values()) - min(t for _, t in before.values() or after.values())
    by_name: collections.Counter[str] = collections.Counter()
    for key, (cpu, _) in after.items():
        name = re.sub(r"\d+$", "N", key.split(":", 1)[1])  # asyncio_0, asyncio_1 ... -> asyncio_N
        by_name[name] += cpu - before.get(key, (0.0, 0.0))[0]
    return [(name, round(100.0 * cpu / window, 1)) for name, cpu in by_name.most_common() if cpu > 0]


def print_analysis(title: str, result: dict[str, object]) -> None:
    print(f"\n=== {title}: {result['samples']} samples ===")
    print("-- CPU by thread (/proc, % of one core)")
    for name, share in result.get("thread_cpu_share_of_one_core", []):  # type: ignore[union-attr]
        print(f"  {share:5.1f}%  {name}")
    ms = result.get("gil_ms_per_req")
    print(f"-- where the GIL time goes ({'%' if ms is None else f'% and ms per request of {ms:.2f} ms'})")
    for name, share in result["phases"]:  # type: ignore[union-attr]
        print(f"  {share:5.1f}%" + ("" if ms is None else f"  {share * ms / 100:5.2f} ms") + f"  {name}")
    for section, label in (("layers", "by layer (innermost known frame)"), ("self", "top self"),
                           ("inclusive", "top inclusive"), ("opentracy_inclusive", "OpenTracy frames, inclusive"),
                           ("threads", "threads")):
        print(f"-- {label}")
        for name, share in result[section]:  # type: ignore[union-attr]
            print(f"  {share:5.1f}%  {name}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="py-spy recording per concurrency")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 64])
    parser.add_argument("--stream", action="store_true", help="profile streaming requests instead of JSON")
    parser.add_argument("--target", choices=["ot_trace", "ot_notrace", "sdk", "proxy"], default="ot_trace",
                        help="process to sample: OpenTracy with tracing on/off, the bare-litellm worker, "
                             "or litellm's proxy (for comparison)")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for the OpenTracy server (A/B experiments)")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--delay-ms", type=int, default=0)
    parser.add_argument("--no-gil", dest="gil", action="store_false",
                        help="sample every running thread, not only the GIL holder")
    parser.add_argument("--out", type=Path, help="directory (default bench/results/profile-<stamp>)")
    parser.add_argument("--analyse", type=Path, metavar="STACKS",
                        help="only print the analysis of a saved collapsed-stack file (.txt or .txt.gz)")
    args = parser.parse_args()
    if args.analyse:
        opener = gzip.open if args.analyse.suffix == ".gz" else open
        with opener(args.analyse, "rt") as f:  # type: ignore[operator]
            print_analysis(str(args.analyse), analyse(parse_collapsed(f.read())))
        return 0
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists():
        print("py-spy is not installed: pip install py-spy", file=sys.stderr)
        return 2
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    out_dir = args.out or bench.RESULTS / f"profile-{stamp}"
    out_dir.mkdir(parents=True, exist_ok=True)

    target = args.target
    skips = [x for t in ("ot_trace", "ot_notrace", "proxy", "sdk") if t != target for x in ("--skip", t)]
    run_args = bench.parse_args(["--quick", *skips, "--delay-ms", str(args.delay_ms),
                                 *[x for e in args.server_env for x in ("--server-env", e)]])
    b = bench.Bench(run_args)
    report: dict[str, object] = {"stamp": stamp, "target": target, "stream": args.stream, "runs": {},
                                 "server_env": args.server_env}
    try:
        b.start()
        server = b.procs[target]
        for c in args.concurrency:
            scenario = bench.Scenario(args.stream, c)
            b.block(target, scenario, max(50, 2 * c), None)  # warm-up
            # Measure this setting's rate, then size one block to outlast both recordings.
            t0 = time.monotonic()
            out = b.block(target, scenario, max(100, 4 * c), None)
            rate = len(out["lat"]) / max(1e-3, time.monotonic() - t0)
            n = int(rate * (2 * args.seconds + 6)) + c
            worker, cmd = b.command(target, scenario, n)
            assert worker.popen.stdin is not None
            cpu0, wall0 = procstat.cpu_seconds(procstat.tree(server.pid)), time.monotonic()
            worker.popen.stdin.write(json.dumps(cmd) + "\n")
            worker.popen.stdin.flush()
            time.sleep(2.0)
            name = f"{'stream' if args.stream else 'json'}-c{c}"
            raw, svg = out_dir / f"{name}.txt", out_dir / f"{name}.svg"
            common = [py_spy, "record", "--pid", str(server.pid), "--duration", str(int(args.seconds)),
                      "--rate", str(args.rate), "--nonblocking", "--threads"]
            # --gil: only the thread holding the GIL. The server is one asyncio process, so the GIL
            # is its bottleneck; without it, threads waiting for the GIL (litellm's executor
            # threads waking the loop) show up as if they were busy.
            threads0 = thread_cpu(server.pid)
            subprocess.run([*common, *(["--gil"] if args.gil else []), "--full-filenames", "--format", "raw",
                            "--output", str(raw)], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            threads1 = thread_cpu(server.pid)
            subprocess.run([*common, *(["--gil"] if args.gil else []), "--format", "flamegraph", "--output", str(svg)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            result = worker.reply(900)
            cpu = procstat.cpu_seconds(procstat.tree(server.pid)) - cpu0
            wall = time.monotonic() - wall0
            b.trace_ids.extend(result.get("trace_ids", []))
            analysis = analyse(parse_collapsed(raw.read_text()))
            analysis["thread_cpu_share_of_one_core"] = thread_shares(threads0, threads1)
            with open(raw, "rb") as src, gzip.open(raw.with_suffix(".txt.gz"), "wb") as dst:
                shutil.copyfileobj(src, dst)
            raw.unlink()
            ok = len(result["lat"])
            # GIL-held time per request: samples / rate over the requests served while recording.
            analysis["gil_ms_per_req"] = 1000.0 * (analysis["samples"] / args.rate) / max(1.0, ok / result["wall"] * int(args.seconds))
            analysis.update({"requests": ok, "errors": result["errors"], "rps": ok / result["wall"],
                             "server_cpu_ms_per_req": 1000.0 * cpu / max(1, ok),
                             "server_cpu_share_of_one_core": cpu / wall,
                             "p50_ms": bench.percentile(result["lat"], 50)})
            report["runs"][name] = analysis  # type: ignore[index]
            print_analysis(f"{name}: {ok} req at {analysis['rps']:.0f} req/s, p50 {analysis['p50_ms']:.2f} ms, "
                           f"server CPU {analysis['server_cpu_ms_per_req']:.2f} ms/req "
                           f"({100 * analysis['server_cpu_share_of_one_core']:.0f}% of a core)", analysis)
    finally:
        for name in list(b.procs):
            b.procs.pop(name).stop()
        shutil.rmtree(b.work, ignore_errors=True)
    (out_dir / "summary.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out_dir}/ (collapsed stacks *.txt.gz, flame graphs *.svg, summary.json)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
