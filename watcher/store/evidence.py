"""Evidence within a byte budget: the statements, on a given connection.

Evidence is what an event carries to show what was seen: the JPEG snapshot
now, clips later. It is most of the database's size, so it is kept within
``state.evidence_budget_mb``: past it (or when the disk is full) the oldest
evidence is dropped first, and the events themselves always stay. A new
kind of evidence (a blob column of ``alert_events``) is added to
:data:`EVIDENCE_COLUMNS`, and counts against the same budget.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from watcher.store.alerts import chunks
from watcher.store.schema import alert_events

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
    """Bytes of evidence stored."""
    value = (await conn.execute(select(func.coalesce(func.sum(_size()), 0)))).scalar_one()
    return int(value)


async def trim(conn: AsyncConnection, max_bytes: int) -> tuple[int, int]:
    """Drop the oldest evidence until at most ``max_bytes`` remain.

    Returns (events whose evidence was dropped, evidence bytes left).
    """
    total = await total_bytes(conn)
    if total <= max_bytes:
        return 0, total
    e = alert_events.c
    held = or_(*(e[c].isnot(None) for c in EVIDENCE_COLUMNS))
    drop: list[int] = []
    rows = await conn.execute(select(e.id, _size()).where(held).order_by(e.created_ms, e.id))
    for event_id, size in rows:
        if total <= max_bytes:
            break
        drop.append(int(event_id))
        total -= int(size)
    cleared = {c: None for c in EVIDENCE_COLUMNS} | {
        _TYPE_COLUMNS[c]: None for c in EVIDENCE_COLUMNS if c in _TYPE_COLUMNS}
    for chunk in chunks(drop):
        await conn.execute(update(alert_events).where(e.id.in_(chunk)).values(cleared))
    return len(drop), total
