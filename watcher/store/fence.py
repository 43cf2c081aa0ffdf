"""Fencing: a write that commits only while its writer still owns the work.

A :class:`Fence` is checked INSIDE the transaction of the write it guards
(:meth:`AlertStore.record`, ``forget`` and the delivery updates accept
``fence=``), before anything is written. If it raises
:class:`~watcher.store.errors.FencedError`, the transaction rolls back and
the caller learns it lost the work. A cluster implements it over its own
lease table, for example::

    class GroupFence:
        async def check(self, conn):
            row = (await conn.execute(
                select(group_leases.c.epoch)
                .where(group_leases.c.group == self.group,
                       group_leases.c.owner == self.owner,
                       group_leases.c.epoch == self.epoch)
                .with_for_update(read=True))).first()       # FOR SHARE on PostgreSQL
            if row is None:
                raise FencedError(f"group {self.group}: epoch {self.epoch} is stale")

Holding the lease row ``FOR SHARE`` until the write commits means a
takeover (which updates that row) waits for the write or makes it fail:
never a write after the takeover committed.
"""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncConnection


class Fence(Protocol):
    async def check(self, conn: AsyncConnection) -> None:
        """Raise FencedError unless the writer still owns what it writes (in ``conn``'s
        transaction)."""
        ...
