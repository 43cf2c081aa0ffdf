"""The console's query over alert events: filters, newest first, keyset pages.

Pages are keyset-paginated by ``(created_ms, id)``, so page N costs what page 1
costs however many events are stored; every filter is on an indexed column or
a primary-key lookup (indexes in revision ``0006``).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, exists, literal, or_, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from watcher.store import deliveries as outbox
from watcher.store import reviews
from watcher.store.alerts import event_from_row
from watcher.store.records import AlertEventRecord, DeliveryRecord
from watcher.store.reviews import Ack, Feedback
from watcher.store.schema import alert_events, feedback

STATUSES = ("firing", "resolved")
FEEDBACK_FILTERS = ("real", "false_alarm", "none", "any")
MAX_LIMIT = 500


@dataclass(frozen=True, slots=True)
class TimelineQuery:
    rule: str | None = None
    stream: str | None = None
    severity: str | None = None
    status: str | None = None
    """``firing`` (firing and repeat events) or ``resolved``."""
    since_ms: int | None = None
    until_ms: int | None = None
    silenced: bool | None = None
    feedback: str | None = None
    """``real``, ``false_alarm``, ``none`` (not marked) or ``any`` (marked)."""
    before: tuple[int, int] | None = None
    """``(created_ms, id)`` of the last event of the previous page."""
    limit: int = 50

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        if self.feedback is not None and self.feedback not in FEEDBACK_FILTERS:
            raise ValueError(f"feedback must be one of {', '.join(FEEDBACK_FILTERS)}")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1-{MAX_LIMIT}")


async def timeline(conn: AsyncConnection, q: TimelineQuery) -> list[AlertEventRecord]:
    """One page of events without their snapshots (``snapshot_type`` says if one exists)."""
    e = alert_events.c
    query = select(*[c for c in alert_events.c if c.name != "snapshot"])
    for column, value in ((e.rule, q.rule), (e.severity, q.severity), (e.status, q.status)):
        if value is not None:
            query = query.where(column == value)
    if q.since_ms is not None:
        query = query.where(e.created_ms >= q.since_ms)
    if q.until_ms is not None:
        query = query.where(e.created_ms < q.until_ms)
    if q.stream is not None:  # a stream's events include its cross-camera rules' events
        query = query.where(or_(e.stream_key == q.stream, (
            literal("+") + e.stream_key + literal("+")).contains(
                f"+{q.stream}+", autoescape=True)))
    if q.silenced is not None:
        query = query.where(e.silenced_by.is_not(None) if q.silenced
                            else e.silenced_by.is_(None))
    marked = exists().where(feedback.c.event_id == e.id)
    if q.feedback in ("real", "false_alarm"):
        query = query.where(e.id.in_(select(feedback.c.event_id).where(
            feedback.c.label == q.feedback)))
    elif q.feedback == "none":
        query = query.where(~marked)
    elif q.feedback == "any":
        query = query.where(marked)
    if q.before is not None:
        created, event_id = q.before
        query = query.where(or_(e.created_ms < created,
                                and_(e.created_ms == created, e.id < event_id)))
    query = query.order_by(e.created_ms.desc(), e.id.desc()).limit(q.limit)
    return [event_from_row(row) for row in await conn.execute(query)]


async def episode_times(conn: AsyncConnection, keys: list[tuple[str, str, int]],
                        ) -> dict[tuple[str, str, int], tuple[int | None, int | None]]:
    """When each (rule, stream_key, episode) fired and resolved (None: not yet).

    One statement: an OR of exact index lookups (SQLite scans for a row-value IN)."""
    out: dict[tuple[str, str, int], tuple[int | None, int | None]] = {
        key: (None, None) for key in keys}
    for chunk in reviews.key_chunks(keys):
        where, params = reviews.keys_match(chunk)
        rows = await conn.execute(text(
            "SELECT rule, stream_key, episode, kind, created_ms FROM alert_events"
            f" WHERE ({where}) AND kind IN ('firing', 'resolved')"
            " ORDER BY created_ms DESC"), params)
        for rule, stream_key, episode, kind, at in rows:  # newest first: the earliest wins
            fired, resolved = out[(rule, stream_key, episode)]
            out[(rule, stream_key, episode)] = (at, resolved) if kind == "firing" else (
                fired, at)
    return out


@dataclass(frozen=True, slots=True)
class EventDetails:
    """What the console shows with a page of events, read in one transaction."""

    deliveries: dict[int, list[DeliveryRecord]]
    feedback: dict[int, Feedback]
    clip_ids: set[int]
    episodes: dict[tuple[str, str, int], tuple[int | None, int | None]]
    acks: dict[tuple[str, str, int], Ack]


async def event_details(conn: AsyncConnection, events: list[AlertEventRecord],
                        ) -> EventDetails:
    ids = [e.id for e in events if e.id is not None]
    keys = list(dict.fromkeys((e.rule, e.stream_key, e.episode) for e in events))
    return EventDetails(
        deliveries=await outbox.for_events(conn, ids),
        feedback=await reviews.load_feedback(conn, ids),
        clip_ids=await reviews.clip_ids(conn, ids),
        episodes=await episode_times(conn, keys),
        acks=await reviews.load_acks(conn, keys))
