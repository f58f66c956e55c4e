"""Chat calls to OpenAI-format upstreams without litellm's per-call machinery.

When the upstream already speaks OpenAI's chat completions API (litellm provider ``openai``: OpenAI
itself, or any OpenAI-compatible server behind ``api_base`` — vLLM, a distilled student), a litellm
call is mostly overhead: its logging object, parameter checks, the OpenAI SDK and the pydantic
response objects cost ~4-5 ms and most of the engine's CPU per request (bench/README.md). Here the
body is built by litellm's own OpenAI transformation (so messages and tools are exactly what
litellm would send), posted with one shared aiohttp session, and the answer is relayed as JSON
dicts. Failures are mapped by litellm's own exception mapping, so retries, fallbacks and the
errors clients see are the same as on the litellm path.

A call goes this way only when litellm would send it unchanged: provider ``openai``, a model litellm
configures as a plain GPT or unknown (OpenAI-compatible) model — not o-series or GPT-5, whose
parameters litellm rewrites — every request parameter one litellm passes through for that model,
and an API key. Anything else returns ``None`` from :meth:`DirectOpenAI.prepare` and goes through
``litellm.acompletion``. ``OPENTRACY_DIRECT=false`` turns this path off.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator, Mapping

import aiohttp
import litellm
from aiohttp.helpers import get_env_proxy_for_url
from litellm.llms.openai.chat.gpt_transformation import OpenAIGPTConfig, OpenAIUnknownModelConfig
from litellm.llms.openai.common_utils import OpenAIError
from litellm.types.utils import LlmProviders
from litellm.utils import (ProviderConfigManager, validate_and_fix_openai_messages,
                           validate_chat_completion_tool_choice, validate_openai_optional_params)

from yarl import URL

from opentracy.routing.aliases import PRICE_KEYS

# litellm_params of a model_list entry that configure the call rather than the body.
CALL_KEYS = frozenset({"model", "api_key", "api_base", "base_url", "organization", "timeout", "stream_timeout",
                       "extra_headers", "headers", "max_retries", "num_retries", "custom_llm_provider", "rpm", "tpm",
                       "drop_params", "metadata", *PRICE_KEYS})
# Request fields litellm consumes itself instead of sending (``metadata`` is litellm's, as on its path).
NOT_SENT = frozenset({"metadata"})
DEFAULT_API_BASE = "https://api.openai.com/v1"


@dataclass(frozen=True, slots=True)
class DirectCall:
    """One prepared call: where to post, with which headers, and the body."""

    model: str  # as litellm names it, for its exception mapping and price lookup
    url: str
    headers: Mapping[str, str]
    body: dict[str, Any]
    timeout: aiohttp.ClientTimeout


class DirectOpenAI:
    """Owns one aiohttp session for the process (opened lazily in the event loop; ``close()`` at shutdown)."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None
        # Per model, not per request: litellm's config for it and the parameters it passes through.
        # Bounded: with passthrough on, clients name models.
        self._model_rules = functools.lru_cache(maxsize=512)(_model_rules)
        # HTTP(S)_PROXY / NO_PROXY, as litellm's httpx client honours them: looked up once per URL.
        # (aiohttp's trust_env looks them up, and reads ~/.netrc, in a worker thread on every request:
        # measured ~0.4 ms of CPU per call.)
        self._proxy_for = functools.lru_cache(maxsize=512)(_env_proxy)

    async def prepare(self, params: Mapping[str, Any], *, provider: str, stream: bool, timeout: float,
                      connect_timeout: float) -> DirectCall | None:
        """The call for ``params`` (target litellm_params merged with the request), or None if litellm
        would change it on the way (then the caller uses ``litellm.acompletion``)."""
        if provider != "openai":
            return None
        model = str(params["model"]).removeprefix("openai/")
        rules = self._model_rules(model)
        if rules is None:
            return None  # o-series, GPT-5, audio: litellm maps their parameters
        config, supported = rules
        # None is "not given" to litellm, as it is here.
        request = {k: v for k, v in params.items() if k not in CALL_KEYS and k != "messages" and v is not None}
        if any(k not in supported and k not in NOT_SENT for k in request):
            return None  # litellm drops or refuses it, depending on drop_params: its path decides
        api_key = params.get("api_key") or os.environ.get("OPENAI_API_KEY")
        if not api_key:
            return None  # litellm's path explains the missing credential
        optional = {k: v for k, v in request.items() if k not in NOT_SENT}
        # The checks and fixes litellm.completion applies to every request before any provider sees it.
        messages = validate_and_fix_openai_messages([dict(m) for m in params["messages"]])
        if "tool_choice" in optional:
            optional["tool_choice"] = validate_chat_completion_tool_choice(optional["tool_choice"], model)
        if "stop" in optional:
            optional["stop"] = validate_openai_optional_params(stop=optional["stop"])
        if stream:
            # Exact usage, so exact cost, on every stream (as on the litellm path).
            optional.update(stream=True, stream_options={"include_usage": True})
        body = await config.async_transform_request(model, messages, optional,
                                                    {"custom_llm_provider": "openai",
                                                     "api_base": params.get("api_base")}, {})
        headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json",
                   **(params.get("headers") or {}), **(params.get("extra_headers") or {})}
        organization = params.get("organization") or os.environ.get("OPENAI_ORGANIZATION")
        if organization:
            headers["OpenAI-Organization"] = str(organization)
        api_base = (params.get("api_base") or params.get("base_url") or os.environ.get("OPENAI_BASE_URL")
                    or os.environ.get("OPENAI_API_BASE") or DEFAULT_API_BASE)
        read = float(params.get("stream_timeout") if stream and params.get("stream_timeout") else
                     params.get("timeout") or timeout)
        return DirectCall(model, str(api_base).rstrip("/") + "/chat/completions", headers, body,
                          aiohttp.ClientTimeout(total=None, connect=connect_timeout, sock_read=read))

    async def complete(self, call: DirectCall) -> dict[str, Any]:
        """POST and return the chat completion as a dict; upstream failures raise litellm's exceptions."""
        context = self._post(call)
        response = await _entered(call, context)
        try:
            text = await _read(call, response)
        finally:
            await context.__aexit__(None, None, None)
        if response.status >= 400:
            raise _mapped(call, response.status, text)
        try:
            data = json.loads(text)
        except ValueError:
            raise _mapped(call, 502, f"the upstream answered with invalid JSON: {text[:200]!r}") from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            raise _mapped(call, 502, f"the upstream's answer is not a chat completion: {text[:200]!r}")
        for choice in data["choices"]:
            if isinstance(choice, dict) and isinstance(choice.get("message"), dict):
                _reasoning_as_litellm_names_it(choice["message"])
        return data

    async def stream(self, call: DirectCall) -> AsyncIterator[dict[str, Any]]:
        """Open the stream (an HTTP error raises here) and return its chunks as dicts."""
        context = self._post(call)
        response = await _entered(call, context)
        if response.status >= 400:
            try:
                text = await _read(call, response)
            finally:
                await context.__aexit__(None, None, None)
            raise _mapped(call, response.status, text)
        return _chunks(call, context, response)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _post(self, call: DirectCall) -> Any:
        if self._session is None or self._session.closed:
            # No connection limit here: the engine's own (OPENTRACY_MAX_CONCURRENT_UPSTREAM) applies.
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        proxy, proxy_auth = self._proxy_for(call.url)
        return self._session.post(call.url, data=json.dumps(call.body), headers=dict(call.headers),
                                  timeout=call.timeout, proxy=proxy, proxy_auth=proxy_auth)


@contextlib.contextmanager
def _transport_errors(call: DirectCall) -> Iterator[None]:
    """aiohttp's failures as the litellm exceptions the failover table knows."""
    try:
        yield
    except aiohttp.ServerTimeoutError as exc:  # connect or read timeout
        raise litellm.Timeout(f"OpenAIException - {exc}", model=call.model, llm_provider="openai") from exc
    except aiohttp.ClientError as exc:  # refused, reset, broken payload
        raise litellm.APIConnectionError(f"OpenAIException - {type(exc).__name__}: {exc}", llm_provider="openai",
                                         model=call.model) from exc


def _env_proxy(url: str) -> tuple[URL | None, aiohttp.BasicAuth | None]:
    """The proxy the environment names for ``url`` (None if none, or NO_PROXY exempts its host)."""
    try:
        return get_env_proxy_for_url(URL(url))
    except LookupError:
        return None, None


def _model_rules(model: str) -> tuple[OpenAIGPTConfig, frozenset[str]] | None:
    config = ProviderConfigManager.get_provider_chat_config(model, LlmProviders.OPENAI)
    if type(config) not in (OpenAIGPTConfig, OpenAIUnknownModelConfig):
        return None
    return config, frozenset(config.get_supported_openai_params(model))


async def _entered(call: DirectCall, context: Any) -> aiohttp.ClientResponse:
    with _transport_errors(call):
        return await context.__aenter__()


async def _read(call: DirectCall, response: aiohttp.ClientResponse) -> str:
    with _transport_errors(call):
        return (await response.read()).decode("utf-8", errors="replace")


async def _chunks(call: DirectCall, context: Any, response: aiohttp.ClientResponse) -> AsyncIterator[dict[str, Any]]:
    """Server-sent events → chunk dicts, until ``data: [DONE]`` or the end of the body."""
    try:
        data_lines: list[bytes] = []
        while True:
            with _transport_errors(call):
                line = await response.content.readline()
            if not line:
                if data_lines:
                    raise litellm.APIConnectionError("OpenAIException - the stream ended inside an event",
                                                     llm_provider="openai", model=call.model)
                return
            line = line.rstrip(b"\r\n")
            if line.startswith(b"data:"):
                data_lines.append(line[5:].lstrip(b" "))
                continue
            if line or not data_lines:
                continue  # event:/id:/comment lines, or blank lines between events
            payload, data_lines = b"\n".join(data_lines), []
            if payload == b"[DONE]":
                return
            yield _chunk(call, payload)
    finally:
        await context.__aexit__(None, None, None)  # releases the connection, or closes it mid-stream


def _chunk(call: DirectCall, payload: bytes) -> dict[str, Any]:
    try:
        chunk = json.loads(payload)
    except ValueError:
        raise _mapped(call, 502, f"invalid JSON in the upstream's stream: {payload[:200]!r}") from None
    if not isinstance(chunk, dict):
        raise _mapped(call, 502, f"unexpected event in the upstream's stream: {payload[:200]!r}")
    if chunk.get("error"):  # vLLM and friends report some failures inside a 200 stream
        error = chunk["error"]
        code = error.get("code") if isinstance(error, dict) else None
        raise _mapped(call, code if isinstance(code, int) and 400 <= code < 600 else 500, json.dumps(error))
    for choice in chunk.get("choices") or ():
        if isinstance(choice, dict) and isinstance(choice.get("delta"), dict):
            _reasoning_as_litellm_names_it(choice["delta"])
    return chunk


def _reasoning_as_litellm_names_it(message: dict[str, Any]) -> None:
    """OpenAI-compatible servers (vLLM, GLM) say ``reasoning``; litellm's name is ``reasoning_content``."""
    if "reasoning" in message:
        message["reasoning_content"] = message.pop("reasoning")


def _mapped(call: DirectCall, status: int, text: str) -> Exception:
    """The exception litellm raises for this status and body (so the failover table applies unchanged)."""
    message = text
    try:
        error = json.loads(text).get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            message = error["message"]
    except (ValueError, AttributeError):
        pass
    original = OpenAIError(status_code=status, message=message[:2000])
    try:
        litellm.exception_type(model=call.model, original_exception=original, custom_llm_provider="openai")
    except Exception as mapped:
        mapped.__cause__ = original
        return mapped
    return original
