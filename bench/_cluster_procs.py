"""The real-process parts of ``bench/cluster.py``: takeover, soak, store writes (not a
benchmark itself)."""

from __future__ import annotations

import asyncio
import random
import signal
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (puts the repository and tests/ on the path)
import _verdict
import asyncpg
from support.cluster import (
    Cluster,
    Script,
    duplicated_keys,
    episodes,
    notices,
    running_cluster,
    scripted_events_notified,
    well_formed,
)
from support.pgdb import fresh_database

from watcher.engine.state import AlertState, Kind, Status, Transition
from watcher.store import AlertStore
from watcher.store.records import AlertEventRecord


async def _transactions(db: str) -> int:
    conn = await asyncpg.connect(db)
    try:
        row = await conn.fetchrow("SELECT xact_commit + xact_rollback AS n FROM "
                                  "pg_stat_database WHERE datname = current_database()")
    finally:
        await conn.close()
    return int(row["n"])


async def takeover(args: Any, verdict: _verdict.Verdict) -> dict[str, Any]:
    """Kill -9 one instance at a time; seconds until every camera publishes again."""
    rng = random.Random(args.seed)
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with fresh_database("watcher_bench_takeover") as db, running_cluster(
                Path(tmp), db, instances=args.procs, cameras=args.cams,
                heartbeat=args.heartbeat, lease=args.lease) as cluster:
            await cluster.wait_balanced(timeout=180)
            # the database's load with nobody probing the instances' status
            await asyncio.sleep(args.quiet / 4)
            tx0, t0 = await _transactions(db), time.monotonic()
            await asyncio.sleep(args.quiet)
            tx_per_s = (await _transactions(db) - tx0) / (time.monotonic() - t0)
            for _ in range(args.kills):
                victim = rng.choice(cluster.nodes)
                await victim.kill()
                took = await cluster.wait_all_published_once(
                    timeout=args.lease + 60, exclude={victim.name})
                times.append(took)
                print(f"  kill -9 {victim.name}: every camera published again after "
                      f"{took:.1f} s", flush=True)
                await victim.start()
                await cluster.wait_balanced(timeout=180)
            verdict.require(duplicated_keys(cluster.hook) == {}, "duplicated idempotency keys")
            verdict.require(all(well_formed(episodes(cluster.hook, c))
                                for c in cluster.camera_names), "malformed episodes")
    verdict.require(len(times) == args.kills, "not every kill was measured")
    return {"kills": len(times), "p50_s": statistics.median(times), "max_s": max(times),
            "times_s": [round(t, 1) for t in times], "lease_s": args.lease,
            "heartbeat_s": args.heartbeat, "instances": args.procs, "cameras": args.cams,
            "db_transactions_per_s": tx_per_s, "quiet_s": args.quiet,
            "db_transactions_per_s_per_camera": tx_per_s / args.cams,
            "samples": cluster.samples}


async def soak(args: Any, verdict: _verdict.Verdict) -> dict[str, Any]:
    """A long run with a kill -9 or a freeze every ``fault_every`` seconds."""
    rng = random.Random(args.seed)
    script = Script()
    faults: Counter[str] = Counter()
    with tempfile.TemporaryDirectory() as tmp:
        async with fresh_database("watcher_bench_soak") as db, running_cluster(
                Path(tmp), db, instances=args.procs, cameras=args.cams,
                heartbeat=args.heartbeat, lease=args.lease, script=script) as cluster:
            await cluster.wait_all_published_once(timeout=180)
            since = time.time()
            end = time.monotonic() + args.minutes * 60
            while time.monotonic() < end:
                await asyncio.sleep(min(args.fault_every, max(0.0, end - time.monotonic())))
                if time.monotonic() >= end:
                    break
                await _fault(cluster, rng, faults, args.lease)
            until = time.time() - 15
            await asyncio.sleep(10)
            missed = scripted_events_notified(cluster.hook, script, cluster.cameras, since,
                                              until)
            expected = sum(len(script.events(i, since, until)) for i in range(cluster.cameras))
            firing = [n for n in notices(cluster.hook) if n.kind == "firing"
                      and since * 1000 <= n.at_ms <= until * 1000]
            malformed = [c for c in cluster.camera_names
                         if not well_formed(episodes(cluster.hook, c))]
            duplicated = duplicated_keys(cluster.hook)
    verdict.require_work(expected, "scripted events")
    verdict.require_work(sum(faults.values()), "faults injected")
    return {"minutes": args.minutes, "faults": dict(faults), "expected": expected,
            "missed": sum(len(v) for v in missed.values()), "missed_detail": missed,
            "firing_notified": len(firing), "duplicated_keys": len(duplicated),
            "malformed_cameras": malformed, "notifications": len(cluster.hook.requests)}


async def _fault(cluster: Cluster, rng: random.Random, faults: Counter[str],
                 lease: float) -> None:
    victim = rng.choice(cluster.nodes)
    if rng.random() < 0.5:
        await victim.kill()
        faults["kill -9"] += 1
        await cluster.wait_all_published_once(timeout=lease + 60, exclude={victim.name})
        await victim.start()
    else:
        victim.signal(signal.SIGSTOP)
        faults["freeze"] += 1
        await cluster.wait_all_published_once(timeout=lease + 60, exclude={victim.name})
        await asyncio.sleep(2)
        victim.signal(signal.SIGCONT)
    await cluster.wait_all_published_once(timeout=180)
    print(f"  {sum(faults.values())} faults so far ({dict(faults)}); "
          f"{len(cluster.hook.requests)} notifications", flush=True)


async def writes(args: Any, verdict: _verdict.Verdict) -> dict[str, Any]:
    """Latency of one alert step's write (state + event + delivery), SQLite vs PostgreSQL."""
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with fresh_database("watcher_bench_writes") as db:
            for name, location in (("sqlite", str(Path(tmp) / "state.sqlite3")),
                                   ("postgresql", db)):
                async with AlertStore(location) as store:
                    await store.open()
                    latencies = []
                    for i in range(args.writes):
                        state = AlertState(status=Status.FIRING, firing_since_ms=i + 1,
                                           episode=i + 1, episode_notified=True)
                        event = AlertEventRecord.from_transition(
                            "bench", "cam", Transition(Kind.FIRING, True, i + 1, i + 1),
                            answer={"motion_detected": True}, snapshot=b"\xff" * 20_000)
                        started = time.perf_counter()
                        await store.record("bench", "cam", state, [event],
                                           actions_for=lambda e: ["hook"])
                        latencies.append(time.perf_counter() - started)
                    stored = len(await store.events(limit=args.writes + 1, snapshots=False))
                    verdict.require(stored == args.writes,
                                    f"{name}: {stored} of {args.writes} events stored")
                latencies.sort()
                out[name] = {"p50_ms": statistics.median(latencies) * 1000,
                             "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
                             "writes": len(latencies)}
    return out
