"""``skip_unchanged``: model calls saved on a mostly static camera, and events still caught.

Offline, in simulated time. A ``SyntheticScene`` (640x480, 5 fps, sensor noise sigma=2, the
timestamp overlay on) shows a scripted event (``person`` or ``box``) for ``--duration`` s
every ``--period`` s, so the picture is static most of the time. Every frame, at the
stream's frame rate, goes

* through a :class:`ChangeTracker` (``tracker(frame)``, exactly as the keeper's source
  calls it), into the stream's ``LatestFrame`` (for snapshots),
* and into the embedded server's registry (``registry.add_frame``) under a
  :class:`ManualClock` that advances one frame interval per frame.

A :class:`RuleRunner` with ``skip_unchanged: true`` is evaluated every ``--every`` s
(starting ``--phase`` s into each interval) through the real client, embedded app
(``httpx.ASGITransport``), answer validation, state machine and an :class:`AlertStore`.
Two models:

* ``truth``: answers ``{"present": ...}`` from the scene's ground truth
  (``event_active``) at the timestamp of the newest frame it was shown, so a missed event
  can only be skip_unchanged's fault. The frames stored in the server are then a small
  placeholder JPEG (this model never looks at pixels). A second runner with
  ``skip_unchanged: false`` asks the same question about the same stream as the baseline.
* ``vision``: ``local/vision`` on a motion rule (``window: 1s``, ``max_fps: 5``,
  ``{motion_detected: boolean}``) over the real frames, JPEG-encoded at q30 as the
  ingest settles at 5 fps (see benchmark 1); its second runner is the baseline. A
  window answer is reused only when the window it saw held no change, so a "motion"
  answer whose window still showed the object leaving is asked again.

The runner's "ask again at least every 300 s" (``MAX_REUSE_S``) reads ``time.monotonic()``,
not the runner's clock; the bench points the runner module's ``time`` at the simulated
clock so that forced re-asks happen as they would in real time.

Per scripted event: was there at least one real (not skipped) model call whose frames
showed it, and did the rule go ``firing`` for it? Also: alerts fired outside events,
the delay from event start to ``firing``, and the tracker's false "changed" rate on
static frames (a version bump between two frames that both show no event). A last table
runs the tracker alone on the static scene at several noise levels.

    .venv/bin/python bench/skip_unchanged.py [--minutes 30] [--json]
        [--cases person:truth,box:truth,person:vision]
    .venv/bin/python bench/skip_unchanged.py --smoke   # 1 simulated minute, 3 events
"""

from __future__ import annotations

import argparse
import asyncio
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import _common
import _verdict

GOAL_SAVED = 0.80
TRUTH_MODEL = "bench/truth"


VARIANTS = {
    "skip": "on",
    "baseline": "off (baseline)",
}


@dataclass
class Tick:
    t: float
    outcome: str
    matched: bool | None
    fired: bool
    """A ``firing`` transition (a new episode) happened at this evaluation."""
    status: str
    shown: frozenset[int]
    """The scripted events (numbered from 0) visible in the frames the model was (or,
    for a skipped evaluation, would have been) shown."""


@dataclass
class Case:
    kind: str
    model: str
    variant: str
    ticks: list[Tick] = field(default_factory=list)
    stats: Any = None


class _SimTime:
    """Stands in for the ``time`` module inside ``watcher.engine.runner``."""

    def __init__(self, clock: Any, start_ms: int) -> None:
        self.clock, self.start_ms = clock, start_ms

    def monotonic(self) -> float:
        return (self.clock.now_ms() - self.start_ms) / 1000

    perf_counter = staticmethod(time.perf_counter)


def make_tracker(now: Any) -> Any:
    from watcher.media.changes import ChangeTracker

    class TimedTracker(ChangeTracker):
        """A ChangeTracker whose ``changed_at`` is on the simulated clock."""

        def __init__(self) -> None:
            super().__init__()
            self.changed_at = -math.inf

        def __call__(self, frame: Any, at: float | None = None) -> None:
            before = self.version
            super().__call__(frame, at)
            if self.version != before:
                self.changed_at = now()

    return TimedTracker()


def make_truth_model(scene: Any) -> Any:
    import json

    from watcher.server.backends.base import ChatInput, Completion, ModelBackend, estimate_usage

    class TruthModel(ModelBackend):
        """Answers from the scene's ground truth at the newest frame it was shown."""

        id = TRUTH_MODEL

        async def complete(self, request: ChatInput) -> Completion:
            newest = max(f.timestamp_ms for m in request.media for f in m.frames)
            text = json.dumps({"present": scene.event_active(newest / 1000)})
            return Completion(content=text, usage=estimate_usage(request, text))

    return TruthModel()


def rule(name: str, model: str, skip: bool, every: float) -> dict[str, Any]:
    base = {"name": name, "stream": "cam", "every": f"{every:g}s", "skip_unchanged": skip}
    if model == "truth":
        return {**base, "model": TRUTH_MODEL, "prompt": "Is anyone or anything in view?",
                "schema": {"present": "boolean"}}
    return {**base, "model": "local/vision", "prompt": "Is anything moving?",
            "window": "1s", "max_fps": 5, "schema": {"motion_detected": "boolean"}}


def scene_for(kind: str, args: argparse.Namespace) -> Any:
    from watcher.media.testsrc import SyntheticScene

    return SyntheticScene(640, 480, fps=args.fps, events=(kind,), period=args.period,
                          duration=args.duration, start=args.start, noise=args.noise,
                          clock=not args.no_clock)


async def simulate(kind: str, model: str, variants: list[str], args: argparse.Namespace,
                   ) -> dict[str, Any]:
    import cv2
    import httpx

    import watcher.engine.runner as runner_module
    from watcher.clock import ManualClock
    from watcher.engine.rules import RuleConfig
    from watcher.engine.runner import RuleRunner
    from watcher.engine.state import Kind
    from watcher.engine.store import AlertStore
    from watcher.media.tracks import LatestFrame
    from watcher.overshoot.client import OvershootClient
    from watcher.server.app import create_app
    from watcher.server.backends.vision import VisionModel
    from watcher.server.settings import ServerSettings
    from watcher.server.streams import key_id

    scene = scene_for(kind, args)
    clock = ManualClock()
    start_ms = clock.now_ms()
    backends = [make_truth_model(scene)] if model == "truth" else [VisionModel()]
    app = create_app(ServerSettings(api_keys=[_common.API_KEY]), clock=clock, backends=backends)
    server = app.state.server
    owner = key_id(_common.API_KEY)
    stream = server.registry.create(owner)

    sim_time = _SimTime(clock, start_ms)

    class Live:
        """A kept stream whose source never goes down."""

        stream_id: str | None = stream.id
        frames = LatestFrame()
        changes = make_tracker(sim_time.monotonic)
        source_live = True
        source_resumed_at: float | None = None

    live = Live()
    placeholder = cv2.imencode(".jpg", scene.background[::8, ::8])[1].tobytes()
    cases = [Case(kind, model, v) for v in variants]
    window_frames = round(args.fps) if model == "vision" else 0  # 1 s window

    def events_in(frames: range) -> frozenset[int]:
        times = (scene.time_of(m) for m in frames)
        return frozenset(int((t - scene.start) // scene.period) for t in times
                         if scene.event_active(t))

    saved_time = runner_module.time
    runner_module.time = sim_time  # type: ignore[assignment]
    try:
        with tempfile.TemporaryDirectory(prefix="watcher-bench-") as tmp:
            store = AlertStore(Path(tmp) / "state.sqlite3")
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as http:
                client = OvershootClient("http://bench/v1beta", _common.API_KEY, http=http)
                runners = [RuleRunner(
                    RuleConfig.model_validate(rule(f"{c.variant}-{kind}", model,
                                                   c.variant != "baseline", args.every)),
                    default_model=TRUTH_MODEL, client=client, streams={"cam": live},
                    store=store, clock=clock) for c in cases]
                total = round(args.minutes * 60 * args.fps)
                every_n = round(args.every * args.fps)
                phase_n = round(args.phase * args.fps) % every_n
                bumps: list[tuple[int, bool]] = []  # (n, changed) per frame after the first
                timings = {"render": 0.0, "tracker": 0.0, "jpeg": 0.0, "evaluate": 0.0}
                for n in range(total):
                    t = n / args.fps
                    clock.advance((start_ms + round(t * 1000) - clock.now_ms()) / 1000)
                    t0 = time.perf_counter()
                    frame = scene.frame(n)
                    t1 = time.perf_counter()
                    before = live.changes.version
                    live.changes(frame)
                    t2 = time.perf_counter()
                    if n:
                        bumps.append((n, live.changes.version != before))
                    live.frames.put(frame)
                    jpeg = (placeholder if model == "truth" else
                            cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 30])[1]
                            .tobytes())
                    t3 = time.perf_counter()
                    server.registry.add_frame(stream, jpeg)
                    if n % round(10 * args.fps) == 0:
                        server.registry.keepalive(stream.id, owner)
                    timings["render"] += t1 - t0
                    timings["tracker"] += t2 - t1
                    timings["jpeg"] += t3 - t2
                    if n % every_n != phase_n or n < every_n:
                        continue
                    t4 = time.perf_counter()
                    for case, runner in zip(cases, runners, strict=True):
                        result = await runner.evaluate()
                        case.ticks.append(Tick(
                            t, result.outcome, result.matched,
                            any(tr.kind == Kind.FIRING for tr in result.transitions),
                            str(runner.state.status),
                            events_in(range(max(0, n - window_frames), n + 1))))
                    timings["evaluate"] += time.perf_counter() - t4
            await store.close()
    finally:
        runner_module.time = saved_time  # type: ignore[assignment]
    for case, runner in zip(cases, runners, strict=True):
        case.stats = runner.stats
    return score(scene, cases, bumps, args, timings, total)


def event_spans(scene: Any, seconds: float) -> list[tuple[float, float]]:
    spans = []
    k = 0
    while (begin := scene.start + k * scene.period) + scene.duration <= seconds:
        spans.append((begin, begin + scene.duration))
        k += 1
    return spans


def score(scene: Any, cases: list[Case], bumps: list[tuple[int, bool]],
          args: argparse.Namespace, timings: dict[str, float], frames: int) -> dict[str, Any]:
    seconds = frames / args.fps
    spans = event_spans(scene, seconds)
    # A frame pair is static when neither frame shows the event.
    static = [changed for n, changed in bumps if not scene.event_active(scene.time_of(n))
              and not scene.event_active(scene.time_of(n - 1))]
    results = []
    for case in cases:
        per_event = []
        for k, (begin, _end) in enumerate(spans):
            seen = [x for x in case.ticks if x.outcome == "answered" and k in x.shown]
            fired = [x for x in case.ticks if x.fired and k in x.shown]
            per_event.append({"begin": begin, "real_calls": len(seen),
                              "fired": bool(fired),
                              "delay_s": fired[0].t - begin if fired else None})
        in_event = [bool(x.shown) for x in case.ticks]
        s = case.stats
        delays = [e["delay_s"] for e in per_event if e["delay_s"] is not None]
        every = args.every
        results.append({
            "scene": case.kind, "model": case.model, "variant": case.variant,
            "skip_unchanged": case.variant != "baseline",
            "evaluations": s.evaluations, "model_calls": s.model_calls,
            "skipped_unchanged": s.skipped_unchanged, "not_ready": s.skipped_not_ready,
            "model_errors": s.model_errors, "invalid": s.invalid_answers,
            "saved": 1 - s.model_calls / s.evaluations if s.evaluations else 0.0,
            "events": len(spans),
            "events_seen": sum(e["real_calls"] > 0 for e in per_event),
            "events_fired": sum(e["fired"] for e in per_event),
            "calls_per_event_min": min((e["real_calls"] for e in per_event), default=0),
            "delay_mean_s": sum(delays) / len(delays) if delays else None,
            "delay_max_s": max(delays, default=None),
            "false_firings": sum(k.fired and not inside
                                 for k, inside in zip(case.ticks, in_event, strict=True)),
            "firing_outside_s": every * sum(k.status == "firing" and not inside
                                            for k, inside in zip(case.ticks, in_event,
                                                                 strict=True)),
            "calls_outside_events": sum(k.outcome == "answered" and not inside
                                        for k, inside in zip(case.ticks, in_event,
                                                             strict=True)),
            "per_event": per_event,
        })
    return {"scene": scene.events[0], "model": cases[0].model, "seconds": seconds,
            "frames": frames, "static_frames": len(static), "static_changed": sum(static),
            "timings_s": timings, "cases": results}


def tracker_noise(noises: list[float], clock_overlay: list[bool], frames: int,
                  fps: float) -> list[dict[str, Any]]:
    """The tracker alone on the static scene: version bumps after the first frame."""
    from watcher.media.changes import ChangeTracker
    from watcher.media.testsrc import SyntheticScene

    rows = []
    for noise in noises:
        for overlay in clock_overlay:
            scene = SyntheticScene(640, 480, fps=fps, noise=noise, clock=overlay)
            tracker = ChangeTracker()
            for n in range(frames):
                tracker(scene.frame(n))
            rows.append({"noise": noise, "clock_overlay": overlay, "frames": frames,
                         "false_changes": tracker.version - 1,
                         "rate": (tracker.version - 1) / (frames - 1)})
    return rows


async def run(args: argparse.Namespace) -> dict[str, Any]:
    machine = _common.machine_info()
    sims = []
    for item in args.cases:
        kind, model = item.split(":")
        variants = ["skip", "baseline"]
        t0 = time.monotonic()
        sim = await simulate(kind, model, variants, args)
        sim["wall_s"] = time.monotonic() - t0
        sims.append(sim)
    t0 = time.monotonic()
    noise = tracker_noise(args.noise_levels, [True, False], args.noise_frames, args.fps)
    return {"benchmark": "skip_unchanged", "machine": machine,
            "config": {k: v for k, v in vars(args).items() if k != "json"},
            "simulations": sims, "tracker_noise": noise,
            "tracker_noise_wall_s": time.monotonic() - t0}


def report(r: dict[str, Any]) -> None:
    c = r["config"]
    print(f"Machine: {_common.describe_machine(r['machine'])}")
    print(f"{c['minutes']:g} simulated minutes at {c['fps']:g} fps, 640x480, noise sigma="
          f"{c['noise']:g}, clock overlay {'off' if c['no_clock'] else 'on'}; event "
          f"{c['duration']:g} s every {c['period']:g} s from {c['start']:g} s; rule every "
          f"{c['every']:g} s (phase {c['phase']:g} s)")
    rows = []
    for sim in r["simulations"]:
        for k in sim["cases"]:
            delay = ("-" if k["delay_mean_s"] is None
                     else f"{k['delay_mean_s']:.1f} / {k['delay_max_s']:.1f}")
            rows.append([
                k["scene"], k["model"], VARIANTS[k["variant"]],
                k["evaluations"], k["model_calls"], f"{100 * k['saved']:.1f}%",
                f"{k['events_seen']}/{k['events']}", f"{k['events_fired']}/{k['events']}",
                k["calls_per_event_min"], delay, k["false_firings"],
                f"{k['firing_outside_s']:g}", k["calls_outside_events"],
                k["not_ready"] + k["model_errors"] + k["invalid"]])
    _common.print_table(
        f"Model calls and events (goal: >= {100 * GOAL_SAVED:.0f}% saved, every event caught)",
        ["scene", "model", "skip_unchanged", "evaluations", "model calls", "saved",
         "events with a real call", "events fired", "min calls/event", "delay mean/max s",
         "false firings", "s firing outside events", "calls outside events", "errors"], rows)
    _common.print_table(
        "ChangeTracker on static frame pairs (no event in either frame)",
        ["scene", "model", "static pairs", "false changes", "rate", "wall s"],
        [[s["scene"], s["model"], s["static_frames"], s["static_changed"],
          f"{100 * s['static_changed'] / max(1, s['static_frames']):.2f}%",
          f"{s['wall_s']:.0f}"] for s in r["simulations"]])
    _common.print_table(
        "ChangeTracker alone on the static scene (no events)",
        ["noise sigma", "clock overlay", "frames", "false changes", "rate"],
        [[f"{x['noise']:g}", "on" if x["clock_overlay"] else "off", x["frames"],
          x["false_changes"], f"{100 * x['rate']:.2f}%"] for x in r["tracker_noise"]])


def verdict(r: dict[str, Any]) -> int:
    """Met only when every case evaluated, called its model without errors and saw events."""
    check = _verdict.Verdict("skip_unchanged")
    cases = [k for s in r["simulations"] for k in s["cases"]]
    check.require_work(len(cases), "cases")
    for k in cases:
        name = f"{k['scene']}/{k['model']}/{k['variant']}"
        check.require_work(k["evaluations"], f"evaluations ({name})")
        check.require_work(k["model_calls"], f"model calls ({name})")
        check.require_work(k["events"], f"scripted events ({name})")
        check.require_no_errors(k["not_ready"] + k["model_errors"] + k["invalid"],
                                f"not-ready/model errors/invalid answers ({name})")
    skip = [k for k in cases if k["variant"] == "skip"]
    ok = all(k["saved"] >= GOAL_SAVED and k["events_seen"] == k["events"]
             and k["events_fired"] == k["events"] for k in skip)
    worst = min((k["saved"] for k in skip), default=math.nan)
    return check.finish(ok, f"worst saving {100 * worst:.1f}%, events " + ", ".join(
        f"{k['scene']}/{k['model']} {k['events_fired']}/{k['events']}" for k in skip))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0, help="simulated minutes")
    parser.add_argument("--cases", type=lambda s: s.split(","),
                        default=["person:truth", "box:truth", "person:vision"],
                        help="SCENE:MODEL list; scenes person, box; models truth, vision")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between evaluations")
    parser.add_argument("--phase", type=float, default=0.6,
                        help="evaluate this far into each interval")
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--period", type=float, default=60.2,
                        help="seconds between event starts (60.2: the evaluation phase "
                        "relative to the event start moves by one frame per event)")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds each event lasts")
    parser.add_argument("--start", type=float, default=2.0, help="first event start")
    parser.add_argument("--noise", type=float, default=2.0, help="sensor noise sigma")
    parser.add_argument("--no-clock", action="store_true", help="no timestamp overlay")
    parser.add_argument("--noise-levels", type=lambda s: [float(x) for x in s.split(",")],
                        default=[2.0, 4.0, 8.0, 16.0])
    parser.add_argument("--noise-frames", type=int, default=1500,
                        help="frames per row of the tracker-alone table")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    _verdict.add_smoke(parser)
    args = _verdict.apply_smoke(parser.parse_args(), minutes=1.0, period=20.2,
                                noise_levels=[2.0], noise_frames=50)
    _common.quiet_logs()
    result = asyncio.run(run(args))
    if args.json:
        _common.emit_json(result)
    else:
        report(result)
    return verdict(result)


if __name__ == "__main__":
    _verdict.run_main(main)
