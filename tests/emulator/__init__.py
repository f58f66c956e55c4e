"""Loopback provider emulator: real provider wire formats on 127.0.0.1, with fault injection.

Tests reach "providers" only through this. It speaks each provider's wire format as litellm sends
it and as the provider answers (paths, auth headers, JSON shapes, SSE framing, error JSON), checks
what it receives, and fails on demand.

API
---
    from tests.emulator import Emulator, Fault

    with Emulator(delay_ms=0) as emu:        # or emu = Emulator().start(); ...; emu.stop()
        emu.url                              # "http://127.0.0.1:PORT"
        emu.base("openai")                   # f"{url}/openai/v1"  -> litellm/openai SDK add /chat/completions, /embeddings
        emu.base("anthropic")                # f"{url}/anthropic"  -> litellm adds /v1/messages
        emu.fail("gpt-4o", Fault(status=429, times=1, retry_after=2))   # "*" = any model; faults queue FIFO
        emu.clear_faults()
        emu.requests                         # [RecordedRequest(provider, method, path, headers, json, model, fault, violations)]
        emu.violations                       # ["POST /anthropic/v1/messages: max_tokens: Field required ..."]; assert == []
        emu.delay_ms = 20                    # latency before every answer (also Emulator(delay_ms=...))
        emu.reset()                          # forget faults, requests, violations (session-scoped fixture)
        emu.providers                        # ["openai", "anthropic"]

Fault(status=None, delay_ms=0, times=1, cut_after_chunks=None, malformed_json=False,
      wrong_content_type=False, drip_ms=0, retry_after=None, message=None) -- see state.Fault.
Faults are keyed on the model as the provider sees it in the body ("gpt-4o", "claude-sonnet-4-6").

Endpoints
---------
  POST /openai/v1/chat/completions   POST /openai/v1/embeddings   POST /anthropic/v1/messages
  GET  /health. Any other path: 404 in the provider's error shape + a violation.

Validation
----------
A request in the wrong shape (missing/ill-formed auth header, wrong path, unknown body field, missing
required field, bad roles/content blocks, unanswered tool calls, ...) gets HTTP 400 in the provider's
error format with a message starting "emulator: ", and the problem is appended to `emu.violations`.
OpenAI: `Authorization: Bearer <key>`. Anthropic: `x-api-key` + `anthropic-version`, no Authorization.

Deterministic answers (replies.py)
----------------------------------
  text            f"Hello from {model}! You said: {last user text[:200]}"
  after tool call f"Hello from {model}! Tool said: {tool result text[:200]}"   (last turn = tool results)
  tool call       when tools are offered and tool choice isn't none: the named tool or the first one,
                  arguments from its JSON schema: string "test" (or first enum), integer 1, number 1.5,
                  boolean true, array [one item], object {every property}. OpenAI id "call_<24 hex>",
                  Anthropic id "toolu_<24 hex>". Streamed as 4 argument slices.
  usage           prompt = whitespace-separated words of all system/message text (incl. tool results,
                  excl. tool-call arguments and tool definitions); completion = words of the reply
                  text, or of the JSON arguments string (json.dumps) for a tool call. Same when streamed.
  max_tokens      a text reply longer than max_tokens words is cut (finish "length" / "max_tokens").
  streaming       one chunk / text_delta per word (leading whitespace kept; they join to the full text).
  embeddings      8-dim (or `dimensions`) unit vectors from sha256(model, text); base64 if asked.

Adding a provider: write `<name>_format.py` building a `wire.ProviderSpec` (prefix, api_base_path,
header check, error shape, endpoints using `wire.json_reply`/`wire.sse_reply`/`wire.ChunkStream`
so faults apply uniformly), then list it in `server.PROVIDERS`.
"""

from .server import Emulator
from .state import Fault, RecordedRequest

__all__ = ["Emulator", "Fault", "RecordedRequest"]
