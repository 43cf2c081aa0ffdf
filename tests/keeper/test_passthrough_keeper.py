"""A kept stream whose file source is Constrained Baseline H.264 publishes it as it is."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from support.clips import FPS, HEIGHT, WIDTH, write_clip
from support.keeper import KEY, Spec, make_harness
from support.poll import eventually

from watcher.clock import SystemClock
from watcher.engine.triggered import THUMBNAILS
from watcher.keeper.keeper import StreamKeeper
from watcher.media.sources import AvSource
from watcher.server.settings import ServerSettings


@contextlib.asynccontextmanager
async def keeping_a_clip(tmp_path: Path, passthrough: str) -> AsyncIterator[StreamKeeper]:
    """A keeper publishing an H.264 clip in a loop, once the server has 10 of its frames."""
    clip = write_clip(tmp_path / "door.mp4")
    harness = await make_harness(ServerSettings(api_keys=[KEY]), SystemClock())
    keeper = harness.keeper(Spec(source=str(clip), loop=True, fps=FPS, width=WIDTH,
                                 height=HEIGHT, passthrough=passthrough))
    keeper.start()
    try:
        stream = harness.stream(await keeper.wait_live(timeout=30))
        await eventually(lambda: len(stream.frames) >= 10, timeout=30)
        yield keeper
    finally:
        await keeper.stop()
        await harness.http.aclose()


async def test_keeper_publishes_an_h264_file_as_passthrough_and_says_so(
        tmp_path: Path) -> None:
    async with keeping_a_clip(tmp_path, "auto") as keeper:
        health = keeper.health()
        assert health.publish_path == "passthrough"
        assert health.publish_path_reason == (
            f"H.264 Constrained Baseline {WIDTH}x{HEIGHT} at {FPS} fps")
        assert health.as_dict()["publish_path"] == "passthrough"  # what `watcher status` shows


async def test_keeper_transcodes_when_told_never(tmp_path: Path) -> None:
    async with keeping_a_clip(tmp_path, "never") as keeper:
        assert keeper.health().publish_path == "transcode"
        assert keeper.health().publish_path_reason == "passthrough: never"


async def test_a_passthrough_stream_decodes_only_while_thumbnails_are_wanted(
        tmp_path: Path) -> None:
    async with keeping_a_clip(tmp_path, "auto") as keeper:
        source = keeper._source
        assert isinstance(source, AvSource)
        # Live and published (the server has 10 frames) without a frame decoded here.
        assert keeper.state == "live" and keeper.source_live
        assert keeper.health().source_state == "live"
        assert source.stats.frames >= 10 and source.stats.frames_decoded == 0
        assert keeper.frames.seq == 0 and keeper.changes.frames == 0

        keeper.frames.demand.set(THUMBNAILS, True)
        await eventually(lambda: keeper.changes.frames >= 2 * FPS, timeout=30)
        assert source.stats.frames_decoded >= keeper.changes.frames
        keeper.frames.demand.set(THUMBNAILS, False)
        off = source.stats.frames
        await eventually(lambda: source.stats.frames >= off + 2, timeout=30)
        decoded = source.stats.frames_decoded
        await eventually(lambda: source.stats.frames >= off + 2 + 2 * FPS, timeout=30)
        assert source.stats.frames_decoded == decoded and keeper.source_live
