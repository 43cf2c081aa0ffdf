"""Event onset to notification: polling rules against a rule that asks on change.

One daemon (embedded server, `local/vision`) watches one synthetic 640x480
camera at 5 fps in which a person walks in for ``--duration`` seconds every
``--period`` seconds (``wall=1``: the scene's clock is Unix time, so every
onset is known to the millisecond). Four rules ask about the same video side
by side and notify one webhook receiver:

* ``poll-1s`` / ``poll-10s``: "is a person in the room?" (newest frame) every 1 s / 10 s;
* ``on-change``: the same question, asked when the picture changes (``on_change``,
  heartbeat ``every: 5m``);
* ``motion-1s``: "is anything moving?" every 1 s over a 1 s window (``for: 1``).

The default period, 20.37 s, is a multiple of neither the 1 s ticks nor the 0.2 s frame
interval: successive onsets fall at every phase of both, so the percentiles cover the
luckiest and the unluckiest moment of an event (a period of 20 s would put every onset
at the same phase, and p50 = p95).

For each firing notification: onset -> event recorded (capture, publish, wait
for the tick or the change, ask, condition, store) -> webhook arrival (outbox
and HTTP). Model calls are counted in the static part of the scene (more than
2 s away from any person) and per hour.

    .venv/bin/python bench/latency.py --events 30 --period 20.37 --duration 2
    .venv/bin/python bench/latency.py --smoke
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import _common
import _verdict
from support.receivers import HttpReceiver, reply

from watcher.config import load_config
from watcher.daemon import Daemon

FPS = 5.0
SETTLE_MARGIN_S = 2.0
"""Calls this close to a person's visit count as the visit's, not the static scene's."""

PERSON = ("prompt: Is a person in the room?\n    schema: {people_present: boolean}\n"
          "    when: people_present")
RULES = {
    "poll-1s": f"every: 1s\n    {PERSON}",
    "poll-10s": f"every: 10s\n    {PERSON}",
    "on-change": f"on_change: true\n    every: 5m\n    {PERSON}",
    "motion-1s": ("every: 1s\n    window: 1s\n    max_fps: 5\n    prompt: Is anything moving?"
                  "\n    schema: {motion_detected: boolean, motion: number}"
                  "\n    when: motion_detected"),
}


def config_text(state: Path, hook: str, period: float, duration: float, start: float) -> str:
    rules = "".join(f"  - name: {name}\n    stream: cam\n    actions: [hook]\n    {body}\n"
                    for name, body in RULES.items())
    return f"""\
overshoot: {{base_url: embedded, model: local/vision}}
state: {{path: {state}}}
actions:
  hook: {{type: webhook, url: '{hook}', send_resolved: false}}
rules:
{rules}streams:
  - name: cam
    source: testsrc:events=person,period={period:g},duration={duration:g},start={start:g},wall=1
    fps: {FPS:g}
    width: 640
    height: 480
"""


@dataclass
class Firing:
    rule: str
    created: float
    arrived: float


@dataclass
class CallCounter:
    """Model calls per rule, split into the static scene and the visits."""

    static: dict[str, int] = field(default_factory=dict)
    visits: dict[str, int] = field(default_factory=dict)
    last: dict[str, int] = field(default_factory=dict)


def onsets_between(a: float, b: float, period: float, start: float) -> list[float]:
    first = math.ceil((a - start) / period)
    return [start + k * period for k in range(first, math.floor((b - start) / period) + 1)]


def near_visit(t: float, period: float, start: float, duration: float) -> bool:
    into = (t - start) % period
    return into < duration + SETTLE_MARGIN_S or into > period - SETTLE_MARGIN_S


async def run(args: argparse.Namespace) -> dict:
    firings: list[Firing] = []

    def on_hook(request) -> tuple:
        body = request.json()
        if body.get("status") == "firing":
            created = datetime.fromisoformat(body["created_at"].replace("Z", "+00:00"))
            firings.append(Firing(body["rule"], created.timestamp(), time.time()))
        return reply(200, "ok")

    calls = CallCounter()
    start = time.time() % args.period + 4.0  # the first visit is ~4 s after now
    with HttpReceiver() as receiver, tempfile.TemporaryDirectory() as tmp:
        receiver.routes["/hook"] = on_hook
        path = Path(tmp) / "watcher.yaml"
        path.write_text(config_text(Path(tmp) / "state.sqlite3", receiver.url("/hook"),
                                    args.period, args.duration, start))
        daemon = Daemon(load_config(path), path)
        task = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(daemon.ready.wait(), 60)
            keeper = daemon.keepers["cam"]
            await keeper.wait_live(60)
            changes = _record_changes(daemon)
            await asyncio.sleep(2.0)  # the first windows fill before anything counts
            began = time.time() + 1.0  # visits from now on count
            errors_before = _errors(daemon)
            end = began + args.events * args.period
            while time.time() < end:
                _count_calls(daemon, calls, args, start)
                await asyncio.sleep(0.2)
            await asyncio.sleep(min(12.0, args.period))  # let the last notifications land
            _count_calls(daemon, calls, args, start)
            engine = daemon.engine
            assert engine is not None
            stats = {name: runner.stats for name, runner in engine.runners.items()}
        finally:
            daemon.request_stop()
            await asyncio.wait_for(task, 60)
    onsets = onsets_between(began, end - args.duration, args.period, start)
    hours = (end - began) / 3600
    results = {}
    for name in RULES:
        own = sorted((f for f in firings if f.rule == name), key=lambda f: f.arrived)
        matched, false_alarms = _match(onsets, own, args.period)
        lat = [f.arrived - onset for onset, f in matched]
        detect = [f.created - onset for onset, f in matched]
        deliver = [f.arrived - f.created for _, f in matched]
        latencies = list(stats[name].latencies_s)
        results[name] = {
            "events": len(onsets), "alerted": len(matched), "missed": len(onsets) - len(matched),
            "false_firings": false_alarms,
            "onset_to_webhook_s": _common.percentiles(lat),
            "onset_to_recorded_s": _common.percentiles(detect),
            "recorded_to_webhook_ms_p50": (statistics.median(deliver) * 1000
                                           if deliver else None),
            "model_latency_mean_s": statistics.fmean(latencies) if latencies else None,
            "model_calls": stats[name].model_calls,
            "calls_per_hour": stats[name].model_calls / hours if hours else 0.0,
            "static_calls": calls.static.get(name, 0),
            "static_calls_per_hour": calls.static.get(name, 0) / (hours * 0.9 or 1),
            "by_trigger": dict(stats[name].by_trigger),
            "errors": (stats[name].model_errors + stats[name].invalid_answers
                       - errors_before.get(name, 0)),
        }
    static_changes = [c for c in changes if began <= c < end
                      and not near_visit(c, args.period, start, args.duration)]
    results["on-change"]["changes"] = len([c for c in changes if began <= c < end])
    results["on-change"]["static_changes"] = len(static_changes)
    return {"period_s": args.period, "duration_s": args.duration, "hours": hours,
            "rules": results}


def _errors(daemon: Daemon) -> dict[str, int]:
    assert daemon.engine is not None
    return {name: r.stats.model_errors + r.stats.invalid_answers
            for name, r in daemon.engine.runners.items()}


def _record_changes(daemon: Daemon) -> list[float]:
    """Wall times of the frames the on-change rule's detector called a change."""
    assert daemon.engine is not None
    gate = daemon.engine.triggers.gates["on-change"]
    request = gate.request
    seen: list[float] = []

    def recording(trigger) -> None:  # type: ignore[no-untyped-def]
        if trigger.kind == "change" and trigger.changed_at is not None:
            seen.append(time.time() - (time.monotonic() - trigger.changed_at))
        request(trigger)

    gate.request = recording  # type: ignore[method-assign]
    return seen


def _count_calls(daemon: Daemon, calls: CallCounter, args: argparse.Namespace,
                 start: float) -> None:
    if daemon.engine is None:
        return
    now = time.time()
    bucket = calls.visits if near_visit(now, args.period, start, args.duration) else calls.static
    for name, runner in daemon.engine.runners.items():
        made = runner.stats.model_calls
        bucket[name] = bucket.get(name, 0) + made - calls.last.get(name, 0)
        calls.last[name] = made


def _match(onsets: list[float], firings: list[Firing], period: float,
           ) -> tuple[list[tuple[float, Firing]], int]:
    """Each onset's first firing within the period after it; the rest are false."""
    used: set[int] = set()
    matched = []
    for onset in onsets:
        for i, f in enumerate(firings):
            if i not in used and onset <= f.created < onset + period:
                used.add(i)
                matched.append((onset, f))
                break
    in_range = [i for i, f in enumerate(firings)
                if onsets and onsets[0] <= f.created < onsets[-1] + period]
    return matched, len([i for i in in_range if i not in used])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=30)
    parser.add_argument("--period", type=float, default=20.37)
    parser.add_argument("--duration", type=float, default=2.0)
    parser.add_argument("--json", action="store_true")
    _verdict.add_smoke(parser)
    args = _verdict.apply_smoke(parser.parse_args(), events=2, period=10.37, duration=4.0)
    _common.quiet_logs()
    result = asyncio.run(run(args))
    rules = result["rules"]
    if args.json:
        _common.emit_json(result)
    rows = []
    for name, r in rules.items():
        lat = r["onset_to_webhook_s"]
        rows.append([name, f"{r['alerted']}/{r['events']}", r["false_firings"],
                     _f(lat.get("p50")), _f(lat.get("p95")), _f(lat.get("max")),
                     _f(r["onset_to_recorded_s"].get("p50")),
                     _f(r["recorded_to_webhook_ms_p50"], 0), _f(r["model_latency_mean_s"]),
                     round(r["calls_per_hour"]), round(r["static_calls_per_hour"])])
    _common.print_table(
        f"onset -> webhook, {result['hours'] * 60:.1f} min, a visit of "
        f"{args.duration:g} s every {args.period:g} s",
        ["rule", "alerted", "false", "p50 s", "p95 s", "max s", "onset->recorded p50 s",
         "recorded->webhook p50 ms", "model s", "calls/h", "static calls/h"], rows)
    print(f"on-change: {rules['on-change']['changes']} changes detected, "
          f"{rules['on-change']['static_changes']} of them on the static scene")

    verdict = _verdict.Verdict("latency")
    for name, r in rules.items():
        verdict.require_no_errors(r["errors"], f"model errors or invalid answers ({name})")
        verdict.require_work(r["model_calls"], f"model calls ({name})")
    every_event = True
    for name in ("poll-1s", "on-change", "motion-1s"):
        # No firing at all means the pipeline is broken; a missed visit is a result.
        verdict.require(rules[name]["alerted"] > 0, f"{name} never fired")
        every_event &= rules[name]["alerted"] == rules[name]["events"]
    change, motion = rules["on-change"], rules["motion-1s"]
    heartbeats = result["hours"] * 12 + 1
    change_goal = 2 / FPS + (change["model_latency_mean_s"] or 0) + 0.2
    change_p95 = change["onset_to_webhook_s"].get("p95", math.inf)
    motion_p95 = motion["onset_to_webhook_s"].get("p95", math.inf)
    static_ok = change["static_changes"] == 0
    met = change_p95 <= change_goal and motion_p95 <= 2.0 and static_ok and every_event
    return verdict.finish(met, (
        f"on-change p95 {change_p95:.2f} s (goal <= {change_goal:.2f} s: 2 frame intervals "
        f"+ model + 0.2 s), {change['static_changes']} changes detected on the static scene "
        f"(goal 0: asks there come from the heartbeat only, <= {heartbeats:.0f}); "
        f"motion every 1s p95 {motion_p95:.2f} s (goal <= 2 s); "
        + ", ".join(f"{n} alerted {r['alerted']}/{r['events']}" for n, r in rules.items())))


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


if __name__ == "__main__":
    _verdict.run_main(main)
