"""The JSON API under ``/api/``: the console's source of truth (pages render the same data).

::

    GET    /api/events?rule&stream&severity&status&since&until&silenced&feedback&before&limit
    GET    /api/events/{id}                 one event: answer, prompt, refs, model, latency,
                                            tokens, deliveries, feedback, ack, clip
    GET    /api/events/{id}/snapshot        the JPEG the event was decided on
    GET    /api/events/{id}/clip            the evidence clip (video/mp4, video/webm, image/webp)
    POST   /api/events/{id}/ack             {"by", "comment"}: no repeat_every until resolved
    POST   /api/events/{id}/feedback        {"label": "real"|"false_alarm", "note", "by"}
    GET    /api/cameras                     streams with state, fps, lease, reconnects
    GET    /api/cameras/{name}/frame        the frame being published now (JPEG)
    GET    /api/rules                       per rule: state, recent answers, counters, latency
    GET    /api/silences                    every silence, newest first
    POST   /api/silences                    {"matchers": [...], "duration": "2h" | "ends_at",
                                             "comment", "created_by"} -> 201 {"id", ...}
    DELETE /api/silences/{id}               expire it now

``since``/``until`` are ISO 8601 times or Unix ms; ``before`` is the ``next_before``
cursor of the previous page. Bad input is a 400 with ``{"error": "..."}``.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from watcher.console import api
from watcher.console.api import BadRequest, ConsoleSource
from watcher.console.clips import to_jpeg
from watcher.duration import parse_duration
from watcher.logs import redact, redact_data
from watcher.store.timeline import TimelineQuery

MAX_BODY = 64 * 1024
MAX_MS = 253402300799999  # 9999-12-31T23:59:59.999Z: later times are clamped to it
MAX_ID = 2**63 - 1  # the store's integer ids are 64-bit


def json_response(doc: Any, status_code: int = 200) -> Response:
    body = redact(json.dumps(redact_data(doc), ensure_ascii=False))
    return Response(body, status_code=status_code, media_type="application/json",
                    headers={"Cache-Control": "no-store"})


def error(status_code: int, message: str) -> Response:
    return json_response({"error": message}, status_code)


def timeline_query(params: Any, *, limit: int = 50) -> TimelineQuery:
    """A :class:`TimelineQuery` from query parameters (empty values are no filter)."""
    def get(name: str) -> str | None:
        value = params.get(name)
        return value.strip() or None if isinstance(value, str) else None

    silenced = get("silenced")
    if silenced not in (None, "true", "false", "yes", "no", "1", "0"):
        raise BadRequest("silenced must be true or false")
    before = get("before")
    cursor = None
    if before is not None:
        created, _, event_id = before.partition(":")
        if not (before.isascii() and created.isdigit() and event_id.isdigit()):
            raise BadRequest("before must be the next_before cursor of the previous page")
        cursor = (min(int(created), MAX_MS), min(int(event_id), MAX_ID))
    raw_limit = get("limit")
    if raw_limit is not None and not raw_limit.isdigit():
        raise BadRequest("limit must be a whole number")
    try:
        return TimelineQuery(
            rule=get("rule"), stream=get("stream"), severity=get("severity"),
            status=get("status"), since_ms=parse_time(get("since"), "since"),
            until_ms=parse_time(get("until"), "until"),
            silenced=None if silenced is None else silenced in ("true", "yes", "1"),
            feedback=get("feedback"), before=cursor,
            limit=int(raw_limit) if raw_limit is not None else limit)
    except ValueError as exc:
        raise BadRequest(str(exc)) from None


def parse_time(value: str | None, name: str) -> int | None:
    """ISO 8601 (UTC when no zone; a ``datetime-local`` form value works) or Unix ms."""
    if value is None:
        return None
    if value.isascii() and value.isdigit():
        return min(int(value), MAX_MS)
    try:
        when = datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"{name} must be an ISO 8601 time (2026-01-31T12:00:00Z) or Unix "
                         "milliseconds") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def event_id_of(request: Request) -> int:
    raw = request.path_params["event_id"]
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 18:
        raise LookupError(f"no event {raw}")
    return int(raw)


async def read_json(request: Request) -> dict[str, Any]:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise BadRequest("the request body is too large")
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        raise BadRequest("the body must be JSON") from None
    if not isinstance(doc, dict):
        raise BadRequest("the body must be a JSON object")
    return doc


def text_field(doc: dict[str, Any], name: str) -> str:
    """A string field of a JSON body; absent or null is empty, another type a 400."""
    value = doc.get(name)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string")
    return value


def duration_seconds(doc: dict[str, Any], now_ms: int) -> float:
    """A silence's length from ``duration`` ("2h", seconds) or ``ends_at`` (ISO / ms)."""
    ends = (parse_time(str(doc["ends_at"]), "ends_at") if doc.get("ends_at") is not None
            else None)  # checked even when ``duration`` wins
    if doc.get("duration") is not None:
        value = doc["duration"]
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise BadRequest("duration must be like 2h, 30m or a number of seconds")
        try:
            return float(value) if isinstance(value, int | float) else parse_duration(str(value))
        except (ValueError, TypeError, OverflowError):
            raise BadRequest("duration must be like 2h, 30m or a number of seconds") from None
    if ends is not None:
        return (ends - now_ms) / 1000
    raise BadRequest("give duration (2h) or ends_at")


def api_routes(src: ConsoleSource) -> list[Route]:
    async def events(request: Request) -> Response:
        return json_response(await api.events_page(src, timeline_query(request.query_params)))

    async def event(request: Request) -> Response:
        doc = await api.event_detail(src, event_id_of(request))
        if doc is None:
            raise LookupError("no such event")
        return json_response(doc)

    async def snapshot(request: Request) -> Response:
        found = await src.store.snapshot(event_id_of(request))
        if found is None:
            raise LookupError("this event has no snapshot")
        return Response(found[0], media_type=found[1],
                        headers={"Cache-Control": "private, max-age=86400"})

    async def clip(request: Request) -> Response:
        found = await src.store.clip(event_id_of(request))
        if found is None or found.data is None:
            raise LookupError("this event has no clip")
        return Response(found.data, media_type=found.content_type,
                        headers={"Cache-Control": "private, max-age=86400",
                                 "Accept-Ranges": "none"})

    async def ack(request: Request) -> Response:
        doc = await read_json(request)
        return json_response(await api.acknowledge(
            src, event_id_of(request), text_field(doc, "by"), text_field(doc, "comment")))

    async def feedback(request: Request) -> Response:
        doc = await read_json(request)
        return json_response(await api.set_feedback(
            src, event_id_of(request), text_field(doc, "label"), text_field(doc, "note"),
            text_field(doc, "by")))

    async def cameras(request: Request) -> Response:
        await src.status.refresh()
        return json_response({"cameras": api.cameras(src)})

    async def frame(request: Request) -> Response:
        jpeg = await camera_frame(src, request.path_params["name"])
        return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})

    async def rules(request: Request) -> Response:
        return json_response({"rules": api.rules(src)})

    async def silences(request: Request) -> Response:
        if request.method == "POST":
            doc = await read_json(request)
            created = await api.create_silence(
                src, api.matchers_from_json(doc.get("matchers")),
                duration_seconds(doc, src.clock.now_ms()), text_field(doc, "comment"),
                text_field(doc, "created_by"))
            return json_response(created, 201)
        return json_response({"silences": await api.silences_list(src)})

    async def silence(request: Request) -> Response:
        if not await api.expire(src, request.path_params["silence_id"]):
            raise LookupError("no active silence with this id")
        return json_response({"expired": True})

    return [
        Route("/api/events", events),
        Route("/api/events/{event_id}", event),
        Route("/api/events/{event_id}/snapshot", snapshot),
        Route("/api/events/{event_id}/clip", clip),
        Route("/api/events/{event_id}/ack", ack, methods=["POST"]),
        Route("/api/events/{event_id}/feedback", feedback, methods=["POST"]),
        Route("/api/cameras", cameras),
        Route("/api/cameras/{name}/frame", frame),
        Route("/api/rules", rules),
        Route("/api/silences", silences, methods=["GET", "POST"]),
        Route("/api/silences/{silence_id}", silence, methods=["DELETE"]),
    ]


async def camera_frame(src: ConsoleSource, name: str) -> bytes:
    keeper = src.status.keepers.get(name)
    frames = getattr(keeper, "frames", None)
    frame = await frames.newest(gated=False) if frames is not None else None
    if frame is None:
        raise LookupError(f"no frame of camera {name} yet")
    jpeg = await asyncio.to_thread(to_jpeg, frame, src.clips.width)
    if jpeg is None:
        raise LookupError("the frame could not be encoded")
    return jpeg
