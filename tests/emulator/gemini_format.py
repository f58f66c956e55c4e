"""Google AI Studio (Gemini API) wire format: generateContent and streamGenerateContent?alt=sse.

Mirrors generativelanguage.googleapis.com/v1beta: the key in `x-goog-api-key` (or the `key` query
parameter); the model in the path (`/models/{model}:generateContent`); proto3 JSON bodies where every
field may be camelCase or snake_case and unknown names are rejected ("Invalid JSON payload received.
Unknown name ..."); `contents` of user/model turns with non-empty `parts`; a functionResponse turn
must come right after the functionCall turn it answers, with as many parts; `systemInstruction`,
`tools[].functionDeclarations`, `toolConfig.functionCallingConfig` (AUTO/ANY/NONE),
`generationConfig.maxOutputTokens`. Answers `candidates[0].content.parts` + `finishReason` (STOP also
for function calls, MAX_TOKENS) + `usageMetadata`; function calls carry a `thoughtSignature`. A stream
is SSE with CRLF line ends, one GenerateContentResponse per event, each with cumulative usageMetadata,
the last carrying finishReason; function calls arrive whole. Errors {"error": {"code", "message",
"status"}}.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from typing import Any

from .replies import Conversation, Reply, Tool, pieces, plan_reply, stable_id, words
from .wire import Call, ChunkStream, Endpoint, Json, ProviderSpec, RawRequest, SSEEvent, json_reply, sse_reply

_CAMEL = re.compile(r"_([a-z])")


def camel(name: str) -> str:
    return _CAMEL.sub(lambda m: m.group(1).upper(), name)


REQUEST_FIELDS = frozenset(
    {"contents", "tools", "toolConfig", "safetySettings", "systemInstruction", "generationConfig", "cachedContent",
     "serviceTier", "store"}
)  # fmt: skip
GENERATION_FIELDS = frozenset(
    {
        "stopSequences", "responseMimeType", "responseSchema", "responseJsonSchema", "responseModalities",
        "candidateCount", "maxOutputTokens", "temperature", "topP", "topK", "seed", "presencePenalty",
        "frequencyPenalty", "responseLogprobs", "logprobs", "enableEnhancedCivicAnswers", "speechConfig",
        "thinkingConfig", "imageConfig", "mediaResolution",
    }
)  # fmt: skip
PART_DATA = frozenset(
    {"text", "inlineData", "functionCall", "functionResponse", "fileData", "executableCode", "codeExecutionResult"}
)
PART_META = frozenset({"thought", "thoughtSignature", "videoMetadata", "partMetadata", "mediaResolution"})
TOOL_KINDS = frozenset(
    {"functionDeclarations", "googleSearch", "googleSearchRetrieval", "codeExecution", "urlContext",
     "computerUse", "fileSearch", "googleMaps", "mcpServers"}
)  # fmt: skip
FUNCTION_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,127}$")
MODES = frozenset({"AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED"})

_STATUS: Mapping[int, str] = {
    400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
    409: "ABORTED", 429: "RESOURCE_EXHAUSTED", 499: "CANCELLED", 500: "INTERNAL", 503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}  # fmt: skip


def error_body(status: int, message: str) -> Json:
    return {"error": {"code": status, "message": message, "status": _STATUS.get(status, "UNKNOWN")}}


def check_headers(headers: Mapping[str, str]) -> list[str]:
    return []  # the key may also come as ?key=..., so auth is checked in check_request


def check_request(raw: RawRequest) -> list[str]:
    problems = []
    header_key, query_key = raw.headers.get("x-goog-api-key", "").strip(), raw.query.get("key", "").strip()
    if not header_key and not query_key:
        problems.append("Method doesn't allow unregistered callers: send the API key in x-goog-api-key or ?key=")
    if "authorization" in raw.headers and (header_key or query_key):
        problems.append("send the API key or an OAuth Authorization header, not both")
    if raw.path.endswith(":streamGenerateContent") and raw.query.get("alt") != "sse":
        problems.append("streamGenerateContent without alt=sse answers a JSON array, not SSE; litellm asks for alt=sse")
    return problems


# --- validation -------------------------------------------------------------------------------


def field(obj: Mapping[str, Any], name: str) -> Any:
    """A proto3 JSON field by its camelCase name, accepting the snake_case spelling too."""
    if name in obj:
        return obj[name]
    snake = re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)
    return obj.get(snake)


def _unknown(obj: Mapping[str, Any], known: frozenset[str], where: str) -> list[str]:
    return [f'Invalid JSON payload received. Unknown name "{k}" at \'{where}\': Cannot find field.'
            for k in obj if camel(k) not in known]


def _check_part(where: str, part: Any) -> list[str]:
    if not isinstance(part, dict):
        return [f"{where}: a part must be an object"]
    problems = _unknown(part, PART_DATA | PART_META, where)
    data = [camel(k) for k in part if camel(k) in PART_DATA]
    if len(data) != 1:
        return problems + [f"{where}: a part needs exactly one of {sorted(PART_DATA)} (got {data})"]
    kind = data[0]
    if kind == "text" and not isinstance(part.get("text"), str):
        problems.append(f"{where}.text must be a string")
    if kind == "functionCall":
        call = field(part, "functionCall")
        if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not isinstance(call.get("args", {}), dict):
            problems.append(f"{where}.functionCall needs a string name and object args")
    if kind == "functionResponse":
        resp = field(part, "functionResponse")
        if not isinstance(resp, dict) or not isinstance(resp.get("name"), str) or not isinstance(resp.get("response"), dict):
            problems.append(f"{where}.functionResponse needs a string name and an object response")
    return problems


def _function_parts(content: Mapping[str, Any], kind: str) -> list[Json]:
    return [field(p, kind) for p in content.get("parts") or () if isinstance(p, dict) and field(p, kind) is not None]


def _check_contents(contents: Any) -> list[str]:
    if not isinstance(contents, list) or not contents:
        return ["contents is not specified (must be a non-empty list)"]
    problems: list[str] = []
    previous_calls: list[Json] = []
    for i, content in enumerate(contents):
        where = f"contents[{i}]"
        if not isinstance(content, dict):
            problems.append(f"{where} must be an object")
            continue
        problems += _unknown(content, frozenset({"role", "parts"}), where)
        role = content.get("role", "user")
        if role not in ("user", "model", "function"):
            problems.append(f"{where}.role: Please use a valid role: user, model.")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            problems.append(f"{where}.parts must not be empty")
            continue
        for j, part in enumerate(parts):
            problems += _check_part(f"{where}.parts[{j}]", part)
        responses = _function_parts(content, "functionResponse")
        if responses:
            if not previous_calls:
                problems.append(f"{where}: Please ensure that function response turn comes immediately after a "
                                "function call turn.")
            elif len(responses) != len(previous_calls):
                problems.append(f"{where}: Please ensure that the number of function response parts is equal to the "
                                "number of function call parts of the function call turn.")
            elif sorted(str(r.get("name")) for r in responses) != sorted(str(c.get("name")) for c in previous_calls):
                problems.append(f"{where}: function response names {sorted(r.get('name') for r in responses)} do not "
                                f"match the function calls {sorted(c.get('name') for c in previous_calls)}")
        elif previous_calls:
            problems.append(f"{where}: Please ensure that function call turn comes immediately before a function "
                            "response turn.")
        previous_calls = _function_parts(content, "functionCall") if role == "model" else []
    return problems


def _check_tools(body: Json) -> list[str]:
    tools = field(body, "tools")
    problems: list[str] = []
    names: list[str] = []
    if tools is not None:
        if not isinstance(tools, list):
            return ["tools must be a list"]
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not tool:
                problems.append(f"tools[{i}] must be a non-empty object")
                continue
            problems += _unknown(tool, TOOL_KINDS, f"tools[{i}]")
            for j, decl in enumerate(field(tool, "functionDeclarations") or ()):
                name = decl.get("name") if isinstance(decl, dict) else None
                if not isinstance(name, str) or not FUNCTION_NAME.match(name):
                    problems.append(f"tools[{i}].functionDeclarations[{j}].name: Invalid function name {name!r}")
                else:
                    names.append(name)
    config = field(field(body, "toolConfig") or {}, "functionCallingConfig")
    if config is not None:
        if not isinstance(config, dict) or config.get("mode", "AUTO") not in MODES:
            problems.append(f"toolConfig.functionCallingConfig.mode must be one of {sorted(MODES)}")
        else:
            allowed = field(config, "allowedFunctionNames") or []
            unknown = [n for n in allowed if n not in names]
            if unknown:
                problems.append(f"toolConfig.functionCallingConfig.allowedFunctionNames {unknown} are not declared")
    return problems


def validate(body: Json) -> list[str]:
    problems = _unknown(body, REQUEST_FIELDS, "GenerateContentRequest")
    problems += _check_contents(body.get("contents"))
    system = field(body, "systemInstruction")
    if system is not None:
        parts = system.get("parts") if isinstance(system, dict) else None
        if not isinstance(parts, list) or not parts or not all(isinstance(p, dict) and isinstance(p.get("text"), str) for p in parts):
            problems.append("systemInstruction must be {parts: [{text}]}")
    problems += _check_tools(body)
    config = field(body, "generationConfig")
    if config is not None:
        if not isinstance(config, dict):
            problems.append("generationConfig must be an object")
        else:
            problems += _unknown(config, GENERATION_FIELDS, "generation_config")
            limit = field(config, "maxOutputTokens")
            if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
                problems.append("generationConfig.maxOutputTokens must be a positive integer")
    return problems


# --- answers ----------------------------------------------------------------------------------


def _lower_types(schema: Any) -> Any:
    """Gemini schemas may spell types in upper case (OpenAPI 3 subset): normalise for sample_value."""
    if isinstance(schema, dict):
        return {k: (v.lower() if k == "type" and isinstance(v, str) else _lower_types(v)) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_lower_types(v) for v in schema]
    return schema


def _response_text(response: Any) -> str:
    """A functionResponse.response object as the text a model would read."""
    if isinstance(response, dict) and len(response) == 1:
        (value,) = response.values()
        if isinstance(value, str):
            return value
    return json.dumps(response)


def _texts(content: Mapping[str, Any]) -> list[str]:
    out = []
    for part in content.get("parts") or ():
        if isinstance(part.get("text"), str) and not part.get("thought"):
            out.append(part["text"])
        response = field(part, "functionResponse")
        if response is not None:
            out.append(_response_text(response.get("response")))
    return out


def conversation(body: Json, model: str) -> Conversation:
    contents: list[Json] = body["contents"]
    system = field(body, "systemInstruction") or {}
    last = contents[-1]
    responses = _function_parts(last, "functionResponse")
    user_text = next(
        (" ".join(p["text"] for p in c["parts"] if isinstance(p.get("text"), str))
         for c in reversed(contents) if c.get("role", "user") == "user" and not _function_parts(c, "functionResponse")),
        "",
    )
    tools = tuple(
        Tool(d["name"], _lower_types(field(d, "parameters") or field(d, "parametersJsonSchema") or {}))
        for t in field(body, "tools") or () for d in field(t, "functionDeclarations") or ()
    )
    fc = field(field(body, "toolConfig") or {}, "functionCallingConfig") or {}
    allowed = field(fc, "allowedFunctionNames") or []
    config = field(body, "generationConfig") or {}
    return Conversation(
        model=model,
        texts=(" ".join(_texts(system)), *(" ".join(_texts(c)) for c in contents)),
        last_user_text=user_text,
        tool_result=" ".join(_response_text(r.get("response")) for r in responses) if responses else None,
        tools=tools,
        forced_tool=allowed[0] if fc.get("mode") == "ANY" and len(allowed) == 1 else None,
        tools_disabled=fc.get("mode") == "NONE",
        max_tokens=field(config, "maxOutputTokens"),
    )


_FINISH = {"stop": "STOP", "length": "MAX_TOKENS", "tool": "STOP"}


def thought_signature(reply: Reply) -> str:
    assert reply.tool_call is not None
    return base64.b64encode(("emu-signature:" + reply.tool_call.id_seed).encode()).decode()


def _usage(reply: Reply, completion: int) -> Json:
    return {
        "promptTokenCount": reply.prompt_tokens,
        "candidatesTokenCount": completion,
        "totalTokenCount": reply.prompt_tokens + completion,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": reply.prompt_tokens}],
    }


def _response(call: Call, reply: Reply, parts: list[Json], finish: str | None, completion: int) -> Json:
    candidate: Json = {"content": {"parts": parts, "role": "model"}, "index": 0}
    if finish is not None:
        candidate["finishReason"] = finish
    return {
        "candidates": [candidate],
        "usageMetadata": _usage(reply, completion),
        "modelVersion": call.model,
        "responseId": f"emu{stable_id(call.seq, length=20)}",
    }


def _call_part(reply: Reply) -> Json:
    assert reply.tool_call is not None
    tc = reply.tool_call
    return {"functionCall": {"name": tc.name, "args": tc.arguments}, "thoughtSignature": thought_signature(reply)}


def _reply(call: Call) -> Reply:
    return plan_reply(conversation(call.body, call.model))


def generate(call: Call) -> ChunkStream:
    reply = _reply(call)
    parts = [_call_part(reply)] if reply.tool_call is not None else [{"text": reply.text or ""}]
    payload = _response(call, reply, parts, _FINISH[reply.finish], reply.completion_tokens)
    return json_reply(payload, call.fault, headers={"x-goog-request-id": f"emu{call.seq:020d}"})


def stream_generate(call: Call) -> ChunkStream:
    reply = _reply(call)
    finish = _FINISH[reply.finish]
    events: list[SSEEvent] = []
    if reply.tool_call is not None:
        events.append(SSEEvent(_response(call, reply, [_call_part(reply)], finish, reply.completion_tokens)))
    else:
        chunks = pieces(reply.text or "")
        sent = ""
        for index, piece in enumerate(chunks):
            sent += piece
            last = index == len(chunks) - 1
            events.append(SSEEvent(_response(call, reply, [{"text": piece}], finish if last else None, words(sent))))
    return sse_reply(events, call.fault, {"x-goog-request-id": f"emu{call.seq:020d}"}, newline="\r\n")


def _model(_body: Json, params: Mapping[str, str]) -> str | None:
    return params.get("model")


PROVIDER = ProviderSpec(
    name="gemini",
    prefix="/gemini",
    api_base_path="/gemini/v1beta",  # litellm appends /models/{model}:generateContent (default .../v1beta)
    check_headers=check_headers,
    error_body=error_body,
    request_id_header="x-goog-request-id",
    endpoints=(
        Endpoint("POST", "/v1beta/models/{model}:generateContent", validate, generate, _model),
        Endpoint("POST", "/v1beta/models/{model}:streamGenerateContent", validate, stream_generate, _model),
    ),
    check_request=check_request,
)
