"""Retained frames of one stream: compressed, time-bounded and byte-bounded.

Frames are kept as JPEG in arrival order. ``frame_index`` is a lifetime
counter that eviction never resets, so the frame with index ``n`` sits at a
computable position and lookups by index are O(1); lookups by stream time are
a binary search.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

RECENT_FPS_WINDOW_MS = 5_000
TRIM_AFTER = 64
"""Evicted frames whose references are dropped together (at most this many linger)."""
RATE_CAP_TOLERANCE = 0.25
"""Fraction of a :class:`StoredRateCap` interval a frame may arrive early and still fill a slot."""


@dataclass(frozen=True, slots=True)
class StoredFrame:
    index: int
    timestamp_ms: int
    """Stream clock: milliseconds since the stream's first frame."""
    jpeg: bytes


class FrameStore:
    """Frames of one stream, evicted when older than ``retention_ms`` or over ``max_bytes``."""

    def __init__(self, retention_ms: int, max_bytes: int) -> None:
        self.retention_ms = retention_ms
        self.max_bytes = max_bytes
        self._frames: list[StoredFrame] = []
        self._head = 0  # position of the oldest retained frame in _frames
        self._bytes = 0
        self.next_index = 0
        self.evicted_count = 0
        self.byte_cap_evictions = 0
        """Frames evicted by ``max_bytes`` while still inside retention: retention fell short."""
        self.held_ms_at_byte_cap: int | None = None
        """The span the store held when the byte cap last evicted a frame inside retention."""

    # -- writing -------------------------------------------------------------
    def append(self, jpeg: bytes, timestamp_ms: int) -> StoredFrame:
        """Store a frame. Timestamps are forced strictly increasing."""
        last = self.last
        if last is not None and timestamp_ms <= last.timestamp_ms:
            timestamp_ms = last.timestamp_ms + 1
        frame = StoredFrame(self.next_index, max(0, timestamp_ms), jpeg)
        self.next_index += 1
        self._frames.append(frame)
        self._bytes += len(jpeg)
        self.evict(frame.timestamp_ms)
        return frame

    def evict(self, stream_now_ms: int) -> int:
        """Drop frames past retention (and the oldest while over the byte cap); count them."""
        dropped = 0
        cutoff = stream_now_ms - self.retention_ms
        while self._head < len(self._frames) and (
            self._frames[self._head].timestamp_ms < cutoff
            or (self._bytes > self.max_bytes and len(self._frames) - self._head > 1)
        ):
            oldest = self._frames[self._head]
            if oldest.timestamp_ms >= cutoff:  # the byte cap, not age: retention is short
                self.byte_cap_evictions += 1
                self.held_ms_at_byte_cap = self._frames[-1].timestamp_ms - oldest.timestamp_ms
            self._bytes -= len(oldest.jpeg)
            self._head += 1
            dropped += 1
        self.evicted_count += dropped
        if self._head >= TRIM_AFTER:
            # Drop the evicted frames' references soon: their JPEG bytes would otherwise
            # stay alive outside max_bytes (up to the whole retention again), and the
            # heap ratchets under that sawtooth. Moving a few thousand pointers is cheap.
            del self._frames[: self._head]
            self._head = 0
        return dropped

    def clear(self) -> None:
        """Forget every frame (an ended stream keeps only its counters)."""
        self.evicted_count += len(self)
        self._frames = []
        self._head = 0
        self._bytes = 0

    # -- reading -------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._frames) - self._head

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def first(self) -> StoredFrame | None:
        return self._frames[self._head] if len(self) else None

    @property
    def last(self) -> StoredFrame | None:
        return self._frames[-1] if len(self) else None

    def by_index(self, index: int) -> StoredFrame | None:
        first = self.first
        if first is None or index < first.index or index >= self.next_index:
            return None
        return self._frames[self._head + index - first.index]

    def position_at_or_after(self, timestamp_ms: int) -> int:
        """Position (0 = oldest retained) of the first frame at or after ``timestamp_ms``."""
        return bisect.bisect_left(self._frames, timestamp_ms, lo=self._head,
                                  key=_timestamp) - self._head

    def window(self, start_pos: int, end_pos: int) -> Sequence[StoredFrame]:
        """Retained frames at positions ``[start_pos, end_pos)``."""
        return self._frames[self._head + max(0, start_pos): self._head + max(0, end_pos)]

    def at(self, pos: int) -> StoredFrame:
        return self._frames[self._head + pos]

    def recent_fps(self, stream_now_ms: int, *, incoming: int = 0) -> float:
        """Frames per second *stored* over the last few seconds before ``stream_now_ms``.

        Counts the frames in ``(now - window, now]``, so a steady ``f`` fps reads ``f``.
        Under a :class:`StoredRateCap` this is about the cap at most, whatever the
        publisher sends: it is the rate the stream's frames can be sampled at.
        ``incoming`` adds frames about to be stored at ``now`` (a budget for the next
        frame counts that frame).
        """
        window_ms = min(RECENT_FPS_WINDOW_MS, stream_now_ms)
        if window_ms <= 0 or not len(self):
            return 0.0
        count = len(self) - self.position_at_or_after(stream_now_ms - window_ms + 1)
        return round((count + incoming) * 1000 / window_ms, 2)


class ReceivedRate:
    """Frames per second an ingest *received* (before the stored-rate cap), recently.

    Counts arrivals in ``(now - window, now]`` where the window is
    :data:`RECENT_FPS_WINDOW_MS`, or the time since the first arrival when shorter,
    the same way :meth:`FrameStore.recent_fps` counts stored frames.
    """

    def __init__(self) -> None:
        self._arrivals: deque[int] = deque()
        self._first_ms: int | None = None

    def record(self, now_ms: int) -> None:
        if self._first_ms is None:
            self._first_ms = now_ms
        self._arrivals.append(now_ms)
        self._forget_before(now_ms - RECENT_FPS_WINDOW_MS)

    def fps(self, now_ms: int) -> float:
        if self._first_ms is None:
            return 0.0
        window_ms = min(RECENT_FPS_WINDOW_MS, now_ms - self._first_ms)
        if window_ms <= 0:
            return 0.0
        self._forget_before(now_ms - window_ms)
        count = sum(1 for t in self._arrivals if t <= now_ms)
        return round(count * 1000 / window_ms, 2)

    def _forget_before(self, cutoff_ms: int) -> None:
        """Drop arrivals at or before ``cutoff_ms`` (they left the window)."""
        while self._arrivals and self._arrivals[0] <= cutoff_ms:
            self._arrivals.popleft()


class StoredRateCap:
    """Admits at most ``max_fps`` frames per second, on an ideal schedule of slots.

    Slots are ``1/max_fps`` apart. A frame is admitted when it arrives no earlier
    than :data:`RATE_CAP_TOLERANCE` of an interval before the next free slot, and the
    slot after it is one interval after the slot it filled, not after the frame.
    So arrival jitter neither drifts the schedule nor loses frames of a stream that
    already runs at the cap, a faster stream is thinned to evenly spaced frames,
    and in the long run at most ``max_fps`` frames per second get in. After a gap
    the schedule keeps its phase and resumes at the slot the frame falls in.
    """

    def __init__(self, max_fps: float) -> None:
        if not (max_fps > 0 and math.isfinite(max_fps)):
            raise ValueError("max_fps must be a positive number")
        self.max_fps = max_fps
        self.interval_ms = 1000.0 / max_fps
        self.tolerance_ms = RATE_CAP_TOLERANCE * self.interval_ms
        self._next_slot_ms: float | None = None

    def admit(self, now_ms: float) -> bool:
        """Whether a frame arriving at ``now_ms`` (a monotonic clock) fills a slot."""
        slot = self._next_slot_ms
        if slot is None:
            self._next_slot_ms = now_ms + self.interval_ms
            return True
        if now_ms < slot - self.tolerance_ms:
            return False
        missed = math.floor((now_ms - slot + self.tolerance_ms) / self.interval_ms)
        self._next_slot_ms = slot + (missed + 1) * self.interval_ms
        return True


def _timestamp(frame: StoredFrame) -> int:
    return frame.timestamp_ms
