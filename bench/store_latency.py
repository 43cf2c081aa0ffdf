"""Alert store write latency: SQLite against PostgreSQL, through the real AlertStore.

Per backend, on a fresh database:

* ``state step``: one alert state written (a rule's `for` counter moving);
* ``firing step``: state + one event with a 27 KB JPEG snapshot + 2 deliveries,
  in one transaction (what a firing costs before anything is sent);
* ``delivery``: one outbox cycle, claim then mark sent (2 transactions);
* ``8 cameras at once``: 8 firing steps written concurrently, as 8 rules
  ticking together would; wall time per batch.

Every write is read back and counted; a count that is off fails the run.

    .venv/bin/python bench/store_latency.py --writes 500
    .venv/bin/python bench/store_latency.py --smoke          # 20 writes each

PostgreSQL: ``$WATCHER_TEST_POSTGRES_URL`` or postgresql://postgres@127.0.0.1:5432/test
(a throwaway database is created and dropped). ``--backends sqlite`` runs without it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import _verdict
from support import postgres

from watcher.engine.state import AlertState, Kind, Status, Transition
from watcher.store import AlertEventRecord, AlertStore

GOAL_P95_MS = 100.0
"""A firing step (state, event with snapshot, deliveries) under 100 ms at p95 on both
backends: rules tick every second or more, so a write never holds up the next tick."""
SNAPSHOT = os.urandom(27_000)  # a camera-like 640x480 JPEG at q80
CAMERAS = 8


def firing_step(camera: int, n: int) -> tuple[AlertState, AlertEventRecord]:
    at_ms = 1_000_000 + n * 1_000
    state = AlertState(status=Status.FIRING, firing_since_ms=at_ms, episode=n + 1,
                       episode_notified=True, last_notified_ms=at_ms, updated_ms=at_ms)
    event = AlertEventRecord.from_transition(
        "bench", f"cam{camera}", Transition(Kind.FIRING, True, at_ms, n + 1),
        severity="warning", answer={"person_present": True, "people": 1},
        urls=(f"ovs://streams/s{camera}?start_offset_ms=-5000",), stream_ids=(f"s{camera}",),
        model="bench/model", usage={"total_tokens": 300}, snapshot=SNAPSHOT)
    return state, event


async def timed(samples: list[float], write: Any) -> Any:
    start = time.perf_counter()
    result = await write
    samples.append((time.perf_counter() - start) * 1000)
    return result


async def measure(location: str, writes: int) -> dict[str, Any]:
    state_ms: list[float] = []
    firing_ms: list[float] = []
    delivery_ms: list[float] = []
    batch_ms: list[float] = []
    async with AlertStore(location, instance="bench") as store:
        for n in range(writes):
            await timed(state_ms, store.record("counter", "cam0", AlertState(
                status=Status.PENDING, pending_count=n + 1, pending_since_ms=0, updated_ms=n)))
        event_ids: list[int] = []
        for n in range(writes):
            state, event = firing_step(0, n)
            event_ids += await timed(firing_ms, store.record(
                "bench", "cam0", state, [event], actions_for=lambda e: ["hook", "mail"]))
        deliveries = [d for ds in (await store.deliveries_for_events(event_ids)).values()
                      for d in ds if d.action == "hook"]
        for d in deliveries:
            start = time.perf_counter()
            claimed = await store.mark_delivering(d.id, 2_000_000)
            sent = await store.mark_sent(d.id, 2_000_001)
            delivery_ms.append((time.perf_counter() - start) * 1000)
            if not (claimed and sent):
                raise RuntimeError(f"delivery {d.id} could not be claimed and sent")
        batches = max(1, writes // CAMERAS)
        for n in range(batches):
            steps = [firing_step(c, writes + n) for c in range(1, CAMERAS + 1)]
            start = time.perf_counter()
            await asyncio.gather(*(store.record("bench", f"cam{c}", state, [event])
                                   for c, (state, event) in enumerate(steps, start=1)))
            batch_ms.append((time.perf_counter() - start) * 1000)
        stored_events = len(await store.events(limit=writes * 3, snapshots=False))
        counts = await store.delivery_counts()
    return {
        "state_step_ms": _common.percentiles(state_ms),
        "firing_step_ms": _common.percentiles(firing_ms),
        "delivery_ms": _common.percentiles(delivery_ms),
        "batch_8_ms": _common.percentiles(batch_ms),
        "writes": writes, "batches": batches,
        "stored_events": stored_events,
        "expected_events": writes + batches * CAMERAS,
        "sent": counts.get("hook", {}).get("sent", 0),
        "firing_steps_per_s": round(1000 / max(1e-9, sum(firing_ms) / len(firing_ms)), 1),
    }


async def run(backends: list[str], writes: int) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for backend in backends:
        if backend == "sqlite":
            with tempfile.TemporaryDirectory() as tmp:
                results["sqlite"] = await measure(str(Path(tmp) / "state.sqlite3"), writes)
            continue
        problem = await asyncio.to_thread(postgres.reachable, postgres.server_url())
        if problem is not None:
            raise SystemExit(f"PostgreSQL: {problem} (or run with --backends sqlite)")
        async with postgres.fresh_database("watcher_bench") as url:
            results["postgresql"] = await measure(url, writes)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=500, help="writes per kind and backend")
    parser.add_argument("--backends", default="sqlite,postgresql",
                        help="comma-separated: sqlite, postgresql")
    parser.add_argument("--json", action="store_true")
    _verdict.add_smoke(parser)
    args = _verdict.apply_smoke(parser.parse_args(), writes=20)
    _common.quiet_logs()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    results = asyncio.run(run(backends, args.writes))
    verdict = _verdict.Verdict("store_latency")
    for backend, r in results.items():
        verdict.require(r["stored_events"] == r["expected_events"],
                        f"{backend}: {r['stored_events']} events stored, "
                        f"{r['expected_events']} expected")
        verdict.require(r["sent"] == r["writes"],
                        f"{backend}: {r['sent']} of {r['writes']} deliveries sent")
    verdict.require_work(len(results), "backends measured")
    if args.json:
        _common.emit_json({"machine": _common.machine_info(), "results": results})
    else:
        print(_common.describe_machine(_common.machine_info()))
        rows = []
        for backend, r in results.items():
            for kind in ("state_step_ms", "firing_step_ms", "delivery_ms", "batch_8_ms"):
                p = r[kind]
                rows.append([backend, kind.removesuffix("_ms").replace("_", " "),
                             p.get("p50"), p.get("p95"), p.get("max")])
        _common.print_table(f"store write latency (ms), {args.writes} writes each",
                            ["backend", "write", "p50", "p95", "max"], rows)
    worst = max((r["firing_step_ms"].get("p95", float("inf")) for r in results.values()),
                default=float("inf"))
    summary = ", ".join(
        f"{b} firing step p50 {r['firing_step_ms']['p50']:.1f} / p95 "
        f"{r['firing_step_ms']['p95']:.1f} ms" for b, r in results.items())
    return verdict.finish(worst <= GOAL_P95_MS, f"{summary} (goal p95 <= {GOAL_P95_MS:.0f} ms)")


if __name__ == "__main__":
    _verdict.run_main(main)
