"""Evidence clips of a passthrough stream, cut from its own H.264 access units.

A stream published as it arrives (H.264 passthrough) keeps its recent access
units in a :class:`~watcher.media.gop.GopBuffer` rather than JPEGs of decoded
frames. Its clip is the units of the span, from the keyframe at or before the
span's start:

* ``mp4``: remuxed as they are (the camera's own H.264 in an MP4): nothing is
  decoded or encoded, so the clip costs a copy of its bytes;
* ``webm``/``webp``: decoded (one decoder thread), scaled to ``clips.width`` and
  encoded like any clip.

Both run in the caller's thread (the clip worker), never on the event loop.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from watcher.console.config import CONTENT_TYPES
from watcher.console.encoding import (
    MIN_FRAMES,
    EncodedClip,
    container_options,
    encode_images,
    scaled_bgr,
)
from watcher.media.gop import AccessUnit, h264_decoder

TIME_BASE = Fraction(1, 1000)


def gop_clip(units: list[AccessUnit], fmt: str, width: int) -> EncodedClip:
    """``units`` (from a keyframe on) as a clip in ``fmt``; ``cpu_ms`` is this thread's."""
    if len(units) < MIN_FRAMES:
        raise ValueError(f"a clip needs at least {MIN_FRAMES} frames, got {len(units)}")
    if not units[0].keyframe:
        raise ValueError("a clip of access units starts at a keyframe")
    started = time.thread_time()
    if fmt == "mp4":
        data, frames = remux_mp4(units), len(units)
    else:
        pictures = list(_pictures(units, width))
        data, frames = encode_images(iter(pictures), fmt), len(pictures)
    cpu_ms = round((time.thread_time() - started) * 1000)
    return EncodedClip(data, CONTENT_TYPES[fmt], frames, cpu_ms)


def remux_mp4(units: list[AccessUnit]) -> bytes:
    """H.264 access units (Annex B) in a fragmented MP4, timed by their media time (ms).

    The stream has no codec context: the muxer takes SPS/PPS from the first
    (key) unit for the ``avcC`` box and rewrites Annex B into length prefixes.
    """
    out = io.BytesIO()
    with av.open(out, mode="w", format="mp4", options=container_options("mp4")) as container:
        width, height = units[0].size
        stream = container.add_mux_stream("h264", width=width, height=height)
        stream.time_base = TIME_BASE
        last = -1
        for unit, pts in zip(units, _pts(units), strict=True):
            packet = av.Packet(unit.data)
            packet.stream = stream
            packet.pts = packet.dts = last = max(pts, last + 1)
            packet.time_base = TIME_BASE
            packet.is_keyframe = unit.keyframe
            container.mux(packet)
    return out.getvalue()


def _pts(units: list[AccessUnit]) -> list[int]:
    """Milliseconds since the first unit, on the source's timeline."""
    t0 = units[0].media_time
    return [round((u.media_time - t0) * 1000) for u in units]


def _pictures(units: list[AccessUnit], width: int) -> Iterator[tuple[int, np.ndarray]]:
    decoder = h264_decoder()
    scaler = VideoReformatter()
    times = iter(_pts(units))
    for unit in [*units, None]:
        try:
            frames = decoder.decode(av.Packet(unit.data) if unit is not None else None)
        except av.InvalidDataError:
            continue
        for frame in frames:
            yield next(times), scaled_bgr(frame, width, scaler)  # type: ignore[arg-type]
