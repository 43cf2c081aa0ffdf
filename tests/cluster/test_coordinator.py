"""The coordinator's membership, lease and fencing logic, on an injected clock and an
in-memory store (no sleeping: each test drives the rounds itself)."""

from __future__ import annotations

from collections import Counter

import pytest

from watcher.clock import ManualClock
from watcher.cluster.coordinator import Coordinator, OnDead
from watcher.cluster.groups import CameraGroup
from watcher.cluster.leases import FenceToken, MemoryClusterStore
from watcher.errors import LeaseLostError

HEARTBEAT, LEASE = 2.0, 10.0


class Harness:
    """Instances sharing one store and one clock; ``running`` is what each has started."""

    def __init__(self, groups: int = 6) -> None:
        self.clock = ManualClock()
        self.store = MemoryClusterStore()
        self.groups = [CameraGroup(f"cam{i}", (f"cam{i}",)) for i in range(groups)]
        self.nodes: dict[str, Coordinator] = {}
        self.running: dict[str, dict[str, int]] = {}
        self.log: list[tuple[str, str, str]] = []

    def mono(self) -> float:
        return self.clock.now_ms() / 1000

    def add(self, name: str, on_dead: OnDead | None = None) -> Coordinator:
        self.running[name] = {}

        async def gain(group: CameraGroup, epoch: int) -> None:
            self.check_alone(group.id, name)
            self.running[name][group.id] = epoch
            self.log.append((name, "gain", group.id))

        async def lose(group: CameraGroup, why: str) -> None:
            self.running[name].pop(group.id, None)
            self.log.append((name, "lose", group.id))

        node = Coordinator(self.store, instance_id=name, heartbeat_s=HEARTBEAT, lease_s=LEASE,
                           groups=self.groups, on_gain=gain, on_lose=lose, clock=self.clock,
                           monotonic=self.mono, on_dead=on_dead)
        self.nodes[name] = node
        return node

    def check_alone(self, group_id: str, starting: str) -> None:
        others = [n for n, groups in self.running.items() if group_id in groups and n != starting]
        assert not others, f"{starting} starts {group_id} while {others} still run it"

    async def rounds(self, count: int, names: list[str] | None = None) -> None:
        for _ in range(count):
            for name in names or list(self.nodes):
                await self.nodes[name].step()
            self.clock.advance(HEARTBEAT)

    def owners(self) -> Counter[str]:
        return Counter(g for groups in self.running.values() for g in groups)


async def test_three_instances_share_six_groups_one_owner_each() -> None:
    h = Harness()
    for name in ("a", "b", "c"):
        h.add(name)
    await h.rounds(3)
    assert h.owners() == Counter({g.id: 1 for g in h.groups})
    assert sorted(len(groups) for groups in h.running.values()) == [2, 2, 2]
    for name, node in h.nodes.items():
        assert node.held() == h.running[name]


async def test_a_dead_instance_is_taken_over_after_its_lease_with_a_higher_epoch() -> None:
    h = Harness()
    for name in ("a", "b", "c"):
        h.add(name)
    await h.rounds(3)
    dead = dict(h.running["c"])
    h.running["c"] = {}  # kill -9: it stops, without releasing anything
    taken_at = None
    for step in range(20):
        await h.rounds(1, ["a", "b"])
        if all(g in h.running["a"] or g in h.running["b"] for g in dead):
            taken_at = step
            break
    assert taken_at is not None
    # not before the lease ran out: (taken_at + 1) heartbeats passed
    assert (taken_at + 1) * HEARTBEAT > LEASE
    assert (taken_at + 1) * HEARTBEAT <= LEASE + 2 * HEARTBEAT
    for group_id, epoch in dead.items():
        new_epoch = h.running["a"].get(group_id) or h.running["b"][group_id]
        assert new_epoch == epoch + 1
    assert h.owners() == Counter({g.id: 1 for g in h.groups})


async def test_a_joining_instance_gets_groups_only_after_their_owner_stopped_them() -> None:
    h = Harness()
    h.add("a")
    await h.rounds(2)
    assert len(h.running["a"]) == 6
    h.add("b")
    await h.rounds(3)  # check_alone asserts the order at every gain
    assert sorted(len(g) for g in h.running.values()) == [3, 3]
    moved = set(h.running["b"])
    for group_id in moved:
        lose = h.log.index(("a", "lose", group_id))
        gain = h.log.index(("b", "gain", group_id))
        assert lose < gain


async def test_a_frozen_instance_drops_its_groups_before_it_can_write() -> None:
    h = Harness()
    for name in ("a", "b", "c"):
        h.add(name)
    await h.rounds(3)
    frozen = h.nodes["c"]
    held = frozen.held()
    group_id, epoch = next(iter(held.items()))
    assert frozen.token(group_id) == FenceToken(group_id, "c", epoch)
    # SIGSTOP: c does nothing while the others go on past its lease
    before = dict(h.running["c"])
    h.running["c"] = {}  # what it runs no longer counts as alone-checking input
    await h.rounds(8, ["a", "b"])
    assert all(g in h.running["a"] or g in h.running["b"] for g in before)
    h.running["c"] = before  # SIGCONT: it still believes it runs them
    # the first thing a rule would do is ask for a token: refused, and the group drops
    with pytest.raises(LeaseLostError):
        frozen.token(group_id)
    assert not frozen.owns(group_id)
    # the store refuses the stale epoch anyway
    assert not h.store.valid(FenceToken(group_id, "c", epoch))
    result = await frozen.step()  # first waits until the dropped group has stopped
    assert set(before) <= set(result.lost) | {group_id}
    assert not h.running["c"] or all(g not in before for g in h.running["c"])
    # then it rejoins: the next rounds give it its share again, handed over cleanly
    await h.rounds(4)
    assert h.owners() == Counter({g.id: 1 for g in h.groups})
    assert sorted(len(g) for g in h.running.values()) == [2, 2, 2]


async def test_epochs_only_grow_through_handovers_and_takeovers() -> None:
    h = Harness(groups=4)
    for name in ("a", "b"):
        h.add(name)
    seen: dict[str, list[int]] = {g.id: [] for g in h.groups}
    for cycle in range(4):
        await h.rounds(3)
        for lease in await h.store.leases():
            if lease.owner is not None:
                seen[lease.group_id].append(lease.epoch)
        if cycle % 2 == 0:
            await h.nodes["b"].stop()  # releases its leases
            h.running["b"] = {}
            del h.nodes["b"]
        else:
            h.add("b")
    for epochs in seen.values():
        assert epochs == sorted(epochs)
        assert epochs[-1] >= epochs[0]


async def test_a_short_store_outage_keeps_the_groups_a_long_one_drops_them() -> None:
    h = Harness()
    for name in ("a", "b", "c"):
        h.add(name)
    await h.rounds(3)
    owned = {n: dict(g) for n, g in h.running.items()}
    h.store.down = True
    await h.rounds(2)  # the next renewal comes 6 s after the last: < lease - heartbeat
    assert h.running == owned
    h.store.down = False
    await h.rounds(2)
    assert h.running == owned, "same owners, same epochs after a short outage"
    h.store.down = True
    await h.rounds(6)  # 12 s: every local deadline passes
    assert h.running == {"a": {}, "b": {}, "c": {}}
    h.store.down = False
    await h.rounds(3)
    assert h.owners() == Counter({g.id: 1 for g in h.groups})


async def test_a_refused_write_drops_the_group() -> None:
    h = Harness(groups=2)
    node = h.add("a")
    await h.rounds(1)
    assert set(node.held()) == {"cam0", "cam1"}
    node.lost("cam0", "a write was refused: stale epoch")
    assert "cam0" not in node.held()
    with pytest.raises(LeaseLostError):
        node.token("cam0")
    await node.settle()
    assert "cam0" not in node.held() and "cam0" not in h.running["a"]


async def test_shutdown_releases_so_the_next_owner_need_not_wait() -> None:
    h = Harness()
    for name in ("a", "b"):
        h.add(name)
    await h.rounds(2)
    await h.nodes["a"].stop()
    h.running["a"] = {}
    del h.nodes["a"]
    await h.rounds(1)  # one round later: b has everything, no lease wait
    assert len(h.running["b"]) == 6


async def test_each_live_instance_reports_each_death_once_and_retries_a_failed_report(
        ) -> None:
    h = Harness()
    told: list[tuple[str, list[str]]] = []
    broken = {"b"}

    def reporter(name: str) -> OnDead:
        async def on_dead(instance_ids: list[str], now_ms: int) -> int:
            if name in broken:
                broken.discard(name)
                raise ConnectionError("the alert store is down")
            told.append((name, instance_ids))
            return 1
        return on_dead

    for name in ("a", "b", "c"):
        h.add(name, on_dead=reporter(name))
    await h.rounds(3)
    await h.rounds(4, ["a", "b"])  # c silent for 8 s at the last round: not dead yet
    assert told == []
    await h.rounds(1, ["a", "b"])  # 10 s: dead; b cannot report it this round
    assert told == [("a", ["c"])]
    await h.rounds(3, ["a", "b"])
    assert told == [("a", ["c"]), ("b", ["c"])]
    await h.rounds(2)  # c is back: a later death is a new one
    await h.rounds(6, ["a", "b"])
    assert told == [("a", ["c"]), ("b", ["c"])] * 2
