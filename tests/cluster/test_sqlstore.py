"""The cluster tables on a real PostgreSQL: leases, epochs, races and fencing."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from support.postgres import fresh_database

from watcher.clock import ManualClock
from watcher.cluster.coordinator import Coordinator, OnDead
from watcher.cluster.groups import CameraGroup
from watcher.cluster.leases import FenceToken, Member
from watcher.cluster.sqlstore import SqlClusterStore, check_fence
from watcher.engine.state import AlertState, Kind, Transition
from watcher.errors import LeaseLostError
from watcher.store import AlertEventRecord, AlertStore

NOW = 1_700_000_000_000
LEASE_MS = 10_000


@pytest.fixture
async def engine() -> AsyncIterator[AsyncEngine]:
    """The store's own migrations make the tables, on a fresh database."""
    async with fresh_database("watcher_cluster") as url, AlertStore(url) as store:
        await store.open()
        async with store.db.engine.begin() as conn:
            await conn.execute(text("CREATE TABLE writes (group_id TEXT, note TEXT)"))
        yield store.db.engine


async def test_acquire_renew_release_and_epochs(engine: AsyncEngine) -> None:
    store = SqlClusterStore(engine)
    assert await store.acquire("g", "a", NOW, LEASE_MS) == 1
    assert await store.acquire("g", "b", NOW + 1000, LEASE_MS) is None  # held
    assert await store.renew("a", {"g": 1}, NOW + 5000, LEASE_MS) == {"g"}
    assert await store.acquire("g", "b", NOW + 14_000, LEASE_MS) is None  # renewed to 15 s
    assert await store.acquire("g", "b", NOW + 15_001, LEASE_MS) == 2  # expired: taken over
    assert await store.renew("a", {"g": 1}, NOW + 16_000, LEASE_MS) == set()  # stale
    assert not await store.release("g", "a", 1)
    assert await store.release("g", "b", 2)
    assert await store.acquire("g", "a", NOW + 16_000, LEASE_MS) == 3  # released: at once
    [lease] = await store.leases()
    assert (lease.owner, lease.epoch, lease.expires_ms) == ("a", 3, NOW + 16_000 + LEASE_MS)


async def test_members_heartbeat_and_leave(engine: AsyncEngine) -> None:
    store = SqlClusterStore(engine)
    await store.heartbeat(Member("a", NOW, NOW, {"status_url": "http://127.0.0.1:1"}))
    await store.heartbeat(Member("b", NOW, NOW))
    await store.heartbeat(Member("a", NOW + 2000, NOW + 2000, {"status_url": "x"}))
    members = await store.members()
    assert [(m.instance_id, m.last_seen_ms, m.started_ms, m.info) for m in members] == [
        ("a", NOW + 2000, NOW, {"status_url": "x"}), ("b", NOW, NOW, {})]
    await store.leave("a")
    assert [m.instance_id for m in await store.members()] == ["b"]


async def test_racing_acquirers_one_wins(engine: AsyncEngine) -> None:
    store = SqlClusterStore(engine)
    new = await asyncio.gather(*(store.acquire("fresh", f"n{i}", NOW, LEASE_MS)
                                 for i in range(8)))
    assert sorted(e for e in new if e is not None) == [1]
    expired = await asyncio.gather(*(store.acquire("fresh", f"n{i}", NOW + 20_000, LEASE_MS)
                                     for i in range(8)))
    assert Counter(e is not None for e in expired)[True] <= 2  # the old owner may renew too
    assert max(e for e in expired if e is not None) == (await store.leases())[0].epoch


async def test_a_stale_write_is_refused_and_a_takeover_waits_for_a_write_in_progress(
        engine: AsyncEngine) -> None:
    store = SqlClusterStore(engine)
    assert await store.acquire("g", "a", NOW, LEASE_MS) == 1
    # a write by the owner, in progress: the lease row is share-locked until it commits
    async with engine.connect() as writer:
        txn = await writer.begin()
        await check_fence(writer, FenceToken("g", "a", 1))
        await writer.execute(text("INSERT INTO writes VALUES ('g', 'by a, epoch 1')"))
        takeover = asyncio.create_task(store.acquire("g", "b", NOW + 60_000, LEASE_MS))
        async with engine.connect() as probe:
            for _ in range(1200):  # until the takeover waits on the row lock (generous)
                waiting = (await probe.execute(text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                    " AND datname = current_database()"))).scalar_one()
                if waiting or takeover.done():
                    break
                await asyncio.sleep(0.05)
            assert waiting == 1
        assert not takeover.done()
        await txn.commit()
    assert await takeover == 2
    # the stale owner's next write is refused, and nothing of it lands
    async with engine.connect() as writer:
        with pytest.raises(LeaseLostError) as caught:
            async with writer.begin():
                await check_fence(writer, FenceToken("g", "a", 1))
                await writer.execute(text("INSERT INTO writes VALUES ('g', 'stale')"))
        assert caught.value.group_id == "g"
    async with engine.connect() as conn:
        notes = (await conn.execute(text("SELECT note FROM writes"))).scalars().all()
    assert notes == ["by a, epoch 1"]


async def test_three_coordinators_share_the_groups_on_postgresql(engine: AsyncEngine) -> None:
    clock = ManualClock()
    store = SqlClusterStore(engine)
    groups = [CameraGroup(f"cam{i}", (f"cam{i}",)) for i in range(6)]
    running: dict[str, set[str]] = {}

    def node(name: str) -> Coordinator:
        running[name] = set()

        async def gain(group: CameraGroup, epoch: int) -> None:
            assert not any(group.id in r for n, r in running.items() if n != name)
            running[name].add(group.id)

        async def lose(group: CameraGroup, why: str) -> None:
            running[name].discard(group.id)

        return Coordinator(store, instance_id=name, heartbeat_s=2, lease_s=10, groups=groups,
                           on_gain=gain, on_lose=lose, clock=clock,
                           monotonic=lambda: clock.now_ms() / 1000)

    nodes = [node(n) for n in ("a", "b", "c")]
    for _ in range(3):
        for n in nodes:
            await n.step()
        clock.advance(2)
    assert sorted(len(r) for r in running.values()) == [2, 2, 2]
    assert Counter(g for r in running.values() for g in r) == Counter(g.id for g in groups)
    snapshot = nodes[0].snapshot()
    assert [m["instance_id"] for m in snapshot["members"]] == ["a", "b", "c"]
    assert {g["group"]: g["owner"] for g in snapshot["groups"]} == {
        g: n for n, r in running.items() for g in r}
    # c dies; a and b take its groups once its lease has run out
    lost = set(running["c"])
    epochs = {lease.group_id: lease.epoch for lease in await store.leases()}
    running["c"] = set()
    for _ in range(7):
        for n in nodes[:2]:
            await n.step()
        clock.advance(2)
    assert lost <= running["a"] | running["b"]
    assert sorted(len(r) for r in running.values()) == [0, 3, 3]
    for lease in await store.leases():
        assert lease.epoch == epochs[lease.group_id] + (lease.group_id in lost)


async def test_a_dead_members_delivery_claims_are_released_once_it_is_declared_dead(
        ) -> None:
    """Not at the claim's deadline (minutes): at the first round that finds it silent for
    the lease, and only its claims."""
    clock = ManualClock()
    async with fresh_database("watcher_cluster_claims") as url, AlertStore(
            url, instance="a") as a_store, AlertStore(url, instance="c") as c_store:
        cluster = SqlClusterStore(a_store.db.engine)
        released: list[tuple[list[str], int]] = []

        async def release(instance_ids: list[str], now_ms: int) -> int:
            count = await a_store.release_claims(instance_ids, now_ms)
            released.append((instance_ids, count))
            return count

        def node(name: str, on_dead: OnDead) -> Coordinator:
            return Coordinator(cluster, instance_id=name, heartbeat_s=2, lease_s=10,
                               groups=[], on_gain=_started, on_lose=_stopped, clock=clock,
                               monotonic=lambda: clock.now_ms() / 1000, on_dead=on_dead)

        a, c = node("a", release), node("c", c_store.release_claims)
        claims = {}
        for store, rule in ((c_store, "door"), (a_store, "gate")):
            await store.record(rule, "cam", AlertState(updated_ms=clock.now_ms()), [
                AlertEventRecord.from_transition(
                    rule, "cam", Transition(Kind.FIRING, True, clock.now_ms(), 1))],
                actions_for=lambda e: ["hook"])
            [claims[store.instance]] = await store.claim_due(clock.now_ms(), limit=1)
        await a.step()
        await c.step()
        c_seen_ms = clock.now_ms()
        # c dies holding its claim; a goes on
        while clock.now_ms() - c_seen_ms < 10_000:
            assert released == []
            assert await a_store.due_deliveries(clock.now_ms()) == []
            clock.advance(2)
            await a.step()
        assert released == [(["c"], 1)]
        [due] = await a_store.due_deliveries(clock.now_ms())
        assert (due.action, due.status, due.claimed_by, due.attempts) == (
            "hook", "pending", None, 1)
        assert due.id == claims["c"].id
        assert clock.now_ms() < claims["c"].claim_expires_ms - 500_000  # minutes early
        [mine] = await a_store.claim_due(clock.now_ms())
        assert mine.id == due.id and mine.idempotency_key == due.idempotency_key
        counts = (await a_store.delivery_counts())["hook"]
        assert counts == {"delivering": 2}  # a's own claim was left alone
        clock.advance(2)
        await a.step()
        assert released == [(["c"], 1)]  # once per death


async def _started(group: CameraGroup, epoch: int) -> None:
    return None


async def _stopped(group: CameraGroup, why: str) -> None:
    return None
