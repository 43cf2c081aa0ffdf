"""Scheduling under load: 200 rules over 20 streams, a model answering in 200 ms.

Everything runs in one process, as in the daemon with ``base_url: embedded``:

* the embedded app (``create_app``) with one bench model backend (``bench/vlm``) that
  sleeps 200 ms and answers valid JSON for the requested schema, served by uvicorn
  on 127.0.0.1 (``--transport uvicorn``, the default) or called through
  ``httpx.ASGITransport`` (``--transport asgi``);
* an :class:`OvershootClient` on one shared ``httpx.AsyncClient`` (as the daemon builds it);
* 20 fake live streams: a real stream created over the API, a frame (one camera-like
  640x480 JPEG) added through ``registry.add_frame`` at ``--frame-fps`` per stream, a
  ``LatestFrame`` holding a picture (used for alert snapshots) and a ``ChangeTracker``
  (not fed: ``skip_unchanged`` is off); a keeper-like task per stream reads its status
  every 5 s and renews its lease every 15 s, as ``StreamKeeper`` does;
* 200 rules, 10 per stream, every 5 s; half look at the latest frame, half at a 5 s
  window (``max_fps`` 1); their schemas, ``for``, ``keep_firing_for`` and ``cooldown``
  vary;
* the model's answers follow a scripted activity per stream (on for ``--event-on`` s
  every ``--event-period`` s), so alerts fire and resolve: every evaluation writes its
  state to SQLite, and transitions also write events with a JPEG snapshot;
* :class:`RuleEngine` with an :class:`AlertStore` in a temporary directory.

It runs in real time for ``--seconds`` (600 by default). Every job submission is
recorded with its scheduled time, so ticks expected (every ``start + k * 5 s`` up to the
end) are compared one by one with the ticks that ran. Lateness is the engine's own
(``engine.ticks[name].lateness_s``). An event-loop lag probe (a 50 ms sleep, measuring
its overshoot) and a ``gc.callbacks`` probe run alongside.

    .venv/bin/python bench/scheduling.py [--seconds 600] [--transport uvicorn|asgi] [--json]
    .venv/bin/python bench/scheduling.py --smoke    # 8 s, 2 streams x 3 rules every 1 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import math
import os
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import _common
import _verdict

GOAL_P99_MS = 50.0
MODEL_ID = "bench/vlm"


# -- the model -----------------------------------------------------------------------------------
def _scripted_value(spec: dict[str, Any], active: bool) -> Any:
    kind = spec.get("type")
    if isinstance(kind, list):  # optional fields: [T, "null"]
        kind = next((k for k in kind if k != "null"), "null")
    if "enum" in spec:
        return spec["enum"][0]
    return {"boolean": active, "integer": 1 if active else 0, "number": 0.9 if active else 0.1,
            "string": "someone at the door" if active else "nothing", "array": [],
            "null": None}.get(kind, None)


def make_backend(delay: float, period: float, on: float) -> Any:
    from watcher.server.backends.base import ChatInput, Completion, ModelBackend, estimate_usage

    class BenchModel(ModelBackend):
        """Sleeps ``delay`` then answers the requested schema; true while a stream is "busy"."""

        id = MODEL_ID

        def __init__(self) -> None:
            self.calls = 0
            self.started = time.monotonic()
            self.offsets: dict[str, float] = {}

        def active(self, stream_id: str) -> bool:
            if period <= 0:
                return False
            offset = self.offsets.setdefault(stream_id, len(self.offsets) * period / 20)
            return (time.monotonic() - self.started + offset) % period < on

        async def complete(self, request: ChatInput) -> Completion:
            self.calls += 1
            await asyncio.sleep(delay)
            media = request.media
            active = self.active(media[0].stream_id) if media else False
            schema = request.json_schema() or {}
            answer = {name: _scripted_value(spec, active)
                      for name, spec in (schema.get("properties") or {}).items()}
            text = json.dumps(answer)
            return Completion(content=text, usage=estimate_usage(request, text))

    return BenchModel()


# -- the rules -----------------------------------------------------------------------------------
def rule_specs(streams: int, per_stream: int, every: str, window: str = "5s",
               ) -> list[dict[str, Any]]:
    variants: list[dict[str, Any]] = [
        {"prompt": "Is anyone at the door?"},
        {"prompt": "How many people are there?",
         "schema": {"people": "integer", "person_present": "boolean"},
         "when": "person_present and people > 0", "for": 2},
        {"prompt": "Is a vehicle blocking the gate?", "keep_firing_for": "10s"},
        {"prompt": "Describe any activity.",
         "schema": {"activity": "string", "moving": "boolean", "confidence": "number"},
         "when": "moving and confidence > 0.5", "cooldown": "1m"},
        {"prompt": "Is the light on?", "for": "8s"},
    ]
    specs = []
    for s in range(streams):
        for r in range(per_stream):
            spec = {"name": f"s{s:02d}-r{r:02d}", "stream": f"cam{s:02d}", "every": every,
                    "severity": "warning", "labels": {"bench": "scheduling"},
                    **variants[r % len(variants)]}
            if r % 2:
                spec.update(window=window, max_fps=1)
            specs.append(spec)
    return specs


# -- probes --------------------------------------------------------------------------------------
class GcProbe:
    """Durations of CPython's collections, per generation (via ``gc.callbacks``)."""

    def __init__(self) -> None:
        self.durations: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._t0 = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
        else:
            self.durations[info["generation"]].append((time.perf_counter() - self._t0) * 1000)

    @contextlib.contextmanager
    def installed(self) -> Iterator[GcProbe]:
        gc.callbacks.append(self)
        try:
            yield self
        finally:
            gc.callbacks.remove(self)


async def loop_lag(samples: list[float], interval: float = 0.05) -> None:
    """Overshoot of a 50 ms sleep, in ms: how late the loop runs a due callback."""
    loop = asyncio.get_running_loop()
    while True:
        t0 = loop.time()
        await asyncio.sleep(interval)
        samples.append((loop.time() - t0 - interval) * 1000)


# -- the fake keepers ------------------------------------------------------------------------------
class FakeStream:
    """What a rule needs of a kept stream (``watcher.engine.runner.LiveStream``).

    Its source is always live: these streams never have a camera outage.
    """

    def __init__(self, name: str, stream_id: str, picture: Any) -> None:
        from watcher.media.changes import ChangeTracker
        from watcher.media.tracks import LatestFrame

        self.name = name
        self.stream_id: str | None = stream_id
        self.frames = LatestFrame()
        self.frames.put(picture)
        self.changes = ChangeTracker()
        self.source_live = True
        self.source_resumed_at: float | None = None
        self.status_reads = 0
        self.keepalives = 0
        self.failures = 0


async def keep(client: Any, stream: FakeStream, phase: float) -> None:
    """StreamKeeper's lease traffic: status every 5 s, keepalive every 15 s."""
    await asyncio.sleep(phase)
    n = 0
    while True:
        await asyncio.sleep(5.0)
        n += 1
        assert stream.stream_id is not None
        try:
            if n % 3 == 0:
                await client.keepalive(stream.stream_id)
                stream.keepalives += 1
            await client.get_stream(stream.stream_id)
            stream.status_reads += 1
        except Exception:  # counted and reported
            stream.failures += 1


async def feed_frames(registry: Any, streams: list[Any], jpeg: bytes, fps: float) -> None:
    """The ingest's storer, minus the decoding: one frame per stream per 1/fps seconds."""
    loop = asyncio.get_running_loop()
    interval = 1.0 / fps
    next_at = loop.time()
    while True:
        for stream in streams:
            registry.add_frame(stream, jpeg)
        next_at += interval
        await asyncio.sleep(max(0.0, next_at - loop.time()))


def camera_picture() -> tuple[Any, bytes]:
    import cv2

    from watcher.media.testsrc import SyntheticScene

    scene = SyntheticScene.from_spec("testsrc:events=person,period=20,duration=6")
    picture = scene.frame(15)  # 3 s in: the person is on screen
    jpeg = cv2.imencode(".jpg", picture, [cv2.IMWRITE_JPEG_QUALITY, 30])[1].tobytes()
    return picture, jpeg


# -- the run ---------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def api(transport: str, app: Any) -> Any:
    """The app's base URL: under uvicorn on a free port, or the ASGI app in-process.

    uvicorn binds host and port itself, as ``watcher.server.embedded.run_embedded`` does. (A
    pre-made ``socket.socket()`` handed over in ``sockets=`` has ``proto`` 0, so asyncio does
    not set TCP_NODELAY on the accepted connections and every response on a kept-alive
    connection waits ~40 ms for a delayed ACK.)
    """
    if transport == "asgi":
        async with app.router.lifespan_context(app):
            yield "http://bench/v1beta"
        return
    import uvicorn

    from watcher.server.app import API_PREFIX

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="on", access_log=False))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped while starting")
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}{API_PREFIX}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
            await asyncio.wait_for(task, 15)


async def drain(locks: list[asyncio.Lock], timeout: float) -> bool:
    async def wait() -> None:
        for lock in locks:
            async with lock:
                pass

    try:
        await asyncio.wait_for(wait(), timeout)
    except TimeoutError:
        return False
    return True


def expected_ticks(start: datetime, every: float, cutoff: datetime) -> list[datetime]:
    if start > cutoff:
        return []
    count = math.floor((cutoff - start).total_seconds() / every) + 1
    return [start + timedelta(seconds=k * every) for k in range(count)]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx
    from apscheduler.events import EVENT_JOB_SUBMITTED, JobSubmissionEvent

    from watcher.engine.engine import RuleEngine
    from watcher.engine.rules import RuleConfig
    from watcher.engine.store import AlertStore
    from watcher.overshoot.client import OvershootClient
    from watcher.server.app import create_app
    from watcher.server.settings import ServerSettings
    from watcher.server.streams import key_id

    machine = _common.machine_info()
    backend = make_backend(args.model_delay, args.event_period, args.event_on)
    app = create_app(ServerSettings(api_keys=[_common.API_KEY]), backends=[backend])
    server = app.state.server
    picture, jpeg = camera_picture()
    specs = rule_specs(args.streams, args.rules_per_stream, f"{args.every:g}s",
                       f"{args.window:g}s")
    rules = [RuleConfig.model_validate(spec) for spec in specs]

    class CountingStore(AlertStore):
        writes = 0
        write_s: list[float] = []

        async def record(self, *a: Any, **kw: Any) -> list[int]:
            t0 = time.perf_counter()
            try:
                return await super().record(*a, **kw)
            finally:
                CountingStore.writes += 1
                CountingStore.write_s.append(time.perf_counter() - t0)

    tasks: list[asyncio.Task[Any]] = []
    with tempfile.TemporaryDirectory(prefix="watcher-bench-") as tmp, GcProbe().installed() as gcp:
        async with api(args.transport, app) as base_url:
            kwargs: dict[str, Any] = {"timeout": httpx.Timeout(60.0, connect=10.0)}
            if args.transport == "asgi":
                kwargs["transport"] = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(**kwargs) as http:
                client = OvershootClient(base_url, _common.API_KEY, http=http)
                owner = key_id(_common.API_KEY)
                streams: dict[str, FakeStream] = {}
                server_streams = []
                for s in range(args.streams):
                    created = await client.create_stream()
                    stream = server.registry.get(created.id, owner)
                    server_streams.append(stream)
                    server.registry.add_frame(stream, jpeg)
                    streams[f"cam{s:02d}"] = FakeStream(f"cam{s:02d}", created.id, picture)
                tasks.append(asyncio.create_task(
                    feed_frames(server.registry, server_streams, jpeg, args.frame_fps)))
                # every window has frames before the first tick
                await asyncio.sleep(max(args.window + 1.0, 1.5 / args.frame_fps))
                for i, fake in enumerate(streams.values()):
                    tasks.append(asyncio.create_task(keep(client, fake, 5.0 * i / len(streams))))

                store = CountingStore(Path(tmp) / "state.sqlite3")
                engine = RuleEngine(rules, client=client, streams=streams, store=store,
                                    default_model=MODEL_ID)
                submitted: dict[str, list[datetime]] = {r.name: [] for r in rules}

                def on_submit(event: Any) -> None:
                    if isinstance(event, JobSubmissionEvent) and event.job_id in submitted:
                        submitted[event.job_id].extend(event.scheduled_run_times)

                lag: list[float] = []
                tasks.append(asyncio.create_task(loop_lag(lag)))
                if args.gc_freeze:
                    gc.freeze()  # imports and setup are done: keep them out of collections
                gc_before = {g: len(v) for g, v in gcp.durations.items()}
                tracked_at_start = len(gc.get_objects())
                await engine.start()
                engine_started = datetime.now(UTC)
                assert engine._scheduler is not None
                engine._scheduler.add_listener(on_submit, EVENT_JOB_SUBMITTED)
                starts = {job.id: job.trigger.start_date
                          for job in engine._scheduler.get_jobs()}
                busy0, total0 = _common.machine_cpu_seconds()
                cpu0, wall0 = time.process_time(), time.monotonic()
                started_at = datetime.now(UTC)
                await asyncio.sleep(args.seconds)
                stopped_at = datetime.now(UTC)
                cpu1, wall1 = time.process_time(), time.monotonic()
                busy1, total1 = _common.machine_cpu_seconds()
                errors = sum(t.errors for t in engine.ticks.values())
                tracked_at_end = len(gc.get_objects())
                # engine.stop() alone cancels the evaluations in flight (APScheduler's
                # AsyncIOExecutor.shutdown cancels its tasks): pause, let them finish, stop.
                engine._scheduler.pause()
                in_flight = [r._lock for r in engine.runners.values() if r._lock.locked()]
                drained = await drain(in_flight, 15.0)
                await engine.stop()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                await store.close()

    # A tick due in the last second may legitimately still be on its way: stop counting there.
    cutoff = stopped_at - timedelta(seconds=1)
    expected = ran = 0
    missing: list[str] = []
    skipped_at_start: list[str] = []
    for rule in rules:
        due = expected_ticks(starts[rule.name], args.every, cutoff)
        got = {t for t in submitted[rule.name] if t <= cutoff}
        expected += len(due)
        ran += len(got)
        for t in due:
            if t not in got:
                # A first tick due before engine.start() returned: APScheduler skips it
                # silently (no EVENT_JOB_MISSED): the rule's offset was shorter than startup.
                (skipped_at_start if t < engine_started else missing).append(
                    f"{rule.name}@{t.isoformat()}")
    lateness_ms = [x * 1000 for t in engine.ticks.values() for x in t.lateness_s]
    runners = list(engine.runners.values())
    stats = [r.stats for r in runners]
    ask_ms = [x * 1000 for s in stats for x in s.latencies_s]
    ask_by_kind = {kind: _common.percentiles(
        [x * 1000 for r in runners if (r.rule.window is None) == (kind == "latest frame")
         for x in r.stats.latencies_s]) for kind in ("latest frame", "5 s window")}
    gc_during = {g: v[gc_before[g]:] for g, v in gcp.durations.items()}
    wall = wall1 - wall0
    return {
        "benchmark": "scheduling",
        "machine": machine,
        "config": {"seconds": args.seconds, "streams": args.streams, "rules": len(rules),
                   "every_s": args.every, "window_s": args.window,
                   "model_delay_s": args.model_delay,
                   "transport": args.transport, "frame_fps": args.frame_fps,
                   "event_period_s": args.event_period, "event_on_s": args.event_on,
                   "gc_freeze": args.gc_freeze, "started_at": started_at.isoformat()},
        "ticks": {"expected": expected, "ran": ran, "missing": len(missing),
                  "missing_examples": missing[:10],
                  "skipped_at_start": len(skipped_at_start),
                  "skipped_at_start_examples": skipped_at_start[:10],
                  "engine_missed": sum(t.missed for t in engine.ticks.values()),
                  "overruns": sum(t.overruns for t in engine.ticks.values()),
                  "late_over_goal": sum(x > GOAL_P99_MS for x in lateness_ms),
                  "errors": errors, "in_flight_at_stop": len(in_flight),
                  "drained": drained},
        "lateness_ms": _common.percentiles(lateness_ms),
        "loop_lag_ms": _common.percentiles(lag),
        "ask_ms": _common.percentiles(ask_ms),
        "ask_ms_by_kind": ask_by_kind,
        "work": {"evaluations": sum(s.evaluations for s in stats),
                 "model_calls_runner": sum(s.model_calls for s in stats),
                 "model_calls_backend": backend.calls,
                 "not_ready": sum(s.skipped_not_ready for s in stats),
                 "model_errors": sum(s.model_errors for s in stats),
                 "invalid": sum(s.invalid_answers for s in stats),
                 "events": sum(s.events for s in stats),
                 "store_writes": CountingStore.writes,
                 "store_write_ms": _common.percentiles([x * 1000 for x in CountingStore.write_s]),
                 "status_reads": sum(f.status_reads for f in streams.values()),
                 "keepalives": sum(f.keepalives for f in streams.values()),
                 "keeper_failures": sum(f.failures for f in streams.values())},
        "cpu": {"wall_s": wall, "process_cpu_s": cpu1 - cpu0,
                "process_percent": 100 * (cpu1 - cpu0) / wall,
                "machine_busy_cores": (os.cpu_count() or 1) * (busy1 - busy0)
                / max(1e-9, total1 - total0),
                "loadavg_end": os.getloadavg()[0]},
        "gc": {f"gen{g}": {"count": len(v), "max_ms": max(v, default=0.0),
                           "p50_ms": _common.percentiles(v).get("p50", 0.0),
                           "total_ms": sum(v)} for g, v in gc_during.items()},
        "gc_objects": {"frozen": gc.get_freeze_count(), "tracked_at_start": tracked_at_start,
                       "tracked_at_end": tracked_at_end},
    }


def report(r: dict[str, Any]) -> None:
    c, t, w = r["config"], r["ticks"], r["work"]
    print(f"Machine: {_common.describe_machine(r['machine'])}")
    print(f"{c['rules']} rules over {c['streams']} streams, every {c['every_s']:g} s, model "
          f"{c['model_delay_s'] * 1000:.0f} ms, {c['transport']}, {c['seconds']:g} s real time"
          f"{', gc.freeze()' if c['gc_freeze'] else ''}")
    _common.print_table("Ticks", ["expected", "ran", "missing", "first tick skipped at start",
                                  "engine missed", "overruns", "errors",
                                  f"> {GOAL_P99_MS:g} ms late"],
                        [[t["expected"], t["ran"], t["missing"], t["skipped_at_start"],
                          t["engine_missed"], t["overruns"], t["errors"],
                          t["late_over_goal"]]])
    rows = []
    for name, key in (("tick lateness (engine.ticks)", "lateness_ms"),
                      ("event-loop lag (50 ms sleep)", "loop_lag_ms"),
                      ("ask: request to valid answer", "ask_ms"),
                      ("AlertStore.record (awaited)", None)):
        p = r[key] if key else w["store_write_ms"]
        rows.append([name, p.get("n", 0), *(f"{p.get(k, 0):.1f}" for k in
                                          ("mean", "p50", "p95", "p99", "max"))])
    _common.print_table("Latencies (ms)", ["what", "n", "mean", "p50", "p95", "p99", "max"], rows)
    _common.print_table(
        "Work", ["evaluations", "model calls", "not ready", "model errors", "invalid",
                 "events", "store writes", "status reads", "keepalives", "process CPU",
                 "machine busy"],
        [[w["evaluations"], f"{w['model_calls_runner']} ({w['model_calls_backend']} served)",
          w["not_ready"], w["model_errors"], w["invalid"], w["events"], w["store_writes"],
          w["status_reads"], w["keepalives"], f"{r['cpu']['process_percent']:.1f}%",
          f"{r['cpu']['machine_busy_cores']:.2f} cores"]])
    o = r["gc_objects"]
    _common.print_table(
        f"Garbage collections during the run (objects tracked: {o['tracked_at_start']:,} at "
        f"start, {o['tracked_at_end']:,} at the end; {o['frozen']:,} frozen)",
        ["generation", "count", "p50 ms", "max ms", "total ms"],
        [[g, v["count"], f"{v['p50_ms']:.1f}", f"{v['max_ms']:.1f}", f"{v['total_ms']:.0f}"]
         for g, v in r["gc"].items()])


def verdict(r: dict[str, Any]) -> int:
    """Met only when every rule really ran: ticks, evaluations, model calls, events."""
    t, w = r["ticks"], r["work"]
    check = _verdict.Verdict("scheduling")
    check.require_work(t["expected"], "ticks expected")
    check.require_work(w["evaluations"], "evaluations")
    check.require_work(w["model_calls_runner"], "model calls")
    check.require(w["model_calls_backend"] >= w["model_calls_runner"],
                  f"the model served {w['model_calls_backend']} of "
                  f"{w['model_calls_runner']} calls")
    check.require_no_errors(t["errors"], "evaluation errors")
    check.require_no_errors(w["model_errors"], "model errors")
    check.require_no_errors(w["invalid"], "invalid answers")
    check.require_no_errors(w["keeper_failures"], "keeper failures")
    if r["config"]["event_period_s"] > 0:
        check.require_work(w["events"], "alert events (the scripted activity fired nothing)")
    check.require(t["drained"], "evaluations still running 15 s after the end")
    p99 = r["lateness_ms"].get("p99", float("inf"))
    ok = t["missing"] == 0 and t["engine_missed"] == 0 and p99 <= GOAL_P99_MS
    return check.finish(ok, f"{t['missing']} tick(s) missing of {t['expected']} "
                            f"(+{t['skipped_at_start']} first tick(s) due before the engine had "
                            f"started), p99 lateness {p99:.1f} ms (goal <= {GOAL_P99_MS:g} ms); "
                            f"{w['evaluations']} evaluations, {w['model_calls_runner']} model "
                            f"calls, {t['errors']} errors, {w['events']} events")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=600.0, help="real time to run")
    parser.add_argument("--streams", type=int, default=20)
    parser.add_argument("--rules-per-stream", type=int, default=10)
    parser.add_argument("--every", type=float, default=5.0, help="seconds between ticks")
    parser.add_argument("--window", type=float, default=5.0,
                        help="window of the odd-numbered rules, in seconds")
    parser.add_argument("--model-delay", type=float, default=0.2, help="seconds per answer")
    parser.add_argument("--transport", choices=("uvicorn", "asgi"), default="uvicorn")
    parser.add_argument("--frame-fps", type=float, default=5.0,
                        help="frames added per stream per second")
    parser.add_argument("--event-period", type=float, default=60.0,
                        help="scripted activity period per stream (0: never active)")
    parser.add_argument("--event-on", type=float, default=15.0,
                        help="seconds of each period the model answers 'yes'")
    parser.add_argument("--gc-freeze", action="store_true",
                        help="gc.freeze() after imports and setup")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    _verdict.add_smoke(parser)
    args = _verdict.apply_smoke(parser.parse_args(), seconds=8.0, streams=2,
                                rules_per_stream=3, every=1.0, window=1.0, model_delay=0.05,
                                event_period=4.0, event_on=2.0)
    _common.quiet_logs()
    result = asyncio.run(run(args))
    if args.json:
        _common.emit_json(result)
    else:
        report(result)
    return verdict(result)


if __name__ == "__main__":
    _verdict.run_main(main)
