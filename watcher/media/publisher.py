"""The seam the stream keeper publishes through: one protocol, one factory keyed by publish type.

The API's ``publish`` object names the transport: ``whip`` (the embedded
server) or ``livekit`` (the cloud). Both publishers share one surface, so the
keeper never needs to know which one it holds.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

import httpx

from watcher.media.livekit import LiveKitPublisher
from watcher.media.passthrough import PacketFeed
from watcher.media.tracks import FrameTrack, LatestFrame
from watcher.media.whip import DEFAULT_CODEC, WhipPublisher

PUBLISH_TYPES = ("whip", "livekit")


@runtime_checkable
class Publisher(Protocol):
    """One publishing session; not restartable (make a new one to reconnect)."""

    connected_event: asyncio.Event
    closed: asyncio.Event
    """Set once the session failed or closed (or ``stop()`` ran)."""

    @property
    def state(self) -> str: ...

    @property
    def connected(self) -> bool: ...

    @property
    def frames_sent(self) -> int: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def wait_connected(self) -> None: ...


def make_publisher(
    publish_type: str,
    url: str,
    token: str,
    source: LatestFrame,
    *,
    fps: float,
    width: int,
    height: int,
    http: httpx.AsyncClient | None = None,
    codec: str = DEFAULT_CODEC,
    packets: PacketFeed | None = None,
) -> Publisher:
    """The publisher for the API's ``publish.type``; ValueError names an unknown type.

    ``codec`` is a MIME type such as ``video/VP8`` or ``video/H264``. With
    ``packets`` (an H.264 passthrough source), WHIP sends those packets as they
    are, in H.264; LiveKit publishes the decoded frames of ``source`` instead.
    """
    if publish_type == "whip":
        if packets is not None:
            return WhipPublisher(url, token, packets.track(), http=http, codec="video/H264")
        return WhipPublisher(url, token, FrameTrack(source, fps), http=http, codec=codec)
    if publish_type == "livekit":
        return LiveKitPublisher(url, token, source, width=width, height=height, fps=fps,
                                codec=codec.rpartition("/")[2])
    raise ValueError(f"unknown publish type {publish_type!r}: expected one of "
                     f"{', '.join(PUBLISH_TYPES)}")
