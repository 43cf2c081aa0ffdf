"""Hand each received video frame to the decoder when its last packet arrives.

aiortc's jitter buffer calls a video frame complete only when the first packet
of the *next* frame arrives, so every frame waits one frame interval in the
receiver (200 ms at 5 fps, a whole second at 1 fps) before it can be stored
and asked about. The sender marks the last packet of each frame with the RTP
marker bit (RFC 7741 for VP8, RFC 6184 for H.264); :class:`MarkerJitterBuffer`
completes a frame there, provided every packet from the buffer's origin (the
packet after the previous frame's last) up to the marker is present and
carries the frame's timestamp. Anything else (a gap, a frame whose marker
was lost) falls back to aiortc's own rule.

aiortc offers no setting for it, so the ingest swaps the buffer class its
receivers create (``aiortc.rtcrtpreceiver.JitterBuffer``) for video, the way
:mod:`watcher.server.decoders` wraps the decoder factory.
"""

from __future__ import annotations

from typing import Any

import aiortc.rtcrtpreceiver as _receiver
from aiortc.jitterbuffer import JitterBuffer, JitterFrame
from aiortc.rtp import RtpPacket


class MarkerJitterBuffer(JitterBuffer):
    """A video jitter buffer that completes a frame at its marker bit."""

    def _remove_frame(self, sequence_number: int) -> JitterFrame | None:
        if self._origin is None:
            return None
        timestamp: int | None = None
        packets: list[RtpPacket] = []
        for count in range(self.capacity):
            packet = self._packets[(self._origin + count) % self.capacity]
            if packet is None:
                break  # a gap: wait for it (NACK asks the sender again)
            if timestamp is None:
                timestamp = packet.timestamp
            elif packet.timestamp != timestamp:
                break  # this frame's marker never came: the next frame completes it
            packets.append(packet)
            if packet.marker:
                self.remove(count + 1)
                return JitterFrame(data=b"".join(p._data for p in packets),  # type: ignore[attr-defined]
                                   timestamp=timestamp)
        return super()._remove_frame(sequence_number)


def _jitter_buffer(capacity: int, prefetch: int = 0, is_video: bool = False) -> Any:
    if is_video and prefetch == 0:
        return MarkerJitterBuffer(capacity, prefetch, is_video)
    return JitterBuffer(capacity, prefetch, is_video)


def complete_frames_at_marker() -> None:
    """Make every aiortc video receiver in this process complete frames at their marker
    bit (idempotent)."""
    _receiver.JitterBuffer = _jitter_buffer  # type: ignore[assignment,misc]
