"""The ingest keeps only the newest frame when encoding falls behind, and counts drops."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from av import VideoFrame

from watcher.clock import SystemClock
from watcher.server import ingest as ingest_module
from watcher.server.encode import JpegEncoder
from watcher.server.ingest import SessionStats, WhipIngest, _Session
from watcher.server.settings import ServerSettings
from watcher.server.streams import StreamRegistry


class Burst(MediaStreamTrack):
    """Delivers ``count`` frames as fast as they are read, then ends."""

    kind = "video"

    def __init__(self, count: int) -> None:
        super().__init__()
        self.left = count

    async def recv(self) -> VideoFrame:
        await asyncio.sleep(0.002)
        if self.left == 0:
            raise MediaStreamError
        self.left -= 1
        return VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="bgr24")


class NoPeer:
    connectionState = "connected"

    async def close(self) -> None:
        pass


async def test_slow_encoding_drops_frames_instead_of_queueing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = ServerSettings(api_keys=["k"], max_stored_fps=0)  # every frame: drops only
    registry = StreamRegistry(SystemClock(), settings.stream_settings())
    ingest = WhipIngest(registry, settings)
    stream = registry.create("owner")
    encode = ingest_module._encode
    busy = threading.Lock()
    overlapping = []

    def slow_encode(*args: object) -> tuple[bytes, int, int]:
        if not busy.acquire(blocking=False):
            overlapping.append(True)
        try:
            time.sleep(0.05)
            return encode(*args)  # type: ignore[arg-type]
        finally:
            busy.release()

    monkeypatch.setattr(ingest_module, "_encode", slow_encode)
    session = _Session(id="s", stream=stream, pc=NoPeer(),  # type: ignore[arg-type]
                       stats=SessionStats("s", stream.id, created_at_ms=0),
                       encoder=JpegEncoder(80))
    await asyncio.wait_for(asyncio.gather(ingest._read(session, Burst(60)),
                                          ingest._store(session)), 10)
    stats = session.stats
    assert stats.frames_received == 60
    assert stats.frames_skipped == 0
    assert stats.frames_stored + stats.frames_dropped == 60
    assert stats.frames_dropped > 30  # ~2 ms per frame in, 50 ms per frame out
    assert stats.frames_stored == len(stream.frames) >= 2
    assert not overlapping  # one encode at a time per session
    assert stream.frames.last.jpeg[:2] == b"\xff\xd8"
