"""Alert states, events (with their evidence) and rule switches: the statements, on a
given connection.

Each function runs inside the caller's transaction
(:meth:`watcher.store.database.Database.run`) and speaks portable SQLAlchemy
Core; only the upsert needs the dialect's own ``INSERT ... ON CONFLICT``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, exists, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Row
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from watcher.engine.state import AlertState, Kind
from watcher.store.errors import DuplicateEventError
from watcher.store.records import AlertEventRecord
from watcher.store.schema import (
    alert_events,
    alert_state,
    deliveries,
    dumps,
    evidence_clips,
    feedback,
    loads,
    rule_switches,
)

CHUNK = 500
"""Ids per ``IN (...)`` list: below SQLite's limit on bound parameters."""
UNFINISHED = ("pending", "delivering")


def state_row(rule: str, stream_key: str, state: AlertState) -> dict[str, Any]:
    return {"rule": rule, "stream_key": stream_key, "status": str(state.status),
            "state": dumps(state.to_dict()), "updated_ms": state.updated_ms}


def event_row(e: AlertEventRecord) -> dict[str, Any]:
    """The columns of ``e``; ValueError (before any write) if its JSON cannot be encoded."""
    return {
        "event_key": e.event_key, "rule": e.rule, "stream_key": e.stream_key,
        "episode": e.episode, "kind": str(e.kind), "status": e.status, "notify": int(e.notify),
        "created_ms": e.created_ms, "severity": e.severity, "labels": dumps(e.labels),
        "answer": None if e.answer is None else dumps(e.answer), "urls": dumps(list(e.urls)),
        "stream_ids": dumps(list(e.stream_ids)), "stream_time_ms": e.stream_time_ms,
        "model": e.model, "usage": None if e.usage is None else dumps(e.usage),
        "snapshot": e.snapshot, "snapshot_type": e.snapshot_type, "extra": dumps(e.extra),
        "silenced_by": e.silenced_by,
    }


async def save_state(conn: AsyncConnection, row: dict[str, Any]) -> None:
    """Insert or replace one alert state row."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(alert_state).values(row)
    stmt = stmt.on_conflict_do_update(
        index_elements=["rule", "stream_key"],
        set_={c: stmt.excluded[c] for c in ("status", "state", "updated_ms")})
    await conn.execute(stmt)


async def insert_events(conn: AsyncConnection, rows: Sequence[dict[str, Any]],
                        name: str) -> list[int]:
    """Insert events in order; their ids. DuplicateEventError on a known ``event_key``."""
    ids = []
    for row in rows:
        try:
            result = await conn.execute(
                alert_events.insert().values(row).returning(alert_events.c.id))
        except IntegrityError as exc:
            if "event_key" in str(exc.orig):
                raise DuplicateEventError(
                    f"alert store {name}: duplicate event key {row['event_key']!r}") from None
            raise
        ids.append(int(result.scalar_one()))
    return ids


async def load_state(conn: AsyncConnection, rule: str, stream_key: str) -> AlertState | None:
    text = (await conn.execute(
        select(alert_state.c.state).where(alert_state.c.rule == rule,
                                          alert_state.c.stream_key == stream_key)
    )).scalar_one_or_none()
    return None if text is None else AlertState.from_dict(loads(text))


async def load_all_states(conn: AsyncConnection) -> dict[tuple[str, str], AlertState]:
    rows = await conn.execute(
        select(alert_state.c.rule, alert_state.c.stream_key, alert_state.c.state)
        .order_by(alert_state.c.rule, alert_state.c.stream_key))
    return {(r, k): AlertState.from_dict(loads(s)) for r, k, s in rows}


async def forget(conn: AsyncConnection, rule: str) -> int:
    result = await conn.execute(delete(alert_state).where(alert_state.c.rule == rule))
    return result.rowcount


async def events(
    conn: AsyncConnection, limit: int, rule: str | None, status: str | None,
    since_ms: int | None, stream_key: str | None, snapshots: bool, dead_only: bool,
) -> list[AlertEventRecord]:
    """Events newest first (``created_ms``, then id), filtered."""
    e = alert_events.c
    query = select(*[c for c in alert_events.c if snapshots or c.name != "snapshot"])
    for column, value in ((e.rule, rule), (e.status, status), (e.stream_key, stream_key)):
        if value is not None:
            query = query.where(column == value)
    if since_ms is not None:
        query = query.where(e.created_ms >= since_ms)
    if dead_only:
        query = query.where(e.id.in_(
            select(deliveries.c.event_id).where(deliveries.c.status == "dead")))
    query = query.order_by(e.created_ms.desc(), e.id.desc()).limit(limit)
    return [event_from_row(row) for row in await conn.execute(query)]


async def event(conn: AsyncConnection, event_id: int) -> AlertEventRecord | None:
    row = (await conn.execute(
        select(alert_events).where(alert_events.c.id == event_id))).one_or_none()
    return None if row is None else event_from_row(row)


async def events_by_ids(conn: AsyncConnection, event_ids: list[int]) -> list[AlertEventRecord]:
    """The stored events among ``event_ids``, in the order given."""
    found: dict[int, AlertEventRecord] = {}
    for chunk in chunks(event_ids):
        rows = await conn.execute(select(alert_events).where(alert_events.c.id.in_(chunk)))
        found.update((row.id, event_from_row(row)) for row in rows)
    return [found[i] for i in event_ids if i in found]


async def prune(conn: AsyncConnection, before_ms: int) -> int:
    """Delete events older than ``before_ms`` whose deliveries are all finished, with them."""
    d = deliveries.c
    old = select(alert_events.c.id).where(
        alert_events.c.created_ms < before_ms,
        ~exists().where(d.event_id == alert_events.c.id, d.status.in_(UNFINISHED)))
    await conn.execute(delete(deliveries).where(d.event_id.in_(old)))
    for table in (feedback, evidence_clips):  # the console's additions go with their event
        await conn.execute(delete(table).where(table.c.event_id.in_(old)))
    result = await conn.execute(delete(alert_events).where(alert_events.c.id.in_(old)))
    return result.rowcount


async def save_switch(conn: AsyncConnection, rule: str, enabled: bool, now_ms: int) -> None:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(rule_switches).values(rule=rule, enabled=int(enabled),
                                                updated_ms=now_ms)
    await conn.execute(stmt.on_conflict_do_update(
        index_elements=["rule"],
        set_={"enabled": stmt.excluded.enabled, "updated_ms": stmt.excluded.updated_ms}))


async def load_switches(conn: AsyncConnection) -> dict[str, bool]:
    rows = await conn.execute(select(rule_switches.c.rule, rule_switches.c.enabled))
    return {rule: bool(enabled) for rule, enabled in rows}


def event_from_row(row: Row[Any]) -> AlertEventRecord:
    r = row._mapping
    snapshot = r.get("snapshot")
    return AlertEventRecord(
        id=r["id"], event_key=r["event_key"], rule=r["rule"], stream_key=r["stream_key"],
        episode=r["episode"], kind=Kind(r["kind"]), notify=bool(r["notify"]),
        created_ms=r["created_ms"], severity=r["severity"], labels=loads(r["labels"]),
        answer=loads(r["answer"]), urls=tuple(loads(r["urls"])),
        stream_ids=tuple(loads(r["stream_ids"])), stream_time_ms=r["stream_time_ms"],
        model=r["model"], usage=loads(r["usage"]),
        snapshot=None if snapshot is None else bytes(snapshot),
        snapshot_type=r["snapshot_type"], extra=loads(r["extra"]),
        silenced_by=r.get("silenced_by"),
    )


def chunks(values: Iterable[int], size: int = CHUNK) -> list[list[int]]:
    items = list(values)
    return [items[i:i + size] for i in range(0, len(items), size)]
