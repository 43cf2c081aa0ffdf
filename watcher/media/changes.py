"""A cheap measure of whether a source's picture changed, for skipping model calls.

Every delivered frame is shrunk to a 32x24 grey thumbnail (area averaging
removes sensor noise; an ``av.VideoFrame`` gives its Y plane, no colour
conversion) and compared with a reference thumbnail. When enough
thumbnail pixels moved, :attr:`ChangeTracker.version` goes up and the frame
becomes the new reference, so slow drifts (daylight) count once they add up.
A rule that remembers the version it last asked at knows whether anything
changed since, without looking at a single frame itself.

Rules that ask *when* the picture changes (``on_change``) listen to the same
thumbnails: :meth:`ChangeTracker.listen` hands each one, with its capture
time, to a :class:`ChangeDetector` of the rule's own, which keeps its own
reference and threshold (``change_threshold``, a fraction of the thumbnail's
pixels). Its comparison ignores what is not a change of the scene:

* sensor noise: area averaging into 32x24 leaves about sigma/20 of it;
* flicker and exposure steps: each thumbnail's mean brightness is removed
  before comparing, so a picture that only got brighter or darker is the same;
* a clock or timestamp overlay: a few characters cover a few thumbnail pixels
  (2-3 in a 640x480 or 320x240 picture), fewer than the default threshold of
  1 % (8 of 768). An overlay that covers more of a small picture needs a higher
  ``change_threshold``.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

import cv2
import numpy as np
from av import VideoFrame

THUMB_SIZE = (32, 24)
PIXEL_DELTA = 12
"""Grey levels a thumbnail pixel must move by to count as changed."""
CHANGED_PIXELS = 3
"""Changed thumbnail pixels that make a frame "changed" (~0.4% of the picture)."""
DEFAULT_CHANGE_THRESHOLD = 0.01
"""``on_change``: the fraction of thumbnail pixels that must change (1 %: 8 of 768).
A person a third of the frame's height at 640x480 changes about 11."""

ThumbnailListener = Callable[[np.ndarray, float], None]
"""Called with every frame's thumbnail and its ``time.monotonic()`` capture time, on the
thread that delivered the frame."""


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
        self._listeners: tuple[ThumbnailListener, ...] = ()

    def __call__(self, frame: np.ndarray | VideoFrame, at: float | None = None) -> None:
        thumb = thumbnail(frame)
        at = time.monotonic() if at is None else at
        with self._lock:
            self.frames += 1
            if self._reference is None or changed(self._reference, thumb, self.pixel_delta,
                                                  self.changed_pixels):
                self._reference = thumb
                self.version += 1
                self.changed_at = at
            listeners = self._listeners
        for listener in listeners:
            listener(thumb, at)

    def listen(self, listener: ThumbnailListener) -> None:
        with self._lock:
            self._listeners = (*self._listeners, listener)

    def unlisten(self, listener: ThumbnailListener) -> None:
        with self._lock:
            self._listeners = tuple(x for x in self._listeners if x is not listener)


class ChangeDetector:
    """Says when a stream's picture changed by at least ``threshold`` of its thumbnail.

    Fed every thumbnail (:meth:`ChangeTracker.listen`); a changed one becomes
    the new reference, so one appearance is one change, and a slow drift
    counts once it adds up. The first thumbnail only sets the reference.
    """

    def __init__(self, threshold: float = DEFAULT_CHANGE_THRESHOLD,
                 pixel_delta: int = PIXEL_DELTA) -> None:
        if not 0 < threshold <= 1:
            raise ValueError("threshold must be in (0, 1]")
        self.threshold = threshold
        self.pixel_delta = pixel_delta
        self._reference: np.ndarray | None = None

    def feed(self, thumb: np.ndarray) -> bool:
        """Whether ``thumb`` is a change from the reference."""
        level = thumb - round(float(thumb.mean()))
        if self._reference is None:
            self._reference = level
            return False
        moved = int(np.count_nonzero(np.abs(level - self._reference) > self.pixel_delta))
        if moved < self.threshold * level.size:
            return False
        self._reference = level
        return True


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
        frame, name = frame.reformat(format="gray", threads=1), "gray"
    plane = frame.planes[0]
    luma = np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)
    small = cv2.resize(luma[:, :frame.width], THUMB_SIZE, interpolation=cv2.INTER_AREA)
    if name in _LIMITED_RANGE:
        small = np.clip((small.astype(np.int32) - 16) * 255 // 219, 0, 255)
    return small.astype(np.int16)


def changed(a: np.ndarray, b: np.ndarray, pixel_delta: int, changed_pixels: int) -> bool:
    return int(np.count_nonzero(np.abs(a - b) > pixel_delta)) >= changed_pixels
