"""H.264 (or VP8) clips of the synthetic scene, written with PyAV, for media tests."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av

from watcher.media.testsrc import SyntheticScene

WIDTH, HEIGHT, FPS, GOP = 320, 240, 10, 10


def write_clip(path: Path, *, codec: str = "libx264", profile: str | None = "Baseline",
               fps: int = FPS, seconds: float = 2.0, bframes: int = 0,
               size: tuple[int, int] = (WIDTH, HEIGHT)) -> Path:
    """A box crossing the scene, a keyframe every GOP frames; the container from the name."""
    scene = SyntheticScene(width=size[0], height=size[1], fps=fps, events=("box",), start=0,
                           period=2, duration=1)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        stream.codec_context.gop_size = GOP
        stream.codec_context.max_b_frames = bframes
        if codec == "libx264":
            if profile:
                stream.codec_context.profile = profile
            stream.codec_context.options = {"preset": "ultrafast", "g": str(GOP),
                                            "keyint_min": str(GOP), "bf": str(bframes)}
        for n in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(scene.frame(n), format="bgr24")
            frame.pts, frame.time_base = n, Fraction(1, fps)
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return path
