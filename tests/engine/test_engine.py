"""The engine's scheduling with APScheduler: ticks run, streams not ready are skipped."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from support.keeper import eventually
from support.models import ScriptedModel

from watcher.clock import SystemClock
from watcher.engine.engine import RuleEngine
from watcher.engine.rules import RuleConfig
from watcher.engine.store import AlertStore
from watcher.media.changes import ChangeTracker
from watcher.media.tracks import LatestFrame
from watcher.overshoot.client import OvershootClient
from watcher.server.app import create_app
from watcher.server.settings import ServerSettings

KEY = "ovs_engine_tests"


class Stream:
    """A kept stream as the engine sees it (the keeper's three attributes)."""

    def __init__(self, stream_id: str | None) -> None:
        self.stream_id = stream_id
        self.frames = LatestFrame()
        self.changes = ChangeTracker()
        self.source_live = True
        self.source_resumed_at: float | None = None


def rule(name: str, stream: str, every: str = "200ms") -> RuleConfig:
    return RuleConfig.model_validate({
        "name": name, "stream": stream, "every": every, "prompt": "anyone?",
        "schema": {"person": "boolean"}, "model": "m"})


async def test_rules_tick_and_unready_streams_are_skipped(tmp_path: Path) -> None:
    model = ScriptedModel("m", '{"person": false}')
    app = create_app(ServerSettings(api_keys=[KEY]), backends=[model])
    server = app.state.server
    live = server.registry.create(server.owner_of(f"Bearer {KEY}"))
    server.registry.add_frame(live, b"\xff\xd8jpeg")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t/v1beta") as http:
        client = OvershootClient("http://t/v1beta", KEY, http=http)
        store = AlertStore(tmp_path / "state.sqlite3")
        engine = RuleEngine([rule("ready", "a"), rule("waiting", "b")], client=client,
                            streams={"a": Stream(live.id), "b": Stream(None)}, store=store,
                            default_model="m", clock=SystemClock())
        await engine.start()
        ready, waiting = engine.runners["ready"].stats, engine.runners["waiting"].stats
        # However slow the machine: wait for the ticks, not for a length of time.
        await eventually(lambda: ready.evaluations >= 4 and waiting.skipped_not_ready >= 4,
                         timeout=60, interval=0.02)
        await engine.stop()
        await store.close()
    assert ready.model_calls == ready.evaluations
    assert waiting.evaluations == 0 and waiting.model_calls == 0
    assert len(model.requests) == ready.model_calls
    ticks = engine.ticks["ready"]
    assert ticks.errors == 0 and engine.ticks["waiting"].errors == 0
    assert len(ticks.lateness_s) == ready.evaluations  # every run came from a tick


@contextlib.asynccontextmanager
async def slow_engine(tmp_path: Path, model: ScriptedModel
                      ) -> AsyncIterator[tuple[RuleEngine, AlertStore]]:
    """One rule ticking every 100 ms on a live stream of a real server (not started)."""
    app = create_app(ServerSettings(api_keys=[KEY]), backends=[model])
    server = app.state.server
    live = server.registry.create(server.owner_of(f"Bearer {KEY}"))
    server.registry.add_frame(live, b"\xff\xd8jpeg")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t/v1beta") as http:
        store = AlertStore(tmp_path / "state.sqlite3")
        engine = RuleEngine([rule("slow", "a", every="100ms")],
                            client=OvershootClient("http://t/v1beta", KEY, http=http),
                            streams={"a": Stream(live.id)}, store=store, default_model="m")
        try:
            yield engine, store
        finally:
            await store.close()


async def test_stop_lets_an_evaluation_in_flight_finish(tmp_path: Path) -> None:
    model = ScriptedModel("m", '{"person": true}', delay=0.5)
    async with slow_engine(tmp_path, model) as (engine, store):
        await engine.start()
        await eventually(lambda: model.requests, timeout=60, interval=0.02)
        await engine.stop()
        stats, ticks = engine.runners["slow"].stats, engine.ticks["slow"]
        assert stats.model_calls == 1 and stats.events == 1 and ticks.errors == 0
        assert (await store.events())[0].status == "firing"


async def test_runs_outlasting_the_interval_are_counted_and_reported_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    model = ScriptedModel("m", '{"person": false}', delay=0.5)
    async with slow_engine(tmp_path, model) as (engine, _):
        with caplog.at_level(logging.WARNING):
            await engine.start()
            await eventually(lambda: engine.ticks["slow"].overruns >= 6, timeout=60)
            await engine.stop()
    stats, ticks = engine.runners["slow"].stats, engine.ticks["slow"]
    assert 1 <= stats.evaluations < ticks.overruns  # ticks were refused, not queued
    assert len(ticks.lateness_s) == stats.evaluations  # one per run that started
    reports = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert reports == ["rule slow: still running at its next tick; 1 tick(s) skipped (its "
                       "model answers or timeout take longer than its interval)"]


class BrokenStream(Stream):
    """A kept stream whose change tracker fails: every evaluation raises."""

    @property
    def changes(self) -> ChangeTracker:
        raise RuntimeError("change tracker broke")

    @changes.setter
    def changes(self, value: ChangeTracker) -> None:
        pass


async def test_a_failing_rule_never_reaches_the_scheduler_and_is_logged_once(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    model = ScriptedModel("m", '{"person": false}')
    app = create_app(ServerSettings(api_keys=[KEY]), backends=[model])
    server = app.state.server
    live = server.registry.create(server.owner_of(f"Bearer {KEY}"))
    server.registry.add_frame(live, b"\xff\xd8jpeg")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://t/v1beta") as http:
        store = AlertStore(tmp_path / "state.sqlite3")
        engine = RuleEngine([rule("broken", "a", every="100ms")],
                            client=OvershootClient("http://t/v1beta", KEY, http=http),
                            streams={"a": BrokenStream(live.id)}, store=store,
                            default_model="m")
        await engine.start()
        await eventually(lambda: engine.ticks["broken"].errors >= 5, timeout=60, interval=0.02)
        await engine.stop()
        await store.close()
    failed = [r for r in caplog.records if "rule broken failed" in r.getMessage()]
    assert len(failed) == 1 and "change tracker broke" in failed[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info], "no traceback per tick"
    assert not [r for r in caplog.records if r.name.startswith("apscheduler")
                and r.levelno >= logging.ERROR]
