"""A kept stream whose file source is Constrained Baseline H.264 publishes it as it is."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from support.clips import FPS, HEIGHT, WIDTH, write_clip
from support.keeper import KEY, Spec, make_harness
from support.poll import eventually

from watcher.clock import SystemClock
from watcher.keeper.keeper import StreamKeeper
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
