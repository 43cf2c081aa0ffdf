"""The console's JSON documents: what ``/api/`` answers and what the pages render.

Each function reads the live daemon (:class:`ConsoleSource`) and the alert
store and returns plain JSON-ready data; the routes only parse requests and
serialize. Times are Unix milliseconds (``*_ms``) with ISO 8601 UTC twins
(``*_at``), as in ``/status``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from watcher.clock import Clock, SystemClock
from watcher.console.config import ClipsConfig
from watcher.engine.schema import schema_fields
from watcher.engine.silences import (
    AlertLabels,
    Matcher,
    Silence,
    SilenceBook,
    SilenceError,
    validate,
)
from watcher.engine.state import Kind
from watcher.engine.store import AlertEventRecord, AlertStore, DeliveryRecord, DeliveryStatus
from watcher.observe.snapshot import iso_ms, stream_documents
from watcher.observe.source import StatusSource
from watcher.store.reviews import FEEDBACK_LABELS, Ack, Feedback
from watcher.store.timeline import EventDetails, TimelineQuery

MAX_NOTE = 2000


class BadRequest(ValueError):
    """The request is malformed; the message says what to fix (answered as 400)."""


@dataclass(slots=True)
class ConsoleSource:
    """What the console reads: the status source, the store and the daemon's settings."""

    status: StatusSource
    store: AlertStore
    silences: SilenceBook | None = None
    clips: ClipsConfig = field(default_factory=ClipsConfig)
    pulled: Callable[[str], bool] = lambda name: False
    clock: Clock = field(default_factory=SystemClock)
    token_required: bool = False
    public_url: str | None = None


# -- the timeline ------------------------------------------------------------------
async def events_page(src: ConsoleSource, query: TimelineQuery) -> dict[str, Any]:
    events, details = await src.store.timeline_page(query)
    docs = event_documents(src, events, details)
    last = events[-1] if len(events) == query.limit else None
    return {"events": docs,
            "next_before": f"{last.created_ms}:{last.id}" if last is not None else None}


def event_documents(src: ConsoleSource, events: list[AlertEventRecord],
                    details: EventDetails) -> list[dict[str, Any]]:
    deliveries, marks, clips = details.deliveries, details.feedback, details.clip_ids
    episodes, acks = details.episodes, details.acks
    now = src.clock.now_ms()
    out = []
    for e in events:
        key = (e.rule, e.stream_key, e.episode)
        started, resolved = episodes.get(key, (None, None))
        mark = marks.get(e.id) if e.id is not None else None
        ack = acks.get(key)
        out.append({
            "id": e.id, "event_key": e.event_key, "rule": e.rule, "stream": e.stream_key,
            "streams": list(e.extra.get("streams") or e.stream_key.split("+")),
            "kind": str(e.kind), "status": e.status, "episode": e.episode,
            "severity": e.severity, "labels": e.labels, "notify": e.notify,
            "silenced_by": e.silenced_by,
            "suppressed": not e.notify and e.silenced_by is None and e.kind is not Kind.RESOLVED,
            "created_ms": e.created_ms, "created_at": iso_ms(e.created_ms),
            "started_ms": started, "started_at": iso_ms(started),
            "resolved_ms": resolved, "resolved_at": iso_ms(resolved),
            "answer": e.answer, "confirm_answer": e.extra.get("confirm_answer"),
            "confirmed": e.extra.get("confirmed"),
            "has_snapshot": e.snapshot_type is not None,
            "snapshot_url": f"/api/events/{e.id}/snapshot" if e.snapshot_type else None,
            "has_clip": e.id in clips,
            "clip_url": f"/api/events/{e.id}/clip" if e.id in clips else None,
            "deliveries": [delivery_document(d, now) for d in deliveries.get(e.id or 0, [])],
            "feedback": feedback_document(mark) if mark is not None else None,
            "acknowledged": ack_document(ack) if ack is not None else None,
        })
    return out


def delivery_document(d: DeliveryRecord, now_ms: int) -> dict[str, Any]:
    """One delivery; ``state`` is ``sent``, ``retrying`` (failed, due again), ``pending``,
    ``sending``, ``summarized`` or ``dead``."""
    state = {DeliveryStatus.SENT: "sent", DeliveryStatus.DEAD: "dead",
             DeliveryStatus.SUMMARIZED: "summarized", DeliveryStatus.DELIVERING: "sending",
             }.get(d.status, "retrying" if d.attempts and d.last_error else "pending")
    return {"action": d.action, "state": state, "attempts": d.attempts,
            "last_error": d.last_error, "sent_at": iso_ms(d.sent_ms),
            "next_attempt_in_s": (round(max(0, d.next_attempt_ms - now_ms) / 1000, 1)
                                  if d.status is DeliveryStatus.PENDING else None),
            "summary_id": d.summary_id}


def feedback_document(f: Feedback) -> dict[str, Any]:
    return {"label": f.label, "note": f.note, "by": f.created_by,
            "created_at": iso_ms(f.created_ms)}


def ack_document(a: Ack) -> dict[str, Any]:
    return {"by": a.created_by, "comment": a.comment, "created_at": iso_ms(a.created_ms)}


async def event_detail(src: ConsoleSource, event_id: int) -> dict[str, Any] | None:
    event = await src.store.event(event_id)
    if event is None:
        return None
    [doc] = event_documents(src, [event], await src.store.event_details([event]))
    clip = await src.store.clip(event_id, data=False)
    stream = doc["streams"][0]
    doc.update({
        "prompt": event.extra.get("prompt"), "urls": list(event.urls),
        "stream_ids": list(event.stream_ids), "stream_time_ms": event.stream_time_ms,
        "model": event.model, "usage": event.usage, "latency_s": event.extra.get("latency_s"),
        "clip": ({"content_type": clip.content_type, "bytes": clip.bytes,
                  "frames": clip.frames, "start_at": iso_ms(clip.start_ms),
                  "end_at": iso_ms(clip.end_ms), "encode_cpu_ms": clip.encode_cpu_ms}
                 if clip is not None else None),
        "clip_status": _clip_status(src, event, stream, clip is not None),
    })
    return doc


def _clip_status(src: ConsoleSource, event: AlertEventRecord, stream: str, has: bool) -> str:
    if has:
        return "ready"
    if src.pulled(stream):
        return "pulled"  # the API server pulls this camera: a snapshot only
    if event.kind is not Kind.FIRING or not src.clips.enabled:
        return "none"
    due = event.created_ms + round(src.clips.after * 1000) + 15_000
    return "making" if src.clock.now_ms() < due else "none"


# -- actions on events ------------------------------------------------------------
async def acknowledge(src: ConsoleSource, event_id: int, by: str, comment: str,
                      ) -> dict[str, Any]:
    event = await _event(src, event_id)
    ack = Ack(event.rule, event.stream_key, event.episode, _who(by), _text(comment, "comment"),
              src.clock.now_ms())
    added = await src.store.add_ack(ack)
    return {"acknowledged": True, "new": added, "rule": event.rule, "stream": event.stream_key,
            "episode": event.episode}


async def set_feedback(src: ConsoleSource, event_id: int, label: str, note: str, by: str,
                       ) -> dict[str, Any]:
    if label not in FEEDBACK_LABELS:
        raise BadRequest(f"label must be one of {', '.join(FEEDBACK_LABELS)}")
    await _event(src, event_id)
    mark = Feedback(event_id, label, _text(note, "note"), _who(by), src.clock.now_ms())
    await src.store.set_feedback(mark)
    return feedback_document(mark)


async def _event(src: ConsoleSource, event_id: int) -> AlertEventRecord:
    event = await src.store.event(event_id)
    if event is None:
        raise LookupError(f"no event {event_id}")
    return event


def _who(by: str) -> str:
    by = (by or "").strip() or "console"
    if len(by) > 100:
        raise BadRequest("the name is longer than 100 characters")
    return by


def _text(value: str, name: str) -> str:
    value = (value or "").strip()
    if len(value) > MAX_NOTE:
        raise BadRequest(f"the {name} is longer than {MAX_NOTE} characters")
    return value


# -- silences ----------------------------------------------------------------------
def silence_document(s: Silence, now_ms: int) -> dict[str, Any]:
    return {"id": s.id, "matchers": [m.to_dict() for m in s.matchers],
            "matchers_text": ", ".join(str(m) for m in s.matchers),
            "starts_at": iso_ms(s.starts_ms), "ends_at": iso_ms(s.ends_ms),
            "created_by": s.created_by, "comment": s.comment,
            "created_at": iso_ms(s.created_ms), "state": s.state(now_ms),
            "expired_early": s.expired_ms is not None}


async def silences_list(src: ConsoleSource) -> list[dict[str, Any]]:
    now = src.clock.now_ms()
    return [silence_document(s, now) for s in await src.store.silences()]


async def create_silence(src: ConsoleSource, matchers: list[Matcher], duration_s: float,
                         comment: str, created_by: str) -> dict[str, Any]:
    now = src.clock.now_ms()
    if not 0 < duration_s <= 366 * 86400:
        raise BadRequest("the duration must be between 1 s and a year")
    silence = Silence(new_silence_id(), tuple(matchers), now, now + round(duration_s * 1000),
                      (created_by or "").strip(), _text(comment, "comment"), now)
    try:
        validate(silence.matchers, silence.starts_ms, silence.ends_ms, silence.comment,
                 silence.created_by)
    except SilenceError as exc:
        raise BadRequest(str(exc)) from None
    await src.store.add_silence(silence)
    if src.silences is not None:
        await src.silences.refresh()
    return silence_document(silence, now)


async def expire(src: ConsoleSource, silence_id: str) -> bool:
    done = await src.store.expire_silence(silence_id, src.clock.now_ms())
    if done and src.silences is not None:
        await src.silences.refresh()
    return done


def new_silence_id() -> str:
    return secrets.token_hex(6)


def matchers_from_json(items: Any) -> list[Matcher]:
    if not isinstance(items, list) or not items:
        raise BadRequest("matchers must be a non-empty list of {name, value, isRegex, isEqual}")
    try:
        return [Matcher.from_dict(m) for m in items]
    except SilenceError as exc:
        raise BadRequest(str(exc)) from None


def matchers_like(event: Mapping[str, Any]) -> list[Matcher]:
    """A silence "like this" event: its rule and stream."""
    return [Matcher("rule", event["rule"]), Matcher("stream", event["stream"])]


# -- cameras and rules -------------------------------------------------------------
def cameras(src: ConsoleSource) -> list[dict[str, Any]]:
    """The streams; in cluster mode each names the instance owning its camera group."""
    owners = stream_owners(src.status.cluster_snapshot())
    docs = []
    for doc in stream_documents(src.status):
        name = doc["name"]
        pulled = src.pulled(name)
        docs.append({**doc, "pulled": pulled, "owner": owners.get(name),
                     "frame_url": None if pulled else f"/api/cameras/{name}/frame"})
    return docs


def stream_owners(cluster: Mapping[str, Any] | None) -> dict[str, str]:
    """Stream name -> the instance holding its group's lease (cluster mode)."""
    owners: dict[str, str] = {}
    for group in (cluster or {}).get("groups") or []:
        if group.get("owner"):
            for stream in group.get("streams") or []:
                owners[stream] = str(group["owner"])
    return owners


def rules(src: ConsoleSource) -> list[dict[str, Any]]:
    out = []
    now = src.clock.now_ms()
    for name, runner in src.status.runners().items():
        stats = runner.stats
        history = list(getattr(runner, "history", ()))
        rule = runner.rule
        labels = AlertLabels(name, "+".join(runner.stream_names), getattr(rule, "severity", None),
                             dict(getattr(rule, "labels", {}) or {}))
        silence = src.silences.match(labels, now) if src.silences is not None else None
        status = str(runner.state.status)
        state = ("silenced" if silence is not None and status in ("firing", "pending") else
                 {"inactive": "ok", "resolved": "ok"}.get(status, status))
        latencies = [h["latency_s"] for h in history if h.get("latency_s") is not None]
        chart_field = _chart_field(rule)
        out.append({
            "name": name, "stream": labels.stream_key, "state": state, "alert_state": status,
            "episode": runner.state.episode, "severity": labels.severity,
            "silenced_by": silence.id if silence is not None else None,
            "evaluations": stats.evaluations,
            "skipped": stats.skipped_not_ready + stats.skipped_unchanged + stats.skipped_budget,
            "invalid_answers": stats.invalid_answers,
            "errors": stats.model_errors + stats.condition_errors,
            "latency_avg_s": round(sum(latencies) / len(latencies), 3) if latencies else None,
            "latency_max_s": max(latencies) if latencies else None,
            "chart_field": chart_field,
            "history": [{"at": iso_ms(h["at_ms"]), "outcome": h["outcome"],
                         "matched": h["matched"],
                         "value": _field_value(h.get("answer"), chart_field)}
                        for h in history],
        })
    return out


def _chart_field(rule: Any) -> str | None:
    """The answer field the rules page charts: the first boolean, else the first number."""
    try:
        fields = schema_fields(rule.schema)
    except Exception:
        return None
    items = list(fields.items()) if isinstance(fields, Mapping) else []
    for wanted in (("boolean",), ("integer", "number")):
        for name, kind in items:
            if _kind(kind) in wanted:
                return name
    return None


def _kind(spec: Any) -> str | None:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping):
        t = spec.get("type")
        if isinstance(t, list):
            t = next((x for x in t if x != "null"), None)
        return t if isinstance(t, str) else None
    return getattr(spec, "type", None)


def _field_value(answer: Any, name: str | None) -> float | None:
    if name is None or not isinstance(answer, Mapping):
        return None
    value = answer.get(name)
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    return float(value) if isinstance(value, int | float) else None
