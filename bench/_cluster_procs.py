"""The real-process parts of ``bench/cluster.py``: takeover and soak (not a benchmark
itself)."""

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
from support.postgres import fresh_database


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
