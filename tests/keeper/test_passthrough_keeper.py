"""A kept stream whose file source is Constrained Baseline H.264 publishes it as it is."""

from __future__ import annotations

from pathlib import Path

from support.clips import FPS, HEIGHT, WIDTH, write_clip
from support.keeper import KEY, Spec, make_harness
from support.poll import eventually

from watcher.clock import SystemClock
from watcher.server.settings import ServerSettings


async def test_keeper_publishes_an_h264_file_as_passthrough_and_says_so(
        tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "door.mp4")
    harness = await make_harness(ServerSettings(api_keys=[KEY]), SystemClock())
    keeper = harness.keeper(Spec(source=str(clip), loop=True, fps=FPS, width=WIDTH,
                                 height=HEIGHT, passthrough="auto"))
    keeper.start()
    try:
        stream_id = await keeper.wait_live(timeout=30)
        stream = harness.stream(stream_id)
        await eventually(lambda: len(stream.frames) >= 10, timeout=30)
        health = keeper.health()
        assert health.publish_path == "passthrough"
        assert health.publish_path_reason == (
            f"H.264 Constrained Baseline {WIDTH}x{HEIGHT} at {FPS} fps")
        assert health.as_dict()["publish_path"] == "passthrough"  # what `watcher status` shows
    finally:
        await keeper.stop()
        await harness.http.aclose()


async def test_keeper_transcodes_when_told_never(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "door.mp4")
    harness = await make_harness(ServerSettings(api_keys=[KEY]), SystemClock())
    keeper = harness.keeper(Spec(source=str(clip), loop=True, fps=FPS, width=WIDTH,
                                 height=HEIGHT, passthrough="never"))
    keeper.start()
    try:
        stream_id = await keeper.wait_live(timeout=30)
        await eventually(lambda: len(harness.stream(stream_id).frames) >= 10, timeout=30)
        assert keeper.health().publish_path == "transcode"
        assert keeper.health().publish_path_reason == "passthrough: never"
    finally:
        await keeper.stop()
        await harness.http.aclose()
