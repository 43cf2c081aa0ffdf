"""The cluster tables and :class:`SqlClusterStore`: members and group leases in SQL.

The tables (:mod:`watcher.store.schema`, created by the store's migration 0005)::

    cluster_members  instance_id PK | last_seen_ms | started_ms | info (JSON text)
    cluster_leases   group_id PK | owner (NULL once released) | epoch | expires_ms
                     | acquired_ms

Every operation is one short transaction of one or two statements, written
with SQLAlchemy Core so that PostgreSQL and SQLite run the same code:

* acquire: ``UPDATE ... SET owner = me, epoch = epoch + 1 WHERE group_id = g
  AND (owner IS NULL OR expires_ms < now OR owner = me) RETURNING epoch``;
  if no row was updated, ``INSERT ... ON CONFLICT DO NOTHING`` (epoch 1).
  Two instances racing for one row: the row lock orders them, and the second
  finds it held.
* renew: one ``UPDATE ... WHERE owner = me AND (group_id, epoch) IN (...)``
  for every held lease, returning the groups renewed.
* :func:`check_fence` runs INSIDE the transaction of a write (alert state,
  events, deliveries): it reads the lease row ``FOR SHARE`` where owner and
  epoch match, and raises :class:`~watcher.errors.LeaseLostError` (so the
  caller rolls back) when none does. The share lock is held until that
  transaction ends, so a takeover (whose UPDATE needs the row) waits for the
  write to commit, and the new owner, which loads alert state after
  acquiring, always sees it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Table, and_, delete, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from watcher.cluster.leases import FenceToken, Lease, Member
from watcher.errors import LeaseLostError
from watcher.store.schema import cluster_leases, cluster_members

FORGET_MEMBERS_AFTER_MS = 3_600_000
"""Member rows silent this long are deleted (an instance that never left cleanly)."""
PRUNE_EVERY = 30
"""Heartbeats between two such deletions."""


def _insert(conn: AsyncConnection | AsyncEngine, table: Table) -> Any:
    """The dialect's INSERT, which knows ON CONFLICT."""
    name = conn.dialect.name
    if name == "postgresql":
        return postgresql.insert(table)
    if name == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"cluster mode does not support the {name} database")


class SqlClusterStore:
    """:class:`~watcher.cluster.leases.ClusterStore` on an async SQLAlchemy engine."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._heartbeats = 0

    async def heartbeat(self, member: Member) -> None:
        stmt = _insert(self.engine, cluster_members).values(
            instance_id=member.instance_id, last_seen_ms=member.last_seen_ms,
            started_ms=member.started_ms, info=json.dumps(member.info, sort_keys=True))
        stmt = stmt.on_conflict_do_update(
            index_elements=[cluster_members.c.instance_id],
            set_={"last_seen_ms": stmt.excluded.last_seen_ms, "info": stmt.excluded.info})
        self._heartbeats += 1
        async with self.engine.begin() as conn:
            await conn.execute(stmt)
            if self._heartbeats % PRUNE_EVERY == 1:
                await conn.execute(delete(cluster_members).where(
                    cluster_members.c.last_seen_ms
                    < member.last_seen_ms - FORGET_MEMBERS_AFTER_MS))

    async def leave(self, instance_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(cluster_members).where(
                cluster_members.c.instance_id == instance_id))

    async def members(self) -> list[Member]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                select(cluster_members).order_by(cluster_members.c.instance_id))).all()
        return [Member(r.instance_id, r.last_seen_ms, r.started_ms, _info(r.info))
                for r in rows]

    async def leases(self) -> list[Lease]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(
                select(cluster_leases).order_by(cluster_leases.c.group_id))).all()
        return [Lease(r.group_id, r.owner, r.epoch, r.expires_ms, r.acquired_ms) for r in rows]

    async def acquire(self, group_id: str, owner: str, now_ms: int, lease_ms: int,
                      ) -> int | None:
        leases = cluster_leases.c
        async with self.engine.begin() as conn:
            taken = await conn.execute(
                update(cluster_leases)
                .where(leases.group_id == group_id,
                       or_(leases.owner.is_(None), leases.expires_ms < now_ms,
                           leases.owner == owner))
                .values(owner=owner, epoch=leases.epoch + 1, expires_ms=now_ms + lease_ms,
                        acquired_ms=now_ms)
                .returning(leases.epoch))
            epoch = taken.scalar_one_or_none()
            if epoch is not None:
                return int(epoch)
            created = await conn.execute(
                _insert(conn, cluster_leases)
                .values(group_id=group_id, owner=owner, epoch=1, expires_ms=now_ms + lease_ms,
                        acquired_ms=now_ms)
                .on_conflict_do_nothing(index_elements=[leases.group_id])
                .returning(leases.epoch))
            epoch = created.scalar_one_or_none()
        return None if epoch is None else int(epoch)

    async def renew(self, owner: str, epochs: Mapping[str, int], now_ms: int,
                    lease_ms: int) -> set[str]:
        if not epochs:
            return set()
        leases = cluster_leases.c
        async with self.engine.begin() as conn:
            rows = await conn.execute(
                update(cluster_leases)
                .where(leases.owner == owner,
                       tuple_(leases.group_id, leases.epoch).in_(list(epochs.items())))
                .values(expires_ms=now_ms + lease_ms)
                .returning(leases.group_id))
            return {r[0] for r in rows}

    async def release(self, group_id: str, owner: str, epoch: int) -> bool:
        leases = cluster_leases.c
        async with self.engine.begin() as conn:
            result = await conn.execute(
                update(cluster_leases)
                .where(leases.group_id == group_id, leases.owner == owner,
                       leases.epoch == epoch)
                .values(owner=None, expires_ms=0))
            return result.rowcount == 1


async def check_fence(conn: AsyncConnection, token: FenceToken) -> None:
    """Refuse the surrounding write unless ``token`` still names the group's owner and epoch.

    Call it inside the write's transaction, before the write: on PostgreSQL the
    row stays share-locked until that transaction ends.
    """
    leases = cluster_leases.c
    query = (select(leases.epoch)
             .where(and_(leases.group_id == token.group_id, leases.owner == token.owner,
                         leases.epoch == token.epoch)))
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(read=True)
    if (await conn.execute(query)).first() is None:
        raise LeaseLostError(
            f"camera group {token.group_id}: {token.owner} no longer holds epoch "
            f"{token.epoch}; the write was refused", group_id=token.group_id)


def _info(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class GroupFence:
    """The fence of one group's writes (the alert store's ``fence=``): raises the store's
    :class:`~watcher.store.errors.FencedError` when the lease moved on, after telling
    ``on_stale`` (the coordinator's ``lost``) so the group is dropped."""

    def __init__(self, token: FenceToken,
                 on_stale: Callable[[str, str], None] | None = None) -> None:
        self.token = token
        self.on_stale = on_stale

    async def check(self, conn: AsyncConnection) -> None:
        try:
            await check_fence(conn, self.token)
        except LeaseLostError as exc:
            if self.on_stale is not None:
                self.on_stale(self.token.group_id, str(exc))
            raise
