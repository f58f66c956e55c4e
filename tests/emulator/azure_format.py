"""Azure OpenAI wire format: POST /openai/deployments/{deployment}/chat/completions?api-version=...

Mirrors {resource}.openai.azure.com: `api-key` header (or `Authorization: Bearer <Entra token>`, not
both); the `api-version` query parameter is required (YYYY-MM-DD or YYYY-MM-DD-preview); the model is
the deployment in the path (faults are keyed on it). Answers are OpenAI's with Azure's content
filtering: `prompt_filter_results` on the body and `content_filter_results` on each choice; a stream
starts with a chunk whose `choices` is [] (and id/model/object empty) carrying the prompt filter
results. Errors {"error": {"code", "message"}} with the status as a string code for 429.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .openai_compat import OPENAI_PARAMS, Dialect, StreamPoint, chat_endpoint
from .openai_format import check_tool_call_id_length
from .replies import Reply
from .wire import Call, Json, ProviderSpec, RawRequest

API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
PARAMS = OPENAI_PARAMS | {"data_sources", "user_security_context"}
_SAFE = {"filtered": False, "severity": "safe"}
CONTENT_FILTER = {"hate": _SAFE, "self_harm": _SAFE, "sexual": _SAFE, "violence": _SAFE}
PROMPT_FILTER = [{"prompt_index": 0, "content_filter_results": {**CONTENT_FILTER, "jailbreak": {"filtered": False, "detected": False}}}]


def check_headers(headers: Mapping[str, str]) -> list[str]:
    key, auth = headers.get("api-key", "").strip(), headers.get("authorization", "")
    if key and auth:
        return ["send either api-key or Authorization, not both"]
    if not key and not (auth.startswith("Bearer ") and auth.removeprefix("Bearer ").strip()):
        return ["Access denied due to missing subscription key: send the api-key header (or Authorization: Bearer <Entra ID token>)"]
    return []


def check_request(raw: RawRequest) -> list[str]:
    version = raw.query.get("api-version")
    if version is None:
        return ["Missing required query parameter: api-version"]
    if not API_VERSION.match(version):
        return [f"Unsupported api-version {version!r} (expected YYYY-MM-DD or YYYY-MM-DD-preview)"]
    return []


def _decorate_response(call: Call, reply: Reply, payload: Json) -> None:
    payload["prompt_filter_results"] = PROMPT_FILTER
    payload["choices"][0]["content_filter_results"] = CONTENT_FILTER if reply.text else {}


def _decorate_chunk(call: Call, reply: Reply, chunk: Json, at: StreamPoint) -> None:
    chunk["choices"][0]["content_filter_results"] = CONTENT_FILTER if at.text_so_far and not at.final else {}


def _prelude(call: Call) -> list[Json]:
    return [{"choices": [], "created": 0, "id": "", "model": "", "object": "", "prompt_filter_results": PROMPT_FILTER}]


DIALECT = Dialect(
    name="azure",
    params=PARAMS,
    model_required=False,
    check=lambda body: check_tool_call_id_length(body["messages"]),
    envelope_extra=lambda call: {"system_fingerprint": "fp_emulator"},
    decorate_response=_decorate_response,
    decorate_chunk=_decorate_chunk,
    prelude_chunks=_prelude,
    request_id_header="apim-request-id",
)


def error_body(status: int, message: str) -> Json:
    code = {400: "BadRequest", 401: "401", 404: "DeploymentNotFound", 429: "429"}.get(status, "InternalServerError")
    return {"error": {"code": code, "message": message}}


PROVIDER = ProviderSpec(
    name="azure",
    prefix="/azure",
    api_base_path="/azure",  # the resource endpoint; litellm (AzureOpenAI SDK) appends /openai/deployments/...
    check_headers=check_headers,
    error_body=error_body,
    request_id_header="apim-request-id",
    endpoints=(
        chat_endpoint(DIALECT, "/openai/deployments/{deployment}/chat/completions",
                      model_of=lambda _body, params: params.get("deployment")),
    ),
    check_request=check_request,
)
