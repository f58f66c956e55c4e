"""Request bodies the engine accepts, as pydantic models.

They validate input (a wrong type is a 400, not a provider round trip or a 500) and describe the
real bodies in ``/openapi.json``. Unknown top-level fields are refused as OpenAI does, except a few
widely used provider extras; fields that would steer litellm itself (``api_base``, ``api_key``,
``mock_response`` …) are never accepted from a client — they could redirect the engine's keys.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, model_validator

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    arguments: str


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Role
    content: Union[str, list[ContentPart], None] = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _content_present(self) -> "Message":
        if self.content is None and self.role not in ("assistant", "function") and not self.tool_calls:
            raise ValueError(f"a {self.role} message needs content")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id")
        return self


class FunctionDefinition(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @model_validator(mode="after")
    def _parameters_are_a_schema(self) -> "FunctionDefinition":
        params = self.parameters
        if params is not None and params.get("type", "object") != "object":
            raise ValueError("function parameters must be a JSON schema of type 'object'")
        if params is not None and not isinstance(params.get("properties", {}), dict):
            raise ValueError("function parameters 'properties' must be an object")
        return self


class Tool(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Literal["function"]
    function: FunctionDefinition


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")
    include_usage: StrictBool | None = None


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``: OpenAI's parameters plus a few provider extras."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(min_length=1, max_length=256)]
    messages: Annotated[list[Message], Field(min_length=1)]
    stream: StrictBool | None = None
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = None
    tool_choice: Union[Literal["none", "auto", "required"], dict[str, Any], None] = None
    parallel_tool_calls: StrictBool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: Union[str, dict[str, Any], None] = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(ge=0, le=1)] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None
    stop: Union[str, list[str], None] = None
    presence_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    frequency_penalty: Annotated[float, Field(ge=-2, le=2)] | None = None
    logit_bias: dict[str, float] | None = None
    logprobs: StrictBool | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    response_format: dict[str, Any] | None = None
    seed: int | None = None
    user: Annotated[str, Field(max_length=512)] | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    reasoning_effort: str | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    store: StrictBool | None = None
    verbosity: str | None = None
    web_search_options: dict[str, Any] | None = None
    # Provider extras litellm maps where supported (Anthropic/Gemini/vLLM and friends).
    top_k: int | None = None
    thinking: dict[str, Any] | None = None


class EmbeddingRequest(BaseModel):
    """``POST /v1/embeddings``."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[str, Field(min_length=1, max_length=256)]
    input: Union[Annotated[str, Field(min_length=1)], Annotated[list[str], Field(min_length=1)],
                 Annotated[list[int], Field(min_length=1)], Annotated[list[list[int]], Field(min_length=1)]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, Field(ge=1)] | None = None
    user: Annotated[str, Field(max_length=512)] | None = None


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """Every error the engine returns: OpenAI's shape (extra top-level keys such as ``_routing``)."""

    model_config = ConfigDict(extra="allow")
    error: ErrorDetail


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error statuses."""
    reasons = {400: "Malformed body or invalid fields", 401: "Missing or wrong engine key",
               403: "Not an admin key", 404: "Unknown model or trace", 413: "Body over the size limit",
               429: "Upstream rate limit after all fallbacks", 502: "Upstream failed after all fallbacks",
               503: "Engine at its concurrent-upstream limit", 504: "Upstream timed out after all fallbacks"}
    return {status: {"model": ErrorBody, "description": reasons[status]} for status in statuses}
