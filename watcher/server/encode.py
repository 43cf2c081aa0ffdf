"""JPEG encoding of received frames, with a quality that adapts to a byte budget.

Retained frames are stored as JPEG, never as raw pixels. A stream may hold at
most ``max_bytes_per_stream`` for ``retention_seconds``, so each frame gets
:func:`frame_budget` bytes at the rate frames are *stored* (at most
``max_stored_fps``, however fast the publisher sends). :class:`JpegEncoder`
keeps an exponentially weighted average of recent frame sizes and steps the
quality down while that average is over budget, and back up while it is well
under, so that a full retention period fits instead of the oldest frames being
evicted early by the byte cap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

if TYPE_CHECKING:
    from av import VideoFrame

    from watcher.server.streams import Stream, StreamSettings

BUDGET_HEADROOM = 0.9
"""Fraction of a stream's byte cap the frames of one retention period aim at."""
MIN_JPEG_QUALITY = 30
"""Lowest quality an ingest steps down to (or its configured maximum, if lower)."""


def frame_budget(max_bytes_per_stream: int, retention_seconds: float, recent_fps: float) -> int:
    """Bytes one frame may take so that ``retention_seconds`` of frames fit the cap."""
    frames = max(1.0, retention_seconds) * max(1.0, recent_fps)
    return max(1, int(BUDGET_HEADROOM * max_bytes_per_stream / frames))


def stream_frame_budget(stream: Stream, settings: StreamSettings, now_ms: int) -> int:
    """:func:`frame_budget` of one stream at the rate its frames are stored.

    That is the recent stored rate, counting the frame about to be stored, and
    never above the stream's ``max_stored_fps``: frames its stored-rate cap skips
    take no room.
    """
    fps = stream.frames.recent_fps(stream.stream_time_ms(now_ms), incoming=1)
    if stream.rate_cap is not None:
        fps = min(fps, stream.rate_cap.max_fps)
    return frame_budget(settings.max_bytes_per_stream, settings.retention_seconds, fps)


def encode_frame(encoder: JpegEncoder, frame: np.ndarray | VideoFrame,
                 budget: int) -> tuple[bytes, int, int]:
    """JPEG of a BGR array or an av frame as ``(jpeg, width, height)``; run it in a thread.

    The one encoding path of every ingest (WHIP, server-side pull).
    """
    bgr = frame if isinstance(frame, np.ndarray) else encoder.to_bgr(frame)
    return encoder.encode(bgr, budget), bgr.shape[1], bgr.shape[0]


class JpegEncoder:
    """Encodes BGR frames as JPEG at the highest quality the budget allows.

    Not thread-safe: use one encoder per stream and encode its frames one at
    a time (each call may run in a worker thread).
    """

    def __init__(
        self,
        max_quality: int = 80,
        min_quality: int = 30,
        *,
        step: int = 5,
        smoothing: float = 0.3,
        settle_frames: int = 3,
        raise_below: float = 0.7,
    ) -> None:
        if not 1 <= min_quality <= max_quality <= 100:
            raise ValueError("need 1 <= min_quality <= max_quality <= 100")
        self.max_quality = max_quality
        self.min_quality = min_quality
        self.step = step
        self.smoothing = smoothing
        self.settle_frames = settle_frames
        """Frames to wait after a change before judging the new quality."""
        self.raise_below = raise_below
        """Raise the quality only while the average is under this fraction of the budget."""
        self.quality = max_quality
        self.average_bytes: float | None = None
        self.frames_encoded = 0
        self._since_change = 0
        # Kept for the stream's life: frame.to_ndarray() would build a new scaler
        # (with "auto" threads) for every frame.
        self._reformatter = VideoReformatter()

    def to_bgr(self, frame: VideoFrame) -> np.ndarray:
        """The BGR pixels of a decoded frame, through this stream's one scaler."""
        return self._reformatter.reformat(frame, format="bgr24", threads=1).to_ndarray()

    def encode(self, bgr: np.ndarray, budget_bytes: int) -> bytes:
        """Encode one frame at the current quality, then adapt the quality for the next."""
        ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.quality,
                                             cv2.IMWRITE_JPEG_OPTIMIZE, 1])
        if not ok:
            raise ValueError("JPEG encoding failed")
        jpeg = buf.tobytes()
        self._observe(len(jpeg), budget_bytes)
        return jpeg

    def _observe(self, size: int, budget_bytes: int) -> None:
        self.frames_encoded += 1
        self._since_change += 1
        if self.average_bytes is None:
            self.average_bytes = float(size)
        else:
            self.average_bytes += self.smoothing * (size - self.average_bytes)
        if self._since_change < self.settle_frames:
            return
        if self.average_bytes > budget_bytes and self.quality > self.min_quality:
            # Far over budget: take a bigger step so a cap is met within a few frames.
            steps = 2 if self.average_bytes > 1.5 * budget_bytes else 1
            self._set_quality(self.quality - steps * self.step)
        elif (self.average_bytes < self.raise_below * budget_bytes
              and self.quality < self.max_quality):
            self._set_quality(self.quality + self.step)

    def _set_quality(self, quality: int) -> None:
        self.quality = max(self.min_quality, min(self.max_quality, quality))
        self._since_change = 0
        # Sizes at the old quality no longer predict the new one; restart the average.
        self.average_bytes = None
