"""The embedded server's OpenAPI document (``/openapi.json``), as the server behaves.

FastAPI derives the request schemas from the pydantic bodies in
:mod:`watcher.server.schemas`; this module adds what it cannot know: every
status each route answers with the envelope it uses, the security schemes (an
API key for the API, the publish token for WHIP), headers such as ``Location``
and ``Allow``, and examples. The ``model`` of a chat request is the enum of the
models this server lists. The test suite runs schemathesis against a running
server with this document, so a route answering a status not written here
fails the build.

:func:`install_openapi` also makes a 405 list every method of the path in
``Allow`` (FastAPI lists only those of the first route it matched).
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse

from watcher.server.openapi_schemas import SCHEMAS, SECURITY_SCHEMES, ref

P = "/v1beta"
API_KEY = [{"ApiKey": []}]
PUBLISH_TOKEN = [{"PublishToken": []}]
_WWW_AUTH = {"WWW-Authenticate": {"description": "`Bearer`", "schema": {"type": "string"}}}
RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying",
                               "required": True, "schema": {"type": "string"}}}
STREAM_ID = "cc3e3f79-c5c4-4d1c-985e-028b42030569"


def _json(description: str, schema: dict[str, Any], *, headers: dict[str, Any] | None = None,
          example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    response: dict[str, Any] = {"description": description,
                                "content": {"application/json": media}}
    if headers:
        response["headers"] = headers
    return response


def _stream_error(description: str, **kw: Any) -> dict[str, Any]:
    return _json(description, ref("StreamError"), **kw)


def _chat_error(description: str, **kw: Any) -> dict[str, Any]:
    return _json(description, ref("ChatError"), **kw)


BAD_JSON = _stream_error("The body is not valid JSON")
UNAUTHORIZED = _stream_error("Missing or unknown API key", headers=_WWW_AUTH)
FORBIDDEN = _stream_error("The stream belongs to another API key")
NOT_FOUND = _stream_error("No such stream (never created, or its tombstone expired); "
                          "for keepalive also an ended stream")
INVALID = _json("The request does not match its schema", ref("ValidationError"))
SHUTTING_DOWN = _stream_error("The server is shutting down; retry against another")

CREATE_EXAMPLES = {
    "publish": {"summary": "A stream you publish to over WHIP", "value": {}},
    "camera": {"summary": "A camera the server pulls itself",
               "value": {"source": {"type": "rtsp",
                                    "url": "rtsp://user:secret@camera.example/stream1"}}},
}
CREATED_EXAMPLE = {
    "id": STREAM_ID, "state": "active",
    "publish": {"type": "whip", "url": f"http://127.0.0.1:8420{P}/streams/{STREAM_ID}/whip",
                "token": "g1bM3v6wq0hJzq2Yb7pT4k9r8sXc5nLd"},
    "expires_at_ms": 1796400045000, "ttl_seconds": 45,
}
KEEPALIVE_EXAMPLE = {
    "id": STREAM_ID, "expires_at_ms": 1796400090000, "ttl_seconds": 45,
    "stream_time_ms": 44210,
    "publish": {"type": "whip", "url": f"http://127.0.0.1:8420{P}/streams/{STREAM_ID}/whip",
                "token": "Qm7Xw2c9Lp0sVt4Ry8Nk1Hd6Ja3Ze5Uf"},
}
CHAT_EXAMPLES = {
    "newest_frame": {"summary": "One question about the newest frame", "value": {
        "model": "local/vision",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "How many people are in the picture?"},
            {"type": "image_url",
             "image_url": {"url": f"ovs://streams/{STREAM_ID}?frame_index=-1"}}]}],
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "answer", "strict": True,
            "schema": {"type": "object", "properties": {"people": {"type": "integer"}},
                       "required": ["people"], "additionalProperties": False}}}}},
    "last_ten_seconds": {"summary": "The last 10 s at 2 frames per second", "value": {
        "model": "local/frames",
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "Did anything happen?"},
            {"type": "video_url", "video_url": {
                "url": f"ovs://streams/{STREAM_ID}?start_offset_ms=-10000&max_fps=2"}}]}]}},
}
COMPLETION_EXAMPLE = {
    "id": "chatcmpl-5f0c6b1d2a3e4f5a", "object": "chat.completion", "created": 1796400012,
    "model": "local/vision",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": '{"people": 2}'},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 212, "completion_tokens": 5, "total_tokens": 217},
}

OPERATIONS: dict[tuple[str, str], dict[str, Any]] = {
    ("get", f"{P}/models"): {
        "summary": "List models", "security": [],
        "responses": {"200": _json("The models; ask only those `ready`", ref("ModelList"))},
    },
    ("post", f"{P}/streams"): {
        "summary": "Create a stream", "security": API_KEY,
        "description": "Unknown top-level fields are ignored; `source` takes exactly `type` "
                       "and `url`.",
        "request_examples": CREATE_EXAMPLES,
        "responses": {
            "201": _json("The stream, leased for `ttl_seconds`; a pulled camera's stream "
                         "only once the camera gave its first frame", ref("StreamCreated"),
                         example=CREATED_EXAMPLE),
            "400": BAD_JSON, "401": UNAUTHORIZED,
            "422": _json("The body does not match its schema; or the camera cannot be used: "
                         "its host does not resolve or is a private address (unless the "
                         "server allows them), or `Could not connect to source url` within "
                         "the connect timeout",
                         {"oneOf": [ref("ValidationError"), ref("StreamError")]}),
            "429": _stream_error("The key holds `max_streams_per_key` active streams, or the "
                                 "server pulls `max_pulls` cameras", headers=RETRY_AFTER),
            "503": SHUTTING_DOWN,
        },
    },
    ("get", f"{P}/streams"): {
        "summary": "List this key's streams (extension)", "security": API_KEY,
        "responses": {"200": _json("Every stream of the key, tombstones included",
                                   ref("StreamList")),
                      "401": UNAUTHORIZED},
    },
    ("get", f"{P}/streams/{{stream_id}}"): {
        "summary": "Stream status", "security": API_KEY,
        "responses": {"200": _json("The stream's status; an ended one stays readable for the "
                                   "tombstone window", ref("StreamStatus")),
                      "401": UNAUTHORIZED, "403": FORBIDDEN, "404": NOT_FOUND},
    },
    ("post", f"{P}/streams/{{stream_id}}/keepalive"): {
        "summary": "Renew the lease", "security": API_KEY,
        "responses": {"200": _json("The new lease and a fresh publish token", ref("Keepalive"),
                                   example=KEEPALIVE_EXAMPLE),
                      "401": UNAUTHORIZED, "403": FORBIDDEN, "404": NOT_FOUND},
    },
    ("delete", f"{P}/streams/{{stream_id}}"): {
        "summary": "End a stream", "security": API_KEY,
        "description": "Idempotent while the tombstone lasts.",
        "responses": {"200": _json("Ended", ref("StreamDeleted")),
                      "401": UNAUTHORIZED, "403": FORBIDDEN, "404": NOT_FOUND},
    },
    ("post", f"{P}/streams/{{stream_id}}/whip"): {
        "summary": "Publish video (WHIP, RFC 9725)", "security": PUBLISH_TOKEN,
        "description": "Send an SDP offer with one video track; a new session replaces the "
                       "stream's previous one.",
        "request": {"required": True, "content": {"application/sdp": {
            "schema": {"type": "string", "description": "An SDP offer"}}}},
        "responses": {
            "201": {"description": "The SDP answer, with every ICE candidate (no trickle)",
                    "headers": {"Location": {"description": "The session, for DELETE",
                                             "required": True, "schema": {"type": "string"}},
                                "ETag": {"description": "The session's entity tag",
                                         "schema": {"type": "string"}}},
                    "content": {"application/sdp": {"schema": {"type": "string"}}}},
            "400": _stream_error("Not a usable SDP offer (or no video track in it)"),
            "401": _stream_error("Wrong or stale publish token", headers=_WWW_AUTH),
            "404": _stream_error("No active stream to publish to (unknown, ended, or one the "
                                 "server pulls)"),
            "415": _stream_error("The offer was not sent as application/sdp"),
            "503": SHUTTING_DOWN,
        },
    },
    ("options", f"{P}/streams/{{stream_id}}/whip"): {
        "summary": "WHIP endpoint options", "security": [],
        "description": "A plain OPTIONS; with `--cors-origin`, a CORS preflight is answered "
                       "by the CORS layer instead.",
        "responses": {"204": {"description": "What the endpoint accepts", "headers": {
            "Allow": {"description": "`POST, OPTIONS`", "required": True,
                      "schema": {"type": "string"}}}}},
    },
    ("delete", f"{P}/streams/{{stream_id}}/whip/{{session_id}}"): {
        "summary": "End a WHIP session", "security": [],
        "description": "The session's URL is its capability: no token is needed.",
        "responses": {"200": {"description": "Ended"},
                      "404": _stream_error("No such WHIP session")},
    },
    ("patch", f"{P}/streams/{{stream_id}}/whip/{{session_id}}"): {
        "summary": "Trickle ICE: not supported", "security": [],
        "description": "RFC 9725 lets a server without trickle ICE or ICE restarts answer "
                       "405: the answer to the offer already carries every candidate.",
        "responses": {"405": {"description": "Not supported", "headers": {
            "Allow": {"description": "`DELETE`", "required": True,
                      "schema": {"type": "string"}}}}},
    },
    ("post", f"{P}/chat/completions"): {
        "summary": "Chat completion (OpenAI-compatible)", "security": API_KEY,
        "description": "`image_url`/`video_url` parts may reference frames with "
                       "`ovs://streams/{id}?...` (see the README's frame references). Unknown "
                       "fields are accepted and ignored. With `stream: true` the answer is "
                       "server-sent events ending in `data: [DONE]`.",
        "request_examples": CHAT_EXAMPLES,
        "responses": {
            "200": {"description": "The completion",
                    "content": {"application/json": {"schema": ref("ChatCompletion"),
                                                     "example": COMPLETION_EXAMPLE},
                                "text/event-stream": {"schema": {"type": "string"}}}},
            "400": {"description": "The model cannot answer this request (unknown, "
                                   "unavailable, no video, a property it cannot measure, a "
                                   "media URL it cannot fetch); or a body that is not JSON",
                    "content": {"application/json": {"schema": {
                        "oneOf": [ref("ChatError"), ref("StreamError")]}}}},
            "401": _chat_error("Missing or unknown API key", headers=_WWW_AUTH),
            "403": _chat_error("A referenced stream belongs to another API key "
                               "(`stream_unauthorized`)"),
            "404": _chat_error("A referenced stream does not exist or has ended "
                               "(`stream_not_found`)"),
            "422": _chat_error("An ovs:// reference that does not resolve "
                               "(`query_param_invalid`, `frame_not_found`, "
                               "`frame_not_yet_produced`, `segment_empty`, ...), or a body "
                               "that does not match its schema (`request_invalid`, with "
                               "`message` and `details`)"),
            "429": _chat_error("The upstream model server is rate limiting"),
            "502": _chat_error("The upstream model server failed"),
            "503": _chat_error("The model is loading, or the upstream is unavailable"),
            "504": _chat_error("The upstream model server did not answer in time"),
        },
    },
}


def build_openapi(app: FastAPI) -> dict[str, Any]:
    """The document: FastAPI's paths and request schemas with :data:`OPERATIONS` laid over."""
    doc = get_openapi(title=app.title, version=app.version, routes=app.routes,
                      description="An Overshoot-compatible real-time video API: leased "
                                  "streams fed over WHIP, ovs:// frame references, chat "
                                  "completions.")
    components = doc.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for generated in ("HTTPValidationError", "ValidationError"):
        schemas.pop(generated, None)
    schemas.update(SCHEMAS)
    components["securitySchemes"] = SECURITY_SCHEMES
    models = sorted(getattr(app.state.server, "backends", {}))
    if models and "ChatBody" in schemas:
        schemas["ChatBody"]["properties"]["model"]["enum"] = models
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            spec = OPERATIONS.get((method, path))
            if spec is not None:  # else FastAPI's guess stays, and schemathesis flags it
                _apply(operation, spec)
    return doc


def _apply(operation: dict[str, Any], spec: dict[str, Any]) -> None:
    operation["summary"] = spec["summary"]
    if "description" in spec:
        operation["description"] = spec["description"]
    operation["security"] = spec["security"]
    operation["responses"] = spec["responses"]
    if "request" in spec:
        operation["requestBody"] = spec["request"]
    if "request_examples" in spec:
        media = operation["requestBody"]["content"]["application/json"]
        media["examples"] = spec["request_examples"]


def install_openapi(app: FastAPI) -> None:
    """Serve :func:`build_openapi` at ``/openapi.json`` and answer 405 with a full ``Allow``."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.add_exception_handler(405, _method_not_allowed)


def documented_methods(doc: dict[str, Any], path: str) -> list[str]:
    """The methods the document lists for the path template ``path`` matches."""
    methods: set[str] = set()
    for template, item in doc["paths"].items():
        if re.fullmatch(re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)), path):
            methods |= {method.upper() for method in item}
    return sorted(methods)


async def _method_not_allowed(request: Request, exc: Exception) -> JSONResponse:
    allow = documented_methods(request.app.openapi(), request.url.path)
    headers = {k: v for k, v in (getattr(exc, "headers", None) or {}).items()
               if k.lower() != "allow"}
    headers["Allow"] = ", ".join(allow)
    return JSONResponse({"detail": "Method Not Allowed"}, status_code=405, headers=headers)
