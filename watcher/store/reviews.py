"""What people add to alerts in the console: silences, acks, feedback marks, evidence clips.

The statements, on a given connection (see :mod:`watcher.store.alerts`); the
tables are in :mod:`watcher.store.schema` (revision ``0006``).

* ``silences``: one row per silence; matchers as JSON (Alertmanager's shape).
* ``acks``: (rule, stream_key, episode): an acknowledged firing episode. Acks
  name the episode, so the next episode is not acknowledged.
* ``feedback``: one mark per event: ``real`` or ``false_alarm``, a note, who, when.
* ``evidence_clips``: one short video per event (:mod:`watcher.console.clips`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from watcher.engine.silences import Matcher, Silence
from watcher.store.alerts import chunks
from watcher.store.schema import (
    acks,
    alert_events,
    dumps,
    evidence_clips,
    feedback,
    loads,
    silences,
)

FEEDBACK_LABELS = ("real", "false_alarm")


@dataclass(frozen=True, slots=True)
class Ack:
    rule: str
    stream_key: str
    episode: int
    created_by: str
    comment: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class Feedback:
    event_id: int
    label: str
    """``real`` or ``false_alarm``."""
    note: str
    created_by: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class Clip:
    """An event's evidence clip; ``data`` is None when only the metadata was read."""

    event_id: int
    content_type: str
    bytes: int
    frames: int
    start_ms: int
    end_ms: int
    encode_cpu_ms: int
    created_ms: int
    data: bytes | None = None


def keys_match(keys: list[tuple[str, str, int]]) -> tuple[str, dict[str, Any]]:
    """``(rule = :r0 AND stream_key = :k0 AND episode = :e0) OR ...`` and its parameters.

    Written as text: building the same expression with SQLAlchemy's operators
    costs more than running it."""
    clauses, params = [], {}
    for i, (rule, stream_key, episode) in enumerate(keys):
        clauses.append(f"(rule = :r{i} AND stream_key = :k{i} AND episode = :e{i})")
        params.update({f"r{i}": rule, f"k{i}": stream_key, f"e{i}": episode})
    return " OR ".join(clauses), params


def key_chunks(keys: list[tuple[str, str, int]], size: int = 100,
               ) -> list[list[tuple[str, str, int]]]:
    return [keys[i:i + size] for i in range(0, len(keys), size)]


# -- silences ------------------------------------------------------------------
async def save_silence(conn: AsyncConnection, s: Silence) -> None:
    await conn.execute(silences.insert().values(
        id=s.id, matchers=dumps([m.to_dict() for m in s.matchers]), starts_ms=s.starts_ms,
        ends_ms=s.ends_ms, created_by=s.created_by, comment=s.comment,
        created_ms=s.created_ms, expired_ms=s.expired_ms))


async def load_silences(conn: AsyncConnection, since_ms: int | None) -> list[Silence]:
    """Silences ending after ``since_ms`` (all with None), newest first."""
    query = select(silences)
    if since_ms is not None:
        query = query.where(silences.c.ends_ms > since_ms)
    rows = await conn.execute(query.order_by(silences.c.created_ms.desc(), silences.c.id))
    return [Silence(id=r.id, matchers=tuple(Matcher.from_dict(m) for m in loads(r.matchers)),
                    starts_ms=r.starts_ms, ends_ms=r.ends_ms, created_by=r.created_by,
                    comment=r.comment, created_ms=r.created_ms, expired_ms=r.expired_ms)
            for r in rows]


async def expire_silence(conn: AsyncConnection, silence_id: str, now_ms: int) -> bool:
    """End an active or pending silence now; False if unknown or already over."""
    result = await conn.execute(
        update(silences).where(silences.c.id == silence_id, silences.c.ends_ms > now_ms)
        .values(ends_ms=now_ms, expired_ms=now_ms))
    return result.rowcount == 1


# -- acks ------------------------------------------------------------------------
async def save_ack(conn: AsyncConnection, ack: Ack) -> bool:
    """Record ``ack``; False if that episode was already acknowledged."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(acks).values(
        rule=ack.rule, stream_key=ack.stream_key, episode=ack.episode,
        created_by=ack.created_by, comment=ack.comment, created_ms=ack.created_ms)
    result = await conn.execute(stmt.on_conflict_do_nothing())
    return result.rowcount == 1


async def load_acks(conn: AsyncConnection, keys: list[tuple[str, str, int]],
                    ) -> dict[tuple[str, str, int], Ack]:
    out: dict[tuple[str, str, int], Ack] = {}
    for chunk in key_chunks(keys):  # an OR of primary-key lookups (a row-value IN scans)
        where, params = keys_match(chunk)
        rows = await conn.execute(text(
            "SELECT rule, stream_key, episode, created_by, comment, created_ms FROM acks"
            f" WHERE {where}"), params)
        for row in rows:
            out[(row[0], row[1], row[2])] = Ack(*row)
    return out


# -- feedback --------------------------------------------------------------------
async def save_feedback(conn: AsyncConnection, fb: Feedback) -> None:
    """Set (or replace) the event's mark."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(feedback).values(
        event_id=fb.event_id, label=fb.label, note=fb.note, created_by=fb.created_by,
        created_ms=fb.created_ms)
    await conn.execute(stmt.on_conflict_do_update(
        index_elements=["event_id"],
        set_={c: stmt.excluded[c] for c in ("label", "note", "created_by", "created_ms")}))


async def load_feedback(conn: AsyncConnection, event_ids: list[int] | None,
                        ) -> dict[int, Feedback]:
    """Marks of ``event_ids`` (every mark with None)."""
    f = feedback.c
    columns = (f.event_id, f.label, f.note, f.created_by, f.created_ms)
    if event_ids is None:
        rows = await conn.execute(select(*columns).order_by(f.event_id))
        return {r[0]: Feedback(*r) for r in rows}
    out: dict[int, Feedback] = {}
    for chunk in chunks(event_ids):
        rows = await conn.execute(select(*columns).where(f.event_id.in_(chunk)))
        out.update((r[0], Feedback(*r)) for r in rows)
    return out


# -- clips -----------------------------------------------------------------------
async def save_clip(conn: AsyncConnection, clip: Clip) -> bool:
    """Store ``clip`` unless its event is gone (pruned meanwhile); True when stored."""
    known = (await conn.execute(select(alert_events.c.id).where(
        alert_events.c.id == clip.event_id))).one_or_none()
    if known is None:
        return False
    await conn.execute(delete(evidence_clips).where(
        evidence_clips.c.event_id == clip.event_id))
    await conn.execute(evidence_clips.insert().values(
        event_id=clip.event_id, content_type=clip.content_type, data=clip.data,
        bytes=clip.bytes, frames=clip.frames, start_ms=clip.start_ms, end_ms=clip.end_ms,
        encode_cpu_ms=clip.encode_cpu_ms, created_ms=clip.created_ms))
    return True


async def load_clip(conn: AsyncConnection, event_id: int, data: bool) -> Clip | None:
    c = evidence_clips.c
    columns = [c.event_id, c.content_type, c.bytes, c.frames, c.start_ms, c.end_ms,
               c.encode_cpu_ms, c.created_ms] + ([c.data] if data else [])
    row = (await conn.execute(select(*columns).where(c.event_id == event_id))).one_or_none()
    if row is None:
        return None
    return Clip(*row[:8], data=bytes(row[8]) if data and row[8] is not None else None)


async def clip_ids(conn: AsyncConnection, event_ids: list[int]) -> set[int]:
    out: set[int] = set()
    for chunk in chunks(event_ids):
        rows = await conn.execute(select(evidence_clips.c.event_id).where(
            evidence_clips.c.event_id.in_(chunk)))
        out.update(r[0] for r in rows)
    return out


async def clip_bytes(conn: AsyncConnection) -> int:
    """Bytes of every stored clip (they count in any evidence budget)."""
    return int((await conn.execute(
        select(func.coalesce(func.sum(evidence_clips.c.bytes), 0)))).scalar_one())


async def trim_clips(conn: AsyncConnection, max_bytes: int, max_count: int | None) -> int:
    """Drop the oldest clips until they fit ``max_bytes`` (and ``max_count``); the events stay."""
    c = evidence_clips.c
    total, count = (await conn.execute(
        select(func.coalesce(func.sum(c.bytes), 0), func.count()))).one()
    if total <= max_bytes and (max_count is None or count <= max_count):
        return 0
    doomed = []
    for event_id, size in await conn.execute(
            select(c.event_id, c.bytes).order_by(c.created_ms, c.event_id)):
        if total <= max_bytes and (max_count is None or count <= max_count):
            break
        doomed.append(event_id)
        total -= size
        count -= 1
    dropped = 0
    for chunk in chunks(doomed):
        dropped += (await conn.execute(delete(evidence_clips).where(
            c.event_id.in_(chunk)))).rowcount
    return dropped
