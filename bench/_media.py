"""Publisher-side helpers of the benchmarks: frame sources and sender statistics.

* ``prerendered``: a :class:`PrerenderedFeeder` renders one event period of a
  ``SyntheticScene`` up front and a background thread puts those frames into
  a :class:`~watcher.media.tracks.LatestFrame` at the frame rate (as a capture
  thread would), so publishing cost excludes scene rendering;
* ``scene``: the ``SyntheticScene`` itself is the producer of the
  :class:`~watcher.media.tracks.FrameTrack` and is rendered on the fly.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Literal

import _common  # noqa: F401  (puts the repository on sys.path)

from watcher.media.testsrc import SyntheticScene
from watcher.media.tracks import FrameTrack, LatestFrame
from watcher.media.whip import WhipPublisher

SourceKind = Literal["prerendered", "scene"]
DEFAULT_SPEC = "testsrc:events=person,period=20,duration=6,size=640x480"


class PrerenderedFeeder:
    """Fills a LatestFrame from a loop of pre-rendered frames at ``fps``, in a thread."""

    def __init__(self, scene: SyntheticScene, fps: float, loop_seconds: float) -> None:
        count = max(1, round(loop_seconds * fps))
        self.frames = [scene.frame(n) for n in range(count)]
        self.fps = fps
        self.mailbox = LatestFrame()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-feeder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        start = time.monotonic()
        n = 0
        while not self._stop.is_set():
            self.mailbox.put(self.frames[n % len(self.frames)])
            n += 1
            delay = start + n / self.fps - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)


def make_track(kind: SourceKind, fps: float, spec: str = DEFAULT_SPEC,
               ) -> tuple[FrameTrack, PrerenderedFeeder | None]:
    scene = SyntheticScene.from_spec(spec, fps=fps)
    if kind == "scene":
        return FrameTrack(scene, fps), None
    feeder = PrerenderedFeeder(scene, fps, loop_seconds=scene.period)
    feeder.start()
    return FrameTrack(feeder.mailbox, fps), feeder


async def sender_stats(publisher: WhipPublisher) -> dict[str, Any]:
    """RTP payload bytes/packets sent so far and the encoder's current target bitrate."""
    stats: dict[str, Any] = {"bytes_sent": 0, "packets_sent": 0, "target_bitrate": None,
                             "encoder": None, "frames_sent": publisher.frames_sent}
    pc = publisher.pc
    if pc is None:
        return stats
    for sender in pc.getSenders():
        report = await sender.getStats()
        for item in report.values():
            if getattr(item, "type", None) == "outbound-rtp":
                stats["bytes_sent"] += item.bytesSent
                stats["packets_sent"] += item.packetsSent
        # aiortc keeps the encoder private; REMB from the receiver moves its target.
        encoder = getattr(sender, "_RTCRtpSender__encoder", None)
        if encoder is not None:
            stats["encoder"] = type(encoder).__name__
            stats["target_bitrate"] = getattr(encoder, "target_bitrate", None)
    return stats


async def wire_totals(keepers: list[Any]) -> tuple[int, int]:
    """RTP payload bytes and packets all publishers have sent so far."""
    byte_total = packet_total = 0
    for keeper in keepers:
        publisher = keeper._publishing.publisher
        if publisher is not None and getattr(publisher, "pc", None) is not None:
            sent = await sender_stats(publisher)
            byte_total += sent["bytes_sent"]
            packet_total += sent["packets_sent"]
    return byte_total, packet_total
