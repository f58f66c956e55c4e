"""Amazon Bedrock Runtime Converse wire format: POST /model/{modelId}/converse and /converse-stream.

Mirrors bedrock-runtime.{region}.amazonaws.com. Auth is AWS Signature Version 4: `Authorization:
AWS4-HMAC-SHA256 Credential=AKID/YYYYMMDD/region/bedrock/aws4_request, SignedHeaders=..., Signature=<64
hex>` with `x-amz-date` (the credential date must match it, within 15 minutes of now) and host among the
signed headers. When the access key id is the emulator's own fake one (AWS_ACCESS_KEY_ID below) the
signature itself is recomputed here from the raw path, headers and body - an independent SigV4
implementation - and must match. (A Bedrock API key, `Authorization: Bearer ABSK...`, is accepted too.)
The model id is URL-encoded in the path (":" as %3A).

Body: Converse's fields only (unknown ones are a ValidationException); messages alternate user /
assistant starting with user; content blocks text / image / document / toolUse / toolResult / ...;
toolResult ids answer the previous assistant turn's toolUse ids; toolUse/toolResult blocks need a
toolConfig. Answers {output.message, stopReason (end_turn / tool_use / max_tokens), usage, metrics}.
converse-stream answers application/vnd.amazon.eventstream (see eventstream.py): messageStart,
contentBlockStart (tool use), contentBlockDelta..., contentBlockStop, messageStop, metadata (usage);
payloads carry AWS's "p" padding field. Errors: {"message"} with an x-amzn-ErrorType header.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

from . import eventstream
from .replies import Conversation, Reply, Tool, pieces, plan_reply, split_even, stable_id
from .wire import Call, ChunkStream, Endpoint, Json, ProviderSpec, RawRequest, json_reply

# Fake credentials the emulator can verify signatures for (set them as AWS_ACCESS_KEY_ID / ..._SECRET_...).
AWS_ACCESS_KEY_ID = "AKIAEMULATOR7EXAMPLE"
AWS_SECRET_ACCESS_KEY = "emulator/fake/secret/K7MDENG+bPxRfiCYEXAMPLEKEY"

SIGV4 = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<akid>[A-Z0-9]{16,128})/(?P<date>\d{8})/(?P<region>[a-z]{2}(-gov|-iso[a-z]*)?-[a-z]+-\d)"
    r"/(?P<service>[a-z0-9-]+)/aws4_request, ?SignedHeaders=(?P<signed>[a-z0-9-]+(;[a-z0-9-]+)*), ?"
    r"Signature=(?P<signature>[0-9a-f]{64})$"
)
AMZ_DATE = re.compile(r"^\d{8}T\d{6}Z$")
MAX_SKEW_S = 15 * 60

REQUEST_FIELDS = frozenset(
    {
        "messages", "system", "inferenceConfig", "toolConfig", "guardrailConfig", "additionalModelRequestFields",
        "promptVariables", "additionalModelResponseFieldPaths", "requestMetadata", "performanceConfig",
        "serviceTier", "outputConfig",
    }
)  # fmt: skip
INFERENCE_FIELDS = frozenset({"maxTokens", "temperature", "topP", "stopSequences"})
BLOCKS = frozenset(
    {"text", "image", "document", "video", "toolUse", "toolResult", "guardContent", "cachePoint", "reasoningContent",
     "citationsContent", "searchResult"}
)  # fmt: skip
SYSTEM_BLOCKS = frozenset({"text", "guardContent", "cachePoint"})

_ERRORS: Mapping[int, str] = {
    400: "ValidationException", 403: "AccessDeniedException", 404: "ResourceNotFoundException",
    408: "ModelTimeoutException", 424: "ModelErrorException", 429: "ThrottlingException",
    500: "InternalServerException", 503: "ServiceUnavailableException",
}  # fmt: skip


def error_body(status: int, message: str) -> Json:
    return {"message": message}


def error_headers(status: int) -> Mapping[str, str]:
    name = _ERRORS.get(status, "InternalServerException" if status >= 500 else "ValidationException")
    return {"x-amzn-errortype": f"{name}:http://internal.amazon.com/coral/com.amazon.bedrock/"}


def check_headers(headers: Mapping[str, str]) -> list[str]:
    return []  # SigV4 covers path and body: checked in check_request


# --- SigV4 --------------------------------------------------------------------------------------


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


def expected_signature(raw: RawRequest, signed: list[str], amz_date: str, region: str, service: str, secret: str) -> str:
    """AWS SigV4 (non-S3: path segments URI-encoded twice, i.e. once more than sent)."""
    canonical_uri = quote(raw.raw_path or "/", safe="/~")
    query = "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(raw.query.items()))
    canonical_headers = "".join(f"{h}:{' '.join(raw.headers.get(h, '').split())}\n" for h in signed)
    payload_hash = raw.headers.get("x-amz-content-sha256") or hashlib.sha256(raw.body).hexdigest()
    canonical = "\n".join([raw.method, canonical_uri, query, canonical_headers, ";".join(signed), payload_hash])
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(_hmac(f"AWS4{secret}".encode(), amz_date[:8]), region), service), "aws4_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def check_request(raw: RawRequest) -> list[str]:
    auth = raw.headers.get("authorization", "")
    if auth.startswith("Bearer "):
        return [] if auth.removeprefix("Bearer ").strip() else ["empty Bedrock API key"]
    match = SIGV4.match(auth)
    if match is None:
        return [f"Authorization is not a valid AWS SigV4 header: {auth[:60]!r}"]
    problems = []
    amz_date = raw.headers.get("x-amz-date", "")
    signed = match["signed"].split(";")
    if not AMZ_DATE.match(amz_date):
        problems.append(f"x-amz-date must be YYYYMMDDTHHMMSSZ, got {amz_date!r}")
    else:
        if match["date"] != amz_date[:8]:
            problems.append(f"credential scope date {match['date']} does not match x-amz-date {amz_date}")
        when = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).timestamp()
        if abs(time.time() - when) > MAX_SKEW_S:
            problems.append(f"Signature expired: x-amz-date {amz_date} is more than 15 minutes from now")
    if match["service"] != "bedrock":
        problems.append(f"credential scope service must be 'bedrock', got {match['service']!r}")
    if signed != sorted(signed) or "host" not in signed or "x-amz-date" not in signed:
        problems.append(f"SignedHeaders must be sorted and include host and x-amz-date: {match['signed']}")
    if "x-amz-security-token" in raw.headers and "x-amz-security-token" not in signed:
        problems.append("x-amz-security-token must be signed")
    missing = [h for h in signed if h not in raw.headers]
    if missing:
        problems.append(f"signed headers {missing} are not in the request")
    if not problems and match["akid"] == AWS_ACCESS_KEY_ID:
        want = expected_signature(raw, signed, amz_date, match["region"], match["service"], AWS_SECRET_ACCESS_KEY)
        if not hmac.compare_digest(want, match["signature"]):
            problems.append("The request signature we calculated does not match the signature you provided "
                            "(SigV4 over method, raw path, query, signed headers and body)")
    return problems


# --- validation -------------------------------------------------------------------------------


def _block_kind(where: str, block: Any, allowed: frozenset[str]) -> tuple[str | None, list[str]]:
    if not isinstance(block, dict) or len(block) != 1 or next(iter(block)) not in allowed:
        return None, [f"{where}: a content block must have exactly one of {sorted(allowed)}, got {block!r:.80}"]
    return next(iter(block)), []


def _check_messages(body: Json) -> list[str]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return ["1 validation error detected: Value at 'messages' failed to satisfy constraint: Member must not be null"]
    problems: list[str] = []
    pending: set[str] = set()
    uses_tools = False
    for i, msg in enumerate(messages):
        where = f"messages.{i}"
        role = msg.get("role") if isinstance(msg, dict) else None
        if role not in ("user", "assistant"):
            problems.append(f"{where}.role must be user or assistant")
            continue
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            problems.append("A conversation must alternate between user and assistant roles, starting with user "
                            f"({where} is {role})")
        content = msg.get("content")
        if not isinstance(content, list) or not content:
            problems.append(f"{where}.content must be a non-empty list of content blocks")
            continue
        results, uses = set(), set()
        for j, block in enumerate(content):
            kind, bad = _block_kind(f"{where}.content.{j}", block, BLOCKS)
            problems += bad
            if kind == "text" and (not isinstance(block["text"], str) or not block["text"]):
                problems.append(f"{where}.content.{j}: text content blocks must be non-empty")
            if kind == "toolUse":
                uses_tools = True
                tu = block["toolUse"]
                if role != "assistant" or not isinstance(tu, dict) or not all(isinstance(tu.get(k), str) for k in ("toolUseId", "name")) \
                        or "input" not in tu:
                    problems.append(f"{where}.content.{j}: toolUse needs toolUseId, name, input and an assistant turn")
                else:
                    uses.add(tu["toolUseId"])
            if kind == "toolResult":
                uses_tools = True
                tr = block["toolResult"]
                if role != "user" or not isinstance(tr, dict) or not isinstance(tr.get("toolUseId"), str) \
                        or not isinstance(tr.get("content"), list):
                    problems.append(f"{where}.content.{j}: toolResult needs toolUseId, a content list and a user turn")
                else:
                    results.add(tr["toolUseId"])
                    for k, inner in enumerate(tr["content"]):
                        problems += _block_kind(f"{where}.content.{j}.toolResult.content.{k}", inner,
                                                frozenset({"text", "json", "image", "document", "video", "searchResult"}))[1]
        if pending != results and (pending or results):
            problems.append(f"{where}: The number of toolResult blocks at messages.{i}.content exceeds (or misses) the "
                            f"toolUse blocks of the previous turn: expected {sorted(pending)}, got {sorted(results)}")
        pending = uses
    if uses_tools and not body.get("toolConfig"):
        problems.append("The toolConfig field must be defined when using toolUse and toolResult content blocks.")
    return problems


def _check_tool_config(body: Json) -> list[str]:
    config = body.get("toolConfig")
    if config is None:
        return []
    if not isinstance(config, dict) or set(config) - {"tools", "toolChoice"} or not isinstance(config.get("tools"), list) \
            or not config["tools"]:
        return ["toolConfig must be {tools: [...non-empty], toolChoice?}"]
    problems, names = [], []
    for i, tool in enumerate(config["tools"]):
        kind, bad = _block_kind(f"toolConfig.tools.{i}", tool, frozenset({"toolSpec", "cachePoint", "systemTool"}))
        problems += bad
        if kind == "toolSpec":
            spec = tool["toolSpec"]
            schema = (spec.get("inputSchema") or {}).get("json") if isinstance(spec, dict) else None
            if not isinstance(spec.get("name"), str) or not isinstance(schema, dict):
                problems.append(f"toolConfig.tools.{i}.toolSpec needs name and inputSchema.json")
            else:
                names.append(spec["name"])
    choice = config.get("toolChoice")
    if choice is not None:
        kind, bad = _block_kind("toolConfig.toolChoice", choice, frozenset({"auto", "any", "tool"}))
        problems += bad
        if kind == "tool" and (choice["tool"] or {}).get("name") not in names:
            problems.append("toolConfig.toolChoice.tool.name is not one of the tools")
    return problems


def validate(body: Json) -> list[str]:
    problems = [f"Malformed input request: extraneous key [{k}] is not permitted" for k in sorted(set(body) - REQUEST_FIELDS)]
    problems += _check_messages(body)
    system = body.get("system")
    if system is not None:
        if not isinstance(system, list):
            problems.append("system must be a list of system content blocks")
        else:
            for i, block in enumerate(system):
                problems += _block_kind(f"system.{i}", block, SYSTEM_BLOCKS)[1]
    config = body.get("inferenceConfig")
    if config is not None:
        if not isinstance(config, dict) or set(config) - INFERENCE_FIELDS:
            problems.append(f"inferenceConfig accepts only {sorted(INFERENCE_FIELDS)}: {config!r:.80}")
        elif config.get("maxTokens") is not None and (not isinstance(config["maxTokens"], int) or config["maxTokens"] < 1):
            problems.append("inferenceConfig.maxTokens must be a positive integer")
    problems += _check_tool_config(body)
    return problems


# --- answers ----------------------------------------------------------------------------------


def _block_text(block: Json) -> str:
    if "text" in block:
        return str(block["text"])
    if "json" in block:
        return json.dumps(block["json"])
    if "toolResult" in block:
        return " ".join(_block_text(b) for b in block["toolResult"].get("content") or ())
    return ""


def conversation(body: Json, model: str) -> Conversation:
    messages: list[Json] = body["messages"]
    last = messages[-1]
    results = [b for b in last["content"] if "toolResult" in b] if last["role"] == "user" else []
    user_text = next(
        (" ".join(b["text"] for b in m["content"] if "text" in b)
         for m in reversed(messages) if m["role"] == "user" and any("text" in b for b in m["content"])),
        "",
    )
    config = body.get("toolConfig") or {}
    tools = tuple(Tool(t["toolSpec"]["name"], t["toolSpec"]["inputSchema"]["json"]) for t in config.get("tools") or ()
                  if "toolSpec" in t)
    choice = config.get("toolChoice") or {}
    return Conversation(
        model=model,
        texts=(" ".join(_block_text(b) for b in body.get("system") or ()),
               *(" ".join(_block_text(b) for b in m["content"]) for m in messages)),
        last_user_text=user_text,
        tool_result=" ".join(_block_text(b) for b in results) if results else None,
        tools=tools,
        forced_tool=(choice.get("tool") or {}).get("name"),
        max_tokens=(body.get("inferenceConfig") or {}).get("maxTokens"),
    )


_STOP = {"stop": "end_turn", "length": "max_tokens", "tool": "tool_use"}


def tool_use_id(reply: Reply) -> str:
    assert reply.tool_call is not None
    return f"tooluse_{reply.tool_call.id_seed[:22]}"


def _usage(reply: Reply) -> Json:
    return {"inputTokens": reply.prompt_tokens, "outputTokens": reply.completion_tokens,
            "totalTokens": reply.prompt_tokens + reply.completion_tokens}


def _content(reply: Reply) -> Json:
    if reply.tool_call is not None:
        tc = reply.tool_call
        return {"toolUse": {"toolUseId": tool_use_id(reply), "name": tc.name, "input": tc.arguments}}
    return {"text": reply.text or ""}


def _headers(call: Call) -> dict[str, str]:
    return {"x-amzn-requestid": f"emu-{call.seq:08d}-0000-0000-0000-000000000000"}


def converse(call: Call) -> ChunkStream:
    reply = plan_reply(conversation(call.body, call.model))
    payload = {
        "output": {"message": {"role": "assistant", "content": [_content(reply)]}},
        "stopReason": _STOP[reply.finish],
        "usage": _usage(reply),
        "metrics": {"latencyMs": 42},
    }
    return json_reply(payload, call.fault, headers=_headers(call))


def _padding(seed: object) -> str:
    return "abcdefghijklmnopqrstuvwxyzABCDEFGHIJ"[: 1 + int(stable_id(seed, length=4), 16) % 36]


def stream_events(call: Call, reply: Reply) -> list[tuple[str, Json]]:
    events: list[tuple[str, Json]] = [("messageStart", {"role": "assistant"})]
    if reply.tool_call is not None:
        tc = reply.tool_call
        start = {"toolUse": {"toolUseId": tool_use_id(reply), "name": tc.name}}
        events.append(("contentBlockStart", {"contentBlockIndex": 0, "start": start}))
        events += [("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"toolUse": {"input": p}}})
                   for p in split_even(tc.arguments_json, 4)]
    else:
        events += [("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": p}}) for p in pieces(reply.text or "")]
    events += [
        ("contentBlockStop", {"contentBlockIndex": 0}),
        ("messageStop", {"stopReason": _STOP[reply.finish]}),
        ("metadata", {"usage": _usage(reply), "metrics": {"latencyMs": 42}}),
    ]
    return events


def converse_stream(call: Call) -> ChunkStream:
    reply = plan_reply(conversation(call.body, call.model))
    frames = []
    for index, (kind, payload) in enumerate(stream_events(call, reply)):
        data = json.dumps({**payload, "p": _padding((call.seq, index))}).encode()
        if call.fault.malformed_json and index == 1:
            data = data[: len(data) // 2]
        frames.append(eventstream.event(kind, data))
    media = "application/json" if call.fault.wrong_content_type else "application/vnd.amazon.eventstream"
    return ChunkStream(frames, media, call.fault, headers=_headers(call))


def _model(_body: Json, params: Mapping[str, str]) -> str | None:
    return params.get("model_id")


PROVIDER = ProviderSpec(
    name="bedrock",
    prefix="/bedrock",
    api_base_path="/bedrock",  # api_base / aws_bedrock_runtime_endpoint; litellm appends /model/{id}/converse
    check_headers=check_headers,
    error_body=error_body,
    request_id_header="x-amzn-requestid",
    endpoints=(
        Endpoint("POST", "/model/{model_id:path}/converse", validate, converse, _model),
        Endpoint("POST", "/model/{model_id:path}/converse-stream", validate, converse_stream, _model),
    ),
    check_request=check_request,
    error_headers=error_headers,
)
