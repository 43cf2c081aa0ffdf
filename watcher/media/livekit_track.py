"""The camera track sent to LiveKit: frames as the SDK takes them, and how it is published.

``rtc`` is the SDK module (``livekit.rtc``) or a fake with the same names.
"""

from __future__ import annotations

from typing import Any, Literal

import cv2
import numpy as np

from watcher.media.tracks import Frame, to_bgr

PixelFormat = Literal["i420", "rgba"]


def to_rtc_frame(rtc: Any, frame: Frame, width: int, height: int,
                 pixel_format: PixelFormat = "i420") -> Any:
    """``frame`` (BGR/gray array or av frame) as an ``rtc.VideoFrame`` of ``width`` x ``height``."""
    image = np.asarray(to_bgr(frame))
    if image.dtype != np.uint8:
        raise ValueError(f"frames must be uint8, not {image.dtype}")
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"frames must be BGR (h, w, 3), not shape {image.shape}")
    if image.shape[:2] != (height, width):
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    if pixel_format == "i420":
        data = cv2.cvtColor(image, cv2.COLOR_BGR2YUV_I420)
        buffer_type = rtc.VideoBufferType.I420
    else:
        data = cv2.cvtColor(image, cv2.COLOR_BGR2RGBA)
        buffer_type = rtc.VideoBufferType.RGBA
    return rtc.VideoFrame(width, height, buffer_type, bytearray(data))


def publish_options(rtc: Any, *, fps: float, max_bitrate: int, codec: str = "VP8") -> Any:
    """``rtc.TrackPublishOptions`` for one camera track: no simulcast, capped rate."""
    return rtc.TrackPublishOptions(
        source=rtc.TrackSource.SOURCE_CAMERA,
        simulcast=False,
        video_codec=getattr(rtc.VideoCodec, codec.upper()),
        video_encoding=rtc.VideoEncoding(max_bitrate=max_bitrate, max_framerate=fps),
    )


def default_bitrate(width: int, height: int, fps: float) -> int:
    """A max bitrate (bit/s) for camera content: ~0.1 bit per pixel per frame, 150 kbit/s floor."""
    return max(150_000, int(width * height * fps * 0.1))
