"""Frames for server-side tests: stored straight into the registry, no WebRTC."""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from watcher.clock import ManualClock
from watcher.server.app import EmbeddedServer


def frame_pusher(server: EmbeddedServer, clock: ManualClock) -> Callable[..., None]:
    """``push(stream_id, count, interval_ms=200)``: store ``count`` small JPEG frames
    ``interval_ms`` apart, advancing the clock."""
    jpeg = cv2.imencode(".jpg", np.full((16, 16, 3), 127, np.uint8))[1].tobytes()

    def push(stream_id: str, count: int, interval_ms: int = 200) -> None:
        stream = server.registry.get_active(stream_id)
        assert stream is not None
        for i in range(count):
            if i or stream.frames.next_index:
                clock.advance(interval_ms / 1000)
            server.registry.add_frame(stream, jpeg)

    return push
