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
        emu.base("bedrock")                  # api_base or aws_bedrock_runtime_endpoint; see the table below
        emu.fail("gpt-4o", Fault(status=429, times=1, retry_after=2))   # "*" = any model; faults queue FIFO
        emu.clear_faults()
        emu.requests                         # [RecordedRequest(provider, method, path, headers, json, model, fault,
                                             #                  violations, query, raw_path)]
        emu.violations                       # ["POST /anthropic/v1/messages: max_tokens: Field required ..."]; assert == []
        emu.delay_ms = 20                    # latency before every answer (also Emulator(delay_ms=...))
        emu.reset()                          # forget faults, requests, violations (session-scoped fixture)
        emu.providers                        # ["openai", "anthropic", "gemini", ..., "bedrock", "azure"]

Fault(status=None, delay_ms=0, times=1, cut_after_chunks=None, malformed_json=False,
      wrong_content_type=False, drip_ms=0, retry_after=None, message=None) -- see state.Fault.
Faults are keyed on the model as the provider sees it: in the body ("gpt-4o", "claude-sonnet-4-6"), or in
the path for Gemini ("gemini-2.5-flash"), Bedrock ("anthropic.claude-3-5-haiku-20241022-v1:0") and Azure
(the deployment).

Providers and endpoints (module, api_base to hand litellm, what is emulated)
------------------------------------------------------------------------------
  openai      openai_format      {url}/openai/v1          /v1/chat/completions, /v1/embeddings
  anthropic   anthropic_format   {url}/anthropic          /v1/messages (named SSE events)
  gemini      gemini_format      {url}/gemini/v1beta      /v1beta/models/{m}:generateContent, :streamGenerateContent?alt=sse
                                                          (key in x-goog-api-key or ?key=; CRLF SSE)
  groq        groq_format        {url}/groq/openai/v1     /openai/v1/chat/completions (x_groq, whole tool calls)
  mistral     mistral_format     {url}/mistral/v1         /v1/chat/completions (9-char tool ids, 422 extra fields)
  deepseek    deepseek_format    {url}/deepseek           /chat/completions, /v1/..., /beta/... (usage on finish chunk)
  together    together_format    {url}/together/v1        /v1/chat/completions (finish "eos" in streams)
  fireworks   fireworks_format   {url}/fireworks/inference/v1   /inference/v1/chat/completions
  cerebras    cerebras_format    {url}/cerebras/v1        /v1/chat/completions (time_info, usage always streamed)
  sambanova   sambanova_format   {url}/sambanova/v1       /v1/chat/completions
  perplexity  perplexity_format  {url}/perplexity         /chat/completions (citations, cumulative chunks, usage.cost)
  cohere      cohere_format      {url}/cohere/v2/chat     /v2/chat (typed SSE with event: lines; billed_units vs tokens)
  bedrock     bedrock_format     {url}/bedrock            /model/{id}/converse, /converse-stream (SigV4 verified for
                                                          bedrock_format.AWS_ACCESS_KEY_ID; AWS binary event stream)
  azure       azure_format       {url}/azure              /openai/deployments/{d}/chat/completions?api-version=...
  GET /health. Any other path: 404 in the provider's error shape + a violation.
  The OpenAI-compatible ones share openai_compat.Dialect; docs/providers.md has the full list of quirks.

Validation
----------
A request in the wrong shape (missing/ill-formed auth header, wrong path, unknown body field, missing
required field, bad roles/content blocks, unanswered tool calls, ...) gets HTTP 400 in the provider's
error format with a message starting "emulator: ", and the problem is appended to `emu.violations`.
OpenAI: `Authorization: Bearer <key>`. Anthropic: `x-api-key` + `anthropic-version`, no Authorization.
Gemini: `x-goog-api-key` or `?key=`. Azure: `api-key` + `?api-version=`. Bedrock: AWS SigV4 (recomputed and
compared when signed with bedrock_format's fake credentials). Each module's docstring lists its checks.

Deterministic answers (replies.py)
----------------------------------
  text            f"Hello from {model}! You said: {last user text[:200]}"
  after tool call f"Hello from {model}! Tool said: {tool result text[:200]}"   (last turn = tool results)
  tool call       when tools are offered and tool choice isn't none: the named tool or the first one,
                  arguments from its JSON schema: string "test" (or first enum), integer 1, number 1.5,
                  boolean true, array [one item], object {every property}. OpenAI id "call_<24 hex>",
                  Anthropic id "toolu_<24 hex>", Mistral 9 alphanumerics, Bedrock "tooluse_<22>", Cohere
                  "<name>_<12 hex>", Gemini none (a thoughtSignature instead). Streamed as 4 argument
                  slices, except Gemini, Groq and Mistral, which send the whole call in one delta.
  usage           prompt = whitespace-separated words of all system/message text (incl. tool results,
                  excl. tool-call arguments and tool definitions); completion = words of the reply
                  text, or of the JSON arguments string (json.dumps) for a tool call. Same when streamed.
                  (Cohere: these are `billed_units`; its `tokens.input_tokens` adds PROMPT_TEMPLATE_TOKENS.)
  max_tokens      a text reply longer than max_tokens words is cut (finish "length" / "max_tokens").
  streaming       one chunk / text_delta per word (leading whitespace kept; they join to the full text).
  embeddings      8-dim (or `dimensions`) unit vectors from sha256(model, text); base64 if asked.

Adding a provider: write `<name>_format.py` building a `wire.ProviderSpec` (prefix, api_base_path,
header check, error shape, endpoints using `wire.json_reply`/`wire.sse_reply`/`wire.ChunkStream`
so faults apply uniformly; optional `check_request` for query/path/signature checks and `error_headers`),
then list it in `server.PROVIDERS`. An OpenAI-compatible provider is a `openai_compat.Dialect`.
"""

from .server import Emulator
from .state import Fault, RecordedRequest

__all__ = ["Emulator", "Fault", "RecordedRequest"]
