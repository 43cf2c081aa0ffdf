"""A received video frame is complete at its RTP marker bit, not one frame later."""

from __future__ import annotations

from aiortc.rtp import RtpPacket

from watcher.server.jitter import MarkerJitterBuffer


def packet(seq: int, timestamp: int, data: bytes, *, marker: bool = False) -> RtpPacket:
    p = RtpPacket(payload_type=96, marker=int(marker), sequence_number=seq, timestamp=timestamp)
    p._data = data  # type: ignore[attr-defined]  # what aiortc's receiver sets (depayloaded)
    return p


def test_a_frame_is_complete_at_its_marker() -> None:
    buffer = MarkerJitterBuffer(capacity=128, is_video=True)
    assert buffer.add(packet(10, 3000, b"a")) == (False, None)
    assert buffer.add(packet(11, 3000, b"b")) == (False, None)
    _, frame = buffer.add(packet(12, 3000, b"c", marker=True))
    assert frame is not None and (frame.data, frame.timestamp) == (b"abc", 3000)
    _, frame = buffer.add(packet(13, 6000, b"d", marker=True))  # a one-packet frame
    assert frame is not None and (frame.data, frame.timestamp) == (b"d", 6000)


def test_a_gap_waits_for_the_missing_packet() -> None:
    buffer = MarkerJitterBuffer(capacity=128, is_video=True)
    buffer.add(packet(10, 3000, b"a"))
    assert buffer.add(packet(12, 3000, b"c", marker=True)) == (False, None)  # 11 is missing
    _, frame = buffer.add(packet(11, 3000, b"b"))  # retransmitted
    assert frame is not None and frame.data == b"abc"


def test_a_lost_marker_falls_back_to_the_next_frame() -> None:
    buffer = MarkerJitterBuffer(capacity=128, is_video=True)
    buffer.add(packet(10, 3000, b"a"))
    buffer.add(packet(11, 3000, b"b"))  # its marker packet never comes
    _, frame = buffer.add(packet(12, 6000, b"x"))
    assert frame is not None and (frame.data, frame.timestamp) == (b"ab", 3000)
    _, frame = buffer.add(packet(13, 6000, b"y", marker=True))
    assert frame is not None and (frame.data, frame.timestamp) == (b"xy", 6000)
