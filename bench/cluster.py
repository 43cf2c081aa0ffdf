"""Cluster mode: balance, failover and coordination load (`watcher run` x N on PostgreSQL).

Part `takeover` (real processes): 3 `watcher run` instances share 6
synthetic cameras on a fresh PostgreSQL database; one instance at a time is
killed with SIGKILL, and the time until every camera is published again (by
exactly one instance, read from the instances' embedded servers) is taken;
the victim is then started again. Also the database's transactions per
second per camera (``pg_stat_database``) over the run.

Part `soak` (real processes, long): the same cluster for ``--minutes``, with a
kill -9 or a SIGSTOP/SIGCONT freeze (past the lease) every ``--fault-every``
seconds. Counts the scripted events that should have been notified, those
that were, and duplicated or malformed notifications.

Store write latency, SQLite against PostgreSQL, is ``bench/store_latency.py``.

Part `simulate` (no media): N coordinators share one cluster store, rounds
driven on a simulated clock. Cameras are made up (10% of them tied in pairs
by two-camera rules, so groups have 1 or 2 cameras). It reports:

* balance: cameras per instance once the cluster has settled;
* rebalancing: 5 instances killed at once (no release: as kill -9); the
  simulated time until every group runs on a live instance again, and how
  many groups of the survivors moved;
* coordinator load: store statements per instance per round, and CPU per
  round, with the in-memory store or (``--store postgresql``) a real
  PostgreSQL database (a fresh one, dropped afterwards).

    .venv/bin/python bench/cluster.py simulate --cameras 1000 --instances 20
    .venv/bin/python bench/cluster.py simulate --store postgresql
    .venv/bin/python bench/cluster.py takeover --kills 10
    .venv/bin/python bench/cluster.py soak --minutes 30
    .venv/bin/python bench/cluster.py --smoke      # simulate and one takeover
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import _cluster_procs as _procs
import _common  # noqa: F401  (puts the repository and tests/ on the path)
import _verdict

from watcher.clock import ManualClock
from watcher.cluster.coordinator import Coordinator
from watcher.cluster.groups import CameraGroup, camera_groups
from watcher.cluster.leases import ClusterStore, MemoryClusterStore

HEARTBEAT_S, LEASE_S = 2.0, 10.0


@dataclass
class Sim:
    store: ClusterStore
    groups: list[CameraGroup]
    clock: ManualClock = field(default_factory=ManualClock)
    nodes: dict[str, Coordinator] = field(default_factory=dict)
    running: dict[str, set[str]] = field(default_factory=dict)
    double_starts: int = 0
    statements: Counter[str] = field(default_factory=Counter)
    rounds: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0

    def add(self, name: str) -> None:
        self.running[name] = set()

        async def gain(group: CameraGroup, epoch: int) -> None:
            if any(group.id in r for n, r in self.running.items()
                   if n != name and n in self.nodes):  # the dead run nothing
                self.double_starts += 1
            self.running[name].add(group.id)

        async def lose(group: CameraGroup, why: str) -> None:
            self.running[name].discard(group.id)

        self.nodes[name] = Coordinator(
            self.store, instance_id=name, heartbeat_s=HEARTBEAT_S, lease_s=LEASE_S,
            groups=self.groups, on_gain=gain, on_lose=lose, clock=self.clock,
            monotonic=lambda: self.clock.now_ms() / 1000)

    async def round(self, rng: random.Random) -> None:
        names = list(self.nodes)
        rng.shuffle(names)
        for name in names:
            started, wall = time.process_time(), time.perf_counter()
            await self.nodes[name].step()
            self.cpu_s += time.process_time() - started
            self.wall_s += time.perf_counter() - wall
            self.rounds += 1
        self.clock.advance(HEARTBEAT_S)

    def owner_of(self) -> dict[str, str]:
        return {g: n for n, r in self.running.items() if n in self.nodes for g in r}

    def settled(self) -> bool:
        owners = self.owner_of()
        return len(owners) == len(self.groups)

    def cameras_per_instance(self) -> list[int]:
        size = {g.id: g.size for g in self.groups}
        return sorted(sum(size[g] for g in self.running[n]) for n in self.nodes)


def make_groups(cameras: int, rng: random.Random) -> list[CameraGroup]:
    names = [f"cam{i:05d}" for i in range(cameras)]
    pairs = rng.sample(names, k=(cameras // 10) * 2 // 2 * 2)
    rules = [[pairs[i], pairs[i + 1]] for i in range(0, len(pairs), 2)]
    return camera_groups(names, rules)


async def simulate(args: argparse.Namespace, verdict: _verdict.Verdict) -> dict[str, Any]:
    rng = random.Random(args.seed)
    groups = make_groups(args.cameras, rng)
    async with _store(args.store) as (store, count):
        sim = Sim(store, groups)
        for i in range(args.instances):
            sim.add(f"node-{i:02d}")
        start_ms = sim.clock.now_ms()
        rounds = 0
        while not sim.settled() or rounds < 3:
            await sim.round(rng)
            rounds += 1
            verdict.require(rounds < 100, "the cluster did not settle in 100 rounds")
            if rounds >= 100:
                break
        stable = [await _stable_round(sim, rng) for _ in range(3)]
        settle_s = (sim.clock.now_ms() - start_ms) / 1000
        loads = sim.cameras_per_instance()
        before = sim.owner_of()
        # coordinator load in steady state
        statements_before, cpu_before, rounds_before = count(), sim.cpu_s, sim.rounds
        wall_before = sim.wall_s
        steady_rounds = 5
        for _ in range(steady_rounds):
            await sim.round(rng)
        steady = {"statements_per_instance_round": (count() - statements_before)
                  / (sim.rounds - rounds_before),
                  "cpu_ms_per_instance_round": (sim.cpu_s - cpu_before) * 1000
                  / (sim.rounds - rounds_before),
                  "wall_ms_per_instance_round": (sim.wall_s - wall_before) * 1000
                  / (sim.rounds - rounds_before)}
        # kill 5 at once: they stop; their leases run out
        killed = sorted(rng.sample(list(sim.nodes), k=min(args.kill, args.instances - 1)))
        orphaned = {g for n in killed for g in sim.running[n]}
        for name in killed:
            del sim.nodes[name]
        killed_ms = sim.clock.now_ms()
        recovered_ms = None
        for _ in range(60):
            await sim.round(rng)
            owners = sim.owner_of()
            if all(g in owners for g in orphaned):
                recovered_ms = sim.clock.now_ms()
                break
        verdict.require(recovered_ms is not None, "orphaned groups were not taken over")
        for _ in range(5):  # let the survivors' balance settle too
            await sim.round(rng)
        after = sim.owner_of()
        moved_survivors = sum(1 for g, n in before.items()
                              if n not in killed and after.get(g) != n)
        verdict.require(sim.double_starts == 0,
                        f"{sim.double_starts} group(s) started while running elsewhere")
        verdict.require(len(after) == len(groups), "groups without an owner at the end")
        verdict.require_work(len(orphaned), "groups orphaned by the kills")
        after_loads = sim.cameras_per_instance()
    return {
        "store": args.store, "cameras": args.cameras, "groups": len(groups),
        "instances": args.instances, "settle_s": settle_s, "stable_rounds": stable,
        "cameras_per_instance": {"min": loads[0], "max": loads[-1],
                                 "mean": statistics.mean(loads),
                                 "stdev": statistics.pstdev(loads)},
        "killed": len(killed), "orphaned_groups": len(orphaned),
        "rebalance_s": None if recovered_ms is None else (recovered_ms - killed_ms) / 1000,
        "survivor_groups_moved": moved_survivors,
        "after_kill_cameras_per_instance": {"min": after_loads[0], "max": after_loads[-1]},
        **steady,
        "statements_per_second_per_instance": steady["statements_per_instance_round"]
        / HEARTBEAT_S,
        "double_starts": sim.double_starts,
    }


async def _stable_round(sim: Sim, rng: random.Random) -> bool:
    before = sim.owner_of()
    await sim.round(rng)
    return sim.owner_of() == before


class _store:
    """The store to simulate on, and a function counting the statements it ran."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._exit: Any = None

    async def __aenter__(self) -> tuple[ClusterStore, Any]:
        if self.kind == "memory":
            store = MemoryClusterStore()
            return store, lambda: sum(store.calls.values())
        from sqlalchemy import event
        from support.postgres import fresh_database

        from watcher.cluster.sqlstore import SqlClusterStore
        from watcher.store import AlertStore
        self._db = fresh_database("watcher_bench_cluster")
        url = await self._db.__aenter__()
        self._store = await AlertStore(url).open()  # its migrations make the tables
        self._engine = self._store.db.engine
        counter = Counter[str]()

        @event.listens_for(self._engine.sync_engine, "before_cursor_execute")
        def _count(*_: Any) -> None:
            counter["statements"] += 1

        return SqlClusterStore(self._engine), lambda: counter["statements"]

    async def __aexit__(self, *exc: object) -> None:
        if self.kind != "memory":
            await self._store.close()
            await self._db.__aexit__(*exc)


def print_simulation(r: dict[str, Any]) -> None:
    c = r["cameras_per_instance"]
    print(f"simulated cluster ({r['store']} store): {r['cameras']} cameras in {r['groups']} "
          f"groups, {r['instances']} instances, heartbeat {HEARTBEAT_S:g} s, lease {LEASE_S:g} s")
    print(f"  settled after {r['settle_s']:.0f} s (simulated); then stable: "
          f"{r['stable_rounds']}")
    print(f"  cameras per instance: min {c['min']}, max {c['max']}, mean {c['mean']:.1f}, "
          f"stdev {c['stdev']:.2f}")
    print(f"  {r['killed']} instances killed at once ({r['orphaned_groups']} groups): every "
          f"group running again after {r['rebalance_s']} s (simulated); "
          f"{r['survivor_groups_moved']} groups of the survivors moved; then cameras per "
          f"instance {r['after_kill_cameras_per_instance']}")
    print(f"  coordinator load: {r['statements_per_instance_round']:.1f} store statements per "
          f"instance per round ({r['statements_per_second_per_instance']:.2f}/s per instance, "
          f"{r['statements_per_second_per_instance'] * r['instances'] / r['cameras']:.3f}/s "
          f"per camera); per instance round {r['cpu_ms_per_instance_round']:.2f} ms CPU "
          f"(this process: coordinator and store client), "
          f"{r['wall_ms_per_instance_round']:.2f} ms wall")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("part", nargs="?", default="simulate",
                        choices=["simulate", "takeover", "soak", "smoke"])
    parser.add_argument("--cameras", type=int, default=1000, help="simulate: cameras")
    parser.add_argument("--instances", type=int, default=20, help="simulate: instances")
    parser.add_argument("--kill", type=int, default=5, help="simulate: killed at once")
    parser.add_argument("--store", choices=["memory", "postgresql"], default="memory")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--procs", type=int, default=3, help="real instances")
    parser.add_argument("--cams", type=int, default=6, help="real cameras")
    parser.add_argument("--heartbeat", type=float, default=2.0)
    parser.add_argument("--lease", type=float, default=10.0)
    parser.add_argument("--kills", type=int, default=10, help="takeover: kill -9 count")
    parser.add_argument("--minutes", type=float, default=30.0, help="soak: length")
    parser.add_argument("--fault-every", type=float, default=90.0, help="soak: seconds")
    parser.add_argument("--quiet", type=float, default=60.0,
                        help="takeover: seconds the database load is measured, unprobed")
    _verdict.add_smoke(parser)
    args = _verdict.apply_smoke(parser.parse_args(), part="smoke", cameras=60, instances=6,
                                kill=2, kills=1, procs=2, cams=2, lease=5.0,
                                heartbeat=1.0, quiet=5.0)
    verdict = _verdict.Verdict("cluster")
    summary = []
    if args.part in ("simulate", "smoke"):
        result = asyncio.run(simulate(args, verdict))
        print_simulation(result)
        c = result["cameras_per_instance"]
        summary.append(f"{result['cameras']} cameras on {result['instances']} instances: "
                       f"{c['min']}-{c['max']} each; {result['killed']} killed: running "
                       f"again after {result['rebalance_s']} s (simulated)")
    if args.part in ("takeover", "smoke"):
        t = asyncio.run(_procs.takeover(args, verdict))
        print(f"takeover after kill -9 ({t['instances']} instances, {t['cameras']} cameras, "
              f"heartbeat {t['heartbeat_s']:g} s, lease {t['lease_s']:g} s): p50 "
              f"{t['p50_s']:.1f} s, max {t['max_s']:.1f} s over {t['kills']} kills "
              f"{t['times_s']}; PostgreSQL, steady state over {t['quiet_s']:g} s: "
              f"{t['db_transactions_per_s']:.1f} transactions/s "
              f"({t['db_transactions_per_s_per_camera']:.2f} per camera)")
        summary.append(f"takeover p50 {t['p50_s']:.1f} s, max {t['max_s']:.1f} s")
    if args.part == "soak":
        r = asyncio.run(_procs.soak(args, verdict))
        print(f"soak {r['minutes']:g} min, faults {r['faults']}: scripted events expected "
              f"{r['expected']}, notified {r['expected'] - r['missed']} (firing notifications "
              f"{r['firing_notified']}), missed {r['missed']} {r['missed_detail']}, "
              f"duplicated keys {r['duplicated_keys']}, malformed episode sequences "
              f"{r['malformed_cameras']}")
        verdict.require(r["duplicated_keys"] == 0, "duplicated idempotency keys")
        verdict.require(not r["malformed_cameras"], "malformed episode sequences")
        summary.append(f"soak: {r['expected'] - r['missed']}/{r['expected']} events notified, "
                       f"{r['duplicated_keys']} duplicated")
    return verdict.finish(None, "; ".join(summary))


if __name__ == "__main__":
    _verdict.run_main(main)
