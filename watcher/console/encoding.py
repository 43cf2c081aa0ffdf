"""Encoding evidence clips: pictures into VP8 WebM, H.264 MP4 or animated WebP.

Shared by clips of decoded frames (:mod:`watcher.console.clips`) and clips of a
passthrough stream's packets (:mod:`watcher.console.gopclips`). Everything runs
on the calling thread with one encoder thread, so a clip's CPU time is that
thread's.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from watcher.media.tracks import Frame, to_bgr

MIN_FRAMES = 2


@dataclass(frozen=True, slots=True)
class EncodedClip:
    data: bytes
    content_type: str
    frames: int
    cpu_ms: int


def scaled_bgr(frame: Frame, width: int, reformatter: VideoReformatter | None = None,
               ) -> np.ndarray:
    """``frame`` as BGR, scaled down to ``width`` at most."""
    image = to_bgr(frame, reformatter)
    if image.shape[1] > width:
        height = max(2, round(image.shape[0] * width / image.shape[1] / 2) * 2)
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
    return image


def encode_images(images: Iterable[tuple[int, np.ndarray]], fmt: str) -> bytes:
    """BGR pictures at their times (ms, increasing) encoded into ``fmt``, in the calling
    thread with one encoder thread; the first picture's size (made even) is the clip's."""
    out = io.BytesIO()
    container_format = {"webm": "webm", "mp4": "mp4", "webp": "webp"}[fmt]
    with av.open(out, mode="w", format=container_format, options=container_options(fmt),
                 ) as container:
        stream = None
        t0 = last_pts = -1
        width = height = 0
        for at_ms, image in images:
            if stream is None:
                height, width = image.shape[:2]
                width, height = width - width % 2, height - height % 2
                stream = _video_stream(container, fmt, width, height)
                t0 = at_ms
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image[:height, :width]),
                                               format="bgr24")
            pts = max(at_ms - t0, last_pts + 1)
            frame.pts, frame.time_base = pts, Fraction(1, 1000)
            last_pts = pts
            for packet in stream.encode(frame):
                container.mux(packet)
        if stream is None:
            raise ValueError("a clip needs pictures")
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def container_options(fmt: str) -> dict[str, str]:
    """Fragmented MP4: playable as it loads, and writable to memory (no seek back)."""
    return {"movflags": "frag_keyframe+empty_moov+default_base_moof"} if fmt == "mp4" else {}


def _video_stream(container: Any, fmt: str, width: int, height: int) -> Any:
    codec, pix_fmt, options = {
        "webm": ("libvpx", "yuv420p", {"deadline": "realtime", "cpu-used": "8",
                                       "crf": "30", "b": "600k"}),
        "mp4": ("libx264", "yuv420p", {"preset": "veryfast", "crf": "28",
                                       "tune": "zerolatency"}),
        "webp": ("libwebp_anim", "yuv420p", {"quality": "60", "lossless": "0"}),
    }[fmt]
    stream = container.add_stream(codec, rate=1000, options=options)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    stream.time_base = Fraction(1, 1000)
    stream.codec_context.time_base = Fraction(1, 1000)
    stream.thread_count = 1
    return stream


