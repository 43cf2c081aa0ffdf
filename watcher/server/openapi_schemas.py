"""JSON Schemas of what the embedded server answers, for its OpenAPI document.

Written by hand rather than derived from response models: the routes answer
plain dicts shaped by the Overshoot API, and these schemas say exactly those
shapes (which fields may be null, which enums are closed). Objects allow
additional properties, as a client of an evolving API must expect; the test
suite checks every answer against them with schemathesis.
"""

from __future__ import annotations

from typing import Any

CHAT_ERROR_TYPES = ("stream_error", "validation_error", "provider_error", "upstream_error",
                    "billing_error", "rate_limit_error", "internal_error",
                    "authentication_error")


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(properties: dict[str, Any], required: list[str] | None = None,
         description: str | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties,
                              "required": required if required is not None else list(properties)}
    if description:
        schema["description"] = description
    return schema


INT = {"type": "integer"}
MS = {"type": "integer", "description": "Unix milliseconds"}
NUMBER = {"type": "number", "minimum": 0}

PUBLISH = _obj({
    "type": {"type": "string", "enum": ["whip"]},
    "url": {"type": "string", "format": "uri",
            "description": "POST an SDP offer here (WHIP, RFC 9725)"},
    "token": {"type": "string", "description": "Bearer token for the WHIP endpoint; "
                                               "every keepalive hands out a fresh one"},
}, description="How to publish video to the stream; null for a stream the server pulls")

SOURCE_TYPE = _obj({"type": {"type": "string", "enum": ["rtsp", "hls"]}},
                   description="Only for a stream the server pulls; never its url")

SCHEMAS: dict[str, dict[str, Any]] = {
    "StreamError": _obj(
        {"detail": {"type": "string", "description": "What went wrong, for a person"}},
        description="The error envelope of the stream endpoints"),
    "ChatErrorObject": _obj({
        "message": {"type": "string"},
        "type": {"type": "string", "enum": list(CHAT_ERROR_TYPES)},
        "code": {"type": "string", "description": "e.g. stream_not_found, frame_not_found, "
                 "segment_empty, query_param_invalid, model_unavailable, upstream_timeout"},
        "param": {"type": "string", "description": "Request validation only: the field"},
        "upstream": _obj({"provider": {"type": "string"}, "status": INT, "body": {}},
                         required=[], description="What an upstream model server answered"),
    }, required=["message", "type", "code"]),
    "ChatError": _obj({
        "detail": _obj({"error": {"$ref": "#/components/schemas/ChatErrorObject"}}),
        "error": {"$ref": "#/components/schemas/ChatErrorObject",
                  "description": "The same object again, where OpenAI's SDKs read it"},
        "message": {"type": "string", "description": "Request validation only: the first "
                    "problem, naming its field"},
        "details": {"type": "array", "description": "Request validation only: every problem",
                    "items": _obj({"loc": {"type": "array",
                                           "items": {"type": ["string", "integer"]}},
                                   "msg": {"type": "string"}, "type": {"type": "string"}})},
    }, required=["detail", "error"], description="The error envelope of /chat/completions"),
    "ValidationError": _obj({
        "error": {"type": "string", "enum": ["validation_error"]},
        "message": {"type": "string", "description": "The first problem, naming its field"},
        "details": {"type": "array", "items": _obj({
            "loc": {"type": "array", "items": {"type": ["string", "integer"]}},
            "msg": {"type": "string"},
            "type": {"type": "string"},
        })},
    }, description="The envelope of a request that does not match its schema"),
    "Model": _obj({
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["model"]},
        "created": INT,
        "owned_by": {"type": "string"},
        "status": {"type": "string", "enum": ["ready", "loading", "unavailable"]},
    }),
    "ModelList": _obj({
        "object": {"type": "string", "enum": ["list"]},
        "data": {"type": "array", "items": {"$ref": "#/components/schemas/Model"}},
    }),
    "StreamCreated": _obj({
        "id": {"type": "string", "format": "uuid"},
        "state": {"type": "string", "enum": ["active"]},
        "publish": _nullable(PUBLISH),
        "expires_at_ms": MS,
        "ttl_seconds": INT,
        "source": SOURCE_TYPE,
    }, required=["id", "state", "publish", "expires_at_ms", "ttl_seconds"]),
    "Keepalive": _obj({
        "id": {"type": "string", "format": "uuid"},
        "expires_at_ms": MS,
        "ttl_seconds": INT,
        "stream_time_ms": INT,
        "publish": _nullable(PUBLISH),
    }),
    "StreamDeleted": _obj({"id": {"type": "string"},
                           "deleted": {"type": "boolean", "enum": [True]}}),
    "StreamStatus": _obj({
        "id": {"type": "string", "format": "uuid"},
        "state": {"type": "string", "enum": ["active", "ended"]},
        "created_at_ms": MS,
        "expires_at_ms": MS,
        "ttl_seconds": INT,
        "stream_time_ms": {"type": "integer", "minimum": 0,
                           "description": "Milliseconds since the first frame"},
        "first_frame_at_ms": _nullable(MS),
        "last_frame_at_ms": _nullable(MS),
        "last_frame_index": _nullable(INT),
        "first_available_frame_index": _nullable(INT),
        "first_available_frame_at_ms": _nullable(MS),
        "recent_fps": {**NUMBER, "description": "Frames stored per second lately: the rate "
                       "frame_index advances at"},
        "received_fps": {**NUMBER, "description": "Frames per second the publisher or camera "
                         "delivered lately, stored or not"},
        "max_stored_fps": _nullable(NUMBER),
        "retained_frame_count": INT,
        "retained_bytes": INT,
        "retention_shortfall": _nullable(_obj({
            "retention_seconds": NUMBER, "held_seconds": NUMBER, "max_bytes": INT,
            "frames_evicted_early": INT},
            description="Set once the byte cap evicted frames younger than the retention")),
        "evicted_frame_count": INT,
        "ended_at_ms": _nullable(MS),
        "end_reason": _nullable({"type": "string", "enum": ["expired", "deleted", "reaped"]}),
        "audio": {"type": "boolean", "enum": [False]},
        "source": SOURCE_TYPE,
        "last_pull": {**_nullable(MS), "description": "When the last pulled frame arrived "
                      "(pulled streams only)"},
        "pull": _nullable({"type": "object", "description": "The pull's counters and state "
                           "(pulled streams only)"}),
    }, required=["id", "state", "created_at_ms", "expires_at_ms", "ttl_seconds",
                 "stream_time_ms", "first_frame_at_ms", "last_frame_at_ms", "last_frame_index",
                 "first_available_frame_index", "first_available_frame_at_ms", "recent_fps",
                 "retained_frame_count", "evicted_frame_count", "ended_at_ms", "end_reason",
                 "audio"]),
    "StreamList": _obj({
        "object": {"type": "string", "enum": ["list"]},
        "data": {"type": "array", "items": {"$ref": "#/components/schemas/StreamStatus"}},
    }),
    "ChatCompletion": _obj({
        "id": {"type": "string"},
        "object": {"type": "string", "enum": ["chat.completion"]},
        "created": INT,
        "model": {"type": "string"},
        "choices": {"type": "array", "items": _obj({
            "index": INT,
            "message": _obj({"role": {"type": "string", "enum": ["assistant"]},
                             "content": _nullable({"type": "string"})}),
            "finish_reason": _nullable({"type": "string"}),
        })},
        "usage": _obj({"prompt_tokens": INT, "completion_tokens": INT, "total_tokens": INT}),
    }),
}

SECURITY_SCHEMES: dict[str, dict[str, Any]] = {
    "ApiKey": {"type": "http", "scheme": "bearer",
               "description": "An API key of this server (`serve --api-key`, or the one it "
                              "printed at start)."},
    "PublishToken": {"type": "http", "scheme": "bearer",
                     "description": "The stream's `publish.token` from create or the latest "
                                    "keepalive."},
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}
