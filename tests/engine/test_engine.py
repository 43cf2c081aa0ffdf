"""The engine's scheduling with APScheduler: ticks run, streams not ready are skipped."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from support.livestream import KeptStream, live_server
from support.models import ScriptedModel
from support.poll import eventually

from watcher.clock import SystemClock
from watcher.engine.engine import RuleEngine
from watcher.engine.rules import RuleConfig
from watcher.engine.store import AlertStore
from watcher.media.changes import ChangeTracker


def rule(name: str, stream: str, every: str = "200ms") -> RuleConfig:
    return RuleConfig.model_validate({
        "name": name, "stream": stream, "every": every, "prompt": "anyone?",
        "schema": {"person": "boolean"}, "model": "m"})


@contextlib.asynccontextmanager
async def live_engine(tmp_path: Path, model: ScriptedModel, rules: list[RuleConfig],
                      streams: Callable[[str], dict[str, KeptStream]],
                      ) -> AsyncIterator[tuple[RuleEngine, AlertStore]]:
    """``rules`` on a real server with one live stream, whose id ``streams`` is given to
    make the engine's streams (the engine is not started)."""
    site = live_server(model)
    async with site.http:
        store = AlertStore(tmp_path / "state.sqlite3")
        engine = RuleEngine(rules, client=site.client, streams=streams(site.stream_id),
                            store=store, default_model="m", clock=SystemClock())
        try:
            yield engine, store
        finally:
            await store.close()


async def test_rules_tick_and_unready_streams_are_skipped(tmp_path: Path) -> None:
    model = ScriptedModel("m", '{"person": false}')
    async with live_engine(tmp_path, model, [rule("ready", "a"), rule("waiting", "b")],
                           lambda live: {"a": KeptStream(live), "b": KeptStream(None)}
                           ) as (engine, _):
        await engine.start()
        ready, waiting = engine.runners["ready"].stats, engine.runners["waiting"].stats
        # However slow the machine: wait for the ticks, not for a length of time.
        await eventually(lambda: ready.evaluations >= 4 and waiting.skipped_not_ready >= 4,
                         timeout=60, interval=0.02)
        await engine.stop()
    assert ready.model_calls == ready.evaluations
    assert waiting.evaluations == 0 and waiting.model_calls == 0
    assert len(model.requests) == ready.model_calls
    ticks = engine.ticks["ready"]
    assert ticks.errors == 0 and engine.ticks["waiting"].errors == 0
    assert len(ticks.lateness_s) == ready.evaluations  # every run came from a tick


def slow_engine(tmp_path: Path, model: ScriptedModel,
                ) -> contextlib.AbstractAsyncContextManager[tuple[RuleEngine, AlertStore]]:
    """One rule ticking every 100 ms on a live stream of a real server (not started)."""
    return live_engine(tmp_path, model, [rule("slow", "a", every="100ms")],
                       lambda live: {"a": KeptStream(live)})


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


class BrokenStream(KeptStream):
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
    async with live_engine(tmp_path, model, [rule("broken", "a", every="100ms")],
                           lambda live: {"a": BrokenStream(live)}) as (engine, _):
        await engine.start()
        await eventually(lambda: engine.ticks["broken"].errors >= 5, timeout=60, interval=0.02)
        await engine.stop()
    failed = [r for r in caplog.records if "rule broken failed" in r.getMessage()]
    assert len(failed) == 1 and "change tracker broke" in failed[0].getMessage()
    assert not [r for r in caplog.records if r.exc_info], "no traceback per tick"
    assert not [r for r in caplog.records if r.name.startswith("apscheduler")
                and r.levelno >= logging.ERROR]
