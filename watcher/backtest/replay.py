"""Replays a recording through rules exactly as live, on a simulated clock.

The recording's frames go straight into an embedded server's frame store
(no WebRTC), stamped with a :class:`~watcher.clock.ManualClock` that follows
the video's own timestamps, at the stream's configured frame rate. Rules are
the daemon's own :class:`~watcher.engine.runner.RuleRunner`: the same ask,
schema validation and repair, fallbacks, conditions, ``for`` /
``keep_firing_for`` / ``cooldown`` / ``repeat_every``, ``confirm`` and
``skip_unchanged``, talking HTTP to that server, whose ``ovs://`` offsets
resolve against the simulated "now". Ticks come at each rule's ``every`` (or
``cron``) in video time, ``on_change`` asks when the rule's change detector
fires (after one frame interval and 100 ms, at most once per
``min_interval``), ``on_alert`` asks follow the leader's firing.

Before each frame is stored, every ask due by its time runs, several at once
(``concurrency``), the clock held still: as fast as the models answer.
``speed`` (a multiple of real time) slows a replay down for rate-limited
upstream models.

Each model of ``models`` replays the same rules with that model as their
``model`` (confirm questions keep theirs), with an alert store of its own.

The recording is read by :mod:`watcher.backtest.video`; what each rule and
model did is kept in a :class:`~watcher.backtest.runs.RuleRun`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from av.video.reformatter import VideoReformatter

from watcher.backtest.runs import Point, ReplayResult, RuleRun, chart_field
from watcher.backtest.score import Episode
from watcher.backtest.video import iter_frames, probe_duration
from watcher.clock import ManualClock
from watcher.config import WatcherConfig
from watcher.engine.evaluation import Evaluation
from watcher.engine.rules import RuleConfig
from watcher.engine.runner import RuleRunner
from watcher.engine.state import AlertState, Kind
from watcher.engine.store import AlertEventRecord, AlertStore
from watcher.engine.triggers import SETTLE_S, TICK, Trigger
from watcher.media.changes import ChangeDetector, ChangeTracker, thumbnail
from watcher.media.tracks import LatestFrame, to_bgr
from watcher.overshoot.client import OvershootClient
from watcher.server.app import create_app
from watcher.server.encode import JpegEncoder, stream_frame_budget
from watcher.server.settings import ServerSettings
from watcher.store.database import MEMORY

KEY = "ovs-backtest"
BASE = "http://backtest.local/v1beta"
DEFAULT_FPS = 5.0


@dataclass
class SimStream:
    """What a rule needs of a live stream, fed by the replay."""

    stream_id: str
    fps: float
    frames: LatestFrame = field(default_factory=LatestFrame)
    changes: ChangeTracker = field(default_factory=ChangeTracker)
    source_live: bool = True
    source_resumed_at: float | None = None


class Replay:
    def __init__(self, config: WatcherConfig, stream: str, rules: Sequence[RuleConfig],
                 models: Sequence[str | None], *, concurrency: int = 4,
                 speed: float | None = None, actions: dict[str, Any] | None = None,
                 on_progress: Callable[[float], None] | None = None) -> None:
        self.config = config
        self.stream = stream
        self.rules = list(rules)
        self.models = list(models) or [None]
        self.concurrency = max(1, concurrency)
        self.speed = speed
        self.actions = actions or {}
        self.on_progress = on_progress
        configured = next((s for s in config.streams if s.name == stream), None)
        self.fps = float(configured.fps) if configured is not None and configured.fps else (
            DEFAULT_FPS)
        self.clock = ManualClock(start_ms=1_700_000_000_000)
        self.start_ms = self.clock.now_ms()
        self.t = 0.0

    def server_settings(self, duration_s: float) -> ServerSettings:
        ttl = max(3600, int(duration_s) + 3600)
        overshoot = self.config.overshoot
        if overshoot.is_embedded:
            settings = overshoot.embedded.server_settings([KEY])
        else:
            settings = ServerSettings(api_keys=[KEY])
        return settings.model_copy(update={"ttl_seconds": ttl})

    async def run(self, files: Sequence[Path]) -> ReplayResult:
        began = time.perf_counter()
        duration = probe_duration(files)
        app = create_app(self.server_settings(duration), clock=self.clock)
        server = app.state.server
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE,
                                     timeout=httpx.Timeout(600.0)) as http, \
                contextlib.AsyncExitStack() as stack:
            stack.push_async_callback(server.aclose)
            client = OvershootClient(BASE, KEY, http=http)
            created = await client.create_stream()
            sim = SimStream(created.id, self.fps)
            live_stream = server.registry.get_active(created.id)
            runs = []
            for model in self.models:
                store = AlertStore(MEMORY)
                stack.push_async_callback(store.close)
                runs += self._runs(model, client, sim, store)
            self._follow_alerts(runs)
            encoder = JpegEncoder(self.config.overshoot.embedded.jpeg_quality
                                  if self.config.overshoot.is_embedded else 80)
            frames = 0
            semaphore = asyncio.Semaphore(self.concurrency)
            scaler = VideoReformatter()
            async for t, frame in iter_frames(files, self.fps):
                await self._pace(t, began)
                await self._due(runs, t, semaphore)
                self.t = t
                self.clock.set(self.start_ms + round(t * 1000))
                bgr = to_bgr(frame, scaler)
                sim.frames.put(bgr)
                thumb = thumbnail(bgr)
                sim.changes(bgr, at=t)
                self._changes(runs, thumb, t)
                now_ms = self.clock.now_ms()
                budget = stream_frame_budget(live_stream, server.registry.settings, now_ms)
                jpeg = await asyncio.to_thread(encoder.encode, bgr, budget)
                server.registry.add_frame(live_stream, jpeg)
                frames += 1
                if self.on_progress is not None:
                    self.on_progress(t)
            end = self.t
            await self._due(runs, end, semaphore)
            for run in runs:
                if run.episodes and run.episodes[-1].end < run.episodes[-1].start:
                    run.episodes[-1].end = end
        return ReplayResult(self.stream, end, frames, runs, time.perf_counter() - began)

    # -- rules -------------------------------------------------------------------------
    def _runs(self, model: str | None, client: OvershootClient, sim: SimStream,
              store: AlertStore) -> list[RuleRun]:
        runs = []
        default_model = self.config.overshoot.model
        for rule in self.rules:
            if model is not None:
                rule = rule.model_copy(update={"model": model, "fallback_models": []})
            runner = RuleRunner(rule, default_model=default_model, client=client,
                                streams={self.stream: sim}, store=store, clock=self.clock,
                                actions=self.actions or None, emit=self._emit(rule))
            runner.monotonic = lambda: self.t
            run = RuleRun(rule, rule.model or default_model, runner, chart_field(rule))
            if rule.on_change:
                run.detector = ChangeDetector(rule.change_threshold)
            runner.observers = [self._observer(run)]
            runs.append(run)
        return runs

    def _emit(self, rule: RuleConfig):  # type: ignore[no-untyped-def]
        async def emit(events: list[AlertEventRecord]) -> None:
            for event in events:
                for name in rule.actions:
                    action = self.actions.get(name)
                    if action is not None:
                        await action.send(event, f"backtest:{event.event_key}:{name}")

        return emit if self.actions else None

    def _observer(self, run: RuleRun):  # type: ignore[no-untyped-def]
        def observe(rule: str, stream_key: str, state: AlertState,
                    events: list[AlertEventRecord]) -> None:
            for event in events:
                if event.kind is Kind.FIRING:
                    run.episodes.append(Episode(self.t, -1.0))
                elif event.kind is Kind.RESOLVED and run.episodes:
                    run.episodes[-1].end = self.t

        return observe

    def _follow_alerts(self, runs: list[RuleRun]) -> None:
        """``on_alert``: a leader's firing asks its followers (same model) at once."""
        for run in runs:
            followers = [r for r in runs if r.model == run.model
                         and run.rule.name in r.rule.on_alert]
            if not followers:
                continue

            def on_step(rule: str, stream_key: str, state: AlertState,
                        events: list[AlertEventRecord], followers=followers) -> None:
                for event in events:
                    if event.kind is Kind.FIRING:
                        answer = event.answer if isinstance(event.answer, dict) else {}
                        for follower in followers:
                            self._request(follower, Trigger(
                                "alert", stream=stream_key, leader=rule, answer=answer,
                                event_id=event.id), self.t)

            run.runner.observers.append(on_step)

    def _changes(self, runs: list[RuleRun], thumb: np.ndarray, t: float) -> None:
        for run in runs:
            if run.detector is not None and run.detector.feed(thumb):
                self._request(run, Trigger("change", changed_at=t, stream=self.stream,
                                           end_at=t + SETTLE_S), t)

    def _request(self, run: RuleRun, trigger: Trigger, t: float) -> None:
        settle = SETTLE_S if trigger.kind == "change" else 0.0
        due = max(t + settle, run.last_ask + run.rule.min_interval)
        if run.pending is not None and run.pending.kind == "alert" and trigger.kind != "alert":
            trigger = Trigger("alert", stream=run.pending.stream, leader=run.pending.leader,
                              answer=run.pending.answer, event_id=run.pending.event_id,
                              changed_at=trigger.changed_at, end_at=trigger.end_at)
        run.pending = trigger
        run.pending_at = due if run.pending_at is None else min(run.pending_at, due)

    async def _due(self, runs: list[RuleRun], t: float,
                   semaphore: asyncio.Semaphore) -> None:
        """Run every ask due by video time ``t``, the clock held still."""
        while True:
            batch = []
            for run in runs:
                tick = self._tick_due(run, t)
                if run.pending is not None and run.pending_at is not None and \
                        run.pending_at <= t:
                    batch.append((run, run.pending))
                    run.pending, run.pending_at = None, None
                    run.last_ask = t
                elif tick:
                    batch.append((run, TICK))
            if not batch:
                return

            async def one(run: RuleRun, trigger: Trigger) -> None:
                async with semaphore:
                    result = await run.runner.evaluate(trigger=trigger)
                self._record(run, result)

            await asyncio.gather(*(one(run, trigger) for run, trigger in batch))

    def _tick_due(self, run: RuleRun, t: float) -> bool:
        rule = run.rule
        if run.next_tick is None:
            run.next_tick = self._next_tick(rule, 0.0, first=True)
        if run.next_tick is None or run.next_tick > t:
            return False
        run.next_tick = self._next_tick(rule, run.next_tick)
        return True

    def _next_tick(self, rule: RuleConfig, after: float, *, first: bool = False) -> float | None:
        if rule.every is not None:
            return rule.every if first else after + rule.every
        trigger = rule.cron_trigger(UTC)
        if trigger is None:
            return None
        base = datetime.fromtimestamp((self.start_ms / 1000) + after, UTC)
        nxt = trigger.get_next_fire_time(None, base)
        return None if nxt is None else nxt.timestamp() - self.start_ms / 1000

    def _record(self, run: RuleRun, result: Evaluation) -> None:
        run.triggers[result.trigger] = run.triggers.get(result.trigger, 0) + 1
        run.count(result.answer if result.outcome != "unchanged" else None)
        run.count(result.confirm)
        value = None
        answer = result.answer
        if answer is not None and answer.data is not None and run.field is not None:
            raw = answer.data.get(run.field)
            if isinstance(raw, bool | int | float):
                value = float(raw)
        run.points.append(Point(self.t, value, result.trigger))

    async def _pace(self, t: float, began: float) -> None:
        if self.speed:
            ahead = t / self.speed - (time.perf_counter() - began)
            if ahead > 0:
                await asyncio.sleep(ahead)


def select_rules(config: WatcherConfig, stream: str, names: Iterable[str] | None,
                 ) -> tuple[list[RuleConfig], list[str]]:
    """The enabled rules asking about ``stream`` alone (and named, if ``names``), and why
    others were left out."""
    wanted = set(names) if names else None
    chosen, skipped = [], []
    for rule in config.rules:
        if wanted is not None and rule.name not in wanted:
            continue
        if not rule.enabled:
            skipped.append(f"{rule.name}: disabled")
        elif rule.stream_names != [stream]:
            skipped.append(f"{rule.name}: asks about {', '.join(rule.stream_names)}, not "
                           f"{stream} alone")
        else:
            chosen.append(rule)
    if wanted is not None:
        known = {r.name for r in config.rules}
        skipped += [f"{name}: no such rule" for name in sorted(wanted - known)]
    return chosen, skipped
