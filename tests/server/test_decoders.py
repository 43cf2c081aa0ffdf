"""The ingest's receivers decode each stream on one thread, and still decode."""

from __future__ import annotations

from fractions import Fraction

import aiortc.rtcrtpreceiver as receiver
import numpy as np
import pytest
from aiortc.codecs import get_encoder
from aiortc.codecs.vpx import vp8_depayload
from aiortc.jitterbuffer import JitterFrame
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from av import VideoFrame

from watcher.server.decoders import DECODER_THREADS, use_single_threaded_decoders

VP8 = RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=96)
H264 = RTCRtpCodecParameters(mimeType="video/H264", clockRate=90000, payloadType=97)


@pytest.mark.parametrize("codec", [VP8, H264], ids=["vp8", "h264"])
def test_receivers_get_single_threaded_decoders(codec: RTCRtpCodecParameters) -> None:
    use_single_threaded_decoders()
    use_single_threaded_decoders()  # idempotent
    decoder = receiver.get_decoder(codec)
    assert decoder.codec.thread_count == DECODER_THREADS == 1


def test_a_single_threaded_vp8_decoder_still_decodes() -> None:
    use_single_threaded_decoders()
    encoder, decoder = get_encoder(VP8), receiver.get_decoder(VP8)
    picture = np.zeros((240, 320, 3), np.uint8)
    picture[60:180, 80:240] = (0, 200, 255)
    frame = VideoFrame.from_ndarray(picture, format="bgr24")
    frame.pts, frame.time_base = 0, Fraction(1, 90000)
    payloads, timestamp = encoder.encode(frame, force_keyframe=True)
    data = b"".join(vp8_depayload(p) for p in payloads)
    decoded = decoder.decode(JitterFrame(data=data, timestamp=timestamp))
    assert len(decoded) == 1
    out = decoded[0].to_ndarray(format="bgr24")
    assert out.shape == (240, 320, 3)
    assert abs(int(out[120, 160, 2]) - 255) < 40  # the orange box survived the round trip
