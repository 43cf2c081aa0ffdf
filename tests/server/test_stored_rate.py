"""``max_stored_fps``: the stored frame rate is capped independently of the publish rate.

Frames go through the real paths (the WHIP storer, the pull storer, the registry)
on a :class:`ManualClock`, so every time below is exact.
"""

from __future__ import annotations

import asyncio
import itertools
import random

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame
from pydantic import ValidationError

from watcher.clock import ManualClock
from watcher.config.overshoot import EmbeddedServerConfig
from watcher.media.tracks import LatestFrame
from watcher.server import ingest as ingest_module
from watcher.server.encode import JpegEncoder, frame_budget, stream_frame_budget
from watcher.server.frames import StoredRateCap
from watcher.server.ingest import SessionStats, WhipIngest, _Session
from watcher.server.pull import PullIngest, _Pull
from watcher.server.settings import ServerSettings
from watcher.server.streams import Stream, StreamRegistry

JPEG = b"\xff\xd8 not really a jpeg \xff\xd9"


def make_registry(**settings: object) -> tuple[StreamRegistry, ManualClock, ServerSettings]:
    server_settings = ServerSettings(**settings)  # type: ignore[arg-type]
    clock = ManualClock()
    return StreamRegistry(clock, server_settings.stream_settings()), clock, server_settings


def feed(registry: StreamRegistry, clock: ManualClock, stream: Stream,
         times_ms: list[int]) -> list[int]:
    """Offer a frame at each (relative) time as an ingest does; the times of those stored."""
    start = clock.now_ms()
    stored = []
    for t in times_ms:
        clock.advance((start + t - clock.now_ms()) / 1000)
        if registry.admit_frame(stream):
            frame = registry.add_frame(stream, JPEG)
            assert frame is not None
            stored.append(frame.timestamp_ms)
    return stored


def at_fps(fps: float, seconds: float) -> list[int]:
    return [round(n * 1000 / fps) for n in range(round(fps * seconds))]


class NoPeer:
    connectionState = "connected"

    async def close(self) -> None:
        pass


class ClockedTrack(MediaStreamTrack):
    """Delivers one frame per entry of ``times_ms``, moving the clock to each time first.

    Waits until the storer is done with the previous frame, so each frame is admitted,
    encoded and stored at its own time, as with a real publisher and a fast encoder.
    """

    kind = "video"

    def __init__(self, clock: ManualClock, times_ms: list[int]) -> None:
        super().__init__()
        self.clock, self.times = clock, times_ms
        self.start = clock.now_ms()
        self.stats: SessionStats | None = None
        self.delivered = 0
        self.image = np.full((48, 64, 3), 90, np.uint8)

    async def recv(self) -> VideoFrame:
        stats = self.stats
        assert stats is not None
        done = stats.frames_stored + stats.frames_skipped + stats.frames_dropped
        while done < self.delivered:  # the storer signals nothing: poll its counters
            await asyncio.sleep(0.001)
            done = stats.frames_stored + stats.frames_skipped + stats.frames_dropped
        if self.delivered == len(self.times):
            raise MediaStreamError
        self.clock.advance((self.start + self.times[self.delivered] - self.clock.now_ms()) / 1000)
        self.delivered += 1
        self.image[:8, :8] = self.delivered % 255  # not all the same picture
        return VideoFrame.from_ndarray(self.image, format="bgr24")


async def publish_over_whip(registry: StreamRegistry, settings: ServerSettings,
                            stream: Stream, times_ms: list[int]) -> SessionStats:
    """Run the WHIP session's reader and storer over a track delivering at ``times_ms``."""
    ingest = WhipIngest(registry, settings)
    clock = registry.clock
    assert isinstance(clock, ManualClock)
    track = ClockedTrack(clock, times_ms)
    session = _Session(id="s", stream=stream, pc=NoPeer(),  # type: ignore[arg-type]
                       stats=SessionStats("s", stream.id, created_at_ms=0),
                       encoder=JpegEncoder(80, 30))
    track.stats = session.stats
    await asyncio.wait_for(asyncio.gather(ingest._read(session, track),
                                          ingest._store(session)), 30)
    return session.stats


def stored_times(stream: Stream) -> list[int]:
    return [frame.timestamp_ms for frame in stream.frames.window(0, len(stream.frames))]


# -- the cap on the real ingest paths ------------------------------------------------------------
async def test_whip_15fps_at_cap_5_keeps_5fps_evenly_spaced(
        monkeypatch: pytest.MonkeyPatch) -> None:
    registry, clock, settings = make_registry()  # the defaults: max_stored_fps 5, 600 s, 40 MB
    assert settings.max_stored_fps == 5
    stream = registry.create("owner")
    budgets: list[int] = []
    encode = ingest_module._encode

    def recording_encode(encoder: JpegEncoder, frame: VideoFrame,
                         budget: int) -> tuple[bytes, int, int]:
        budgets.append(budget)
        return encode(encoder, frame, budget)

    monkeypatch.setattr(ingest_module, "_encode", recording_encode)
    stats = await publish_over_whip(registry, settings, stream, at_fps(15, 20))

    assert stats.frames_received == 300
    assert stats.frames_dropped == 0
    assert stats.frames_stored == 100 and stats.frames_skipped == 200
    times = stored_times(stream)
    assert {b - a for a, b in itertools.pairwise(times)} == {200}  # exactly every 3rd frame
    # Frame indices stay a lifetime counter of *stored* frames.
    assert [f.index for f in stream.frames.window(0, len(stream.frames))] == list(range(100))
    status = stream.status(clock.now_ms())
    assert status["last_frame_index"] == 99
    assert status["recent_fps"] == 5.0  # the stored rate, not the 15 fps received
    assert status["received_fps"] == 15.0  # what the publisher sends, under its own name
    # Indices advance at recent_fps: frame_index=-(recent_fps * 4) is about 4 s back.
    back = stream.frames.by_index(status["last_frame_index"] + 1 - round(5.0 * 4))
    assert back is not None and times[-1] - back.timestamp_ms == 3800
    assert status["max_stored_fps"] == 5
    assert status["retained_frame_count"] == 100
    assert stream.frames.last is not None and stream.frames.last.jpeg[:2] == b"\xff\xd8"
    # Only stored frames are encoded, each with the budget of 5 fps (0.9 * 40 MB / 3000),
    # not of the 15 fps received (4 KB).
    assert len(budgets) == 100
    assert set(budgets[1:]) == {frame_budget(40_000_000, 600, 5)} == {12_000}


async def test_whip_5fps_with_jitter_at_cap_5_keeps_every_frame() -> None:
    registry, clock, settings = make_registry(max_stored_fps=5)
    stream = registry.create("owner")
    rng = random.Random(7)
    times = [200 * n + (rng.randint(-40, 40) if n else 0) for n in range(150)]
    times[10], times[11], times[12] = 2000 - 45, 2200 + 45, 2400 - 45  # early, late, early
    stats = await publish_over_whip(registry, settings, stream, times)

    assert stats.frames_received == stats.frames_stored == 150
    assert stats.frames_skipped == stats.frames_dropped == 0
    assert stored_times(stream) == [t - times[0] for t in times]
    assert stream.status(clock.now_ms())["recent_fps"] == pytest.approx(5.0, abs=0.2)


async def test_pull_storer_applies_the_cap() -> None:
    registry, clock, settings = make_registry(max_stored_fps=5)
    puller = PullIngest(registry, settings, fps=15)
    assert puller.fps == 5  # the source never decodes faster than frames are stored
    assert PullIngest(registry, ServerSettings(max_stored_fps=2)).fps == 2
    assert PullIngest(registry, ServerSettings(max_stored_fps=0)).fps == 5
    stream = registry.create("owner")
    pull = _Pull(stream, LatestFrame(), JpegEncoder(80, 30))
    image = np.full((48, 64, 3), 60, np.uint8)
    start = clock.now_ms()
    for t in at_fps(15, 10):  # a source delivering faster than the cap
        clock.advance((start + t - clock.now_ms()) / 1000)
        pull.sink.put(image)
        await puller._store(pull)
    assert (pull.frames, pull.skipped, pull.dropped) == (50, 100, 0)
    status = stream.status(clock.now_ms())
    assert (status["recent_fps"], status["received_fps"]) == (5.0, 15.0)
    assert {b - a for a, b in itertools.pairwise(stored_times(stream))} == {200}
    puller._refresh(pull)
    assert stream.pull_status is not None and stream.pull_status["frames_skipped"] == 100
    assert stream.last_pull_ms == clock.now_ms()  # skipped frames were pulled too


# -- the JPEG budget -------------------------------------------------------------------------------
def next_budget(registry: StreamRegistry, clock: ManualClock, stream: Stream,
                after_ms: int) -> int:
    """The budget an ingest gives the next frame it stores, ``after_ms`` from now."""
    clock.advance(after_ms / 1000)
    return stream_frame_budget(stream, registry.settings, clock.now_ms())


def test_budget_uses_the_capped_rate_not_the_received_rate() -> None:
    registry, clock, _ = make_registry()  # 600 s, 40 MB, max_stored_fps 5
    capped = registry.create("owner")
    feed(registry, clock, capped, at_fps(15, 10))
    assert len(capped.frames) == 50
    budget = next_budget(registry, clock, capped, 200)
    assert budget == frame_budget(40_000_000, 600, 5) == 12_000  # not 0.9 * 40 MB / 9000

    # Even frames stored around the gate (straight into the registry at 15 fps) are
    # budgeted at the cap: the ingest would not have stored them.
    bypassed = registry.create("owner")
    for _ in at_fps(15, 10):
        clock.advance(1 / 15)
        registry.add_frame(bypassed, JPEG)
    assert next_budget(registry, clock, bypassed, 67) == 12_000

    # Without a cap every frame is stored and the budget follows the received rate.
    registry, clock, _ = make_registry(max_stored_fps=0)
    every = registry.create("owner")
    assert feed(registry, clock, every, at_fps(15, 10)) == at_fps(15, 10)
    assert every.status(clock.now_ms())["max_stored_fps"] is None
    assert next_budget(registry, clock, every, 67) == pytest.approx(
        frame_budget(40_000_000, 600, 15), rel=0.02)  # ~4 KB


def test_budget_below_the_cap_follows_the_stored_rate() -> None:
    registry, clock, _ = make_registry(max_stored_fps=5)
    stream = registry.create("owner")
    assert len(feed(registry, clock, stream, at_fps(2, 10))) == 20  # slower than the cap
    assert stream.status(clock.now_ms() + 100)["recent_fps"] == 2.0
    assert next_budget(registry, clock, stream, 500) == frame_budget(40_000_000, 600, 2)


# -- the schedule ----------------------------------------------------------------------------------
def test_cap_keeps_its_phase_across_a_gap_and_bounds_the_rate() -> None:
    cap = StoredRateCap(5)
    assert [t for t in (0, 70, 130, 200, 330, 395) if cap.admit(t)] == [0, 200, 395]
    # A 1.5 s gap: the frame falls in slot 2000 and the next slot is 2200, not 2110 + 200.
    assert cap.admit(2110)
    assert not cap.admit(2140)
    assert cap.admit(2160)

    # 6 fps in: in the long run no more than 5 fps get in.
    six = StoredRateCap(5)
    assert sum(six.admit(t) for t in at_fps(6, 60)) in (300, 301)

    for bad in (0, -1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="positive"):
            StoredRateCap(bad)


def test_a_higher_cap_or_none_stores_every_frame_of_a_slower_stream() -> None:
    for value in (None, 0, 15, 30):
        registry, clock, _ = make_registry(max_stored_fps=value)
        stream = registry.create("owner")
        assert feed(registry, clock, stream, at_fps(15, 4)) == at_fps(15, 4), value


# -- settings --------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [-1, -0.5, float("nan"), float("inf"), "fast"])
def test_invalid_max_stored_fps_is_refused(value: object) -> None:
    with pytest.raises(ValidationError, match="max_stored_fps"):
        ServerSettings(max_stored_fps=value)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="max_stored_fps"):
        EmbeddedServerConfig(max_stored_fps=value)  # type: ignore[arg-type]


def test_max_stored_fps_reaches_the_server_from_the_config() -> None:
    assert ServerSettings().stream_settings().max_stored_fps == 5
    assert ServerSettings(max_stored_fps=0).stream_settings().max_stored_fps is None
    assert ServerSettings(max_stored_fps=None).stream_settings().max_stored_fps is None
    assert EmbeddedServerConfig().server_settings([]).max_stored_fps == 5
    assert EmbeddedServerConfig(max_stored_fps=2.5).server_settings(
        []).stream_settings().max_stored_fps == 2.5
