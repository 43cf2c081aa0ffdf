"""The resolver on a stream with known frame times (injected clock, no WebRTC)."""

from __future__ import annotations

import itertools
import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watcher.clock import ManualClock
from watcher.errors import RefError
from watcher.overshoot.refs import parse_ref
from watcher.server.frames import StoredFrame
from watcher.server.resolve import resolve, sample
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


def failure(stream: Stream, clock: ManualClock, query: str, part: str = "image_url",
            ) -> RefError:
    with pytest.raises(RefError) as info:
        resolve(parse_ref(f"ovs://streams/{stream.id}?{query}", part), stream,  # type: ignore[arg-type]
                clock.now_ms())
    assert info.value.status == 422
    return info.value


def error(stream: Stream, clock: ManualClock, query: str, part: str = "image_url") -> str:
    return failure(stream, clock, query, part).code


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
    assert video(stream, clock, "start_frame_index=1&end_frame_index=6&max_fps=100") == [4, 5]
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


def test_frame_index_ignores_tolerance_and_direction_even_invalid_ones() -> None:
    stream, clock = make_stream(TEN, now_after_ms=5000)  # the newest frame is 5 s old
    assert image(stream, clock, "frame_index=-1&tolerance_ms=0") == (9, 1800)
    assert image(stream, clock, "frame_index=-1&tolerance_ms=1&direction=forward") == (9, 1800)
    assert image(stream, clock, "frame_index=3&direction=sideways") == (3, 600)
    ref = parse_ref(f"ovs://streams/{stream.id}?frame_index=-1&tolerance_ms=-5", "image_url")
    assert ref.url() == f"ovs://streams/{stream.id}?frame_index=-1"


def test_timestamp_edges_hold_tolerance_and_reject_future() -> None:
    stream, clock = make_stream(TEN, now_after_ms=150)  # now = 1950, newest frame at 1800
    assert image(stream, clock, "timestamp_ms=-40") == (0, 0)
    assert image(stream, clock, "timestamp_ms=-100") == (0, 0)
    assert error(stream, clock, "timestamp_ms=-101") == "frame_not_found"
    assert image(stream, clock, "timestamp_ms=1900") == (9, 1800)  # within tolerance of newest
    assert error(stream, clock, "timestamp_ms=1950") == "frame_not_found"  # 150 ms past it
    assert image(stream, clock, "timestamp_ms=1950&tolerance_ms=150") == (9, 1800)
    assert error(stream, clock, "timestamp_ms=1951") == "frame_not_yet_produced"


def test_offset_anchor() -> None:
    stream, clock = make_stream(TEN, now_after_ms=50)  # now = 1850
    assert image(stream, clock, "offset_ms=0") == (9, 1800)
    assert image(stream, clock, "offset_ms=-450") == (7, 1400)  # target 1400
    assert image(stream, clock, "offset_ms=-1000") == (4, 800)  # target 850
    assert image(stream, clock, "offset_ms=-950") == (5, 1000)  # target 900: a tie
    assert error(stream, clock, "offset_ms=-60000") == "frame_not_found"


def test_stalled_publisher_live_edge_holds_tolerance() -> None:
    stream, clock = make_stream(TEN, now_after_ms=3000)  # now = 4800, newest frame at 1800
    problem = failure(stream, clock, "offset_ms=0")
    assert problem.code == "frame_not_found"
    assert "frame 9 at stream time 1800 ms" in problem.message  # the caller can widen
    assert "3000 ms away" in problem.message
    assert image(stream, clock, "offset_ms=0&tolerance_ms=3000") == (9, 1800)
    assert image(stream, clock, "frame_index=-1") == (9, 1800)  # the newest, however old
    # forward from a target past the newest frame: nothing can come after it.
    problem = failure(stream, clock, "offset_ms=-2990&tolerance_ms=5000&direction=forward")
    assert problem.code == "frame_not_found"
    assert "the newest frame is frame 9 at stream time 1800 ms" in problem.message
    assert image(stream, clock, "offset_ms=-2990&tolerance_ms=5000&direction=backward") == (
        9, 1800)


def test_direction_never_crosses_the_target() -> None:
    stream, clock = make_stream(TEN, now_after_ms=100)  # now = 1900
    # Target 900: forward with a 1 ms tolerance may not fall back to the frame at 800.
    assert error(stream, clock, "offset_ms=-1000&tolerance_ms=1&direction=forward") == (
        "frame_not_found")
    assert error(stream, clock, "offset_ms=-1000&tolerance_ms=1&direction=backward") == (
        "frame_not_found")
    assert image(stream, clock, "offset_ms=-1000&tolerance_ms=100&direction=forward") == (
        5, 1000)
    assert image(stream, clock, "offset_ms=-1000&tolerance_ms=100&direction=backward") == (
        4, 800)
    # Before the oldest frame: backward has nothing, forward takes it within tolerance.
    problem = failure(stream, clock, "timestamp_ms=-50&direction=backward")
    assert problem.code == "frame_not_found"
    assert "the oldest retained frame is frame 0 at stream time 0 ms" in problem.message
    assert image(stream, clock, "timestamp_ms=-50&direction=forward") == (0, 0)
    # Every answer lies on the allowed side of its target, or fails.
    for target in range(-300, 1901, 7):  # up to now
        for direction in ("forward", "backward", "nearest"):
            for tolerance in (1, 60, 150):
                query = f"timestamp_ms={target}&direction={direction}&tolerance_ms={tolerance}"
                try:
                    _, ts = image(stream, clock, query)
                except RefError as exc:
                    assert exc.code == "frame_not_found", query
                    continue
                assert abs(ts - target) <= tolerance, query
                assert direction != "forward" or ts >= target, query
                assert direction != "backward" or ts <= target, query


def test_positive_and_zero_offsets() -> None:
    stream, clock = make_stream(TEN, retention_s=1, now_after_ms=100)  # frames 5..9, now 1900
    assert stream.frames.first is not None and stream.frames.first.timestamp_ms == 1000
    assert image(stream, clock, "offset_ms=200") == (6, 1200)  # 200 ms after the oldest frame
    assert image(stream, clock, "offset_ms=0") == (9, 1800)  # now
    assert video(stream, clock, "start_offset_ms=0&max_fps=100") == [5, 6, 7, 8, 9]
    assert video(stream, clock, "start_offset_ms=0&end_offset_ms=600&max_fps=100") == [5, 6, 7]
    assert video(stream, clock, "start_offset_ms=-500&end_offset_ms=0&max_fps=100") == [7, 8, 9]
    assert video(stream, clock, "start_offset_ms=400&end_offset_ms=-300&max_fps=100") == [7]
    assert error(stream, clock, "offset_ms=901") == "frame_not_yet_produced"  # past now
    assert error(stream, clock, "start_offset_ms=0&end_offset_ms=1200", "video_url") == (
        "frame_not_yet_produced")


def test_docs_offset_examples() -> None:
    times = [200 * i for i in range(3001)]  # 5 fps for 600 s, all retained
    stream, clock = make_stream(times)  # now = 600000
    first_five = video(stream, clock, "start_offset_ms=0&end_offset_ms=300000&max_fps=5")
    assert first_five == list(range(0, 1500))  # [0, 300000) ms
    last_ten = video(stream, clock, "start_offset_ms=-10000&end_offset_ms=0&max_fps=5")
    assert last_ten == list(range(2950, 3001))  # [590000, now]: the newest included


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
        range(70, 75))
    assert video(stream, clock, "start_frame_index=10&end_timestamp_ms=1500&max_fps=10") == list(
        range(10, 15))
    assert video(stream, clock, "start_timestamp_ms=2000&end_offset_ms=-7500&max_fps=10") == list(
        range(20, 25))
    assert video(stream, clock, "start_frame_index=-3&max_fps=10") == [98, 99, 100]


def test_end_anchors_are_exclusive() -> None:
    stream, clock = make_stream(TEN)  # frames 0..9, now = 1800
    assert video(stream, clock, "start_frame_index=0&end_frame_index=5&max_fps=100") == [
        0, 1, 2, 3, 4]
    assert video(stream, clock, "start_frame_index=3&end_frame_index=4&max_fps=100") == [3]
    assert video(stream, clock, "start_frame_index=0&end_timestamp_ms=1000&max_fps=100") == [
        0, 1, 2, 3, 4]
    assert video(stream, clock, "start_frame_index=0&end_timestamp_ms=1001&max_fps=100") == [
        0, 1, 2, 3, 4, 5]
    # Through the newest: an end index just past it, no end, or an end at now.
    assert video(stream, clock, "start_frame_index=7&end_frame_index=10&max_fps=100") == [
        7, 8, 9]
    assert video(stream, clock, "start_frame_index=-3&end_frame_index=-1&max_fps=100") == [7, 8]
    assert video(stream, clock, "start_frame_index=7&end_offset_ms=0&max_fps=100") == [7, 8, 9]
    assert video(stream, clock, "start_frame_index=7&end_timestamp_ms=1800&max_fps=100") == [
        7, 8, 9]
    assert error(stream, clock, "start_frame_index=7&end_frame_index=11", "video_url") == (
        "frame_not_yet_produced")
    assert error(stream, clock, "start_frame_index=4&end_frame_index=4", "video_url") == (
        "segment_invalid")
    assert error(stream, clock, "start_timestamp_ms=800&end_frame_index=4", "video_url") == (
        "segment_invalid")


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
    assert error(stream, clock, "start_offset_ms=5000", "video_url") == "frame_not_yet_produced"
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


# -- max_fps sampling ------------------------------------------------------------------------------
def frames_at(times_ms: list[int]) -> list[StoredFrame]:
    return [StoredFrame(i, t, b"") for i, t in enumerate(times_ms)]


def kept_times(times_ms: list[int], max_fps: float) -> list[int]:
    return [f.timestamp_ms for f in sample(frames_at(times_ms), max_fps)]


def test_sampling_drops_frames_closer_than_half_an_interval() -> None:
    assert kept_times([0, 1, 2000], 1) == [1, 2000]
    stream, clock = make_stream([0, 1, 2000])
    assert video(stream, clock, "start_timestamp_ms=0") == [1, 2]
    # A steady stream whose period divides the interval is kept exactly one interval apart.
    assert kept_times([100 * i for i in range(31)], 2) == list(range(0, 3001, 500))
    assert kept_times([0, 400, 1000], 1) == [0, 1000]  # 600 ms: at least half of 1 s
    assert kept_times([0, 600, 1000], 1) == [0, 1000]  # 600 shares the newest's bucket
    assert kept_times([0, 1500, 1999, 3000], 1) == [0, 1999, 3000]  # 1500: bucket 1 taken


@settings(max_examples=400, deadline=None)
@given(gaps=st.lists(st.integers(1, 3000), min_size=0, max_size=60),
       max_fps=st.floats(0.01, 60, allow_nan=False, allow_infinity=False))
def test_sampling_bound_and_spacing(gaps: list[int], max_fps: float) -> None:
    times = list(itertools.accumulate([0, *gaps]))
    kept = kept_times(times, max_fps)
    span_s = Fraction(times[-1] - times[0], 1000)
    assert len(kept) <= math.floor(span_s * Fraction(max_fps)) + 1
    assert kept[-1] == times[-1]  # the live edge
    assert set(kept) <= set(times) and kept == sorted(kept)
    half_interval = Fraction(1000) / (2 * Fraction(max_fps))
    assert all(b - a >= half_interval for a, b in itertools.pairwise(kept))
