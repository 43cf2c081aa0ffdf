"""H.264 passthrough: the path choice, and packets published unchanged to a real server.

Clips are written with PyAV; the embedded server runs under uvicorn on 127.0.0.1 and
receives over real WebRTC. The RTSP camera is a file served by
``support.rtsp.RtspFileServer`` (RTP over the RTSP connection, as FFmpeg's client asks).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import json
import statistics
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
import httpx
import pytest
from support.asgi import serve_asgi
from support.clips import GOP, write_clip
from support.poll import eventually
from support.rtsp import RtspFileServer, split_nal_units

from watcher.media.passthrough import PacketFeed, choose_path
from watcher.media.publisher import make_publisher
from watcher.media.sources import VideoSource, open_source
from watcher.media.tracks import LatestFrame
from watcher.server.app import API_PREFIX, create_app
from watcher.server.backends.frames import FramesModel
from watcher.server.settings import ServerSettings

KEY = "ovs_passthrough_key"
WIDTH, HEIGHT, FPS = 320, 240, 10


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("passthrough")
    return {
        "baseline": write_clip(folder / "baseline.mp4"),
        "high": write_clip(folder / "high.mp4", profile="High", bframes=2),
        "vp8": write_clip(folder / "vp8.webm", codec="libvpx", profile=None),
        "fast": write_clip(folder / "fast.mp4", fps=25),
        "ts": write_clip(folder / "baseline.ts"),
    }


def choice(path: Path, mode: str = "auto", **want: Any) -> Any:
    with av.open(str(path)) as container:
        options = {"width": None, "height": None, "fps": float(FPS), **want}
        return choose_path(mode, container.streams.video[0], **options)  # type: ignore[arg-type]


# -- the choice ------------------------------------------------------------------------------------
def test_auto_passes_baseline_h264_at_the_configured_size_and_rate(clips: dict[str, Path]) -> None:
    got = choice(clips["baseline"], width=WIDTH, height=HEIGHT)
    assert got.path == "passthrough"
    assert got.reason == f"H.264 Constrained Baseline {WIDTH}x{HEIGHT} at {FPS} fps"


@pytest.mark.parametrize(("clip", "want", "why"), [
    ("high", {}, "the peer takes Constrained Baseline H.264 without B-frames"),
    ("vp8", {}, "the source is vp8, not H.264"),
    ("baseline", {"width": 160, "height": 120}, "resized to 160x120"),
    ("fast", {}, f"decimated to {FPS} fps"),
])
def test_auto_transcodes_what_the_peer_or_the_config_cannot_take(
        clips: dict[str, Path], clip: str, want: dict[str, Any], why: str) -> None:
    got = choice(clips[clip], **want)
    assert got.path == "transcode"
    assert why in got.reason


def test_always_and_never_override_the_choice(clips: dict[str, Path]) -> None:
    assert choice(clips["high"], "always", width=160, height=120).path == "passthrough"
    assert choice(clips["fast"], "always").path == "passthrough"
    assert choice(clips["baseline"], "never").path == "transcode"
    assert choice(clips["vp8"], "always").path == "transcode"  # nothing to pass through


# -- end to end ------------------------------------------------------------------------------------
@contextlib.asynccontextmanager
async def server() -> AsyncIterator[httpx.AsyncClient]:
    settings = ServerSettings(api_keys=[KEY], max_stored_fps=0)  # every frame of 10 fps
    app = create_app(settings, backends=[FramesModel()])
    async with serve_asgi(app) as base, httpx.AsyncClient(
            base_url=base + API_PREFIX, timeout=15,
            headers={"authorization": f"Bearer {KEY}"}) as client:
        yield client


until = functools.partial(eventually, timeout=30.0)
"""Media takes its time on a busy machine: a generous bound."""


@contextlib.asynccontextmanager
async def published(client: httpx.AsyncClient, spec: str, mode: str,
                    **source_options: Any) -> AsyncIterator[tuple[str, VideoSource, Any]]:
    """``spec`` opened with ``passthrough: mode`` and published the way the keeper does."""
    sink = LatestFrame()
    source = open_source(spec, fps=FPS, width=WIDTH, height=HEIGHT, sink=sink,
                         passthrough=mode, **source_options)  # type: ignore[arg-type]
    source.start()
    publisher = None
    try:
        await until(lambda: sink.seq > 0)
        created = (await client.post("/streams")).raise_for_status().json()
        packets = source.packets if source.stats.path == "passthrough" else None
        publisher = make_publisher("whip", created["publish"]["url"],
                                   created["publish"]["token"], sink, fps=FPS, width=WIDTH,
                                   height=HEIGHT, packets=packets)
        await publisher.start()
        await publisher.wait_connected()
        yield created["id"], source, publisher
    finally:
        if publisher is not None:
            await publisher.stop()
        await source.stop()


async def status(client: httpx.AsyncClient, stream_id: str) -> dict[str, Any]:
    return (await client.get(f"/streams/{stream_id}")).raise_for_status().json()


async def stored_window(client: httpx.AsyncClient, stream_id: str) -> list[dict[str, Any]]:
    """What ``local/frames`` says the last 2 s resolve to (every frame: max_fps above 10)."""
    url = f"ovs://streams/{stream_id}?start_offset_ms=-2000&max_fps=30"
    response = await client.post("/chat/completions", json={
        "model": "local/frames", "messages": [{"role": "user", "content": [
            {"type": "text", "text": "which frames?"},
            {"type": "video_url", "video_url": {"url": url}}]}]})
    assert response.status_code == 200, response.text
    answer = json.loads(response.json()["choices"][0]["message"]["content"])
    return answer["parts"][0]["frames"]


async def measure(client: httpx.AsyncClient, stream_id: str) -> dict[str, Any]:
    """Frame timing of a stream once 3 s of it are stored."""
    await until(lambda: _stored(client, stream_id, 30))
    first = await status(client, stream_id)
    frames = await stored_window(client, stream_id)
    gaps = [b["timestamp_ms"] - a["timestamp_ms"] for a, b in itertools.pairwise(frames)]
    return {"status": first, "frames": frames, "gaps": gaps}


async def _stored(client: httpx.AsyncClient, stream_id: str, count: int) -> bool:
    index = (await status(client, stream_id))["last_frame_index"]
    return index is not None and index >= count


async def test_h264_file_passes_through_and_answers_as_a_transcoded_one(
        clips: dict[str, Path]) -> None:
    async with server() as client:
        async with published(client, str(clips["baseline"]), "auto", loop=True) as (
                passed_id, passed_source, passed_publisher):
            assert passed_source.stats.path == "passthrough"
            assert passed_source.packets is not None
            passed = await measure(client, passed_id)
            track = passed_publisher._track.source  # the PacketTrack behind the counter
            assert passed_source.packets.packets > 0 and passed_source.packets.keyframes > 0
        async with published(client, str(clips["baseline"]), "never", loop=True) as (
                coded_id, coded_source, _):
            assert coded_source.stats.path == "transcode"
            coded = await measure(client, coded_id)
    # The receiver starts at a keyframe: fewer than one GOP of packets were skipped.
    assert track.first_picture_s is not None and track.skipped < GOP
    for result in (passed, coded):
        # The same frame timing: the clip's 10 fps, 100 ms apart (a loaded machine may
        # drop the odd frame at the ingest).
        assert len(result["frames"]) >= 15, result["frames"]
        assert 90 <= statistics.median(result["gaps"]) <= 110, result["gaps"]
        assert result["status"]["recent_fps"] == pytest.approx(FPS, rel=0.25)


async def test_a_late_publisher_starts_at_the_next_keyframe(clips: dict[str, Path]) -> None:
    feed_source = open_source(str(clips["baseline"]), fps=FPS, sink=LatestFrame(), loop=True,
                              passthrough="auto")
    assert isinstance(feed_source.packets, PacketFeed)
    feed_source.start()
    try:
        await until(lambda: feed_source.packets.packets > GOP + 3)  # mid-GOP, most likely
        late = feed_source.packets.track()
        first = await asyncio.wait_for(late.recv(), 10)
        second = await asyncio.wait_for(late.recv(), 10)
    finally:
        await feed_source.stop()
    assert bytes(first)[:4] == b"\x00\x00\x00\x01"  # Annex B
    nal_types = {nal[0] & 0x1F for nal in split_nal_units(bytes(first))}
    assert {7, 8, 5} <= nal_types  # SPS, PPS and an IDR slice: decodable on its own
    assert late.skipped < GOP and late.first_picture_s is not None
    assert second.pts - first.pts == 90_000 // FPS


# -- RTSP ------------------------------------------------------------------------------------------
async def test_rtsp_h264_camera_passes_through(clips: dict[str, Path]) -> None:
    camera = RtspFileServer(clips["baseline"])
    async with camera.serving() as url, server() as client:
        async with published(client, url, "auto") as (stream_id, source, _):
            assert source.kind == "rtsp"
            assert source.stats.path == "passthrough", source.stats.path_reason
            result = await measure(client, stream_id)
    assert camera.sessions >= 1
    assert len(result["frames"]) >= 15, result["frames"]
    assert 80 <= statistics.median(result["gaps"]) <= 120, result["gaps"]
    assert result["status"]["recent_fps"] == pytest.approx(FPS, rel=0.25)
