"""The delivery outbox: the statements, on a given connection.

Status of a delivery::

    pending --claim--> delivering --mark_sent---------> sent
                       delivering --mark_retry--------> pending (due later)
    pending, delivering --mark_dead-------------------> dead (kept: dead letter)
    pending, delivering --mark_summarized-------------> summarized
    delivering (claim lapsed) --claim-----------------> delivering (another claimer)
    delivering --reset_in_flight (startup)------------> pending

A claim names its claimer (``claimed_by``, the store's ``instance``) and a
deadline (``claim_expires_ms``). Only the claimer may finish a delivery it
claimed (sent, retry, dead, summarized); once the deadline passes, the claim
lapses and any instance may claim the row again, so a delivery whose claimer
died is not stuck. The deadline is longer than the longest attempt, so two
claimers never have the same delivery in flight. On PostgreSQL a claim
locks its row with ``FOR UPDATE SKIP LOCKED``: instances racing for the
same rows never wait for each other, and exactly one of them wins each row.
``attempts`` counts claims (started attempts), so an attempt cut short by a
crash still counts. The Idempotency-Key never changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, or_, select, update
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection

from watcher.store.alerts import chunks
from watcher.store.records import DeliveryRecord, DeliveryStatus, bounded_error
from watcher.store.schema import deliveries

d = deliveries.c
PENDING, DELIVERING = DeliveryStatus.PENDING.value, DeliveryStatus.DELIVERING.value


def _lapsed(now_ms: int) -> ColumnElement[bool]:
    """A ``delivering`` row whose claim has lapsed (or that has no deadline at all)."""
    return and_(d.status == DELIVERING,
                or_(d.claim_expires_ms.is_(None), d.claim_expires_ms <= now_ms))


def _claimable(now_ms: int) -> ColumnElement[bool]:
    return or_(and_(d.status == PENDING, d.next_attempt_ms <= now_ms), _lapsed(now_ms))


def _due_ms() -> ColumnElement[Any]:
    """When a row is due: its next attempt, or when its claim lapses."""
    return case((d.status == PENDING, d.next_attempt_ms),
                else_=func.coalesce(d.claim_expires_ms, 0))


async def insert(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    if rows:
        await conn.execute(deliveries.insert(), list(rows))


def new_row(event_id: int, action: str, key: str, due_ms: int) -> dict[str, Any]:
    return {"event_id": event_id, "action": action, "idempotency_key": key,
            "status": PENDING, "attempts": 0, "next_attempt_ms": due_ms,
            "created_ms": due_ms, "updated_ms": due_ms}


async def due(conn: AsyncConnection, now_ms: int, limit: int, exclude: Sequence[str],
              action: str | None) -> list[DeliveryRecord]:
    """Claimable deliveries (pending and due, or with a lapsed claim), oldest due first."""
    query = select(deliveries).where(_claimable(now_ms))
    if exclude:
        query = query.where(d.action.not_in(list(exclude)))
    if action is not None:
        query = query.where(d.action == action)
    query = query.order_by(_due_ms(), d.id).limit(limit)
    return [from_row(r) for r in await conn.execute(query)]


async def next_due_ms(conn: AsyncConnection, exclude: Sequence[str]) -> int | None:
    """When the next delivery becomes claimable (pending, or a claim lapsing)."""
    query = select(func.min(_due_ms())).where(d.status.in_([PENDING, DELIVERING]))
    if exclude:
        query = query.where(d.action.not_in(list(exclude)))
    value = (await conn.execute(query)).scalar_one()
    return None if value is None else int(value)


async def claim(conn: AsyncConnection, ids: Sequence[int], now_ms: int, claimer: str,
                claim_ms: int, summary_id: str | None = None) -> list[int]:
    """Claim the given deliveries that are claimable now; the ids claimed.

    ``summary_id`` records the summary message they go out in (kept afterwards).

    ``FOR UPDATE SKIP LOCKED`` on PostgreSQL: a row another instance is
    claiming right now is skipped, not waited for (SQLite has one writer).
    """
    if not ids:
        return []
    locked = (select(d.id).where(d.id.in_(list(ids)), or_(d.status == PENDING,
                                                          _lapsed(now_ms)))
              .with_for_update(skip_locked=True))
    values: dict[str, Any] = {"status": DELIVERING, "attempts": d.attempts + 1,
                              "claimed_by": claimer, "claim_expires_ms": now_ms + claim_ms,
                              "updated_ms": now_ms}
    if summary_id is not None:
        values["summary_id"] = summary_id
    result = await conn.execute(
        update(deliveries).where(d.id.in_(locked.scalar_subquery())).values(values)
        .returning(d.id))
    return sorted(int(i) for i in result.scalars())


async def claim_due(conn: AsyncConnection, now_ms: int, limit: int, exclude: Sequence[str],
                    claimer: str, claim_ms: int) -> list[DeliveryRecord]:
    """Claim up to ``limit`` claimable deliveries at once, oldest due first."""
    query = select(d.id).where(_claimable(now_ms))
    if exclude:
        query = query.where(d.action.not_in(list(exclude)))
    query = query.order_by(_due_ms(), d.id).limit(limit).with_for_update(skip_locked=True)
    ids = list((await conn.execute(query)).scalars())
    claimed = await claim(conn, ids, now_ms, claimer, claim_ms)
    return await by_ids(conn, claimed)


async def by_ids(conn: AsyncConnection, ids: Sequence[int]) -> list[DeliveryRecord]:
    out: list[DeliveryRecord] = []
    for chunk in chunks(ids):
        rows = await conn.execute(select(deliveries).where(d.id.in_(chunk)).order_by(d.id))
        out += [from_row(r) for r in rows]
    return out


async def summary_members(conn: AsyncConnection, summary_id: str) -> list[DeliveryRecord]:
    rows = await conn.execute(
        select(deliveries).where(d.summary_id == summary_id, d.status.in_([PENDING, DELIVERING]))
        .order_by(d.event_id, d.id))
    return [from_row(r) for r in rows]


def _mine(claimer: str) -> ColumnElement[bool]:
    return and_(d.status == DELIVERING, d.claimed_by == claimer)


async def finish(conn: AsyncConnection, delivery_id: int, now_ms: int, claimer: str, *,
                 allow_pending: bool, **values: Any) -> bool:
    """Move one delivery this claimer holds on; False if it does not hold it.

    ``allow_pending``: also a pending one, or one whose claim lapsed (to dead-letter it).
    """
    held = _mine(claimer)
    if allow_pending:
        held = or_(held, d.status == PENDING, _lapsed(now_ms))
    result = await conn.execute(
        update(deliveries).where(d.id == delivery_id, held)
        .values(updated_ms=now_ms, **values))
    return result.rowcount == 1


def sent(now_ms: int) -> dict[str, Any]:
    return {"status": DeliveryStatus.SENT.value, "sent_ms": now_ms, "claim_expires_ms": None}


def retry(next_attempt_ms: int, error: str) -> dict[str, Any]:
    return {"status": PENDING, "next_attempt_ms": next_attempt_ms,
            "last_error": bounded_error(error), "claimed_by": None, "claim_expires_ms": None}


def dead(error: str) -> dict[str, Any]:
    return {"status": DeliveryStatus.DEAD.value, "last_error": bounded_error(error),
            "claim_expires_ms": None}


async def summarized(conn: AsyncConnection, ids: Sequence[int], summary_id: str,
                     now_ms: int, claimer: str) -> int:
    changed = 0
    for chunk in chunks(ids):
        result = await conn.execute(
            update(deliveries)
            .where(d.id.in_(chunk), or_(d.status == PENDING, _mine(claimer)))
            .values(status=DeliveryStatus.SUMMARIZED.value, summary_id=summary_id,
                    sent_ms=now_ms, updated_ms=now_ms, claim_expires_ms=None))
        changed += result.rowcount
    return changed


async def reset_in_flight(conn: AsyncConnection, now_ms: int, claimer: str,
                          everything: bool) -> int:
    """``delivering`` -> ``pending``: every row if ``everything`` (this store is the only
    one), else the rows this claimer holds and those whose claim lapsed."""
    where = d.status == DELIVERING
    if not everything:
        where = or_(_mine(claimer), _lapsed(now_ms))
    result = await conn.execute(
        update(deliveries).where(where)
        .values(status=PENDING, updated_ms=now_ms, claimed_by=None, claim_expires_ms=None))
    return result.rowcount


async def release_claims(conn: AsyncConnection, claimers: Sequence[str], now_ms: int) -> int:
    """``delivering`` rows claimed by any of ``claimers`` -> ``pending`` (they are dead)."""
    if not claimers:
        return 0
    result = await conn.execute(
        update(deliveries).where(d.status == DELIVERING, d.claimed_by.in_(list(claimers)))
        .values(status=PENDING, updated_ms=now_ms, claimed_by=None, claim_expires_ms=None))
    return result.rowcount


async def counts(conn: AsyncConnection) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    rows = await conn.execute(
        select(d.action, d.status, func.count()).group_by(d.action, d.status)
        .order_by(d.action, d.status))
    for action, status, n in rows:
        out.setdefault(action, {})[status] = n
    return out


async def for_events(conn: AsyncConnection, event_ids: Sequence[int]
                     ) -> dict[int, list[DeliveryRecord]]:
    out: dict[int, list[DeliveryRecord]] = {}
    for chunk in chunks(event_ids):
        rows = await conn.execute(select(deliveries).where(d.event_id.in_(chunk))
                                  .order_by(d.event_id, d.id))
        for row in rows:
            record = from_row(row)
            out.setdefault(record.event_id, []).append(record)
    return out


def from_row(row: Row[Any]) -> DeliveryRecord:
    r = dict(row._mapping)
    r["status"] = DeliveryStatus(r["status"])
    return DeliveryRecord(**r)
