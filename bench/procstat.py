"""What a server used, from ``/proc`` (Linux, no psutil): CPU of a process tree, of each thread, peak RSS.

Two clocks, for two jobs. ``/proc/<pid>/stat`` counts a whole process (threads that exited included)
in 10 ms ticks: right for a scenario's CPU, seconds of it. ``/proc/<pid>/task/<tid>/schedstat`` counts
each live thread to the nanosecond: right for idle rates (a few ms/s, which a 3 s window of ticks can
only read as 0, 3.3 or 6.7 ms/s) and for splitting a server's CPU by thread.
"""

from __future__ import annotations

import os

CLK_TCK = os.sysconf("SC_CLK_TCK")
THREAD_KINDS = ("event loop", "Python threads", "native threads")  # OpenTracy's CPU by thread


def _stat_fields(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as f:
        text = f.read()
    return text[text.rindex(")") + 2:].split()  # fields from "state" on (field 3 of proc(5))


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if int(_stat_fields(int(entry))[1]) == pid:
                    found.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return found


def tree(pid: int) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo.extend(_children(current))
    return pids


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime (all threads, exited ones included) of the processes, in seconds (10 ms ticks)."""
    total = 0
    for pid in pids:
        try:
            fields = _stat_fields(pid)
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def threads(pid: int) -> dict[tuple[int, str], float]:
    """CPU seconds of each live thread of ``pid``, exact, by (thread id, thread name)."""
    found: dict[tuple[int, str], float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as f:
                name = f.read().strip()
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                found[(int(tid), name)] = int(f.read().split()[0]) / 1e9
        except (OSError, IndexError, ValueError):
            pass  # the thread ended between listing and reading
    return found


def live_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of the processes' live threads, exact (for idle rates). Exited threads are missing."""
    return sum(sum(threads(pid).values()) for pid in pids)


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of a server's live threads by kind: the main thread (the event loop), other Python
    threads (OpenTracy's trace writer, executor threads) and native threads (chDB's pools, libuv).
    Where tracing's CPU goes."""
    kinds = dict.fromkeys(THREAD_KINDS, 0.0)
    by_thread = threads(pid)
    # CPython does not name its threads: they keep the main thread's (the process's) name.
    python = next((name for (tid, name) in by_thread if tid == pid), None)
    for (tid, name), seconds in by_thread.items():
        kinds["event loop" if tid == pid else "Python threads" if name == python else "native threads"] += seconds
    return kinds


def peak_rss_mb(pids: list[int]) -> float:
    """VmHWM (peak resident set) summed over the processes, in MiB."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024
