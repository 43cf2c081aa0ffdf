"""Change and alert triggers: the detector's noise immunity, the gate's pacing."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from watcher.engine.triggers import ChangeWatch, Trigger, TriggerGate
from watcher.media.changes import DEFAULT_CHANGE_THRESHOLD, ChangeDetector, ChangeTracker, thumbnail
from watcher.media.testsrc import SyntheticScene


def feed_frames(detector: ChangeDetector, frames) -> list[int]:
    """The indices of the frames the detector calls a change."""
    return [i for i, frame in enumerate(frames) if detector.feed(thumbnail(frame))]


def test_noise_flicker_and_the_clock_overlay_are_not_changes() -> None:
    scene = SyntheticScene(width=640, height=480, fps=5, noise=2.0, clock=True)
    frames = [scene.frame(n) for n in range(120)]  # 24 s: every overlay digit rolls over
    for n in range(0, 120, 7):  # lights flicker: the whole picture steps in brightness
        frames[n] = cv2.add(frames[n], np.full_like(frames[n], 25))
    assert feed_frames(ChangeDetector(), frames) == []


def test_an_object_appearing_is_one_change() -> None:
    scene = SyntheticScene(width=640, height=480, fps=5, events=("person",), start=4,
                           period=100, duration=50)
    frames = [scene.frame(n) for n in range(40)]
    changes = feed_frames(ChangeDetector(), frames)
    assert changes and changes[0] == 20  # the person enters at t = 4 s (frame 20)
    assert all(scene.event_active(scene.time_of(n)) for n in changes)


class ManualTime:
    """A monotonic clock that moves only when the gate sleeps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


async def test_a_burst_asks_at_most_once_per_min_interval_and_coalesces() -> None:
    time = ManualTime()
    asked: list[tuple[float, Trigger]] = []
    release = asyncio.Event()
    started = asyncio.Event()

    async def evaluate(trigger: Trigger) -> None:
        asked.append((time.now, trigger))
        started.set()
        await release.wait()
        time.now += 0.3  # the model's latency

    gate = TriggerGate("r", evaluate, min_interval_s=2.0, monotonic=time.monotonic,
                       sleep=time.sleep)
    gate.request(Trigger("change", changed_at=time.now, stream="a"))
    await started.wait()
    for k in range(10):  # changes while the first ask is in flight
        gate.request(Trigger("change", changed_at=time.now + k * 0.01, stream="a"))
    release.set()
    await gate.idle()
    assert len(asked) == 2, asked
    (first_at, _), (second_at, follow_up) = asked
    assert second_at - first_at >= 2.0
    assert follow_up.changed_at == 100.09  # the newest change of the burst
    assert (gate.stats.requested, gate.stats.asked, gate.stats.coalesced) == (11, 2, 9)


async def test_an_alert_survives_coalescing_with_changes() -> None:
    time = ManualTime()
    asked: list[Trigger] = []

    async def evaluate(trigger: Trigger) -> None:
        asked.append(trigger)

    gate = TriggerGate("r", evaluate, min_interval_s=1.0, monotonic=time.monotonic,
                       sleep=time.sleep)
    gate.request(Trigger("change", changed_at=time.now, stream="a"))
    gate.request(Trigger("alert", leader="gate", stream="gate", answer={"people": 1}))
    gate.request(Trigger("change", changed_at=time.now + 0.5, stream="a"))
    await gate.idle()
    assert len(asked) == 1
    assert (asked[0].kind, asked[0].leader, asked[0].changed_at) == ("alert", "gate", 100.5)


async def test_a_change_waits_for_its_frame_to_settle() -> None:
    time = ManualTime()
    asked: list[Trigger] = []

    async def evaluate(trigger: Trigger) -> None:
        asked.append(trigger)

    gate = TriggerGate("r", evaluate, min_interval_s=1.0, settle_s=0.3,
                       monotonic=time.monotonic, sleep=time.sleep)
    gate.request(Trigger("change", changed_at=time.now, stream="a"))
    await gate.idle()
    assert time.sleeps == [pytest.approx(0.3)]
    assert asked[0].end_at == pytest.approx(100.3)


async def test_change_observers_see_each_change_trigger_before_the_gate() -> None:
    asked: list[Trigger] = []

    async def evaluate(trigger: Trigger) -> None:
        asked.append(trigger)

    gate = TriggerGate("door", evaluate, min_interval_s=0.0)
    seen: list[tuple[str, Trigger, int]] = []

    def broken(rule: str, trigger: Trigger) -> None:
        raise RuntimeError("an observer's own bug")

    def observe(rule: str, trigger: Trigger) -> None:
        seen.append((rule, trigger, gate.stats.requested))

    tracker = ChangeTracker()
    watch = ChangeWatch(gate, DEFAULT_CHANGE_THRESHOLD, asyncio.get_running_loop(), [broken])
    watch.attach({"cam": SimpleNamespace(changes=tracker)}, ["cam"])
    watch.observers.append(observe)  # added after the watch was made: told too
    scene = SyntheticScene(width=640, height=480, fps=5, events=("person",), start=4,
                           period=100, duration=50)
    for n in range(40):
        tracker(scene.frame(n), float(n))
    await asyncio.sleep(0)  # the changes hop to the event loop
    await gate.idle()
    assert watch.changes >= 1
    assert [(rule, t.kind, t.stream) for rule, t, _ in seen] == [
        ("door", "change", "cam")] * watch.changes
    assert seen[0][1].changed_at == 20.0  # the person enters at frame 20
    assert [before for _, _, before in seen] == list(range(watch.changes))  # gate after
    assert gate.stats.requested == watch.changes and asked  # the gate still asks
    assert asked[-1].changed_at == seen[-1][1].changed_at
