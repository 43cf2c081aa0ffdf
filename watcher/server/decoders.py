"""One decoder thread per received stream, instead of one per core.

aiortc's receiver creates its VP8 and H.264 decoders with FFmpeg's automatic thread
count: libvpx and libavcodec then start a thread per core for every stream, and a
server ingesting many 640x480 streams at a few fps pays threads (and their stacks)
for nothing: one such frame decodes in about a millisecond on one core. aiortc
offers no setting for it, so the ingest wraps the decoder factory its receivers
call (``aiortc.rtcrtpreceiver.get_decoder``) and sets the thread count before the
decoder opens.
"""

from __future__ import annotations

from typing import Any

import aiortc.rtcrtpreceiver as _receiver

DECODER_THREADS = 1
_original_get_decoder = _receiver.get_decoder


def _get_decoder(codec: Any) -> Any:
    decoder = _original_get_decoder(codec)
    context = getattr(decoder, "codec", None)
    if context is not None and not context.is_open:
        context.thread_count = DECODER_THREADS
    return decoder


def use_single_threaded_decoders() -> None:
    """Make every aiortc receiver in this process decode on one thread (idempotent)."""
    _receiver.get_decoder = _get_decoder
