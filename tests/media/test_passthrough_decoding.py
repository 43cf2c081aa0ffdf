"""A passthrough source decodes only what watcher needs: frames while they are wanted,
the newest picture when asked, and clips cut from its own packets.

Real H.264 files written with PyAV, played by real sources in real time.
"""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from support.clips import FPS, GOP, HEIGHT, WIDTH, write_clip
from support.poll import eventually
from support.rtsp import split_nal_units

from watcher.clock import SystemClock
from watcher.console.clips import ClipRecorder
from watcher.console.config import ClipsConfig
from watcher.console.gopclips import gop_clip
from watcher.engine.alertevents import _snapshot
from watcher.engine.state import AlertState, Kind, Status, Transition
from watcher.engine.store import AlertEventRecord, AlertStore
from watcher.media.changes import ChangeTracker
from watcher.media.gop import GopBuffer
from watcher.media.passthrough import AnnexB
from watcher.media.sources import AvSource, open_source
from watcher.media.tracks import LatestFrame

SECONDS = 4
FRAMES = SECONDS * FPS


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_clip(tmp_path_factory.mktemp("decoding") / "door.mp4", seconds=SECONDS)


def source_of(clip: Path, sink: LatestFrame, **options: object) -> AvSource:
    options = {"passthrough": "auto", **options}
    source = open_source(str(clip), fps=FPS, width=WIDTH, height=HEIGHT, sink=sink,
                         **options)  # type: ignore[arg-type]
    assert isinstance(source, AvSource)
    return source


def file_pictures(clip: Path) -> list[np.ndarray]:
    """Every frame of ``clip`` decoded on its own, as BGR."""
    with av.open(str(clip)) as container:
        return [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]


async def played(source: AvSource) -> AvSource:
    source.start()
    await eventually(lambda: source.stats.state == "ended", timeout=SECONDS * 10)
    return source


async def test_without_demand_nothing_is_decoded_and_the_source_is_live(clip: Path) -> None:
    sink = LatestFrame(on_demand=True)
    changes = ChangeTracker()
    source = source_of(clip, sink, loop=True, on_frame=changes)
    source.start()
    try:
        await eventually(lambda: source.stats.frames >= GOP, timeout=20)
        stats = source.stats
        assert stats.path == "passthrough" and stats.state == "live"
        assert stats.last_frame_at is not None and (stats.width, stats.height) == (WIDTH, HEIGHT)
        assert stats.frames_decoded == 0 and sink.seq == 0 and changes.frames == 0
        assert source.packets is not None and source.packets.packets >= GOP

        sink.demand.set("test", True)  # mid-GOP: the decoder catches up from the keyframe
        mark = stats.frames
        await eventually(lambda: sink.seq >= 2 * GOP, timeout=20)
        assert changes.frames == sink.seq and stats.frames_decoded >= sink.seq
        assert stats.frames - mark >= sink.seq

        sink.demand.set("test", False)
        off = stats.frames
        await eventually(lambda: stats.frames >= off + 2)  # a decode in flight is done
        decoded, seq = stats.frames_decoded, sink.seq
        await eventually(lambda: stats.frames >= off + 2 + 2 * GOP, timeout=20)
        assert stats.frames_decoded == decoded and sink.seq == seq
        assert stats.state == "live"
    finally:
        await source.stop()


async def test_with_demand_every_frame_is_decoded(clip: Path) -> None:
    sink = LatestFrame(on_demand=True)
    sink.demand.set("thumbnails", True)
    changes = ChangeTracker()
    source = await played(source_of(clip, sink, on_frame=changes))
    assert source.stats.frames == FRAMES
    assert source.stats.frames_decoded == FRAMES and sink.seq == FRAMES
    assert changes.frames == FRAMES
    assert source.pictures is not None and source.pictures.decoded == 0


async def test_a_snapshot_decodes_the_newest_picture_once(clip: Path) -> None:
    sink = LatestFrame(on_demand=True)
    source = await played(source_of(clip, sink))
    assert source.stats.frames == FRAMES and source.stats.frames_decoded == 0
    assert sink.pictures is source.pictures and source.pictures is not None

    jpeg = await _snapshot(sink)
    assert jpeg is not None
    assert source.pictures.decoded == GOP  # the last GOP, from its keyframe on
    again = await _snapshot(sink)
    assert again == jpeg and source.pictures.decoded == GOP
    pictures = file_pictures(clip)
    newest = await sink.newest()
    assert newest is not None and source.pictures.decoded == GOP
    exact = [np.array_equal(newest.to_ndarray(format="bgr24"), p) for p in pictures]
    assert exact.index(True) == FRAMES - 1  # the file's last frame, and no other
    picture = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert _diff(picture, pictures[-1]) < 3  # as JPEG


async def test_a_clip_of_a_passthrough_stream_is_its_packets_remuxed(
        clip: Path, tmp_path: Path) -> None:
    sink = LatestFrame(on_demand=True)
    source = source_of(clip, sink)
    assert source.gop is not None
    source.gop.retain(60)
    await played(source)
    units = source.gop.span(0, 2**62)
    assert len(units) == FRAMES and units[0].keyframe

    config = ClipsConfig(before=0, after=0, max_length=60, format="mp4")
    start, end = units[GOP + GOP // 2].at_ms, units[3 * GOP + 2].at_ms
    async with AlertStore(tmp_path / "s.sqlite3") as store:
        recorder = ClipRecorder(config, store, {"door": _Kept(sink)}, SystemClock(),
                                lambda name: False)
        await recorder._sample("door", _Kept(sink))
        assert source.gop.seconds >= config.buffer_s and "door" not in recorder.histories
        event = _firing(created_ms=end, first_match_ms=start)
        [event_id] = await store.record("motion", "door", AlertState(
            Status.FIRING, firing_since_ms=end, episode=1), [event])
        recorder.on_stored([replace(event, id=event_id)])
        await recorder.wait_idle()
        stored = await store.clip(event_id)
    assert stored is not None and stored.content_type == "video/mp4"
    span = source.gop.span(start, end)
    assert span[0].keyframe and span[0].at_ms <= start and span[-1].at_ms == end
    assert stored.frames == len(span) and stored.start_ms == span[0].at_ms
    assert stored.end_ms == end

    with av.open(io.BytesIO(stored.data)) as container:
        stream = container.streams.video[0]
        packets = [p for p in container.demux(stream) if p.size]
        assert len(packets) == len(span)
        nals = [_length_prefixed(bytes(p)) for p in packets]
    with av.open(io.BytesIO(stored.data)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == len(span)
    t0 = span[0].media_time
    assert [round(f.time * 1000) for f in frames] == [
        round((u.media_time - t0) * 1000) for u in span]
    # The camera's own bytes: every NAL unit as the source sent it, none re-encoded.
    assert nals == [split_nal_units(u.data) for u in span]
    assert source.stats.frames_decoded == 0 and source.pictures is not None
    assert source.pictures.decoded == 0


def test_webm_clips_of_packets_are_decoded_and_encoded(clip: Path) -> None:
    gop = GopBuffer(seconds=60)
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        gop.new_session(WIDTH, HEIGHT)
        annexb = AnnexB(stream)
        for packet in container.demux(stream):
            if packet.size:
                t = float(packet.pts * packet.time_base)
                for data, keyframe in annexb(packet):
                    gop.add(data, keyframe, t)
    units = gop.span(0, 2**62)
    made = gop_clip(units[:2 * GOP], "webm", 160)
    assert made.content_type == "video/webm" and made.frames == 2 * GOP
    with av.open(io.BytesIO(made.data)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 2 * GOP and frames[0].width == 160


def test_the_buffer_keeps_whole_gops_within_its_bounds() -> None:
    gop = GopBuffer(seconds=0)
    for n in range(3 * GOP):
        gop.add(b"\x00\x00\x00\x01" + bytes([n]) * 100, n % GOP == 0, n / FPS)
    assert len(gop) == GOP and gop.newest_gop()[0].keyframe  # only the current GOP
    small = GopBuffer(seconds=3600, max_bytes=5 * 104)
    assert small.add(b"\x00\x00\x00\x01" + b"x" * 100, False, 0.0) is None  # no keyframe yet
    for n in range(2 * GOP):
        small.add(b"\x00\x00\x00\x01" + b"x" * 100, n % GOP == 0, n / FPS)
    assert small.bytes <= 5 * 104 and (not len(small) or small.span(0, 2**62)[0].keyframe)


class _Kept:
    def __init__(self, frames: LatestFrame) -> None:
        self.frames = frames


def _firing(*, created_ms: int, first_match_ms: int) -> AlertEventRecord:
    t = Transition(Kind.FIRING, True, created_ms, 1)
    return AlertEventRecord.from_transition(
        "motion", "door", t, severity="warning", answer={"motion": True},
        extra={"first_match_ms": first_match_ms, "window_ms": 0, "streams": ["door"]})


def _length_prefixed(data: bytes) -> list[bytes]:
    nals, at = [], 0
    while at < len(data):
        size = int.from_bytes(data[at:at + 4], "big")
        nals.append(data[at + 4:at + 4 + size])
        at += 4 + size
    return nals


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


async def test_a_snapshot_of_h264_with_b_frames_is_the_newest_picture(tmp_path: Path) -> None:
    clip = write_clip(tmp_path / "high.mp4", profile="High", bframes=2, seconds=2)
    sink = LatestFrame(on_demand=True)
    source = await played(source_of(clip, sink, passthrough="always"))
    assert source.stats.path == "passthrough" and source.stats.frames_decoded == 0
    newest = await sink.newest()
    assert newest is not None
    last = file_pictures(clip)[-1]
    assert np.array_equal(newest.to_ndarray(format="bgr24"), last)
