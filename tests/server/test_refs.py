"""The ovs:// grammar: what parses, what is built, and every 422 the seed names."""

from __future__ import annotations

import pytest

from watcher.errors import RefError
from watcher.overshoot.refs import (
    Anchor,
    FrameRef,
    WindowRef,
    frame_url,
    parse_ref,
    window_url,
)

SID = "cc3e3f79-c5c4-4d1c-985e-028b42030569"


def test_seed_examples_parse() -> None:
    assert parse_ref(f"ovs://streams/{SID}?frame_index=-1", "image_url") == FrameRef(
        SID, Anchor("frame_index", -1))
    assert parse_ref(f"ovs://streams/{SID}?start_offset_ms=-5000", "video_url") == WindowRef(
        SID, Anchor("offset_ms", -5000))
    ref = parse_ref(f"ovs://streams/{SID}?start_offset_ms=-30000&end_frame_index=523&max_fps=2",
                    "video_url")
    assert ref == WindowRef(SID, Anchor("offset_ms", -30000), Anchor("frame_index", 523), 2.0)


def test_image_options() -> None:
    ref = parse_ref(f"ovs://streams/{SID}?timestamp_ms=1200&tolerance_ms=50&direction=backward",
                    "image_url")
    assert ref == FrameRef(SID, Anchor("timestamp_ms", 1200), 50, "backward")


@pytest.mark.parametrize(
    "url",
    [
        frame_url(SID, frame_index=-1),
        frame_url(SID, offset_ms=-2500, tolerance_ms=40, direction="forward"),
        frame_url(SID, timestamp_ms=99),
    ],
)
def test_frame_url_roundtrip(url: str) -> None:
    assert parse_ref(url, "image_url").url() == url


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start_offset_ms": -10_000},
        {"start_offset_ms": -10_000, "max_fps": 0.5},
        {"start_frame_index": 3, "end_timestamp_ms": 9000, "max_fps": 4},
        {"start_timestamp_ms": 0, "end_offset_ms": -1000},
    ],
)
def test_window_url_roundtrip(kwargs: dict) -> None:
    url = window_url(SID, **kwargs)
    assert parse_ref(url, "video_url").url() == url


@pytest.mark.parametrize(
    ("url", "part", "code", "fragment"),
    [
        ("https://x/streams/a?frame_index=1", "image_url", "stream_url_invalid", "ovs://"),
        ("ovs://stream/a?frame_index=1", "image_url", "stream_url_invalid", "ovs://"),
        ("ovs://streams/?frame_index=1", "image_url", "stream_url_invalid", "stream id"),
        ("ovs://streams/a/b?frame_index=1", "image_url", "stream_url_invalid", "segment"),
        ("ovs://streams/a?frame_index=1#x", "image_url", "stream_url_invalid", "fragment"),
        ("ovs://streams/a?frame_index=1&frame_index=2", "image_url", "query_param_invalid",
         "duplicate"),
        ("ovs://streams/a?frame_index=1&timestamp_ms=2", "image_url", "query_param_invalid",
         "only one"),
        ("ovs://streams/a?start_offset_ms=-1&start_frame_index=2", "video_url",
         "query_param_invalid", "only one"),
        ("ovs://streams/a?start_offset_ms=-9&end_offset_ms=-1&end_frame_index=2", "video_url",
         "query_param_invalid", "only one"),
        ("ovs://streams/a", "image_url", "query_param_invalid", "needs one anchor"),
        ("ovs://streams/a?tolerance_ms=5", "image_url", "query_param_invalid", "needs one anchor"),
        ("ovs://streams/a?max_fps=2", "video_url", "query_param_invalid", "start anchor"),
        ("ovs://streams/a?end_offset_ms=-1", "video_url", "query_param_invalid", "start anchor"),
        ("ovs://streams/a?frame_index=one", "image_url", "query_param_invalid", "integer"),
        ("ovs://streams/a?frame_index=1.5", "image_url", "query_param_invalid", "integer"),
        ("ovs://streams/a?frame_index=", "image_url", "query_param_invalid", "integer"),
        ("ovs://streams/a?frame_index", "image_url", "query_param_invalid", "key=value"),
        ("ovs://streams/a?timestamp_ms=1&tolerance_ms=0", "image_url", "query_param_invalid",
         "positive"),
        ("ovs://streams/a?timestamp_ms=1&direction=up", "image_url", "query_param_invalid",
         "direction"),
        ("ovs://streams/a?start_offset_ms=-1&max_fps=0", "video_url", "query_param_invalid",
         "max_fps"),
        ("ovs://streams/a?start_offset_ms=-1&max_fps=nan", "video_url", "query_param_invalid",
         "max_fps"),
        ("ovs://streams/a?start_offset_ms=-1&max_fps=-2", "video_url", "query_param_invalid",
         "max_fps"),
        ("ovs://streams/a?frame_index=-1&colour=red", "image_url", "query_param_invalid",
         "unknown"),
        ("ovs://streams/a?frame_index=-1", "video_url", "query_param_invalid", "start_*"),
        ("ovs://streams/a?start_offset_ms=-1", "image_url", "query_param_invalid",
         "frame_index"),
        ("ovs://streams/a?frame_index=99999999999999999999", "image_url",
         "query_param_invalid", "integer"),
    ],
)
def test_malformed_references_are_422(url: str, part: str, code: str, fragment: str) -> None:
    with pytest.raises(RefError) as info:
        parse_ref(url, part)  # type: ignore[arg-type]
    assert info.value.status == 422
    assert info.value.code == code
    assert fragment in info.value.message


def test_builders_reject_bad_arguments() -> None:
    with pytest.raises(ValueError):
        frame_url(SID)
    with pytest.raises(ValueError):
        frame_url(SID, frame_index=1, offset_ms=2)
    with pytest.raises(ValueError):
        window_url(SID, end_offset_ms=-1)
    with pytest.raises(ValueError):
        window_url(SID, start_offset_ms=-1, max_fps=0)
    with pytest.raises(ValueError):
        frame_url("not a/valid id", frame_index=-1)
