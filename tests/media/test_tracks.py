"""FrameTrack pacing and 90 kHz timestamps; LatestFrame keeps only the newest frame."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from watcher.media.tracks import VIDEO_TIME_BASE, FrameTrack, LatestFrame


def image(value: int) -> np.ndarray:
    return np.full((16, 16, 3), value, np.uint8)


class SteppedTime:
    """A monotonic clock that moves only when the track sleeps or the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


async def test_paces_and_stamps_pts_at_90khz() -> None:
    asked: list[tuple[int, float]] = []

    def producer(n: int, t: float) -> np.ndarray:
        asked.append((n, t))
        return image(n)

    clock = SteppedTime()
    track = FrameTrack(producer, fps=50, clock=clock, sleep=clock.sleep)
    frames = [await track.recv() for _ in range(10)]
    assert [f.pts for f in frames] == [n * 1800 for n in range(10)]
    assert all(f.time_base == VIDEO_TIME_BASE for f in frames)
    assert asked == [(n, n / 50) for n in range(10)]
    assert clock.now == pytest.approx(9 / 50)  # slept until each tick was due, no longer
    assert track.ticks_skipped == 0
    assert track.frames_sent == 10
    assert frames[3].to_ndarray(format="bgr24")[0, 0, 0] == 3


async def test_late_reader_skips_ticks_and_pts_follow_wall_time() -> None:
    clock = SteppedTime()
    track = FrameTrack(lambda n, t: image(1), fps=20, clock=clock, sleep=clock.sleep)
    first = await track.recv()
    clock.now += 0.26  # the reader comes back 0.26 s later
    late = await track.recv()
    assert first.pts == 0
    assert late.pts == 5 * 4500  # 0.25 s later on the 90 kHz clock, not the next tick
    assert track.ticks_skipped == 4


async def test_none_skips_a_tick_and_stop_ends_the_track() -> None:
    clock = SteppedTime()
    track = FrameTrack(lambda n, t: None if n % 2 == 0 else image(n), fps=100,
                       clock=clock, sleep=clock.sleep)
    frame = await track.recv()
    assert frame.pts == 900  # frame 1
    track.stop()
    with pytest.raises(MediaStreamError):
        await track.recv()


async def test_latest_frame_semantics() -> None:
    box = LatestFrame()
    assert box.get() is None
    track = FrameTrack(box, fps=100)
    box.put(image(1))
    box.put(image(2))  # replaces 1 before anyone read it
    assert box.replaced == 1
    first = await track.recv()
    again = await track.recv()  # nothing new: the newest frame is sent again
    assert first.to_ndarray(format="bgr24")[0, 0, 0] == 2
    assert again.to_ndarray(format="bgr24")[0, 0, 0] == 2
    assert again.pts > first.pts
    box.put(image(3))
    assert (await track.recv()).to_ndarray(format="bgr24")[0, 0, 0] == 3
    assert box.replaced == 1 and box.seq == 3


async def test_producer_failure_ends_the_track() -> None:
    def broken(n: int, t: float) -> np.ndarray:
        raise RuntimeError("camera unplugged")

    track = FrameTrack(broken, fps=100)
    with pytest.raises(MediaStreamError):
        await track.recv()
    assert track.readyState == "ended"


class ManualTime:
    """A monotonic clock whose sleepers wake only when the test advances it."""

    def __init__(self) -> None:
        self.now = 0.0
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []
        self._changed = asyncio.Event()

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.now + seconds, waiter))
        self._changed.set()
        try:
            await waiter
        finally:
            self._sleepers = [s for s in self._sleepers if s[1] is not waiter]

    async def sleeping_until(self, at: float) -> None:
        """Until someone sleeps until ``at``."""
        while not any(abs(due - at) < 1e-9 for due, _ in self._sleepers):
            self._changed.clear()
            await self._changed.wait()

    def advance(self, seconds: float) -> None:
        self.now += seconds
        for due, waiter in self._sleepers:
            if due <= self.now + 1e-9 and not waiter.done():
                waiter.set_result(None)


async def test_a_frame_arriving_between_ticks_is_sent_on_arrival() -> None:
    """A camera out of step with the ticks: each frame goes out when it arrives, not up
    to an interval later; when none arrives, the newest goes out again one interval late."""
    clock = ManualTime()
    box = LatestFrame()
    track = FrameTrack(box, fps=10, clock=clock, sleep=clock.sleep)
    box.put(image(1))
    first = await track.recv()  # tick 0, a new frame: sent at once
    assert clock.now == 0.0 and first.pts == 0

    second = asyncio.create_task(track.recv())
    await clock.sleeping_until(0.1)
    clock.advance(0.1)  # tick 1: nothing new yet, so the track waits for a frame
    await clock.sleeping_until(0.2)
    clock.advance(0.03)
    delivered = threading.Thread(target=box.put, args=(image(2),))  # a capture thread
    delivered.start()
    delivered.join()
    frame = await second
    assert frame.to_ndarray(format="bgr24")[0, 0, 0] == 2
    assert clock.now == pytest.approx(0.13)  # on arrival, not at tick 2 (0.2 s)
    assert frame.pts == 9000

    third = asyncio.create_task(track.recv())
    await clock.sleeping_until(0.2)
    clock.advance(0.07)  # tick 2, and the camera froze
    await clock.sleeping_until(0.3)
    assert not third.done()
    clock.advance(0.1)
    again = await third
    assert again.to_ndarray(format="bgr24")[0, 0, 0] == 2  # the newest, sent again
    assert again.pts == 18000 and track.ticks_skipped == 0


async def test_wait_newer_returns_at_once_when_a_newer_frame_is_there() -> None:
    box = LatestFrame()
    box.put(image(1))
    clock = ManualTime()
    await box.wait_newer(0, 10.0, clock.sleep)  # seq 1 > 0: no sleep at all
    assert clock.now == 0.0
    waiting = asyncio.create_task(box.wait_newer(1, 10.0, clock.sleep))
    await clock.sleeping_until(10.0)
    box.put(image(2))
    await waiting
    assert clock.now == 0.0 and box._waiters == []
