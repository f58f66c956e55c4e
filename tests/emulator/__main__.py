"""Run the emulator standalone: `python -m tests.emulator --port 9999 [--delay-ms N]` (manual use, benchmarks)."""

from __future__ import annotations

import argparse
import signal
import threading

from .server import Emulator


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--delay-ms", type=int, default=0, help="latency added before every answer")
    args = parser.parse_args(argv)
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    with Emulator(delay_ms=args.delay_ms, host=args.host, port=args.port) as emu:
        for name in emu.providers:
            print(f"{name:>10}: api_base={emu.base(name)}", flush=True)
        done.wait()


if __name__ == "__main__":
    main()
