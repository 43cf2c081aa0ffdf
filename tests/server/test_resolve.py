"""The resolver on a stream with known frame times (injected clock, no WebRTC)."""

from __future__ import annotations

import pytest

from watcher.clock import ManualClock
from watcher.errors import RefError
from watcher.overshoot.refs import parse_ref
from watcher.server.resolve import resolve
from watcher.server.streams import Stream, StreamRegistry, StreamSettings


def make_stream(times_ms: list[int], *, retention_s: int = 600, now_after_ms: int = 0,
                ) -> tuple[Stream, ManualClock]:
    """A stream whose frames arrived at ``times_ms`` of stream time."""
    clock = ManualClock()
    registry = StreamRegistry(clock, StreamSettings(retention_seconds=retention_s,
                                                    ttl_seconds=10_000))
    stream = registry.create("owner")
    start = clock.now_ms()
    for t in times_ms:
        clock._now = start + t
        registry.add_frame(stream, f"jpeg{t}".encode())
    clock._now = start + times_ms[-1] + now_after_ms
    stream.frames.evict(stream.stream_time_ms(clock.now_ms()))
    return stream, clock


def image(stream: Stream, clock: ManualClock, query: str) -> tuple[int, int]:
    media = resolve(parse_ref(f"ovs://streams/{stream.id}?{query}", "image_url"), stream,
                    clock.now_ms())
    (frame,) = media.frames
    return frame.index, frame.timestamp_ms


def video(stream: Stream, clock: ManualClock, query: str) -> list[int]:
    media = resolve(parse_ref(f"ovs://streams/{stream.id}?{query}", "video_url"), stream,
                    clock.now_ms())
    return [f.index for f in media.frames]


def error(stream: Stream, clock: ManualClock, query: str, part: str = "image_url") -> str:
    with pytest.raises(RefError) as info:
        resolve(parse_ref(f"ovs://streams/{stream.id}?{query}", part), stream,  # type: ignore[arg-type]
                clock.now_ms())
    assert info.value.status == 422
    return info.value.code


# Ten frames, 200 ms apart: index i at t = 200*i (0..1800 ms).
TEN = [200 * i for i in range(10)]


def test_frame_index_exact_negative_and_future() -> None:
    stream, clock = make_stream(TEN)
    assert image(stream, clock, "frame_index=3") == (3, 600)
    assert image(stream, clock, "frame_index=-1") == (9, 1800)
    assert image(stream, clock, "frame_index=-10") == (0, 0)
    assert image(stream, clock, "frame_index=-500") == (0, 0)  # older than everything: clamps
    assert error(stream, clock, "frame_index=10") == "frame_not_yet_produced"


def test_old_frame_index_clamps_to_oldest_retained() -> None:
    # Retention 1 s: at stream time 1800 frames before 800 ms are evicted.
    stream, clock = make_stream(TEN, retention_s=1)
    first = stream.frames.first
    assert first is not None and first.index == 4
    assert image(stream, clock, "frame_index=0") == (4, 800)
    assert video(stream, clock, "start_frame_index=1&max_fps=100") == [4, 5, 6, 7, 8, 9]
    assert error(stream, clock, "start_frame_index=0&end_frame_index=2", "video_url") == (
        "segment_empty")


def test_timestamp_tolerance_and_direction() -> None:
    stream, clock = make_stream(TEN)
    assert image(stream, clock, "timestamp_ms=600") == (3, 600)  # exact
    assert image(stream, clock, "timestamp_ms=640") == (3, 600)  # nearest, earlier
    assert image(stream, clock, "timestamp_ms=680") == (3, 600)  # nearest, earlier
    assert image(stream, clock, "timestamp_ms=720") == (4, 800)  # nearest, later
    assert image(stream, clock, "timestamp_ms=700") == (4, 800)  # tie goes to the later
    assert image(stream, clock, "timestamp_ms=720&direction=forward") == (4, 800)
    assert image(stream, clock, "timestamp_ms=680&direction=backward") == (3, 600)
    assert image(stream, clock, "timestamp_ms=620&direction=backward") == (3, 600)
    assert image(stream, clock, "timestamp_ms=780&direction=forward") == (4, 800)
    assert error(stream, clock, "timestamp_ms=640&direction=forward&tolerance_ms=100") == (
        "frame_not_found")
    assert image(stream, clock, "timestamp_ms=640&direction=forward&tolerance_ms=160") == (
        4, 800)
    assert error(stream, clock, "timestamp_ms=700&tolerance_ms=50") == "frame_not_found"
    # tolerance and direction are ignored with frame_index
    assert image(stream, clock, "frame_index=2&tolerance_ms=1&direction=forward") == (2, 400)


def test_timestamp_edges_clamp_old_and_reject_future() -> None:
    stream, clock = make_stream(TEN, now_after_ms=150)  # now = 1950, newest frame at 1800
    assert image(stream, clock, "timestamp_ms=-40") == (0, 0)
    assert image(stream, clock, "timestamp_ms=1900") == (9, 1800)  # live edge
    assert image(stream, clock, "timestamp_ms=1950") == (9, 1800)
    assert error(stream, clock, "timestamp_ms=1951") == "frame_not_yet_produced"


def test_offset_anchor() -> None:
    stream, clock = make_stream(TEN, now_after_ms=100)  # now = 1900
    assert image(stream, clock, "offset_ms=0") == (9, 1800)
    assert image(stream, clock, "offset_ms=-500") == (7, 1400)  # target 1400
    assert image(stream, clock, "offset_ms=-1050") == (4, 800)  # target 850
    assert image(stream, clock, "offset_ms=-1000") == (5, 1000)  # target 900: a tie
    assert image(stream, clock, "offset_ms=-60000") == (0, 0)
    assert error(stream, clock, "offset_ms=1") == "frame_not_yet_produced"


def test_window_by_offset_with_max_fps() -> None:
    times = [100 * i for i in range(101)]  # 10 fps for 10 s
    stream, clock = make_stream(times)  # now = 10000
    every = video(stream, clock, "start_offset_ms=-2000&max_fps=100")
    assert every == list(range(80, 101))
    one_fps = video(stream, clock, "start_offset_ms=-10000")  # default max_fps 1
    assert one_fps == list(range(0, 101, 10))
    assert video(stream, clock, "start_offset_ms=-4000&max_fps=2") == [60, 65, 70, 75, 80, 85,
                                                                       90, 95, 100]
    assert video(stream, clock, "start_offset_ms=-4000&max_fps=0.5") == [60, 80, 100]


def test_window_mixed_anchors_and_explicit_ends() -> None:
    times = [100 * i for i in range(101)]
    stream, clock = make_stream(times)
    assert video(stream, clock, "start_offset_ms=-3000&end_frame_index=75&max_fps=10") == list(
        range(70, 76))
    assert video(stream, clock, "start_frame_index=10&end_timestamp_ms=1500&max_fps=10") == list(
        range(10, 16))
    assert video(stream, clock, "start_timestamp_ms=2000&end_offset_ms=-7500&max_fps=10") == list(
        range(20, 26))
    assert video(stream, clock, "start_frame_index=-3&max_fps=10") == [98, 99, 100]


def test_window_errors() -> None:
    times = [100 * i for i in range(50)]
    stream, clock = make_stream(times)  # now = 4900
    assert error(stream, clock, "start_frame_index=10&end_frame_index=10", "video_url") == (
        "segment_invalid")
    assert error(stream, clock, "start_offset_ms=-1000&end_offset_ms=-2000", "video_url") == (
        "segment_invalid")
    assert error(stream, clock, "start_timestamp_ms=3000&end_frame_index=20", "video_url") == (
        "segment_invalid")
    assert error(stream, clock, "start_frame_index=60", "video_url") == "frame_not_yet_produced"
    assert error(stream, clock, "start_offset_ms=-100&end_frame_index=99", "video_url") == (
        "frame_not_yet_produced")
    assert error(stream, clock, "start_offset_ms=500", "video_url") == "frame_not_yet_produced"
    assert error(stream, clock, "start_timestamp_ms=1010&end_timestamp_ms=1090",
                 "video_url") == "segment_empty"


def test_stream_without_frames() -> None:
    clock = ManualClock()
    registry = StreamRegistry(clock, StreamSettings())
    stream = registry.create("owner")
    with pytest.raises(RefError) as info:
        resolve(parse_ref(f"ovs://streams/{stream.id}?frame_index=-1", "image_url"), stream,
                clock.now_ms())
    assert info.value.code == "frame_not_yet_produced"


def test_all_frames_evicted() -> None:
    stream, clock = make_stream(TEN, retention_s=1, now_after_ms=5000)
    assert len(stream.frames) == 0
    assert error(stream, clock, "frame_index=-1") == "frame_evicted"
