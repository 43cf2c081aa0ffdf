"""The console's JSON API (``/api/``) in the status listener's OpenAPI document.

Written by hand, as the listener's own part (:mod:`watcher.observe.openapi`):
the routes are plain Starlette (:mod:`watcher.console.routes`). The test suite
runs schemathesis against a running daemon's listener, so an answer that
disagrees with this document fails the build.

Security is described as the listener runs: with ``status.token`` every
``/api/`` route needs the bearer token or the console's session cookie;
without one there is no authentication (the listener binds to loopback only and
answers only to loopback ``Host`` names).
"""

from __future__ import annotations

from typing import Any

from watcher.console.auth import CSRF_HEADER, SESSION_COOKIE
from watcher.store.reviews import FEEDBACK_LABELS
from watcher.store.timeline import FEEDBACK_FILTERS, MAX_LIMIT, STATUSES

STRING = {"type": "string"}
BOOL = {"type": "boolean"}
COUNT = {"type": "integer", "minimum": 0}
ANY: dict[str, Any] = {}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties,
            "required": required if required is not None else list(properties)}


LABEL_NAME = r"^[A-Za-z_][A-Za-z0-9_.-]{0,62}$"
ISO = _nullable({"type": "string", "format": "date-time"})
MS = _nullable({"type": "integer"})

SCHEMAS: dict[str, dict[str, Any]] = {
    "ConsoleError": _obj({"error": {"type": "string", "description": "What went wrong"}}),
    "Delivery": _obj({
        "action": STRING,
        "state": {"type": "string", "enum": ["sent", "retrying", "pending", "sending",
                                             "summarized", "dead"]},
        "attempts": COUNT, "last_error": _nullable(STRING), "sent_at": ISO,
        "next_attempt_in_s": _nullable({"type": "number", "minimum": 0}),
        "summary_id": ANY}),
    "Feedback": _obj({"label": {"type": "string", "enum": list(FEEDBACK_LABELS)},
                      "note": STRING, "by": STRING, "created_at": ISO}),
    "Acknowledgement": _obj({"by": STRING, "comment": STRING, "created_at": ISO}),
    "Event": _obj({
        "id": {"type": "integer"}, "event_key": STRING, "rule": STRING, "stream": STRING,
        "streams": {"type": "array", "items": STRING},
        "kind": STRING, "status": STRING, "episode": {"type": "integer"},
        "severity": _nullable(STRING), "labels": {"type": "object"}, "notify": BOOL,
        "silenced_by": _nullable(STRING), "suppressed": BOOL,
        "created_ms": {"type": "integer"}, "created_at": ISO,
        "started_ms": MS, "started_at": ISO, "resolved_ms": MS, "resolved_at": ISO,
        "answer": ANY, "confirm_answer": ANY, "confirmed": ANY,
        "has_snapshot": BOOL, "snapshot_url": _nullable(STRING),
        "has_clip": BOOL, "clip_url": _nullable(STRING),
        "deliveries": {"type": "array", "items": _ref("Delivery")},
        "feedback": _nullable(_ref("Feedback")),
        "acknowledged": _nullable(_ref("Acknowledgement")),
    }, required=["id", "rule", "stream", "streams", "kind", "status", "created_ms",
                 "created_at", "has_snapshot", "has_clip", "deliveries"]),
    "EventPage": _obj({
        "events": {"type": "array", "items": _ref("Event")},
        "next_before": _nullable({"type": "string", "pattern": r"^\d+:\d+$",
                                  "description": "Pass as `before` for the next page"})}),
    "EventDetail": {"allOf": [_ref("Event"), _obj({
        "prompt": ANY, "urls": {"type": "array", "items": STRING},
        "stream_ids": {"type": "array", "items": STRING},
        "stream_time_ms": MS, "model": _nullable(STRING), "usage": ANY, "latency_s": ANY,
        "clip": _nullable(_obj({"content_type": STRING, "bytes": COUNT, "frames": COUNT,
                                "start_at": ISO, "end_at": ISO, "encode_cpu_ms": ANY})),
        "clip_status": {"type": "string", "enum": ["ready", "pulled", "making", "none"]},
    })]},
    "AckBody": {"type": "object", "description": "Unknown fields are ignored.", "properties": {
        "by": {"type": ["string", "null"], "maxLength": 100,
               "description": "Who (default: console)"},
        "comment": {"type": ["string", "null"], "maxLength": 2000}}},
    "AckResult": _obj({"acknowledged": {"type": "boolean", "enum": [True]}, "new": BOOL,
                       "rule": STRING, "stream": STRING, "episode": {"type": "integer"}}),
    "FeedbackBody": {"type": "object", "required": ["label"],
                     "description": "Unknown fields are ignored.", "properties": {
                         "label": {"type": "string", "enum": list(FEEDBACK_LABELS)},
                         "note": {"type": ["string", "null"], "maxLength": 2000},
                         "by": {"type": ["string", "null"], "maxLength": 100}}},
    "Camera": {"type": "object", "required": ["name", "live", "ready", "pulled", "frame_url"],
               "description": "A stream's health (as in `/status`), plus who pulls it",
               "properties": {"name": STRING, "live": BOOL, "ready": BOOL,
                              "not_ready_reason": _nullable(STRING), "last_frame_at": ISO,
                              "pulled": BOOL, "owner": _nullable(STRING),
                              "frame_url": _nullable(STRING)}},
    "Cameras": _obj({"cameras": {"type": "array", "items": _ref("Camera")}}),
    "RuleSummary": _obj({
        "name": STRING, "stream": STRING, "state": STRING, "alert_state": STRING,
        "episode": {"type": "integer"}, "severity": _nullable(STRING),
        "silenced_by": _nullable(STRING), "evaluations": COUNT, "skipped": COUNT,
        "invalid_answers": COUNT, "errors": COUNT,
        "latency_avg_s": _nullable({"type": "number"}),
        "latency_max_s": _nullable({"type": "number"}), "chart_field": _nullable(STRING),
        "history": {"type": "array", "items": _obj({
            "at": ISO, "outcome": ANY, "matched": ANY,
            "value": _nullable({"type": "number"})})}}),
    "Rules": _obj({"rules": {"type": "array", "items": _ref("RuleSummary")}}),
    "Matcher": {"type": "object", "required": ["name", "value"], "properties": {
        "name": {"type": "string", "pattern": LABEL_NAME,
                 "description": "A label: rule, stream, severity, ..."},
        "value": STRING,
        "isRegex": {"type": "boolean", "default": False},
        "isEqual": {"type": "boolean", "default": True}}},
    "Silence": _obj({
        "id": STRING, "matchers": {"type": "array", "items": _ref("Matcher")},
        "matchers_text": STRING, "starts_at": ISO, "ends_at": ISO, "created_by": STRING,
        "comment": STRING, "created_at": ISO, "state": STRING, "expired_early": BOOL}),
    "Silences": _obj({"silences": {"type": "array", "items": _ref("Silence")}}),
    "SilenceBody": {
        "type": "object", "required": ["matchers"],
        "description": "Give `duration` or `ends_at` (between 1 s and a year from now). "
                       "Unknown fields are ignored.",
        "properties": {
            "matchers": {"type": "array", "minItems": 1, "items": _ref("Matcher")},
            "duration": {"anyOf": [{"type": "string", "examples": ["2h", "30m"]},
                                   {"type": "number"}, {"type": "null"}],
                         "description": "A duration (2h) or seconds"},
            "ends_at": {"anyOf": [{"type": "string", "format": "date-time"},
                                  {"type": "integer", "minimum": 0}, {"type": "null"}],
                        "description": "ISO 8601 time or Unix milliseconds"},
            "comment": {"type": ["string", "null"], "maxLength": 2000},
            "created_by": {"type": "string", "pattern": r"\S",
                           "description": "Who made the silence (required in effect)"}},
        "examples": [{"matchers": [{"name": "rule", "value": "person_at_door"}],
                      "duration": "2h", "comment": "maintenance", "created_by": "ops"}]},
    "Expired": _obj({"expired": {"type": "boolean", "enum": [True]}}),
}

SECURITY_SCHEMES = {
    "StatusToken": {"type": "http", "scheme": "bearer",
                    "description": "`status.token` (scripts, the CLI). Also allows "
                                   "state-changing requests without a CSRF token."},
    "SessionCookie": {"type": "apiKey", "in": "cookie", "name": SESSION_COOKIE,
                      "description": "Set by the console's login form (browsers)."},
}

CSRF_NOTE = (f"CSRF: a state-changing request is accepted with the bearer token, a JSON body "
             f"(`Content-Type: application/json`), the `{CSRF_HEADER}` header, or (DELETE) "
             "as is; an `Origin` header, when sent, must name this listener. Otherwise 403.")


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(description, _ref("ConsoleError"))


def _binary(description: str, *media: str) -> dict[str, Any]:
    return {"description": description, "headers": {"Cache-Control": {"schema": STRING}},
            "content": {m: {"schema": {"type": "string", "format": "binary"}} for m in media}}


def _query(name: str, description: str, schema: dict[str, Any] | None = None,
           ) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or STRING}


EVENT_ID = {"name": "event_id", "in": "path", "required": True,
            "schema": {"type": "string", "pattern": r"^[0-9]{1,18}$"},
            "description": "The event's id (another value is a 404)"}
TIME = {"anyOf": [{"type": "string", "pattern": "^[0-9]*$"},
                  {"type": "string", "format": "date-time"}],
        "description": "ISO 8601 (UTC when no zone) or Unix ms; empty is no filter"}
EVENT_FILTERS = [
    _query("rule", "Only this rule"), _query("stream", "Only this stream"),
    _query("severity", "Only this severity"),
    _query("status", "firing (firing and repeat events) or resolved",
           {"type": "string", "enum": ["", *STATUSES]}),
    _query("since", "Created at or after", TIME), _query("until", "Created before", TIME),
    _query("silenced", "Only silenced (true) or not (false)",
           {"type": "string", "enum": ["", "true", "false", "yes", "no", "1", "0"]}),
    _query("feedback", "real, false_alarm, none (not marked) or any (marked)",
           {"type": "string", "enum": ["", *FEEDBACK_FILTERS]}),
    _query("before", "The `next_before` cursor of the previous page",
           {"type": "string", "pattern": r"^([0-9]+:[0-9]+)?$"}),
    _query("limit", f"Page size, 1-{MAX_LIMIT} (default 50)",
           {"type": "string", "pattern": r"^(0*([1-9][0-9]?|[1-4][0-9][0-9]|500))?$"}),
]


def _operation(operation_id: str, summary: str, responses: dict[str, Any], *,
               state_changing: bool = False, token: bool, **extra: Any) -> dict[str, Any]:
    """One operation, with the answers every ``/api/`` route can give added."""
    answers = dict(responses)
    if token:
        answers["401"] = _error("Neither the bearer token nor the session cookie was sent")
    answers["403"] = _error(
        ("Refused: " + CSRF_NOTE) if state_changing else
        "Without `status.token`: the `Host` header is not a loopback name")
    op: dict[str, Any] = {"summary": summary, "operationId": operation_id, "tags": ["console"],
                          "responses": answers, **extra}
    if state_changing:
        op["description"] = CSRF_NOTE
    if token:
        op["security"] = [{"StatusToken": []}, {"SessionCookie": []}]
    return op


def console_paths(*, token: bool) -> dict[str, Any]:
    """The ``/api/`` paths; ``token`` says whether ``status.token`` is set."""
    def op(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return _operation(*args, token=token, **kwargs)

    bad = _error("Bad input; `error` says what to fix")
    missing = _error("No such thing")

    def body(name: str) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}

    return {
        "/api/events": {"get": op(
            "listEvents", "The alerts timeline, newest first",
            {"200": _json("A page of events", _ref("EventPage")), "400": bad},
            parameters=EVENT_FILTERS)},
        "/api/events/{event_id}": {"get": op(
            "getEvent", "One event: answer, prompt, model, deliveries, feedback, clip",
            {"200": _json("The event", _ref("EventDetail")), "404": missing},
            parameters=[EVENT_ID])},
        "/api/events/{event_id}/snapshot": {"get": op(
            "getEventSnapshot", "The image the event was decided on",
            {"200": _binary("The snapshot", "image/jpeg", "image/png", "image/webp"),
             "404": missing}, parameters=[EVENT_ID])},
        "/api/events/{event_id}/clip": {"get": op(
            "getEventClip", "The evidence clip",
            {"200": _binary("The clip", "video/mp4", "video/webm", "image/webp"),
             "404": missing}, parameters=[EVENT_ID])},
        "/api/events/{event_id}/ack": {"post": op(
            "acknowledgeEvent", "Acknowledge the event's episode: no repeats until resolved",
            {"200": _json("Acknowledged", _ref("AckResult")), "400": bad, "404": missing},
            state_changing=True, parameters=[EVENT_ID], requestBody=body("AckBody"))},
        "/api/events/{event_id}/feedback": {"post": op(
            "setEventFeedback", "Mark the event real or a false alarm",
            {"200": _json("The feedback as stored", _ref("Feedback")), "400": bad,
             "404": missing},
            state_changing=True, parameters=[EVENT_ID], requestBody=body("FeedbackBody"))},
        "/api/cameras": {"get": op(
            "listCameras", "Every stream: state, fps, lease, reconnects",
            {"200": _json("The cameras", _ref("Cameras"))})},
        "/api/cameras/{name}/frame": {"get": op(
            "getCameraFrame", "The frame being published now",
            {"200": _binary("A JPEG", "image/jpeg"), "404": missing},
            parameters=[{"name": "name", "in": "path", "required": True, "schema": STRING}])},
        "/api/rules": {"get": op(
            "listRules", "Every rule: state, recent answers, counters, latency",
            {"200": _json("The rules", _ref("Rules"))})},
        "/api/silences": {
            "get": op("listSilences", "Every silence, newest first",
                      {"200": _json("The silences", _ref("Silences"))}),
            "post": op("createSilence", "Silence matching alerts for a while",
                       {"201": _json("The new silence", _ref("Silence")), "400": bad},
                       state_changing=True, requestBody=body("SilenceBody"))},
        "/api/silences/{silence_id}": {"delete": op(
            "expireSilence", "Expire an active silence now",
            {"200": _json("Expired", _ref("Expired")),
             "404": _error("No active silence with this id")},
            state_changing=True,
            parameters=[{"name": "silence_id", "in": "path", "required": True,
                         "schema": STRING}])},
    }
