"""A looping test clip for the publish benchmarks: the synthetic scene rendered once.

``render_clip`` writes ``SyntheticScene`` frames (the benchmarks' scene) to an MP4 with
PyAV: H.264 (libx264, baseline profile, a keyframe every ``gop`` frames, no B-frames,
at x264's ``bitrate`` target, 500 kbit/s by default; the benchmarks pass their own).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)
import av

from watcher.media.testsrc import SyntheticScene

DEFAULT_SPEC = "testsrc:events=person,period=20,duration=6,size=640x480"


def render_clip(path: Path, *, seconds: float = 20.0, fps: float = 5.0, gop: int = 10,
                spec: str = DEFAULT_SPEC, codec: str = "libx264",
                bitrate: int = 500_000) -> Path:
    """Render ``seconds`` of the scene at ``fps`` into ``path`` (an .mp4); returns it."""
    scene = SyntheticScene.from_spec(spec, fps=fps)
    rate = Fraction(fps).limit_denominator(1000)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = scene.width, scene.height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.gop_size = gop
        stream.codec_context.max_b_frames = 0
        stream.codec_context.bit_rate = bitrate
        if codec == "libx264":
            stream.codec_context.profile = "Baseline"
            stream.codec_context.options = {"preset": "veryfast", "tune": "zerolatency",
                                            "bf": "0", "g": str(gop),
                                            "keyint_min": str(gop)}
        for n in range(max(1, round(seconds * fps))):
            frame = av.VideoFrame.from_ndarray(scene.frame(n), format="bgr24")
            frame.pts = n
            frame.time_base = 1 / rate
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path
