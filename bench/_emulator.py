"""The provider emulator in its own process, for bench/run.py (not run by hand).

    python bench/_emulator.py --delay-ms 0

Prints one line ``@@BENCH {"url": ..., "openai_base": ...}`` when it listens, then answers commands
on stdin, one per line:

    stats   -> @@BENCH {"requests": n, "violations": n, "sample": [...]}   (and forgets the log)
    quit    -> exits

The emulator keeps every request it saw (for tests); a benchmark sends tens of thousands, so the
orchestrator asks for ``stats`` after every block, which also empties that log.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # so `tests` imports from the repo root

from tests.emulator import Emulator  # noqa: E402

MARK = "@@BENCH "


def nodelay(emu: Emulator) -> None:
    """TCP_NODELAY on the listening socket; accepted connections inherit it (Linux).

    ``Emulator.start`` binds ``socket.socket(AF_INET, SOCK_STREAM)`` (proto 0), and asyncio only sets
    TCP_NODELAY on sockets whose proto is IPPROTO_TCP. Without it, an answer written in several
    sends (headers, then the body in two halves) meets Nagle + the client's delayed ACK: a ~40 ms
    stall on many requests, which would swamp every number here.
    """
    server = emu._server  # noqa: SLF001 (bench-only reach into the test helper)
    for listener in server.servers:
        for sock in listener.sockets:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay-ms", type=int, default=0)
    args = parser.parse_args()
    emu = Emulator(delay_ms=args.delay_ms).start()
    nodelay(emu)
    print(MARK + json.dumps({"url": emu.url, "openai_base": emu.base("openai")}), flush=True)
    total = violations = 0
    try:
        for line in sys.stdin:
            command = line.strip()
            if command == "quit":
                break
            if command == "stats":
                seen = emu.requests
                bad = [f"{r.method} {r.path}: {'; '.join(r.violations)} (user-agent "
                       f"{r.headers.get('user-agent', '?')!r})" for r in seen if r.violations]
                emu.reset()
                total += len(seen)
                violations += len(bad)
                print(MARK + json.dumps({"requests": len(seen), "total": total, "violations": violations,
                                         "sample": bad[:3]}), flush=True)
    finally:
        emu.stop()


if __name__ == "__main__":
    main()
