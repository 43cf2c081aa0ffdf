"""Recordings of the synthetic scene with their ground truth, for backtests."""

from __future__ import annotations

import json
from pathlib import Path

import av

from watcher.media.testsrc import SyntheticScene

LOBBY_MOTION_RULE = """\
  - name: lobby-motion
    stream: lobby
    every: 2s
    window: 2s
    max_fps: 3
    prompt: Is anything moving in the lobby?
    schema: {motion_detected: boolean, motion: number, description: string}
    when: motion_detected
    for: 2
    keep_firing_for: 3s
    cooldown: 10s
"""
"""The example config's motion rule, as a `rules:` entry."""
LOBBY_STREAM = "streams:\n  - {name: lobby, source: testsrc, fps: 5, width: 320, height: 240}\n"


def codec_name() -> str:
    """H.264 where this av build can encode it, else MPEG-4 part 2."""
    try:
        av.codec.Codec("libx264", "w")
    except Exception:  # av builds without x264
        return "mpeg4"
    return "libx264"


def write_recording(path: Path, *, seconds: float, fps: float = 5.0, width: int = 320,
                    height: int = 240, events: tuple[str, ...] = ("box",), start: float = 5.0,
                    period: float = 20.0, duration: float = 6.0, stream: str = "lobby",
                    ) -> list[dict]:
    """Write ``seconds`` of the scene to ``path``; return its labels (one per event)."""
    scene = SyntheticScene(width, height, fps=fps, events=events, start=start, period=period,
                           duration=duration, noise=2, clock=True)
    with av.open(str(path), "w") as container:
        out = container.add_stream(codec_name(), rate=round(fps))
        out.width, out.height, out.pix_fmt = width, height, "yuv420p"
        if out.codec_context.name == "libx264":
            out.options = {"preset": "ultrafast", "crf": "23"}
        else:
            out.bit_rate = 800_000
        for n in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(scene.frame(n), format="bgr24")
            frame.pts = n
            for packet in out.encode(frame):
                container.mux(packet)
        for packet in out.encode():
            container.mux(packet)
    labels = []
    k = 0
    while start + k * period < seconds:
        begin = start + k * period
        labels.append({"stream": stream, "start": begin,
                       "end": min(begin + duration, seconds), "label": "event"})
        k += 1
    return labels


def write_labels(path: Path, labels: list[dict]) -> None:
    path.write_text("".join(json.dumps(label) + "\n" for label in labels))
