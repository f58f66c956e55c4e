#!/usr/bin/env python
"""One benchmark command, one run: OpenTracy against the upstream, litellm's proxy and bare litellm.

    python bench/run.py [--quick] [--delay-ms 0] [--requests N] [--out bench/results/<stamp>.json]

Run from the repo root with the dev venv active (``tests.emulator`` must import). In one run it:

1. starts the loopback provider emulator (``tests.emulator``) in its own process, answering after
   ``--delay-ms``;
2. starts, one at a time and timing each from process start to the first healthy ``/health``:
   (b) ``opentracy serve`` with tracing on (embedded chDB in a fresh temp ``OPENTRACY_DATA_DIR``),
   (c) ``opentracy serve`` with ``OPENTRACY_TRACING=false``,
   (d) a litellm proxy (``litellm --config``) from its own venv (``tests/proxy_venv.py``'s cache,
       else ``.cache/bench-litellm-proxy-venv``), and
   (e) a worker process that calls ``litellm.acompletion`` in-process (bare litellm, no server);
   (a) is the emulator itself, called directly;
3. for each scenario (JSON and streaming, at each concurrency) runs every target in small blocks,
   round-robin in a rotating order, so drift of the machine hits all targets alike;
4. reports added latency over (a) (p50/p95/p99; for streams time to first event and total),
   throughput, server CPU per request, peak RSS, start-up time, and checks that every request
   through (b) left exactly one trace in the store;
5. measures what tracing costs on fresh (b)/(c) process pairs, requests alternating between the two
   engines (``interleaved.py``: the blocks of step 3 cannot resolve a 5 % question);
6. prints one table with the ratios of OpenTracy to (d) and (e), and writes it as JSON and a PNG
   plot into bench/results/.

See bench/README.md for what each number means and how the client is kept out of the measurement.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import queue
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import interleaved
from procstat import cpu_seconds, live_cpu_seconds, peak_rss_mb, thread_cpu, tree
from report import SHORT, plot, summary, table, verdicts

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
RESULTS = BENCH / "results"
MARK = "@@BENCH "

UPSTREAM_MODEL = "gpt-4o-mini"  # what the emulator sees: a real name, so litellm finds its price as in production
MODEL = "bench"  # the model_list name clients ask the servers for
UPSTREAM_KEY = "sk-bench-upstream-key"
ENGINE_KEY = "sk-bench-engine-key-0123456789abcdef"
MASTER_KEY = "sk-bench-master-key-0123456789abcdef0123456789abcdef"
ADMIN_KEY = "sk-bench-admin-key-0123456789abcdef"
# A short chat: ~40 words of prompt; the emulator answers with ~40 words (~40 stream chunks).
MESSAGES = [
    {"role": "system", "content": "You are a concise assistant. Answer in one short paragraph."},
    {"role": "user", "content": "Our nightly import job started failing after the upgrade; the log says the "
                                "connection pool is exhausted. What should I check first, and in which order?"},
]

TARGETS = ("direct", "ot_trace", "ot_notrace", "proxy", "sdk")
LABELS = {
    "direct": "(a) upstream direct",
    "ot_trace": "(b) OpenTracy tracing on",
    "ot_notrace": "(c) OpenTracy tracing off",
    "proxy": "(d) litellm proxy",
    "sdk": "(e) litellm.acompletion",
}
SERVERS = ("ot_trace", "ot_notrace", "proxy", "sdk")  # targets with a process of their own to measure


# --------------------------------------------------------------------------------------------------
# processes


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never $HTTP_PROXY


def http_get(url: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with _NO_PROXY.open(request, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, ""


class Proc:
    """A child process; with ``marked=True`` it talks JSON lines (``@@BENCH ...``) on stdin/stdout."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: Path, *,
                 marked: bool = False, cwd: Path = REPO) -> None:
        self.name, self.log_path, self.marked = name, log_path, marked
        self.log = open(log_path, "w")
        self.started = time.monotonic()
        self.popen = subprocess.Popen(
            argv, cwd=cwd, env=env, text=True, start_new_session=True,
            stdin=subprocess.PIPE if marked else subprocess.DEVNULL,
            stdout=subprocess.PIPE if marked else self.log, stderr=self.log)
        self.replies: queue.Queue[Any] = queue.Queue()
        if marked:
            threading.Thread(target=self._read, name=f"read-{name}", daemon=True).start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            if line.startswith(MARK):
                self.replies.put(json.loads(line[len(MARK):]))
            else:
                self.log.write(line)
        self.replies.put(EOFError(f"{self.name} closed its output"))

    def reply(self, timeout: float) -> Any:
        try:
            value = self.replies.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"{self.name}: no answer in {timeout:.0f}s; log: {self.log_path}\n{self.tail()}") from None
        if isinstance(value, Exception):
            raise RuntimeError(f"{self.name} exited ({self.popen.poll()}); log: {self.log_path}\n{self.tail()}")
        return value

    def ask(self, command: Any, timeout: float = 600.0) -> Any:
        assert self.popen.stdin is not None
        self.popen.stdin.write((command if isinstance(command, str) else json.dumps(command)) + "\n")
        self.popen.stdin.flush()
        return self.reply(timeout)

    def tail(self, lines: int = 30) -> str:
        self.log.flush()
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.popen.poll() is None:
            if self.marked and self.popen.stdin is not None:
                try:
                    self.popen.stdin.write("quit\n" if self.name == "emulator" else '{"cmd": "quit"}\n')
                    self.popen.stdin.flush()
                    self.popen.wait(5)
                except (OSError, subprocess.TimeoutExpired):
                    pass
            if self.popen.poll() is None:
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)  # its own session: only what it started
                self.popen.wait()
        self.log.close()
        return self.popen.returncode


def wait_healthy(proc: Proc, url: str, timeout: float) -> float:
    """Seconds from process start to the first 200 on ``url``."""
    deadline = proc.started + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.tail()}")
        try:
            if http_get(url, timeout=1.0)[0] == 200:
                return time.monotonic() - proc.started
        except OSError:
            pass
        time.sleep(0.02)
    proc.stop()
    raise RuntimeError(f"{proc.name} was not healthy at {url} after {timeout:.0f}s:\n{proc.tail()}")


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().endswith("_PROXY")}
    env.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True", "PYTHONUNBUFFERED": "1",
                "NO_PROXY": "127.0.0.1,localhost", "OPENAI_API_KEY": UPSTREAM_KEY})
    for name in list(env):
        if name.startswith("OPENTRACY_"):
            del env[name]  # the developer's own settings must not change what is measured
    return env


def proxy_litellm(log: Callable[[str], None]) -> tuple[Path, str]:
    """A venv with ``litellm[proxy]``: tests/proxy_venv.py's cached one if it imports, else our own."""
    try:
        sys.path.insert(0, str(REPO))
        from tests.proxy_venv import INSTALLABLE_PROXY, ensure_proxy_venv  # type: ignore[import-not-found]
    except ImportError:
        venv = REPO / ".cache" / "bench-litellm-proxy-venv"
        litellm_bin = venv / "bin" / "litellm"
        if not litellm_bin.exists():
            log(f"building a litellm proxy venv in {venv} (minutes, once)")
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
            subprocess.run([str(venv / "bin" / "pip"), "install", "--disable-pip-version-check", "-q",
                            "litellm[proxy]==1.106.12"], check=True)
        version = subprocess.run([str(venv / "bin" / "python"), "-c",
                                  "import importlib.metadata as m; print(m.version('litellm'))"],
                                 capture_output=True, text=True, check=True).stdout.strip()
        return litellm_bin, version
    venv = ensure_proxy_venv(INSTALLABLE_PROXY, log=log)
    return venv.litellm, venv.litellm_version


# --------------------------------------------------------------------------------------------------
# statistics


def percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


@dataclass
class Samples:
    lat: list[float] = field(default_factory=list)
    ttft: list[float] = field(default_factory=list)
    ok: int = 0
    errors: int = 0
    error_sample: list[str] = field(default_factory=list)
    wall: float = 0.0
    client_cpu: float = 0.0
    upstream_cpu: float = 0.0
    busy: float = 0.0  # seconds this target was being loaded inside the scenario's window
    server_cpu: float | None = None
    server_threads_cpu: dict[str, float] = field(default_factory=dict)  # OpenTracy only: by THREAD_KINDS
    round_p50: list[float] = field(default_factory=list)
    round_ttft_p50: list[float] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------
# the run


@dataclass
class Scenario:
    stream: bool
    concurrency: int

    @property
    def name(self) -> str:
        return f"{'stream' if self.stream else 'json'} c={self.concurrency}"


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="opentracy-bench-"))
        self.procs: dict[str, Proc] = {}
        self.startup: dict[str, list[float]] = {t: [] for t in SERVERS}
        self.idle_rate: dict[str, float] = {}
        self.idle_thread_rate: dict[str, dict[str, float]] = {}
        self.idle_after: dict[str, dict[str, float]] = {}  # per scenario, measured right after it
        self.trace_ids: list[str] = []
        self.results: dict[str, dict[str, Samples]] = {}
        self.notes: list[str] = []
        self.skip = set(args.skip)
        self.targets = [t for t in TARGETS if t not in self.skip]
        self.proxy_version = ""
        self.urls_ot: dict[str, str] = {}
        # Which OpenTracy slot traces: (b) in the main run; either in the tracing pairs (see run_pair).
        self.traced = "ot_trace"
        self.pairs: list[dict[str, Any]] = []  # per tracing pair: the traced slot, interleaved.summarize by scenario

    def log(self, text: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    # -- set-up ------------------------------------------------------------------------------------

    def start(self) -> None:
        env = base_env()
        self.log(f"work dir {self.work}")
        emu = Proc("emulator", [sys.executable, str(BENCH / "_emulator.py"), "--delay-ms", str(self.args.delay_ms)],
                   env, self.work / "emulator.log", marked=True)
        self.procs["emulator"] = emu
        info = emu.reply(60)
        self.upstream = info["openai_base"]
        self.log(f"emulator at {info['url']} (delay {self.args.delay_ms} ms)")
        config = {"model_list": [{"model_name": MODEL, "litellm_params": {
            "model": f"openai/{UPSTREAM_MODEL}", "api_base": self.upstream, "api_key": UPSTREAM_KEY}}]}
        self.ot_config = self.work / "opentracy.yaml"
        self.ot_config.write_text(json.dumps(config, indent=2))  # JSON is YAML
        # The proxy refuses to start without a master key (1.108+), as it should; OpenTracy gets an
        # engine key too, so both authenticate every request.
        self.proxy_config = self.work / "proxy.yaml"
        self.proxy_config.write_text(json.dumps({**config, "general_settings": {"master_key": MASTER_KEY}}, indent=2))

        if "proxy" not in self.skip:
            self.log("litellm proxy venv (built once, cached under .cache/)")
            self.proxy_bin, self.proxy_version = proxy_litellm(self.log)

        runs = self.args.startup_runs
        for target in SERVERS:
            if target in self.skip:
                continue
            for i in range(runs):
                proc, seconds = self._start_server(target, final=(i == runs - 1))
                self.startup[target].append(seconds)
                self.log(f"{LABELS[target]}: healthy after {seconds:.2f}s (start {i + 1}/{runs})")
                if i < runs - 1:
                    proc.stop()
                else:
                    self.procs[target] = proc
        self.loadgen = Proc("loadgen", [sys.executable, str(BENCH / "_loadgen.py"), "http"], env,
                            self.work / "loadgen.log", marked=True)
        self.loadgen.reply(60)
        self.procs["loadgen"] = self.loadgen
        self.emulator_check(startup=True)

    def _start_server(self, target: str, final: bool) -> tuple[Proc, float]:
        env = base_env()
        port = free_port()
        name = f"{target}-{port}"
        if target in ("ot_trace", "ot_notrace"):
            data_dir = self.work / name
            env.update({"OPENTRACY_DATA_DIR": str(data_dir), "OPENTRACY_API_KEYS": f"bench:{ENGINE_KEY}",
                        "OPENTRACY_ADMIN_KEYS": f"bench-admin:{ADMIN_KEY}",
                        "OPENTRACY_TRACING": "true" if target == self.traced else "false"})
            env.update(dict(item.split("=", 1) for item in self.args.server_env))
            env.update(dict(item.split(":", 1)[1].split("=", 1) for item in self.args.env_for
                            if item.split(":", 1)[0] == target))
            argv = [sys.executable, "-m", "opentracy.cli", "serve", "--config", str(self.ot_config),
                    "--port", str(port), "--log-level", "warning"]
            proc = Proc(name, argv, env, self.work / f"{name}.log")
            seconds = wait_healthy(proc, f"http://127.0.0.1:{port}/health", 120)
            if final:
                self.urls_ot[target] = f"http://127.0.0.1:{port}"
                if target == "ot_trace" and self.traced == "ot_trace":
                    self.trace_data_dir = data_dir
        elif target == "proxy":
            argv = [str(self.proxy_bin), "--config", str(self.proxy_config), "--host", "127.0.0.1",
                    "--port", str(port)]
            proc = Proc(name, argv, env, self.work / f"{name}.log", cwd=self.work)
            seconds = wait_healthy(proc, f"http://127.0.0.1:{port}/health/liveliness", 240)
            if final:
                self.url_proxy = f"http://127.0.0.1:{port}"
        else:  # sdk: a worker that imports litellm and is then ready to call it
            proc = Proc(name, [sys.executable, str(BENCH / "_loadgen.py"), "litellm"], env,
                        self.work / f"{name}.log", marked=True)
            proc.reply(120)
            seconds = time.monotonic() - proc.started
        return proc, seconds

    # -- one block ----------------------------------------------------------------------------------

    def command(self, target: str, scenario: Scenario, n: int) -> tuple[Proc, dict[str, Any]]:
        body: dict[str, Any] = {"model": MODEL, "messages": MESSAGES}
        headers: dict[str, str] = {}
        if target == "direct":
            body["model"] = UPSTREAM_MODEL
            headers["authorization"] = f"Bearer {UPSTREAM_KEY}"
            url = f"{self.upstream}/chat/completions"
        elif target in ("ot_trace", "ot_notrace"):
            headers["authorization"] = f"Bearer {ENGINE_KEY}"
            url = f"{self.urls_ot[target]}/v1/chat/completions"
        elif target == "proxy":
            headers["authorization"] = f"Bearer {MASTER_KEY}"
            url = f"{self.url_proxy}/v1/chat/completions"
        else:
            kwargs = {"model": f"openai/{UPSTREAM_MODEL}", "api_base": self.upstream, "api_key": UPSTREAM_KEY,
                      "messages": MESSAGES}
            return self.procs["sdk"], {"cmd": "run", "litellm_kwargs": kwargs, "stream": scenario.stream,
                                       "concurrency": scenario.concurrency, "n": n}
        if scenario.stream:
            body["stream"] = True
            if target == "direct":  # what OpenTracy asks the upstream for, so (a) does the same work
                body["stream_options"] = {"include_usage": True}
        return self.loadgen, {"cmd": "run", "url": url, "headers": headers, "body": json.dumps(body),
                              "stream": scenario.stream, "concurrency": scenario.concurrency, "n": n,
                              "want_trace_ids": target == "ot_trace" and self.traced == "ot_trace"}

    def block(self, target: str, scenario: Scenario, n: int, samples: Samples | None) -> dict[str, Any]:
        worker, cmd = self.command(target, scenario, n)
        emu_pid = self.procs["emulator"].pid
        e0, t0 = cpu_seconds([emu_pid]), time.monotonic()
        out = worker.ask(cmd, timeout=900)
        t1, e1 = time.monotonic(), cpu_seconds([emu_pid])
        self.trace_ids.extend(out.get("trace_ids", []))
        if samples is not None:
            samples.lat += out["lat"]
            samples.ttft += out["ttft"]
            samples.ok += len(out["lat"])
            samples.errors += out["errors"]
            samples.error_sample = (samples.error_sample + out["error_sample"])[:5]
            samples.wall += out["wall"]
            samples.busy += t1 - t0
            if target != "sdk":  # the sdk worker is the "server": its CPU is counted there
                samples.client_cpu += out["cpu"]
            samples.upstream_cpu += e1 - e0
            samples.round_p50.append(percentile(out["lat"], 50))
            if out["ttft"]:
                samples.round_ttft_p50.append(percentile(out["ttft"], 50))
        if out["errors"]:
            self.log(f"  {target} {scenario.name}: {out['errors']} errors, e.g. {out['error_sample'][:1]}")
        self.emulator_check()
        return out

    def emulator_check(self, startup: bool = False) -> None:
        """Fetch (and empty) the emulator's request log; complain once about wrong-shaped requests.

        Called once after the start-ups: litellm's proxy probes ``GET {api_base}/models`` when it
        starts (an endpoint the emulator does not serve); that is recorded apart, as not measured.
        """
        stats = self.procs["emulator"].ask("stats", timeout=30)
        if startup:
            self.startup_violations = stats["sample"]
            self._violations_before = stats["violations"]
            return
        stats = {**stats, "violations": stats["violations"] - getattr(self, "_violations_before", 0),
                 "startup_violations": getattr(self, "startup_violations", [])}
        if stats["violations"] and not getattr(self, "_violation_logged", False):
            self._violation_logged = True
            self.log(f"EMULATOR VIOLATIONS: {stats['sample']}")
        self.emulator_stats = stats

    # -- tracing: wait until (b) has written every trace it owes --------------------------------------

    def metrics(self) -> dict[str, float]:
        status, text = http_get(f"{self.urls_ot[self.traced]}/metrics", timeout=5)
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                try:
                    values[name] = values.get(name, 0.0) + float(value)
                except ValueError:
                    pass
        return values

    def drain(self, timeout: float = 30.0) -> dict[str, float]:
        """Have (b) write out its open batch (a read through the admin API flushes first, as for any user)
        and wait until every trace it owes is written."""
        if "ot_trace" in self.skip:
            return {}
        deadline = time.monotonic() + timeout
        untraced = "ot_notrace" if self.traced == "ot_trace" else "ot_trace"
        owed = len(self.trace_ids) if self.traced == "ot_trace" else 0  # trace ids are collected from (b) only
        for target in (self.traced, untraced):  # the same request to both (the untraced one answers 404)
            if target in self.urls_ot:
                http_get(f"{self.urls_ot[target]}/admin/traces?last=0", timeout=10,
                         headers={"authorization": f"Bearer {ADMIN_KEY}"})
        while True:
            m = self.metrics()
            if untraced in self.urls_ot:  # the same polling load on the other, so CPU per request stays comparable
                http_get(f"{self.urls_ot[untraced]}/metrics", timeout=5)
            queued = m.get("opentracy_traces_queued_total", 0)
            done = m.get("opentracy_traces_written_total", 0) + m.get("opentracy_traces_spooled_total", 0)
            dropped = sum(v for k, v in m.items() if k.startswith("opentracy_traces_dropped_total"))
            if (queued + dropped >= owed and done + dropped >= queued
                    and m.get("opentracy_trace_queue_depth", 0) == 0) or time.monotonic() > deadline:
                return m
            time.sleep(0.05)

    # -- a scenario: warm-up, then interleaved blocks -------------------------------------------------

    def scenario(self, scenario: Scenario) -> None:
        args, targets = self.args, self.targets
        block = max(args.block_min, scenario.concurrency * args.block_factor)
        n_total = max(scenario.concurrency, args.stream_requests if scenario.stream else args.requests)
        rounds = max(1, math.ceil(n_total / block))
        self.log(f"{scenario.name}: {n_total} requests per target, {rounds} round(s) of {min(block, n_total)}")
        for target in targets:  # warm-up: one wave at this concurrency (connections, pools)
            self.block(target, scenario, max(10, scenario.concurrency), None)
        self.drain()
        results = {t: Samples() for t in targets}
        servers = [t for t in SERVERS if t in targets]
        pids = {t: tree(self.procs[t].pid) for t in servers}
        cpu0 = {t: cpu_seconds(pids[t]) for t in servers}
        threads0 = {t: thread_cpu(self.procs[t].pid) for t in servers if t.startswith("ot_")}
        window0 = time.monotonic()
        sent = 0
        for r in range(rounds):
            n = min(block, n_total - sent)
            order = targets[r % len(targets):] + targets[:r % len(targets)]
            for target in order:
                self.block(target, scenario, n, results[target])
            sent += n
        self.drain()
        time.sleep(0.2)  # litellm's logging worker finishes its last callbacks
        window = time.monotonic() - window0
        used = {t: cpu_seconds(pids[t]) - cpu0[t] for t in servers}
        threads = {t: {k: v - threads0[t][k] for k, v in thread_cpu(self.procs[t].pid).items()} for t in threads0}
        # The background rate after load (chDB merging what was just written) can differ from the one
        # before it; the time a server was not loaded is charged at the mean of the two.
        after = self.idle_rates(self.args.idle_seconds / 3, windows=1)
        self.idle_after[scenario.name] = after
        for t in servers:
            rate = (self.idle_rate.get(t, 0.0) + after.get(t, 0.0)) / 2
            idle = max(0.0, window - results[t].busy)
            results[t].server_cpu = max(0.0, used[t] - rate * idle)
            if t in threads:  # idle time charged per kind at the rate measured before the run
                rates = self.idle_thread_rate.get(t, {})
                results[t].server_threads_cpu = {k: max(0.0, v - rates.get(k, 0.0) * idle)
                                                 for k, v in threads[t].items()}
        self.results[scenario.name] = results
        line = "  ".join(f"{SHORT[t]} p50 {percentile(results[t].lat, 50):.2f}ms" for t in targets)
        self.log(f"  {line}")

    def measure_idle(self, seconds: float) -> None:
        """Each server's CPU rate while nobody loads it, before any scenario (see :meth:`idle_rates`)."""
        kinds0 = {t: thread_cpu(self.procs[t].pid) for t in SERVERS if t in self.targets and t.startswith("ot_")}
        t0 = time.monotonic()
        self.idle_rate = self.idle_rates(seconds)
        elapsed = time.monotonic() - t0
        self.idle_thread_rate = {t: {k: max(0.0, v - kinds0[t][k]) / elapsed
                                     for k, v in thread_cpu(self.procs[t].pid).items()} for t in kinds0}
        for t, rate in self.idle_rate.items():
            if rate > 0.02:
                self.log(f"{LABELS[t]} uses {100 * rate:.0f}% of a core while idle")

    def idle_rates(self, seconds: float, windows: int = 3) -> dict[str, float]:
        """CPU seconds per second of each server while nobody loads it (chDB's background threads wake
        up every few hundred ms): the mean of a few windows, exact (:func:`live_cpu_seconds`). Shown as
        rows; subtracted from a scenario's CPU for the time a server was not being loaded (it is not a
        per-request cost)."""
        servers = [t for t in SERVERS if t in self.targets]
        pids = {t: tree(self.procs[t].pid) for t in servers}
        rates: dict[str, list[float]] = {t: [] for t in servers}
        for _ in range(windows):
            before = {t: live_cpu_seconds(pids[t]) for t in servers}
            t0 = time.monotonic()
            time.sleep(seconds / windows)
            elapsed = time.monotonic() - t0
            for t in servers:
                rates[t].append(max(0.0, (live_cpu_seconds(pids[t]) - before[t]) / elapsed))
        return {t: sum(rates[t]) / len(rates[t]) for t in servers}

    # -- the trace check --------------------------------------------------------------------------

    def check_traces(self) -> dict[str, Any]:
        metrics = self.drain(timeout=60)
        proc = self.procs.pop("ot_trace")
        code = proc.stop(timeout=60)
        chdb_dir = self.trace_data_dir / "chdb"
        script = ("import json, sys, clickhouse_connect\n"
                  "c = clickhouse_connect.get_client(interface='chdb', path=sys.argv[1])\n"
                  "rows = c.query('SELECT trace_id, count(), any(status) FROM opentracy_traces "
                  "GROUP BY trace_id').result_rows\n"
                  "print(json.dumps([[r[0], r[1], r[2]] for r in rows]))\n")
        out = subprocess.run([sys.executable, "-c", script, str(chdb_dir)], capture_output=True, text=True,
                             env=base_env(), timeout=300)
        if out.returncode != 0:
            return {"ok": False, "error": out.stderr[-2000:]}
        stored = {row[0]: row for row in json.loads(out.stdout.strip().splitlines()[-1])}
        sent = self.trace_ids
        sent_set = set(sent)
        missing = [t for t in sent_set if t not in stored]
        duplicated = [t for t, row in stored.items() if row[1] > 1]
        unexpected = [t for t in stored if t not in sent_set]
        not_ok = [t for t, row in stored.items() if row[2] != "ok"]
        dropped = sum(v for k, v in metrics.items() if k.startswith("opentracy_traces_dropped_total"))
        return {"ok": not missing and not duplicated and not unexpected and len(sent) == len(sent_set),
                "requests": len(sent), "distinct_trace_ids": len(sent_set), "stored": len(stored),
                "missing": len(missing), "duplicated": len(duplicated), "unexpected": len(unexpected),
                "not_ok_status": len(not_ok), "dropped_metric": dropped, "engine_exit_code": code,
                "examples_missing": missing[:3]}

    # -- all of it ----------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        started = time.time()
        load_before = os.getloadavg()
        try:
            self.start()
            scenarios = [Scenario(stream, c) for stream in (False, True) for c in self.args.concurrency]
            # A first few calls of each kind before the idle measurement: first calls build clients.
            for s in scenarios:
                for t in self.targets:
                    self.block(t, Scenario(s.stream, 1), 5, None)
            self.drain()
            self.measure_idle(self.args.idle_seconds)
            for s in scenarios:
                self.scenario(s)
            rss = {t: peak_rss_mb(tree(self.procs[t].pid)) for t in SERVERS if t in self.targets}
            traces = self.check_traces() if "ot_trace" in self.targets else None
            if {"ot_trace", "ot_notrace"} <= set(self.targets):
                for k in range(self.args.pairs):  # the traced slot alternates: (b), (c), (b), ...
                    self.run_pair(scenarios, "ot_notrace" if k % 2 else "ot_trace", k + 1)
        finally:
            for name in list(self.procs):
                self.procs.pop(name).stop()
        report = self.report(scenarios, rss, traces, started, load_before)
        if not self.args.keep:
            shutil.rmtree(self.work, ignore_errors=True)
        return report

    def run_pair(self, scenarios: list[Scenario], traced: str, number: int) -> None:
        """What tracing costs, on a fresh (b)/(c) pair whose ``traced`` slot traces: each client lane sends
        a request to one engine, then the same to the other (``interleaved.py``), and CPU per request
        is compared chunk by chunk.

        Why fresh pairs, the traced slot alternating: two fresh engines configured alike differ by up to
        ±4 % in their own CPU per request (start order, memory layout), as much as the target; each
        pair is one draw of that, and the figure reported is the mean over pairs (session 12).
        """
        for target in ("ot_trace", "ot_notrace"):
            if target in self.procs:
                self.procs.pop(target).stop()
        self.traced = traced
        for target in ("ot_trace", "ot_notrace"):
            self.procs[target], _ = self._start_server(target, final=True)
        chunks, requests = (4, 100) if self.args.quick else (20, 400)
        self.log(f"tracing pair {number} of {self.args.pairs}: fresh processes, {SHORT[traced]}'s slot traces, "
                 f"requests alternating between the two")
        results = {s.name: self.tracing_cost(s, chunks, requests, swap=traced == "ot_notrace") for s in scenarios}
        self.pairs.append({"traced": traced, "scenarios": results})

    def tracing_cost(self, scenario: Scenario, chunks: int, requests: int, swap: bool) -> dict[str, Any]:
        """``interleaved.summarize`` of one scenario on the running (b)/(c) pair, requests alternating
        between them, the scenario paying for writing out its own rows; ``swap``: (c)'s slot traces."""
        urls = {t: self.urls_ot[t] + "/v1/chat/completions" for t in interleaved.SLOTS}
        pids = {t: self.procs[t].pid for t in interleaved.SLOTS}
        flush = {t: (f"{self.urls_ot[t]}/admin/traces?last=0", {"authorization": f"Bearer {ADMIN_KEY}"})
                 for t in interleaved.SLOTS}
        body = {"model": MODEL, "messages": MESSAGES, **({"stream": True} if scenario.stream else {})}
        samples = asyncio.run(interleaved.measure(
            urls, pids, body, {"authorization": f"Bearer {ENGINE_KEY}"}, scenario.concurrency, chunks,
            interleaved.per_lane(requests, scenario.concurrency, scenario.stream), flush))
        if swap:  # name the samples by what the engine did, not by its slot
            samples = {"ot_trace": samples["ot_notrace"], "ot_notrace": samples["ot_trace"]}
        result = interleaved.summarize(samples)
        line = result["all"]
        self.log(f"  {scenario.name}: traced {line['traced_ms']:.3f} vs {line['untraced_ms']:.3f} ms CPU a request, "
                 f"{line['diff_us']:+.1f} µs (se {line['se_us']:.1f}) = {100 * line['overhead']:+.1f} %")
        return result

    def report(self, scenarios: list[Scenario], rss: dict[str, float], traces: dict[str, Any] | None,
               started: float, load_before: tuple[float, ...]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "stamp": datetime.fromtimestamp(started, timezone.utc).strftime("%Y%m%dT%H%M%SZ"),
            "duration_s": round(time.time() - started, 1),
            "args": {k: v for k, v in vars(self.args).items() if k != "out"},
            "machine": machine_info(load_before),
            "versions": versions(self.proxy_version),
            "targets": {t: LABELS[t] for t in self.targets},
            "scenarios": {},
            "startup_s": {t: {"median": percentile(v, 50), "runs": [round(x, 3) for x in v]}
                          for t, v in self.startup.items() if v},
            "peak_rss_mb": {t: round(v, 1) for t, v in rss.items()},
            "idle_cpu_rate": self.idle_rate,
            "idle_cpu_rate_after": self.idle_after,
            "traces": traces,
            "emulator": getattr(self, "emulator_stats", {}),
            # What tracing costs, interleaved, per fresh (b)/(c) pair (run_pair).
            "tracing_pairs": self.pairs,
        }
        for s in scenarios:
            res = self.results[s.name]
            direct = res.get("direct")
            entry: dict[str, Any] = {}
            for t, smp in res.items():
                stats: dict[str, Any] = {"ok": smp.ok, "errors": smp.errors, "error_sample": smp.error_sample,
                                         "throughput_rps": smp.ok / smp.wall if smp.wall else None,
                                         "server_cpu_ms_per_req": (smp.server_cpu / smp.ok * 1000.0
                                                                   if smp.server_cpu is not None and smp.ok else None),
                                         "client_cpu_ms_per_req": (smp.client_cpu / smp.ok * 1000.0
                                                                   if smp.ok and t != "sdk" else None),
                                         "upstream_cpu_ms_per_req": smp.upstream_cpu / smp.ok * 1000.0 if smp.ok else None}
                if smp.server_threads_cpu and smp.ok:
                    stats["server_threads_cpu_ms_per_req"] = {k: v / smp.ok * 1000.0
                                                              for k, v in smp.server_threads_cpu.items()}
                metrics = [("total", smp.lat, direct.lat if direct else [])]
                if s.stream:
                    metrics.insert(0, ("ttft", smp.ttft, direct.ttft if direct else []))
                for name, values, base in metrics:
                    for q in (50, 95, 99):
                        value = percentile(values, q)
                        stats[f"{name}_p{q}_ms"] = value
                        stats[f"{name}_added_p{q}_ms"] = value - percentile(base, q) if base else None
                rounds = smp.round_ttft_p50 if s.stream else smp.round_p50
                base_rounds = (direct.round_ttft_p50 if s.stream else direct.round_p50) if direct else []
                stats["round_p50_ms"] = [round(x, 3) for x in rounds]
                if base_rounds and len(base_rounds) == len(rounds):
                    added = [x - y for x, y in zip(rounds, base_rounds)]
                    stats["round_added_p50_ms_min_max"] = [round(min(added), 3), round(max(added), 3)]
                entry[t] = stats
            out["scenarios"][s.name] = entry
        out["verdicts"] = verdicts(out)
        return out


# --------------------------------------------------------------------------------------------------
# the run's facts: machine, versions (the table, verdicts and plot are in report.py)


def machine_info(load_before: tuple[float, ...]) -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = 0
    try:
        mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "mem_mib": mem, "python": platform.python_version(),
            "platform": platform.platform(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
            "cpu_pressure_after": cpu_pressure()}


def cpu_pressure() -> str:
    """/proc/pressure/cpu "some" line: share of time runnable tasks waited for a CPU (other load)."""
    try:
        return Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return ""


def versions(proxy_version: str) -> dict[str, str]:
    import importlib.metadata as md

    found = {"litellm_proxy": proxy_version}
    for name in ("litellm", "opentracy", "fastapi", "uvicorn", "aiohttp", "chdb"):
        try:
            found[name] = md.version(name)
        except md.PackageNotFoundError:
            found[name] = ""
    try:
        found["git"] = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True,
                                      text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        found["git"] = ""
    return found


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="OpenTracy benchmark: one command, one run, ratios.")
    parser.add_argument("--quick", action="store_true", help="small CI smoke run (< 2 min)")
    parser.add_argument("--delay-ms", type=int, default=0, help="emulator latency before every answer")
    parser.add_argument("--requests", type=int, help="measured requests per target in each JSON scenario "
                                                     "(default 1200, --quick 60)")
    parser.add_argument("--stream-requests", type=int, help="the same for streaming scenarios (default "
                                                            "--requests / 4: a stream is ~40 chunks)")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 64],
                        help="comma-separated concurrencies (default 1,64)")
    parser.add_argument("--out", type=Path, help="JSON path (default bench/results/<stamp>.json; PNG beside it)")
    parser.add_argument("--skip", action="append", default=[], choices=[t for t in TARGETS if t != "direct"],
                        help="leave a target out (repeatable)")
    parser.add_argument("--startup-runs", type=int, help="start-ups timed per server (median; default 3, --quick 1)")
    parser.add_argument("--server-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra environment for both OpenTracy servers, for A/B runs (repeatable), "
                             "e.g. PYTHONPATH=/tmp/uvloop-overlay")
    parser.add_argument("--env-for", action="append", default=[], metavar="TARGET:KEY=VALUE",
                        help="extra environment for one OpenTracy server (ot_trace or ot_notrace), applied "
                             "last: an interleaved A/B of an engine setting, e.g. "
                             "ot_notrace:OPENTRACY_TRACING=true ot_notrace:PYTHONPATH=/tmp/uvloop-overlay")
    parser.add_argument("--pairs", type=int, help="fresh (b)/(c) process pairs the tracing overhead is measured "
                        "on, requests alternating between the two, the traced slot alternating (default 4, "
                        "--quick 1)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir with configs and server logs")
    args = parser.parse_args(argv)
    args.requests = args.requests or (60 if args.quick else 1200)
    args.stream_requests = args.stream_requests or max(1, args.requests // 4)
    args.startup_runs = args.startup_runs or (1 if args.quick else 3)
    args.block_factor = 2 if args.quick else 4  # requests per block = concurrency x this (at least block_min)
    args.block_min = 25 if args.quick else 50
    args.idle_seconds = 3.0 if args.quick else 9.0
    args.pairs = max(1, args.pairs or (1 if args.quick else 4))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.chdir(REPO)
    bench = Bench(args)
    report = bench.run()
    out = args.out or RESULTS / f"{report['stamp']}{'-quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    report["table"] = table(report)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    problem = plot(report, out.with_suffix(".png"))
    print(f"\nOpenTracy bench {report['stamp']}: upstream delay {args.delay_ms} ms, {args.requests} requests per "
          f"target and scenario, {report['machine']['cpus']} CPUs, litellm {report['versions']['litellm']} "
          f"(proxy {report['versions']['litellm_proxy'] or '-'}), {report['duration_s']:.0f}s")
    print("added = that percentile minus the same percentile of (a) upstream direct; ratios: first ÷ second")
    print(report["table"])
    print()
    print(summary(report))
    print(f"\nwrote {out}" + ("" if problem else f" and {out.with_suffix('.png')}") + (f" ({problem})" if problem else ""))
    traces = report.get("traces")
    failed = bool(traces and not traces.get("ok"))
    errors = sum(e["errors"] for entry in report["scenarios"].values() for e in entry.values())
    return 1 if failed or errors else 0


if __name__ == "__main__":
    sys.exit(main())
