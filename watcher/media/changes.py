"""A cheap measure of whether a source's picture changed, for skipping model calls.

Every delivered frame is shrunk to a 32x24 grey thumbnail (area averaging
removes sensor noise; an ``av.VideoFrame`` gives its Y plane, no colour
conversion) and compared with a reference thumbnail. When enough
thumbnail pixels moved, :attr:`ChangeTracker.version` goes up and the frame
becomes the new reference, so slow drifts (daylight) count once they add up.
A rule that remembers the version it last asked at knows whether anything
changed since, without looking at a single frame itself.
"""

from __future__ import annotations

import math
import threading
import time

import cv2
import numpy as np
from av import VideoFrame

THUMB_SIZE = (32, 24)
PIXEL_DELTA = 12
"""Grey levels a thumbnail pixel must move by to count as changed."""
CHANGED_PIXELS = 3
"""Changed thumbnail pixels that make a frame "changed" (~0.4% of the picture)."""


class ChangeTracker:
    """Pass as a source's ``on_frame``; read :attr:`version` from anywhere."""

    def __init__(self, pixel_delta: int = PIXEL_DELTA, changed_pixels: int = CHANGED_PIXELS,
                 ) -> None:
        self.pixel_delta = pixel_delta
        self.changed_pixels = changed_pixels
        self._lock = threading.Lock()
        self._reference: np.ndarray | None = None
        self.version = 0
        self.frames = 0
        self.changed_at = -math.inf
        """``time.monotonic()`` of the frame that last changed the picture."""

    def __call__(self, frame: np.ndarray | VideoFrame, at: float | None = None) -> None:
        thumb = thumbnail(frame)
        with self._lock:
            self.frames += 1
            if self._reference is None or changed(self._reference, thumb, self.pixel_delta,
                                                  self.changed_pixels):
                self._reference = thumb
                self.version += 1
                self.changed_at = time.monotonic() if at is None else at


def thumbnail(frame: np.ndarray | VideoFrame) -> np.ndarray:
    """The 32x24 grey thumbnail, on the full 0-255 scale of a BGR frame's grey."""
    if isinstance(frame, VideoFrame):
        return _luma_thumbnail(frame)
    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY) if frame.ndim == 3 else frame
    return cv2.resize(grey, THUMB_SIZE, interpolation=cv2.INTER_AREA).astype(np.int16)


_LIMITED_RANGE = frozenset({"yuv420p", "yuv422p", "yuv444p", "nv12", "nv21"})
"""Planar/semi-planar YUV formats whose Y plane is video range (16-235)."""
_FULL_RANGE = frozenset({"yuvj420p", "yuvj422p", "yuvj444p", "gray"})


def _luma_thumbnail(frame: VideoFrame) -> np.ndarray:
    """The Y plane, shrunk; video range (16-235) stretched to 0-255.

    BT.601 luma is the same weighted sum as OpenCV's BGR->grey, so thresholds tuned
    on BGR frames hold. Formats without a Y plane go to grey first.
    """
    name = frame.format.name
    if name not in _LIMITED_RANGE and name not in _FULL_RANGE:
        frame, name = frame.reformat(format="gray"), "gray"
    plane = frame.planes[0]
    luma = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)
    small = cv2.resize(luma[:, :frame.width], THUMB_SIZE, interpolation=cv2.INTER_AREA)
    if name in _LIMITED_RANGE:
        small = np.clip((small.astype(np.int32) - 16) * 255 // 219, 0, 255)
    return small.astype(np.int16)


def changed(a: np.ndarray, b: np.ndarray, pixel_delta: int, changed_pixels: int) -> bool:
    return int(np.count_nonzero(np.abs(a - b) > pixel_delta)) >= changed_pixels
