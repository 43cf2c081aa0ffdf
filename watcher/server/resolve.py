"""Resolve a parsed ovs:// reference to retained frames, by the seed's rules.

* Negative ``frame_index`` counts back from the newest frame (-1 = newest);
  ``offset_ms`` counts from now on the stream clock.
* Old clamps: an anchor older than the oldest retained frame resolves to it.
* Future fails: a frame index past the newest, or a time past now, is a 422
  ``frame_not_yet_produced``. A time between the newest frame and now is the
  live edge and resolves to the newest frame.
* ``timestamp_ms``/``offset_ms`` of an image snap to a frame within
  ``tolerance_ms``: an exact match first, else the nearest frame on the side
  ``direction`` allows (``nearest`` takes the later one on a tie); none within
  tolerance is a 422 ``frame_not_found``.
* A window covers the retained frames with ``start <= t <= end`` (end default:
  now). An end at or before the start is ``segment_invalid``; a window with no
  retained frame is ``segment_empty``. ``max_fps`` keeps at most one frame per
  ``1/max_fps`` seconds, counted back from the newest frame in the window, so
  the live edge is always included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from watcher.errors import RefError
from watcher.overshoot.refs import Anchor, FrameRef, Ref, WindowRef
from watcher.server.frames import FrameStore, StoredFrame
from watcher.server.streams import Stream


@dataclass(frozen=True, slots=True)
class ResolvedMedia:
    """The frames one image_url/video_url content part resolved to, oldest first."""

    part_type: Literal["image_url", "video_url"]
    stream_id: str
    url: str
    frames: tuple[StoredFrame, ...]


def resolve(ref: Ref, stream: Stream, now_ms: int) -> ResolvedMedia:
    frames = stream.frames
    if frames.next_index == 0:
        raise _stream_error("the stream has not produced a frame yet", "frame_not_yet_produced")
    if not len(frames):
        raise _stream_error("no frames are retained for this stream", "frame_evicted")
    stream_now = max(stream.stream_time_ms(now_ms), frames.last.timestamp_ms)  # type: ignore[union-attr]
    if isinstance(ref, FrameRef):
        frame = _resolve_frame(ref, frames, stream_now)
        return ResolvedMedia("image_url", stream.id, ref.url(), (frame,))
    selected = _resolve_window(ref, frames, stream_now)
    return ResolvedMedia("video_url", stream.id, ref.url(), selected)


def _resolve_frame(ref: FrameRef, frames: FrameStore, stream_now: int) -> StoredFrame:
    first, last = frames.first, frames.last
    assert first is not None and last is not None
    if ref.anchor.kind == "frame_index":
        index = _absolute_index(ref.anchor.value, last.index)
        return frames.by_index(max(index, first.index))  # type: ignore[return-value]
    target = _target_time(ref.anchor, stream_now)
    if target <= first.timestamp_ms:
        return first
    if target >= last.timestamp_ms:
        return last
    pos = frames.position_at_or_after(target)
    after, before = frames.at(pos), frames.at(pos - 1)
    if after.timestamp_ms == target:
        return after
    candidates = {
        "forward": [after],
        "backward": [before],
        "nearest": [after, before],
    }[ref.direction]
    within = [f for f in candidates if abs(f.timestamp_ms - target) <= ref.tolerance_ms]
    if not within:
        raise _stream_error(
            f"no frame within {ref.tolerance_ms} ms {ref.direction} of stream time {target} ms",
            "frame_not_found",
        )
    return min(within, key=lambda f: (abs(f.timestamp_ms - target), -f.timestamp_ms))


def _resolve_window(ref: WindowRef, frames: FrameStore, stream_now: int) -> tuple[StoredFrame, ...]:
    first, last = frames.first, frames.last
    assert first is not None and last is not None
    start, end = ref.start, ref.end
    if start.kind == "frame_index" and end is not None and end.kind == "frame_index":
        start_index = _absolute_index(start.value, last.index)
        end_index = _absolute_index(end.value, last.index)
        if end_index <= start_index:
            raise _segment_invalid()
        if end_index < first.index:
            raise _segment_empty()
        start_ts = frames.by_index(max(start_index, first.index)).timestamp_ms  # type: ignore[union-attr]
        end_ts = frames.by_index(end_index).timestamp_ms  # type: ignore[union-attr]
    else:
        start_ts = _window_time(start, frames, stream_now, is_end=False)
        end_ts = stream_now if end is None else _window_time(end, frames, stream_now, is_end=True)
        if end_ts <= start_ts:
            raise _segment_invalid()
    pos_from = frames.position_at_or_after(max(start_ts, first.timestamp_ms))
    pos_to = frames.position_at_or_after(end_ts + 1)
    window = frames.window(pos_from, pos_to)
    if not window:
        raise _segment_empty()
    return _sample(window, ref.max_fps)


def _window_time(anchor: Anchor, frames: FrameStore, stream_now: int, *, is_end: bool) -> int:
    """An anchor of a window as stream time; evicted indices map before the oldest frame."""
    first, last = frames.first, frames.last
    assert first is not None and last is not None
    if anchor.kind != "frame_index":
        return _target_time(anchor, stream_now)
    index = _absolute_index(anchor.value, last.index)
    if index < first.index:
        # Evicted: a start clamps to the oldest frame; an end lies before everything retained.
        return first.timestamp_ms - (1 if is_end else 0)
    return frames.by_index(index).timestamp_ms  # type: ignore[union-attr]


def _sample(window: list[StoredFrame] | tuple[StoredFrame, ...], max_fps: float,
            ) -> tuple[StoredFrame, ...]:
    interval_ms = 1000.0 / max_fps
    newest = window[-1].timestamp_ms
    kept: list[StoredFrame] = []
    last_bucket = -1
    for frame in reversed(window):
        bucket = int((newest - frame.timestamp_ms) // interval_ms)
        if bucket != last_bucket:
            kept.append(frame)
            last_bucket = bucket
    kept.reverse()
    return tuple(kept)


def _absolute_index(value: int, last_index: int) -> int:
    index = last_index + 1 + value if value < 0 else value
    if index > last_index:
        raise _stream_error(
            f"frame {index} has not been produced yet (newest is {last_index})",
            "frame_not_yet_produced",
        )
    return index


def _target_time(anchor: Anchor, stream_now: int) -> int:
    target = anchor.value + stream_now if anchor.kind == "offset_ms" else anchor.value
    if target > stream_now:
        raise _stream_error(
            f"stream time {target} ms is in the future (now is {stream_now} ms)",
            "frame_not_yet_produced",
        )
    return target


def _stream_error(message: str, code: str) -> RefError:
    return RefError(message, code=code, status=422, type="stream_error")


def _segment_invalid() -> RefError:
    return _stream_error("the segment ends at or before its start", "segment_invalid")


def _segment_empty() -> RefError:
    return _stream_error("no retained frame lies in the segment", "segment_empty")
