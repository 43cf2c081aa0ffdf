"""Evidence within a byte budget: the statements, on a given connection.

Evidence is what an event carries to show what was seen: the JPEG snapshot
now, clips later. It is most of the database's size, so it is kept within
``state.evidence_budget_mb``: past it (or when the disk is full) the oldest
evidence is dropped first, and the events themselves always stay. A new
kind of evidence (a blob column of ``alert_events``) is added to
:data:`EVIDENCE_COLUMNS`, and counts against the same budget. The console's
evidence clips (table ``evidence_clips``, one per event) count too: trimming
drops the oldest evidence of either kind first.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from watcher.store.alerts import chunks
from watcher.store.schema import alert_events, evidence_clips

EVIDENCE_COLUMNS = ("snapshot",)
"""Blob columns of ``alert_events`` that are evidence."""
_TYPE_COLUMNS = {"snapshot": "snapshot_type"}
"""The column saying what each evidence column holds (cleared with it)."""


def _size() -> Any:
    parts = [func.coalesce(func.length(alert_events.c[c]), 0) for c in EVIDENCE_COLUMNS]
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    return total


async def total_bytes(conn: AsyncConnection) -> int:
    """Bytes of evidence stored (snapshots and clips)."""
    value = (await conn.execute(select(func.coalesce(func.sum(_size()), 0)))).scalar_one()
    clips = (await conn.execute(
        select(func.coalesce(func.sum(evidence_clips.c.bytes), 0)))).scalar_one()
    return int(value) + int(clips)


async def trim(conn: AsyncConnection, max_bytes: int) -> tuple[int, int]:
    """Drop the oldest evidence until at most ``max_bytes`` remain.

    Returns (events whose evidence was dropped, evidence bytes left).
    """
    total = await total_bytes(conn)
    if total <= max_bytes:
        return 0, total
    e, c = alert_events.c, evidence_clips.c
    held = or_(*(e[col].isnot(None) for col in EVIDENCE_COLUMNS))
    pieces = [(int(at), int(event_id), False, int(size)) for event_id, size, at in
              await conn.execute(select(e.id, _size(), e.created_ms).where(held))]
    pieces += [(int(at), int(event_id), True, int(size)) for event_id, size, at in
               await conn.execute(select(c.event_id, c.bytes, c.created_ms))]
    drop: set[int] = set()
    clips: list[int] = []
    for _, event_id, is_clip, size in sorted(pieces):  # the oldest first, either kind
        if total <= max_bytes:
            break
        (clips.append if is_clip else drop.add)(event_id)
        total -= size
    cleared = {col: None for col in EVIDENCE_COLUMNS} | {
        _TYPE_COLUMNS[col]: None for col in EVIDENCE_COLUMNS if col in _TYPE_COLUMNS}
    for chunk in chunks(sorted(drop)):
        await conn.execute(update(alert_events).where(e.id.in_(chunk)).values(cleared))
    for chunk in chunks(clips):
        await conn.execute(delete(evidence_clips).where(c.event_id.in_(chunk)))
    return len(drop | set(clips)), total
