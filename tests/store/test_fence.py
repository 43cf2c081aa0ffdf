"""Fenced writes: a write commits only while the writer's lease (owner, epoch) holds.

The fence here is the pattern :mod:`watcher.store.fence` describes, over a
lease table of the test's own: a takeover bumps the epoch, and every write
the old owner tries after it is refused with nothing written.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from sqlalchemy import BigInteger, Column, MetaData, Table, Text, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from watcher.engine.state import AlertState, Kind, Status, Transition
from watcher.store import AlertEventRecord, AlertStore, FencedError

metadata = MetaData()
leases = Table("test_leases", metadata, Column("group_id", Text, primary_key=True),
               Column("owner", Text), Column("epoch", BigInteger, nullable=False))


@dataclass(frozen=True)
class LeaseFence:
    group: str
    owner: str
    epoch: int

    async def check(self, conn: AsyncConnection) -> None:
        row = (await conn.execute(
            select(leases.c.epoch).where(leases.c.group_id == self.group,
                                         leases.c.owner == self.owner,
                                         leases.c.epoch == self.epoch)
            .with_for_update(read=True))).first()
        if row is None:
            raise FencedError(f"group {self.group}: epoch {self.epoch} of {self.owner} is stale")


async def test_a_stale_owner_writes_nothing(state_location: str) -> None:
    async with AlertStore(state_location, instance="a") as store:
        async def setup(conn: AsyncConnection) -> None:
            await conn.run_sync(metadata.create_all)
            await conn.execute(leases.insert().values(group_id="g", owner="a", epoch=1))
        await store.db.run(setup)
        mine = LeaseFence("g", "a", 1)
        fired = AlertState(status=Status.FIRING, firing_since_ms=10, episode=1, updated_ms=10)
        event = AlertEventRecord.from_transition("r", "cam", Transition(Kind.FIRING, True, 10, 1))
        [event_id] = await store.record("r", "cam", fired, [event], fence=mine,
                                        actions_for=lambda e: ["hook"])
        [d] = await store.deliveries_for_event(event_id)
        assert await store.mark_delivering(d.id, 20, fence=mine)

        async def takeover(conn: AsyncConnection) -> None:
            await conn.execute(update(leases).values(owner="b", epoch=2))
        await store.db.run(takeover)

        resolved = AlertState(status=Status.RESOLVED, episode=1, updated_ms=30)
        late = AlertEventRecord.from_transition("r", "cam",
                                                Transition(Kind.RESOLVED, True, 30, 1))
        with pytest.raises(FencedError, match="epoch 1 of a is stale"):
            await store.record("r", "cam", resolved, [late], fence=mine)
        with pytest.raises(FencedError):
            await store.mark_sent(d.id, 40, fence=mine)
        with pytest.raises(FencedError):
            await store.forget("r", fence=mine)
        assert await store.load_state("r", "cam") == fired  # nothing of it was written
        assert [e.id for e in await store.events()] == [event_id]
        [still] = await store.deliveries_for_event(event_id)
        assert still.status == "delivering"
        theirs = LeaseFence("g", "b", 2)
        assert await store.record("r", "cam", resolved, [late], fence=theirs)
