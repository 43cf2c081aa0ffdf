"""Resolve a parsed ovs:// reference to retained frames, by the seed's rules.

Where the seed is silent, Overshoot's published docs decide.

* ``frame_index`` counts stored frames over the stream's life; a negative one
  counts back from the newest (-1 = the newest, however old). An index older
  than the oldest retained frame clamps to it; one past the newest is a 422
  ``frame_not_yet_produced``. ``tolerance_ms``/``direction`` do not apply.
* Offsets: a negative offset counts back from now (the stream clock at request
  time); a positive one counts forward from the oldest retained frame; 0 is
  now for ``offset_ms``/``end_offset_ms`` and the oldest retained frame for
  ``start_offset_ms``. A time past now is a 422 ``frame_not_yet_produced``.
* A time anchor of an image (``timestamp_ms``/``offset_ms``) takes the frame
  nearest the target within ``tolerance_ms`` on the side ``direction`` allows:
  ``forward`` never a frame before the target, ``backward`` never one after it,
  ``nearest`` either (the later one on a tie). This holds at both ends too: a
  stalled publisher does not make ``offset_ms=0`` answer an old frame. No such
  frame is a 422 ``frame_not_found`` naming the nearest frame's stream time.
* A window is ``[start, end)``: the end is exclusive (``start_frame_index=0&
  end_frame_index=5`` is frames 0-4). Without an end, or with an end at now,
  it runs to the live edge and includes the newest frame. A start older than
  the oldest retained frame clamps to it. An end at or before the start is
  ``segment_invalid``; a window with no retained frame is ``segment_empty``.
  :func:`sample` then applies ``max_fps``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

from watcher.errors import RefError
from watcher.overshoot.refs import Anchor, FrameRef, Ref, WindowRef
from watcher.server.frames import FrameStore, StoredFrame
from watcher.server.streams import Stream

AnchorRole = Literal["point", "start", "end"]


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
    target = _anchor_time(ref.anchor, frames, stream_now, "point")
    pos = frames.position_at_or_after(target)
    after = frames.at(pos) if pos < len(frames) else None  # first frame at or after the target
    before = after if after is not None and after.timestamp_ms == target else (
        frames.at(pos - 1) if pos > 0 else None)  # last frame at or before the target
    allowed = {"forward": [after], "backward": [before], "nearest": [after, before]}[ref.direction]
    candidates = [f for f in allowed if f is not None]
    within = [f for f in candidates if abs(f.timestamp_ms - target) <= ref.tolerance_ms]
    if within:
        return min(within, key=lambda f: (abs(f.timestamp_ms - target), -f.timestamp_ms))
    raise _stream_error(_not_found_message(ref, target, candidates, first, last),
                        "frame_not_found")


def _not_found_message(ref: FrameRef, target: int, candidates: list[StoredFrame],
                       first: StoredFrame, last: StoredFrame) -> str:
    side = {"forward": "at or after", "backward": "at or before", "nearest": "of"}[ref.direction]
    head = f"no frame within tolerance_ms={ref.tolerance_ms} {side} stream time {target} ms"
    if candidates:
        nearest = min(candidates, key=lambda f: (abs(f.timestamp_ms - target), -f.timestamp_ms))
        gap = abs(nearest.timestamp_ms - target)
        return (f"{head}; the nearest is frame {nearest.index} at stream time "
                f"{nearest.timestamp_ms} ms, {gap} ms away (raise tolerance_ms to reach it)")
    edge = last if ref.direction == "forward" else first
    side = "newest" if ref.direction == "forward" else "oldest retained"
    return (f"{head}; the {side} frame is frame {edge.index} at stream time "
            f"{edge.timestamp_ms} ms")


def _resolve_window(ref: WindowRef, frames: FrameStore, stream_now: int) -> tuple[StoredFrame, ...]:
    first, last = frames.first, frames.last
    assert first is not None and last is not None
    start, end = ref.start, ref.end
    # Each bound as (position among retained frames, stream time for ordering checks).
    if start.kind == "frame_index":
        start_index = _absolute_index(start.value, last.index)
        if start_index < first.index:  # evicted: clamps to the oldest retained frame
            pos_from, start_time = 0, -math.inf
        else:
            pos_from = start_index - first.index
            start_time = frames.at(pos_from).timestamp_ms
    else:
        start_time = _anchor_time(start, frames, stream_now, "start")
        pos_from = frames.position_at_or_after(int(start_time))
    if end is None:
        pos_to, end_time = len(frames), math.inf
    elif end.kind == "frame_index":
        end_index = _absolute_index(end.value, last.index, exclusive=True)
        if start.kind == "frame_index" and end_index <= start_index:
            raise _segment_invalid()
        if end_index > last.index:
            pos_to, end_time = len(frames), math.inf
        elif end_index < first.index:  # evicted: the window ends before everything retained
            pos_to, end_time = 0, first.timestamp_ms
        else:
            pos_to = end_index - first.index
            end_time = frames.at(pos_to).timestamp_ms
    else:
        end_time = _anchor_time(end, frames, stream_now, "end")
        # An end at now is the live edge: it includes a frame stored this very millisecond.
        pos_to = (len(frames) if end_time >= stream_now
                  else frames.position_at_or_after(int(end_time)))
    if end_time <= start_time:
        raise _segment_invalid()
    if pos_to <= pos_from:
        raise _segment_empty()
    return sample(frames.window(pos_from, pos_to), ref.max_fps)


def sample(window: Sequence[StoredFrame], max_fps: float) -> tuple[StoredFrame, ...]:
    """Thin a window's frames (oldest first) to ``max_fps``; what is kept, oldest first.

    Let ``I = 1/max_fps`` s and cut time into buckets ``I`` long counted back from
    the window's newest frame: ``(newest - I, newest]``, ``(newest - 2I, newest - I]``,
    and so on. Walking from the newest frame back, a frame is kept when no frame of
    its bucket is kept yet and it lies at least ``I/2`` before the frame kept last.
    So, exactly:

    * the newest frame (the live edge) is always kept;
    * at most one frame per bucket: a window whose frames span ``S`` seconds (oldest
      to newest) keeps at most ``floor(S * max_fps) + 1`` frames;
    * no two kept frames are closer than ``I/2`` (frames 0, 1 and 2000 ms at
      ``max_fps=1`` keep 1 and 2000);
    * a steady stream whose frame period divides ``I`` is kept exactly ``I`` apart.

    Two kept frames may be up to ``2I`` apart where the stream has no frame in
    between. The arithmetic is exact (integers over ``max_fps`` as a fraction), so
    rounding cannot add a frame.
    """
    if not window:
        return ()
    rate = Fraction(max_fps)  # frames per second as num/den: age_ms * num // (1000 * den)
    per_ms, per_bucket = rate.numerator, 1000 * rate.denominator
    newest = window[-1].timestamp_ms
    kept: list[StoredFrame] = [window[-1]]
    kept_bucket = 0
    for frame in reversed(window[:-1]):
        bucket = (newest - frame.timestamp_ms) * per_ms // per_bucket
        if bucket == kept_bucket:
            continue
        if 2 * (kept[-1].timestamp_ms - frame.timestamp_ms) * per_ms < per_bucket:
            continue  # closer than I/2 to the frame kept last
        kept.append(frame)
        kept_bucket = bucket
    kept.reverse()
    return tuple(kept)


def _absolute_index(value: int, last_index: int, *, exclusive: bool = False) -> int:
    """A lifetime index from a possibly negative one; past the newest is 422.

    An exclusive end may name the index right after the newest ("through the newest").
    """
    index = last_index + 1 + value if value < 0 else value
    if index > last_index + (1 if exclusive else 0):
        raise _stream_error(
            f"frame {index} has not been produced yet (newest is {last_index})",
            "frame_not_yet_produced",
        )
    return index


def _anchor_time(anchor: Anchor, frames: FrameStore, stream_now: int, role: AnchorRole) -> int:
    """A ``timestamp_ms``/``offset_ms`` anchor as stream time; past now is 422."""
    value = anchor.value
    if anchor.kind == "timestamp_ms":
        target = value
    elif value < 0 or (value == 0 and role != "start"):
        target = stream_now + value  # back from now; 0 is now
    else:
        first = frames.first
        assert first is not None
        target = first.timestamp_ms + value  # forward from the oldest retained frame
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
