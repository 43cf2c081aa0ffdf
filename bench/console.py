"""The console: evidence clip size and encode CPU per event, and API latency on a big store.

Clips: a 640x480 ``testsrc`` camera at 5 fps (a person crossing, sensor noise,
the clock overlay) recorded as the daemon records it (scaled, JPEG q80), then
cut into the default clip of a ``for: 3`` rule asked every 5 s about a 10 s
window: 5 s + 10 s window + 10 s pending + 5 s after = 30 s, 150 frames. Each
format (mp4/H.264, webm/VP8, webp) is encoded ``--events`` times by
:func:`watcher.console.clips.encode_clip`, the function the daemon runs in its
worker thread; CPU is that thread's CPU time.

API: a state file with ``--events`` alert events (25 rules x 8 streams, three
severities, firing/repeat/resolved, 1% silenced, 2% with feedback marks, a
snapshot on each firing event) written in bulk, each row as the store writes it,
then the real status listener with the console on a loopback port, asked over
HTTP with httpx for the first timeline page (50 events) under several filters.
Goal: p95 < 100 ms for every filter.

    .venv/bin/python bench/console.py [--events 100000] [--requests 200] [--postgres] [--json]
    .venv/bin/python bench/console.py --smoke     # 2,000 events, 2 clips, 20 requests
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import _common
import _verdict

GOAL_P95_MS = 100.0
FILTERS = {
    "no filter": "",
    "rule + severity + status": "?rule=rule-07&severity=critical&status=firing",
    "stream": "?stream=cam-3",
    "silenced": "?silenced=true",
    "feedback: false alarm": "?feedback=false_alarm",
    "time range": "?since={since}&until={until}",
    "stream + feedback: none": "?stream=cam-5&feedback=none",
}


# -- clips -----------------------------------------------------------------------------------
def record_frames(seconds: float, fps: float, width: int) -> list[tuple[int, bytes]]:
    from watcher.console.clips import to_jpeg
    from watcher.media.testsrc import SyntheticScene

    scene = SyntheticScene.from_spec("testsrc:events=person,period=20,duration=12,start=5",
                                     fps=fps)
    frames = []
    for n in range(round(seconds * fps)):
        jpeg = to_jpeg(scene.frame(n), width)
        assert jpeg is not None
        frames.append((round(n * 1000 / fps), jpeg))
    return frames


def bench_clips(events: int, seconds: float) -> list[dict[str, Any]]:
    from watcher.console.clips import encode_clip

    frames = record_frames(seconds, 5.0, 640)
    rows = []
    for fmt in ("mp4", "webm", "webp"):
        sizes, cpus = [], []
        for _ in range(events):
            clip = encode_clip(frames, fmt)
            if clip.frames != len(frames) or not clip.data:
                raise RuntimeError(f"{fmt}: encoded {clip.frames} of {len(frames)} frames")
            sizes.append(len(clip.data))
            cpus.append(clip.cpu_ms)
        rows.append({"format": fmt, "frames": len(frames), "seconds": seconds,
                     "kb_per_event": sum(sizes) / len(sizes) / 1024,
                     "cpu_ms_per_event": sum(cpus) / len(cpus),
                     "clips": len(sizes)})
    return rows


# -- the store and the API --------------------------------------------------------------------
async def fill_store(location: str, count: int, now_ms: int) -> dict[str, int]:
    """``count`` events (each row as the store writes it) in batches, through the store's
    own database engine, so SQLite and PostgreSQL get the same rows."""
    from sqlalchemy import text

    from watcher.engine.state import Kind
    from watcher.engine.store import AlertEventRecord, AlertStore
    from watcher.store.alerts import event_row
    from watcher.store.schema import alert_events, deliveries, feedback

    rng = random.Random(7)
    snapshot = b"\xff\xd8" + bytes(rng.getrandbits(8) for _ in range(20_000))
    counts = {"silenced": 0, "feedback": 0}
    episodes: dict[tuple[str, str], int] = {}
    events, marks, sent = [], [], []
    for n in range(count):
        event_id = n + 1
        rule, stream = f"rule-{n % 25:02d}", f"cam-{(n // 25) % 8}"
        key = (rule, stream)
        kind = (Kind.FIRING, Kind.REPEAT, Kind.RESOLVED)[n % 3]
        if kind is Kind.FIRING:
            episodes[key] = episodes.get(key, 0) + 1
        episode = episodes.get(key, 1)
        created = now_ms - (count - n) * 30_000
        silenced = "s1" if rng.random() < 0.01 else None
        record = AlertEventRecord(
            event_key=f"{rule}:{stream}:{episode}:{kind}:{created}:{n}", rule=rule,
            stream_key=stream, episode=episode, kind=kind, notify=silenced is None,
            created_ms=created, severity=("info", "warning", "critical")[n % 7 % 3],
            labels={"site": "north"}, answer={"person": True, "description": "someone"},
            urls=(f"ovs://streams/s-{stream}?start_offset_ms=-10000",), stream_ids=("s",),
            model="local/vision", usage={"prompt_tokens": 800, "completion_tokens": 20},
            snapshot=snapshot if kind is Kind.FIRING else None,
            snapshot_type="image/jpeg" if kind is Kind.FIRING else None,
            extra={"prompt": "Anyone?"}, silenced_by=silenced)
        events.append({"id": event_id, **event_row(record)})
        counts["silenced"] += silenced is not None
        if rng.random() < 0.02:
            marks.append({"event_id": event_id, "label": rng.choice(("real", "false_alarm")),
                          "note": "", "created_by": "bench", "created_ms": created})
            counts["feedback"] += 1
        if kind is not Kind.RESOLVED and not silenced:
            sent.append({"event_id": event_id, "action": "ops",
                         "idempotency_key": f"{record.event_key}:ops", "status": "sent",
                         "attempts": 1, "next_attempt_ms": created, "created_ms": created,
                         "updated_ms": created, "sent_ms": created})

    async with AlertStore(location) as store:  # creates and migrates the schema
        for table, rows in ((alert_events, events), (feedback, marks), (deliveries, sent)):
            for i in range(0, len(rows), 1000):
                batch = rows[i:i + 1000]

                async def insert(conn, table=table, batch=batch):  # type: ignore[no-untyped-def]
                    await conn.execute(table.insert(), batch)
                await store.db.run(insert)

        async def analyze(conn):  # type: ignore[no-untyped-def]
            await conn.execute(text("ANALYZE"))
        await store.db.run(analyze)
    return counts


async def bench_api(location: str, requests: int, now_ms: int, count: int,
                    ) -> list[dict[str, Any]]:
    import httpx

    from watcher.console.api import ConsoleSource
    from watcher.engine.store import AlertStore
    from watcher.observe.server import serve_status
    from watcher.observe.source import StatusSource

    async with AlertStore(location) as store:
        status = StatusSource(keepers={}, store=store)
        console = ConsoleSource(status=status, store=store)
        async with serve_status(status, host="127.0.0.1", port=0, console=console) as endpoint:
            span_ms = count * 30_000
            params = {"since": now_ms - span_ms // 2, "until": now_ms - span_ms // 4}
            rows = []
            async with httpx.AsyncClient(base_url=endpoint.url, timeout=30) as client:
                for name, query in FILTERS.items():
                    url = "/api/events" + query.format(**params)
                    samples, found = [], 0
                    for i in range(requests + 3):
                        t0 = time.perf_counter()
                        response = await client.get(url)
                        elapsed = (time.perf_counter() - t0) * 1000
                        if response.status_code != 200:
                            raise RuntimeError(f"{url}: HTTP {response.status_code}: "
                                               f"{response.text[:200]}")
                        found = len(response.json()["events"])
                        if i >= 3:  # the first requests warm the page cache
                            samples.append(elapsed)
                    stats = _common.percentiles(samples)
                    rows.append({"filter": name, "query": query.format(**params),
                                 "events_on_page": found, **{k: stats[k] for k in
                                                             ("p50", "p95", "max")}})
            return rows


async def on_postgres(args: argparse.Namespace, now_ms: int) -> list[dict[str, Any]]:
    from support.postgres import fresh_database

    async with fresh_database("watcher_bench") as url:
        await fill_store(url, args.events, now_ms)
        return await bench_api(url, args.requests, now_ms, args.events)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="events in the store")
    parser.add_argument("--requests", type=int, default=200, help="requests per filter")
    parser.add_argument("--clips", type=int, default=10, help="clips encoded per format")
    parser.add_argument("--clip-seconds", type=float, default=30.0)
    parser.add_argument("--postgres", action="store_true",
                        help="also measure the API on PostgreSQL (a fresh database on "
                        "WATCHER_TEST_POSTGRES_URL, default postgresql://postgres@127.0.0.1/test)")
    parser.add_argument("--json", action="store_true")
    _verdict.add_smoke(parser)
    args = _verdict.apply_smoke(parser.parse_args(), events=2_000, requests=20, clips=2,
                                clip_seconds=6.0)
    _common.quiet_logs()
    info = _common.machine_info()
    check = _verdict.Verdict("console")

    clips = bench_clips(args.clips, args.clip_seconds)
    for row in clips:
        check.require(row["clips"] == args.clips and row["kb_per_event"] > 0,
                      f"{row['format']}: no clips encoded")
    now_ms = int(time.time() * 1000)
    backends: dict[str, list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "state.sqlite3")
        t0 = time.perf_counter()
        counts = asyncio.run(fill_store(path, args.events, now_ms))
        fill_s = time.perf_counter() - t0
        backends["SQLite"] = asyncio.run(bench_api(path, args.requests, now_ms, args.events))
        db_mb = Path(path).stat().st_size / 1e6
    if args.postgres:
        backends["PostgreSQL"] = asyncio.run(on_postgres(args, now_ms))
    api = [row for rows in backends.values() for row in rows]
    for row in api:
        check.require(row["events_on_page"] > 0, f"filter {row['filter']!r}: no events")
    check.require(counts["silenced"] > 0 and counts["feedback"] > 0,
                  "the store holds no silenced or marked events")
    worst = max(row["p95"] for row in api)
    if args.json:
        _common.emit_json({"machine": info, "clips": clips, "api": backends,
                           "events": args.events,
                           "store_mb": db_mb, "fill_s": fill_s, **counts})
    else:
        print(_common.describe_machine(info))
        _common.print_table(
            f"Evidence clips: {clips[0]['seconds']:g} s of 640x480 at 5 fps "
            f"({clips[0]['frames']} frames), {args.clips} per format",
            ["format", "KB per event", "encode CPU ms per event"],
            [[r["format"], r["kb_per_event"], r["cpu_ms_per_event"]] for r in clips])
        for backend, rows in backends.items():
            _common.print_table(
                f"{backend}: GET /api/events, first page (50), {args.events:,} events in the "
                f"store (SQLite file {db_mb:.0f} MB), {args.requests} requests per filter",
                ["filter", "events on page", "p50 ms", "p95 ms", "max ms"],
                [[r["filter"], r["events_on_page"], r["p50"], r["p95"], r["max"]]
                 for r in rows])
    best = min(clips, key=lambda r: r["kb_per_event"])
    return check.finish(
        worst < GOAL_P95_MS,
        f"timeline p95 {worst:.1f} ms at worst with {args.events:,} events on "
        f"{' and '.join(backends)} (goal < "
        f"{GOAL_P95_MS:g} ms); smallest clip {best['format']} at "
        f"{best['kb_per_event']:.0f} KB and {best['cpu_ms_per_event']:.0f} ms CPU per event")


if __name__ == "__main__":
    _verdict.run_main(main)
