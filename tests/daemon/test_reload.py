"""Hot reload of a running daemon: streams keep their ids, bad files change nothing."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from support.keeper import eventually

from watcher.config import load_config
from watcher.daemon import Daemon

BASE = """\
overshoot:
  base_url: embedded
state:
  path: {state}
rules:
  - name: motion
    stream: front
    every: 1s
    window: 1s
    prompt: Is anything moving?
    schema: {{motion_detected: boolean}}
{extra}streams:
  - name: front
    source: testsrc:size=160x120
    fps: 5
    width: 160
    height: 120
  - name: back
    source: testsrc:size=160x120,seed=2
    fps: 5
    width: 160
    height: 120
"""
EXTRA_RULE = """\
  - name: people
    stream: back
    every: 1s
    prompt: How many people?
    schema: {people: integer}
    when: people > 0
"""


@pytest.fixture
async def running(tmp_path: Path):
    path = tmp_path / "watcher.yaml"
    path.write_text(BASE.format(state=tmp_path / "state.sqlite3", extra=""))
    daemon = Daemon(load_config(path), path)
    task = asyncio.create_task(daemon.run())
    await asyncio.wait_for(daemon.ready.wait(), 20)
    await eventually(lambda: all(k.stream_id for k in daemon.keepers.values()), 20)
    yield daemon, path
    daemon.request_stop()
    await asyncio.wait_for(task, 30)


async def test_adding_a_rule_keeps_every_stream(running) -> None:
    daemon, path = running
    ids = {name: k.stream_id for name, k in daemon.keepers.items()}
    keepers = dict(daemon.keepers)
    path.write_text(BASE.format(state=path.parent / "state.sqlite3", extra=EXTRA_RULE))
    assert await daemon.reload()
    assert set(daemon.engine.runners) == {"motion", "people"}
    assert {name: k.stream_id for name, k in daemon.keepers.items()} == ids
    assert all(daemon.keepers[n] is keepers[n] for n in keepers)
    await eventually(lambda: daemon.engine.runners["people"].stats.evaluations > 0, 10)
    assert all(k.health().streams_created == 1 for k in daemon.keepers.values())


async def test_a_broken_file_keeps_the_old_config(running, caplog) -> None:
    daemon, path = running
    before = daemon.config
    runner = daemon.engine.runners["motion"]
    path.write_text(BASE.format(state=path.parent / "state.sqlite3", extra="  - name: [\n"))
    with caplog.at_level(logging.ERROR, logger="watcher.daemon"):
        assert not await daemon.reload()
    assert daemon.config is before and daemon.engine.runners["motion"] is runner
    assert any("still running the previous config" in r.getMessage() and "watcher.yaml:" in
               r.getMessage() for r in caplog.records)
    evaluations = runner.stats.evaluations
    await eventually(lambda: runner.stats.evaluations > evaluations, 10)


async def test_removing_a_stream_stops_only_that_one(running) -> None:
    daemon, path = running
    front = daemon.keepers["front"].stream_id
    text = BASE.format(state=path.parent / "state.sqlite3", extra="")
    path.write_text(text[: text.index("  - name: back")])
    assert await daemon.reload()
    assert set(daemon.keepers) == {"front"} and daemon.keepers["front"].stream_id == front


async def test_sections_that_need_a_restart_are_reported_until_restarted(
        running, caplog) -> None:
    daemon, path = running
    model = daemon.config.overshoot.model
    text = BASE.format(state=path.parent / "state.sqlite3", extra="")
    path.write_text(text.replace("  base_url: embedded\n",
                                 "  base_url: embedded\n  model: local/frames\n"))
    with caplog.at_level(logging.INFO, logger="watcher.daemon"):
        assert await daemon.reload()
        assert await daemon.reload()
    restarts = [r for r in caplog.records if "overshoot changed: restart" in r.getMessage()]
    assert len(restarts) == 2
    assert daemon.config.overshoot.model == model


async def test_watch_reloads_when_the_file_changes(tmp_path: Path,
                                                   monkeypatch) -> None:
    monkeypatch.setattr("watcher.daemon.chores.WATCH_INTERVAL_S", 0.1)
    path = tmp_path / "watcher.yaml"
    path.write_text(BASE.format(state=tmp_path / "state.sqlite3", extra=""))
    daemon = Daemon(load_config(path), path)
    task = asyncio.create_task(daemon.run(watch=True))
    try:
        await asyncio.wait_for(daemon.ready.wait(), 20)
        await asyncio.sleep(0.3)
        path.write_text(BASE.format(state=tmp_path / "state.sqlite3", extra=EXTRA_RULE))
        await eventually(lambda: "people" in daemon.engine.runners, 10)
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)


async def test_watch_picks_up_a_new_file_that_an_include_glob_matches(tmp_path: Path,
                                                                      monkeypatch) -> None:
    monkeypatch.setattr("watcher.daemon.chores.WATCH_INTERVAL_S", 0.1)
    packs = tmp_path / "rules"
    packs.mkdir()
    (packs / "motion.yaml").write_text("rules: []\n")
    path = tmp_path / "watcher.yaml"
    path.write_text(BASE.format(state=tmp_path / "state.sqlite3",
                                extra="include: rules/*.yaml\n"))
    daemon = Daemon(load_config(path), path)
    task = asyncio.create_task(daemon.run(watch=True))
    try:
        await asyncio.wait_for(daemon.ready.wait(), 20)
        await asyncio.sleep(0.3)
        (packs / "people.yaml").write_text("rules:\n" + EXTRA_RULE)
        await eventually(lambda: "people" in daemon.engine.runners, 10)
    finally:
        daemon.request_stop()
        await asyncio.wait_for(task, 30)
