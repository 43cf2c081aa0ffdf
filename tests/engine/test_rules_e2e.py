"""A motion rule end to end: real WebRTC, the embedded server, local/vision, SQLite state.

The camera is a scripted synthetic scene whose clock the test sets, so the
box is on screen exactly when the test says. Evaluations are driven one by
one; the engine's clock is a ManualClock advanced 5 s per evaluation, so
``for``/``keep_firing_for``/``cooldown`` are exact while the video is real.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from support.keeper import KEY, Harness, Spec, make_harness
from support.poll import eventually
from support.scripted_camera import ScriptedCamera, script_source

from watcher.clock import ManualClock, SystemClock
from watcher.engine.rules import RuleConfig
from watcher.engine.runner import RuleRunner
from watcher.engine.state import Status
from watcher.engine.store import AlertEventRecord, AlertStore
from watcher.server.backends.vision import VisionModel
from watcher.server.settings import ServerSettings

RULE = {
    "name": "lobby-motion",
    "stream": "cam",
    "every": "5s",
    "window": "1s",
    "max_fps": 5,
    "prompt": "Is anything moving?",
    "schema": {"motion_detected": "boolean", "motion": "number"},
    "when": "motion_detected",
    "for": 2,
    "keep_firing_for": "10s",
    "cooldown": "1h",
    "severity": "critical",
    "labels": {"site": "hq"},
}


@pytest.fixture
async def setup(tmp_path: Path):
    h = await make_harness(ServerSettings(api_keys=[KEY], ttl_seconds=30), SystemClock())
    h.server.backends["local/vision"] = VisionModel()
    keeper = h.keeper(Spec(name="cam"))
    camera = script_source(keeper, size=(160, 120), crossing_s=5, ticking=False)
    keeper.start()
    await keeper.wait_live(15)
    yield h, keeper, camera(), tmp_path / "state.sqlite3"
    await keeper.stop()
    await h.server.aclose()
    await h.http.aclose()


def runner_for(h: Harness, keeper, store: AlertStore, clock: ManualClock,
               sent: list[AlertEventRecord], state=None) -> RuleRunner:
    async def emit(events: list[AlertEventRecord]) -> None:
        sent.extend(events)

    return RuleRunner(RuleConfig.model_validate(RULE), default_model="local/vision",
                      client=h.client, streams={"cam": keeper}, store=store, clock=clock,
                      emit=emit, state=state)


SETTLE_MS = 1600
"""Scene time, and then server time, a change needs to fill the 1 s window (with margin)."""


async def settle(h: Harness, keeper, camera: ScriptedCamera) -> None:
    """Let well over a second of the new scene reach the server (the window is 1 s).

    Waits on what happened, not on the wall clock: the camera has drawn 1.6 s
    of the new scene, and the server has since received 1.6 s more of frames.
    """
    stream_id = keeper.stream_id
    drawn = camera.frames + SETTLE_MS // 100  # the camera draws a frame every 100 ms
    await eventually(lambda: camera.frames >= drawn, timeout=60, interval=0.02)
    mark = (await h.client.get_stream(stream_id)).last_frame_at_ms or 0

    async def arrived() -> bool:
        newest = (await h.client.get_stream(stream_id)).last_frame_at_ms or 0
        return newest >= mark + SETTLE_MS

    await eventually(arrived, timeout=60, interval=0.02)


async def test_pending_firing_once_resolved_and_restart(setup) -> None:
    h, keeper, camera, path = setup
    clock = ManualClock()
    sent: list[AlertEventRecord] = []
    store = AlertStore(path)
    runner = runner_for(h, keeper, store, clock, sent)

    async def tick() -> Status:
        clock.advance(5)
        result = await runner.evaluate()
        assert result.outcome == "answered", result.detail
        return runner.state.status

    await settle(h, keeper, camera)
    assert await tick() == Status.INACTIVE  # an empty room
    camera.event = True
    await settle(h, keeper, camera)
    assert await tick() == Status.PENDING   # first match: for is 2
    assert sent == []
    assert await tick() == Status.FIRING    # second match fires
    assert [(e.status, e.notify) for e in sent] == [("firing", True)]
    firing = sent[0]
    assert firing.rule == "lobby-motion" and firing.severity == "critical"
    assert firing.answer["motion_detected"] is True
    assert firing.urls[0].startswith(f"ovs://streams/{keeper.stream_id}?start_offset_ms=-1000")
    assert firing.snapshot and firing.snapshot[:2] == b"\xff\xd8"
    assert firing.labels == {"site": "hq"} and firing.model == "local/vision"
    assert await tick() == Status.FIRING    # still matching: no second notification
    assert len(sent) == 1

    # Restart: a new runner over the reopened state file neither forgets nor re-fires.
    await store.close()
    store = AlertStore(path)
    state = await store.load_state("lobby-motion", "cam")
    assert state is not None and state.status == Status.FIRING
    runner = runner_for(h, keeper, store, clock, sent, state=state)
    assert await tick() == Status.FIRING
    assert len(sent) == 1

    camera.event = False
    await settle(h, keeper, camera)
    assert await tick() == Status.FIRING    # cleared, but keep_firing_for is 10 s
    assert await tick() == Status.FIRING    # 5 s into the clear
    assert await tick() == Status.RESOLVED  # 10 s: resolved
    assert [e.status for e in sent] == ["firing", "resolved"]

    camera.event = True                     # again, within the 1 h cooldown
    await settle(h, keeper, camera)
    await tick()
    assert await tick() == Status.FIRING
    stored = await store.events(limit=10)
    assert [(e.status, e.notify) for e in reversed(stored)] == [
        ("firing", True), ("resolved", True), ("firing", False)]
    assert len(sent) == 2                   # the suppressed episode was not sent
    await store.close()
