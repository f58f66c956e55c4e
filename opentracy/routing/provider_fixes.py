"""Fixes at our boundary for what litellm (pinned 1.110.2) gets wrong about some providers.

Each fix names the litellm code it corrects; tests/test_providers.py proves each against the
provider's real wire format (tests/emulator). ``install()`` runs once at start-up (it patches litellm
classes, so it is guarded by the pinned version); ``prepare_call()`` runs on every call.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Any, Mapping

import litellm

log = logging.getLogger("opentracy.routing")

PATCHED_LITELLM = "1.110.2"  # the patches below are written against this version's code
_MISTRAL_TOOL_ID = re.compile(r"^[a-zA-Z0-9]{9}$")
_ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
_MARK = "_opentracy_provider_fixes"  # set on litellm itself: its classes are process-wide, patch once


def install() -> None:
    """Apply the start-up fixes once per process."""
    # litellm counts tokens when a stream opens (CustomStreamWrapper -> completion_cost ->
    # token_counter) and for llama-3 / command-r models first downloads a HuggingFace tokenizer
    # (utils.py _select_tokenizer_helper): a network fetch on the request path that blocks the event
    # loop ~25 s on a closed network. tiktoken is only used for estimates; usage comes from providers.
    litellm.disable_hf_tokenizer_download = True
    if getattr(litellm, _MARK, False):
        return
    setattr(litellm, _MARK, True)
    version = _litellm_version()
    if version != PATCHED_LITELLM:
        log.warning("provider fixes were written for litellm %s, running %s: not patching litellm classes",
                    PATCHED_LITELLM, version)
        return
    _honour_max_retries_for_sambanova()
    _read_cohere_v2_streams_and_billed_units()
    _send_cohere_tool_choice()


def prepare_call(provider: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """Per-call fixes of the litellm kwargs for ``provider`` (a new dict; the request is not changed)."""
    kwargs = dict(kwargs)
    if provider == "mistral" and kwargs.get("messages"):
        kwargs["messages"] = [_mistral_ids(m) for m in kwargs["messages"]]
    if provider == "bedrock" and kwargs.get("tool_choice") == "none":
        # Converse has no "none" and litellm raises UnsupportedParamsError for it; without tools the model
        # cannot call one (litellm adds its placeholder tool when the history holds tool blocks).
        kwargs.pop("tool_choice")
        kwargs.pop("tools", None)
    return kwargs


# --- Mistral: tool call ids -----------------------------------------------------------------------


def mistral_tool_call_id(tool_call_id: str) -> str:
    """Mistral accepts only 9-character [a-zA-Z0-9] ids; litellm forwards other providers' ids as they are
    (llms/mistral/chat/transformation.py _handle_tool_call_message). Map any other id, stably."""
    if _MISTRAL_TOOL_ID.match(tool_call_id):
        return tool_call_id
    digest = hashlib.sha256(tool_call_id.encode()).digest()
    return "".join(_ALPHABET[b % len(_ALPHABET)] for b in digest[:9])


def _mistral_ids(message: Mapping[str, Any]) -> Mapping[str, Any]:
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        calls = [{**c, "id": mistral_tool_call_id(c["id"])} if isinstance(c, dict) and isinstance(c.get("id"), str)
                 else c for c in calls]
        message = {**message, "tool_calls": calls}
    if message.get("role") == "tool" and isinstance(message.get("tool_call_id"), str):
        message = {**message, "tool_call_id": mistral_tool_call_id(message["tool_call_id"])}
    return message


# --- SambaNova: max_retries -------------------------------------------------------------------------


def _honour_max_retries_for_sambanova() -> None:
    """SambanovaConfig.get_supported_openai_params lacks "max_retries" (llms/sambanova/chat.py), so our
    max_retries=0 is dropped and llms/openai/openai.py builds its SDK client with max_retries=2: every
    429/5xx is retried twice with back-off inside one attempt."""
    from litellm.llms.sambanova.chat import SambanovaConfig

    original = SambanovaConfig.get_supported_openai_params

    def get_supported_openai_params(self: Any, model: str) -> list:
        params = list(original(self, model))
        return params if "max_retries" in params else [*params, "max_retries"]

    SambanovaConfig.get_supported_openai_params = get_supported_openai_params  # type: ignore[method-assign]


# --- Cohere v2: SSE framing and billed units ---------------------------------------------------------


def _billed(usage: Mapping[str, Any]) -> Mapping[str, Any]:
    """Cohere's usage.tokens counts its prompt template too; usage.billed_units is what is paid."""
    billed = usage.get("billed_units")
    if not isinstance(billed, Mapping) or "input_tokens" not in billed:
        return usage
    return {**usage, "tokens": {"input_tokens": int(billed.get("input_tokens") or 0),
                                "output_tokens": int(billed.get("output_tokens") or 0)}}


def _read_cohere_v2_streams_and_billed_units() -> None:
    from litellm.llms.cohere.chat.v2_transformation import CohereV2ChatConfig
    from litellm.llms.cohere.common_utils import CohereV2ModelResponseIterator
    from litellm.types.utils import GenericStreamingChunk, Usage

    # Non-streamed: v2_transformation.py builds usage from usage.tokens (its comment says billed_units).
    transform_response = CohereV2ChatConfig.transform_response

    def transform_response_billed(self: Any, *args: Any, **kwargs: Any) -> Any:
        response = transform_response(self, *args, **kwargs)
        raw = kwargs.get("raw_response", args[1] if len(args) > 1 else None)
        try:
            billed = (raw.json().get("usage") or {}).get("billed_units") or {}
        except Exception:
            return response
        if "input_tokens" in billed:
            prompt, completion = int(billed["input_tokens"] or 0), int(billed.get("output_tokens") or 0)
            response.usage = Usage(prompt_tokens=prompt, completion_tokens=completion,
                                   total_tokens=prompt + completion)
        return response

    CohereV2ChatConfig.transform_response = transform_response_billed  # type: ignore[method-assign]

    # Streamed: Cohere sends SSE (`event: <type>` + `data: {"type": ...}`); common_utils.py json.loads()
    # each raw line (so `event:` lines fail) and looks for message-end / tool-plan-delta / citation-start
    # under chunk["event"] / chunk["data"], which the wire never has.
    empty = GenericStreamingChunk(text="", tool_use=None, is_finished=False, finish_reason="", usage=None, index=0)

    def convert_sse_line(self: Any, chunk: str | bytes) -> Any:
        line = (chunk.decode("utf-8") if isinstance(chunk, bytes) else chunk).strip()
        if not line.startswith("data:"):
            return dict(empty)  # `event:` lines and blank separators carry nothing
        payload = json.loads(line[len("data:"):].strip())
        kind = payload.get("type", "")
        if kind == "message-end":
            delta = payload.get("delta") or {}
            payload = {**payload, "delta": {**delta, "usage": _billed(delta.get("usage") or {})}}
        if kind in ("message-end", "tool-plan-delta", "citation-start"):
            payload = {**payload, "event": kind, "data": payload}
        return self.chunk_parser(chunk=payload)

    CohereV2ModelResponseIterator.convert_str_chunk_to_generic_chunk = convert_sse_line  # type: ignore[method-assign]


def _send_cohere_tool_choice() -> None:
    """litellm maps Cohere's optional params with the v1 CohereChatConfig even for the v2 API
    (utils.py get_optional_params), and its map_openai_params has no tool_choice branch
    (llms/cohere/chat/transformation.py), so "none" still lets the model call a tool and a named function
    is ignored. Cohere v2 takes tool_choice REQUIRED / NONE; a named function is REQUIRED over that tool."""
    from litellm.llms.cohere.chat.transformation import CohereChatConfig
    from litellm.llms.cohere.common_utils import CohereModelInfo

    original = CohereChatConfig.map_openai_params

    def map_openai_params(self: Any, non_default_params: dict, optional_params: dict, model: str,
                          drop_params: bool) -> dict:
        optional_params = original(self, non_default_params, optional_params, model, drop_params)
        choice = non_default_params.get("tool_choice")
        if choice is None or CohereModelInfo.get_cohere_route(model) != "v2":
            return optional_params
        if choice == "none":
            optional_params["tool_choice"] = "NONE"
        elif choice == "required":
            optional_params["tool_choice"] = "REQUIRED"
        elif isinstance(choice, dict):
            name = (choice.get("function") or {}).get("name")
            named = [t for t in optional_params.get("tools") or () if (t.get("function") or {}).get("name") == name]
            if named:
                optional_params["tools"], optional_params["tool_choice"] = named, "REQUIRED"
        return optional_params

    CohereChatConfig.map_openai_params = map_openai_params  # type: ignore[method-assign]


def _litellm_version() -> str:
    try:
        from importlib.metadata import version

        return version("litellm")
    except Exception:
        return "unknown"
