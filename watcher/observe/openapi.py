"""The status listener's OpenAPI document (``GET /openapi.json`` on the listener).

Written by hand: the listener is a small Starlette app without request bodies,
and its answers are the documents of :mod:`watcher.observe.snapshot`. The test
suite runs schemathesis against a running daemon's listener with this
document, so an answer that disagrees with it fails the build.
"""

from __future__ import annotations

from typing import Any

from watcher import __version__
from watcher.console.openapi import SCHEMAS as CONSOLE_SCHEMAS
from watcher.console.openapi import SECURITY_SCHEMES, console_paths

OPENAPI_PATH = "/openapi.json"
METRICS_MEDIA_TYPES = ("text/plain", "application/openmetrics-text")


def _obj(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "properties": properties,
            "required": required if required is not None else list(properties)}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


STRING = {"type": "string"}
ISO = _nullable({"type": "string", "format": "date-time"})
COUNT = {"type": "integer", "minimum": 0}

SCHEMAS: dict[str, dict[str, Any]] = {
    "Index": _obj({"service": {"type": "string", "enum": ["watcher"]},
                   "endpoints": {"type": "array", "items": STRING}}),
    "Health": _obj({"status": {"type": "string", "enum": ["ok"]},
                    "uptime_s": {"type": "number", "minimum": 0}}),
    "Readiness": _obj({
        "status": {"type": "string", "enum": ["ready", "not ready"]},
        "streams": {"type": "object", "additionalProperties": {"type": "boolean"},
                    "description": "Each stream's readiness, by name"},
        "store": _obj({"ready": {"type": "boolean"}, "reason": STRING}, required=["ready"]),
        "not_ready": {"type": "array", "items": _obj(
            {"stream": STRING, "store": STRING, "reason": STRING}, required=["reason"]),
            "description": "Each stream (or the state store) that is not ready, and why"},
        "cluster": _obj({"instance_id": STRING,
                         "owned": {"type": "object", "additionalProperties": COUNT}}),
    }, required=["status", "streams", "store", "not_ready"]),
    "StreamHealth": _obj({
        "name": STRING, "live": {"type": "boolean"}, "ready": {"type": "boolean"},
        "not_ready_reason": _nullable(STRING), "last_frame_at": ISO,
    }),
    "RuleStatus": _obj({
        "name": STRING,
        "streams": {"type": "array", "items": STRING},
        "state": STRING,
        "episode": _nullable({"type": "integer"}),
        "updated_at": ISO,
        "next_run_ms": _nullable({"type": "integer"}),
        "next_run_at": ISO,
        "stats": {"type": "object"},
        "ticks": _nullable(_obj({"missed": COUNT, "overruns": COUNT, "errors": COUNT})),
    }, required=["name", "streams", "state", "next_run_ms", "stats", "ticks"]),
    "ActionStatus": _obj({"name": STRING}),
    "BudgetStatus": _obj({
        "scope": {"type": "string", "enum": ["rule", "model"]},
        "name": STRING,
        **{f"{unit}_this_{period}": COUNT for unit in ("calls", "tokens")
           for period in ("hour", "day")},
        **{f"{unit}_per_{period}": _nullable({"type": "integer"})
           for unit in ("calls", "tokens") for period in ("hour", "day")},
        "exhausted": {"type": "boolean"},
        "resumes_at": ISO,
    }, required=["scope", "name", "exhausted"]),
    "AlertSummary": _obj({
        "rule": STRING, "kind": STRING, "status": STRING, "created_at": ISO,
        "has_snapshot": {"type": "boolean"},
    }),
    "Status": _obj({
        "version": STRING,
        "python": STRING,
        "started_at": ISO,
        "uptime_s": {"type": "number", "minimum": 0},
        "ready": {"type": "boolean"},
        "store": _obj({"ready": {"type": "boolean"}, "reason": _nullable(STRING),
                       "errors_total": COUNT}),
        "streams": {"type": "array", "items": _ref("StreamHealth")},
        "rules": {"type": "array", "items": _ref("RuleStatus")},
        "actions": {"type": "array", "items": _ref("ActionStatus")},
        "budgets": {"type": "array", "items": _ref("BudgetStatus"),
                    "description": "Spend against each rule's and model's budget, in the "
                                   "current UTC hour and day"},
        "alerts": {"type": "array", "items": _ref("AlertSummary"),
                   "description": "The most recent alert events, newest first"},
        "alerts_error": {"type": "string",
                         "description": "Why the alerts could not be read, when they could not"},
        "cluster": {"type": "object", "description": "Members, groups and ownership (cluster "
                                                     "mode only)"},
    }, required=["version", "python", "started_at", "uptime_s", "ready", "streams", "rules",
                 "actions", "alerts"]),
}


def status_openapi(*, console: bool = False, token: bool = False) -> dict[str, Any]:
    """The listener's document; with ``console``, ``/`` is the console's page (HTML) and the
    console's JSON API is in it; ``token`` says whether ``status.token`` guards them."""
    metrics_content = {media: {"schema": {"type": "string"}} for media in METRICS_MEDIA_TYPES}
    index = ({"summary": "The console: the alerts timeline", "operationId": "index",
              "responses": {"200": {"description": "The console's page", "content": {
                  "text/html": {"schema": {"type": "string"}}}}}}
             if console else
             {"summary": "What this listener serves", "operationId": "index",
              "responses": {"200": _json("Its endpoints", _ref("Index"))}})
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "watcher status listener", "version": __version__,
                 "description": "Health checks, Prometheus metrics and the daemon's status. "
                                "Without `status.token` there is no authentication: the "
                                "listener then binds to loopback only."},
        "paths": {
            "/": {"get": index},
            "/healthz": {"get": {
                "summary": "Liveness", "operationId": "healthz",
                "responses": {"200": _json("The daemon's event loop runs", _ref("Health"))}}},
            "/readyz": {"get": {
                "summary": "Readiness", "operationId": "readyz",
                "responses": {
                    "200": _json("The state store takes writes; every stream is leased, "
                                 "receiving frames now and its model answers",
                                 _ref("Readiness")),
                    "503": _json("The store or some stream is not ready; `not_ready` says "
                                 "why (`?format=text`: the same as text)",
                                 _ref("Readiness"))}}},
            "/metrics": {"get": {
                "summary": "Prometheus metrics", "operationId": "metrics",
                "description": "Text format 0.0.4; OpenMetrics when the `Accept` header "
                               "asks for it.",
                "responses": {"200": {"description": "The metrics",
                                      "content": metrics_content}}}},
            "/status": {"get": {
                "summary": "The daemon's status (what `watcher status` prints)",
                "operationId": "status",
                "responses": {"200": _json("Streams, rules, actions and recent alerts",
                                           _ref("Status"))}}},
            OPENAPI_PATH: {"get": {
                "summary": "This document", "operationId": "openapi",
                "responses": {"200": _json("The OpenAPI document", {"type": "object"})}}},
        },
        "components": {"schemas": SCHEMAS},
    }
    return with_console(document, token=token) if console else document


def with_console(document: dict[str, Any], *, token: bool) -> dict[str, Any]:
    """Add the console's ``/api/``; with a token, every route but ``/healthz`` needs it."""
    document["paths"].update(console_paths(token=token))
    document["components"]["schemas"] = {**SCHEMAS, **CONSOLE_SCHEMAS}
    document["tags"] = [{"name": "console", "description": "The web console's JSON API"}]
    if not token:
        return document
    document["components"]["securitySchemes"] = SECURITY_SCHEMES
    document["info"]["description"] = (
        "Health checks, Prometheus metrics, the daemon's status and the console's JSON API. "
        "Every route but `/healthz` needs `status.token` as a bearer token or the console's "
        "session cookie.")
    for path, item in document["paths"].items():
        if path == "/healthz" or path.startswith("/api/"):
            continue
        for operation in item.values():
            operation["security"] = [{"StatusToken": []}, {"SessionCookie": []}]
            operation["responses"]["401"] = {
                "description": "Neither the bearer token nor the session cookie was sent",
                "content": {"application/json": {"schema": _ref("ConsoleError")}}}
    return document
