"""Throughput of opentracy.tracing.redact on realistic trace text.

    python bench/redact_bench.py [--mb 10] [--repeat 3] [--seed 7]
                                 [--profile chat|numeric|both]

Builds ~N MB of deterministic trace-like text per profile:

* ``chat``: conversational prose (English and other languages), markdown,
  code snippets, JSON tool-call arguments, some numbers, sparse PII;
* ``numeric``: the same mixed with a lot of log lines, ids, dates,
  versions, prices and hashes (every message full of digits) -- the worst
  case, since digits are where most candidates start.

Each profile is redacted in message-sized chunks (as the tracer does: one
call per message / field) and as one string; the best of --repeat runs is
reported in MB/s (MB = 10**6 bytes of UTF-8). Time is the process's CPU
time (time.process_time), so other load on the machine skews it less.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentracy.tracing.redact import Redactor  # noqa: E402

CHAT = [
    "Sure! Here's a quick overview of how the retry logic works in the gateway.",
    "The short answer is yes, but there are a few caveats worth knowing about.",
    "First, make sure the environment variable is set before the process starts.",
    "Let me know if you'd like me to expand on any of these points.",
    "Could you rewrite this paragraph so it sounds friendlier and less formal?",
    "Here is the corrected function; the bug was an off-by-one in the loop bound.",
    "I think the issue is that the cache is never invalidated after an update.",
    "You can use a context manager to make sure the file is always closed.",
    "## Summary\n\n- The API returns paginated results\n- Use the cursor to fetch more\n",
    "Great question! Recursion can be tricky at first, so let's walk through it.",
    "That error usually means the dependency versions don't match.",
    "Thanks, that worked. Can you also add type hints and a docstring?",
    "Bitte fassen Sie den folgenden Text kurz zusammen und nennen Sie die Hauptpunkte.",
    "Pouvez-vous traduire ce document en anglais avant vendredi prochain ?",
    "¿Me puedes explicar la diferencia entre una lista y una tupla en Python?",
    "请帮我总结一下这篇文章的主要观点，并给出三个建议。",
    "この関数のバグを見つけて修正してください。",
    "Привет! Объясни, пожалуйста, как работает этот алгоритм сортировки.",
    "The meeting moved to Thursday at 3pm; I'll send an updated invite.",
    "We saw about 20% fewer timeouts after switching to the new region.",
    "Step 1: install the package. Step 2: run the migration. Step 3: restart.",
    "It depends on your use case, but for most teams the default is fine.",
]
PROSE = [
    "Sure! Here is a summary of the quarterly report you asked for.",
    "The model returned a 429 error, so the gateway retried after 2 seconds.",
    "Can you rewrite this paragraph so it sounds more formal, please?",
    "In 2023 revenue grew 14.5% to $1,299,000 while costs fell 3.2%.",
    "Let me know if you need anything else, happy to help with the migration.",
    "The meeting is on 2024-01-15 at 10:30, room 4B, building 7.",
    "Python 3.11.7 and numpy 1.26.4 are pinned in requirements.txt.",
    "Order #A-10293 shipped on 15/01/2024; tracking 1Z999AA10123456784.",
    "Bitte fassen Sie den folgenden Text kurz zusammen und nennen Sie die Hauptpunkte.",
    "Pouvez-vous traduire ce document en anglais avant vendredi prochain ?",
    "请帮我总结一下这篇文章的主要观点，并给出三个建议。",
    "この関数のバグを見つけて修正してください。",
    "Привет! Объясни, пожалуйста, как работает этот алгоритм сортировки.",
    "The commit 3f2a9c1d4e5b6a7980c1d2e3f4a5b6c7d8e9f0a1 fixed the regression.",
    "Request id 550e8400-e29b-41d4-a716-446655440000 took 1.234 s (p99 2.5 s).",
    "We have 3 options: skill-based routing, a risk-adjusted score, or the task queue.",
    "ISBN 978-3-16-148410-0 is the second edition, published 2019.",
    "Temperature 0.7, top_p 0.95, max_tokens 1024, presence_penalty 0.",
]
CODE = [
    "def add(a, b):\n    return a + b\n\nprint(add(1, 2))\n",
    "for (let i = 0; i < items.length; i++) {\n  total += items[i].price * 1.2;\n}\n",
    "SELECT id, name FROM users WHERE created_at > '2024-01-01' LIMIT 100;\n",
    "std::vector<int> v{1, 2, 3};\nauto it = std::find(v.begin(), v.end(), 2);\n",
    "x = arr[::2] + arr[1::3]\nassert x.shape == (10, 3)\n",
]
LOGS = [
    "2024-03-02T12:30:45.123Z INFO gateway latency_ms=153 tokens=812 model=gpt-4o",
    "2024-03-02T12:30:46.001Z WARN retry attempt=2 status=503 upstream=openai",
]
PII = [
    "Please email me at maria.garcia@example.com when it's done.",
    "My number is +44 20 7946 0958, call after 6pm.",
    "Card 4111 1111 1111 1111 exp 12/26",
    "Send it to IBAN DE89 3704 0044 0532 0130 00, thanks.",
    "The server at 10.24.3.17 is down again.",
    "export OPENAI_API_KEY=sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4z0",
    "Authorization: Bearer ya29.a0AfH6SMBx7Yq2Lk9Zp3Rt5Uv8Wx1Yz",
    "SSN on file: 123-45-6789",
    "Call me at (415) 555-2671 tomorrow.",
]
TOOL_ARGS = [
    '{"location": "Boston, MA", "unit": "celsius", "days": 3}',
    '{"query": "weather in Paris", "limit": 5, "lang": "fr"}',
]


def build_corpus(target_bytes: int, seed: int, profile: str = "numeric") -> list[str]:
    rng = random.Random(seed)
    msgs: list[str] = []
    size = 0
    # chat: mostly conversational prose, a little code/JSON, rare logs.
    # numeric: number-dense prose, more logs.
    prose, p_prose, p_code, p_logs, p_tool = (
        (CHAT + PROSE[:4], 0.78, 0.88, 0.90, 0.97)
        if profile == "chat"
        else (PROSE, 0.65, 0.78, 0.88, 0.95)
    )
    while size < target_bytes:
        parts = []
        for _ in range(rng.randint(3, 12)):
            r = rng.random()
            if r < p_prose:
                parts.append(rng.choice(prose))
            elif r < p_code:
                parts.append(rng.choice(CODE))
            elif r < p_logs:
                parts.append(rng.choice(LOGS))
            elif r < p_tool:
                parts.append(rng.choice(TOOL_ARGS))
            else:
                parts.append(rng.choice(PII))
        msg = " ".join(parts)
        msgs.append(msg)
        size += len(msg.encode("utf-8"))
    return msgs


def bench(profile: str, mb: float, repeat: int, seed: int) -> None:
    msgs = build_corpus(int(mb * 1_000_000), seed, profile)
    nbytes = sum(len(m.encode("utf-8")) for m in msgs)
    big = "\n".join(msgs)
    digits = sum(c.isdigit() for c in big) / len(big)
    red = Redactor()

    best_chunks = best_big = float("inf")
    count = 0
    for _ in range(repeat):
        t0 = time.process_time()
        count = 0
        for m in msgs:
            count += red.redact_text(m)[1]
        best_chunks = min(best_chunks, time.process_time() - t0)
        t0 = time.process_time()
        red.redact_text(big)
        best_big = min(best_big, time.process_time() - t0)

    mbytes = nbytes / 1e6
    print(
        f"[{profile}] {mbytes:.2f} MB in {len(msgs)} messages "
        f"(avg {nbytes // len(msgs)} B, {digits:.1%} digits), {count} replacements"
    )
    print(f"  per-message redact_text : {mbytes / best_chunks:6.1f} MB/s ({best_chunks:.3f} s)")
    print(f"  one-string  redact_text : {mbytes / best_big:6.1f} MB/s ({best_big:.3f} s)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=10.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--profile", choices=("chat", "numeric", "both"), default="both")
    args = ap.parse_args()
    for profile in ("chat", "numeric"):
        if args.profile in (profile, "both"):
            bench(profile, args.mb, args.repeat, args.seed)


if __name__ == "__main__":
    main()
