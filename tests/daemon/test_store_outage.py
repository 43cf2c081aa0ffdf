"""A failing state store loses no alert: locked, full, or down longer than the queue.

Real parts throughout (what ``Daemon.run`` wires): a keeper publishing over WebRTC to
the embedded server, the rule engine asking a scripted model every 300 ms, the SQLite
store behind its health monitor and the step writer, the outbox, the status listener.
The faults are real too: another process holding an exclusive lock on the file, and a
tmpfs filled to the last byte.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import httpx
import pytest
from support.poll import eventually
from support.status import Running, running_daemon
from support.storefaults import ExclusiveLock, fill, small_tmpfs

from watcher.engine.state import Status

LOCK_S = 18.0


class Scene:
    """The scripted camera's truth: the model answers whether the event is on."""

    def __init__(self) -> None:
        self.on = False

    def reply(self, request: object) -> str:
        return json.dumps({"answer": self.on})


async def readyz(d: Running, code: int) -> dict | None:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(d.url + "/readyz")
    return response.json() if response.status_code == code else None


async def readyz_text(d: Running) -> str:
    async with httpx.AsyncClient(timeout=10) as http:
        return (await http.get(d.url + "/readyz?format=text")).text


def store_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "watcher.engine.storehealth"]


async def one_episode(d: Running, scene: Scene) -> None:
    """The event starts (the alert fires) and ends (it resolves)."""
    scene.on = True
    await eventually(lambda: d.runner.state.status == Status.FIRING, timeout=15)
    scene.on = False
    await eventually(lambda: d.runner.state.status == Status.RESOLVED, timeout=15)


async def settled(d: Running) -> bool:
    """Store back, nothing pending, no delivery left to do."""
    if not d.health.available or d.writer.pending:
        return False
    counts = await d.store.delivery_counts()
    return all(set(c) <= {"sent", "dead", "summarized"} for c in counts.values())


async def test_store_locked_18_s_across_an_event_delivers_it_once_afterwards(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    scene = Scene()
    async with running_daemon(tmp_path, reply=scene.reply, probe_interval=0.5) as d:
        await d.keeper.wait_live(15)
        await eventually(lambda: readyz(d, 200), timeout=15)
        await eventually(lambda: d.runner.stats.evaluations >= 2)

        async with ExclusiveLock(tmp_path / "state.sqlite3") as lock:
            locked_at = time.monotonic()
            body = await eventually(lambda: readyz(d, 503), timeout=15)
            assert body["store"]["ready"] is False
            assert "database is locked" in body["store"]["reason"]
            assert {"store": "state", "reason": body["store"]["reason"]} in body["not_ready"]
            assert "state store: not ready: state store unavailable" in await readyz_text(d)

            await one_episode(d, scene)  # every frame of the event inside the lock
            assert d.action.keys == [] and d.writer.pending >= 1
            assert (await readyz(d, 503)) is not None
            # the lock is the scenario: held for 18 s, whatever the test did meanwhile
            await eventually(lambda: time.monotonic() - locked_at >= LOCK_S,
                             timeout=LOCK_S + 5, interval=0.2)
            await lock.release()
            released_at = time.monotonic()

        await eventually(lambda: settled(d), timeout=40, interval=0.1)
        await eventually(lambda: readyz(d, 200), timeout=15)
        assert time.monotonic() - released_at >= 0
        [firing] = [e for e in await d.store.events() if e.kind == "firing"]
        assert d.action.keys == [f"{firing.event_key}:ops"]  # once, with the stable key
        assert d.action.events[0].id == firing.id  # recorded first, then delivered
        [delivery] = await d.store.deliveries_for_event(firing.id)
        assert (delivery.status, delivery.attempts) == ("sent", 1)
        assert delivery.idempotency_key == d.action.keys[0]
        resolved = [e for e in await d.store.events() if e.kind == "resolved"]
        assert len(resolved) == 1 and resolved[0].episode == firing.episode

    lines = store_lines(caplog)
    assert len([m for m in lines if m.startswith("state store unavailable: ")]) == 1, lines
    assert len([m for m in lines if m.startswith("state store back")]) == 1, lines
    assert not [r for r in caplog.records if r.exc_info], "no traceback"


async def test_store_down_longer_than_the_queue_notifies_best_effort(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    scene = Scene()
    async with running_daemon(tmp_path, reply=scene.reply, max_pending_steps=2,
                              max_pending_age=3.0) as d:
        await d.keeper.wait_live(15)
        await eventually(lambda: d.runner.stats.evaluations >= 2)

        async with ExclusiveLock(tmp_path / "state.sqlite3"):
            for _ in range(4):
                await one_episode(d, scene)
            # past the queue's bound and its age: every firing goes out, not persisted
            await eventually(lambda: len(d.action.keys) == 4, timeout=30)
            assert all(e.id is None for e in d.action.events)
            assert await readyz(d, 503) is not None

        await eventually(lambda: settled(d), timeout=40, interval=0.1)
        firing = sorted((e for e in await d.store.events(limit=100) if e.kind == "firing"),
                        key=lambda e: e.created_ms)
        assert len(firing) == 4  # recorded once the store was back
        assert sorted(d.action.keys) == sorted(f"{e.event_key}:ops" for e in firing)
        assert d.writer.stats.best_effort == 4 and d.writer.stats.dropped == 0
        assert {e.kind for e in await d.store.events(limit=100)} == {"firing", "resolved"}
    assert not [r for r in caplog.records if r.exc_info], "no traceback"


async def test_disk_full_still_notifies_and_recovers_when_space_returns(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    scene = Scene()
    with small_tmpfs(tmp_path / "fs", "2m") as fs:
        state = fs / "state.sqlite3"
        async with running_daemon(tmp_path, reply=scene.reply, state_path=state,
                                  max_pending_age=2.0) as d:
            await d.keeper.wait_live(15)
            await one_episode(d, scene)  # recorded and delivered normally
            await eventually(lambda: len(d.action.keys) == 1, timeout=15)

            filler = fill(fs)
            body = await eventually(lambda: readyz(d, 503), timeout=20)
            assert "full" in body["store"]["reason"]
            await one_episode(d, scene)
            await eventually(lambda: len(d.action.keys) == 2, timeout=20)
            assert d.action.events[1].id is None  # best effort: not persisted yet
            assert body["status"] == "not ready"

            filler.unlink()  # space returns
            await eventually(lambda: settled(d), timeout=40, interval=0.1)
            await eventually(lambda: readyz(d, 200), timeout=15)
            firing = [e for e in await d.store.events() if e.kind == "firing"]
            assert len(firing) == 2
            assert sorted(d.action.keys) == sorted(f"{e.event_key}:ops" for e in firing)

    lines = store_lines(caplog)
    assert len([m for m in lines if m.startswith("state store unavailable: ")]) == 1, lines
    assert len([m for m in lines if m.startswith("state store back")]) == 1, lines
    assert not [r for r in caplog.records if r.exc_info], "no traceback"
