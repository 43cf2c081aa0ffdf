"""What a stream keeper is given: the configured stream, its factories and its timings."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from watcher.media.publisher import Publisher
from watcher.media.sources import FrameCallback, VideoSource, open_source
from watcher.media.tracks import LatestFrame

Sleep = Callable[[float], Awaitable[Any]]


class StreamSpec(Protocol):
    """What a keeper needs of a configured stream (``watcher.config.StreamConfig``)."""

    name: str
    source: str
    loop: bool
    fps: float
    width: int
    height: int
    pull: bool


SourceFactory = Callable[[StreamSpec, LatestFrame, FrameCallback], VideoSource]
PublisherFactory = Callable[..., Publisher]


def open_stream_source(spec: StreamSpec, sink: LatestFrame,
                       on_frame: FrameCallback) -> VideoSource:
    """The configured camera, file or synthetic source, scaled and paced as configured."""
    return open_source(spec.source, fps=spec.fps, width=spec.width, height=spec.height,
                       loop=spec.loop, sink=sink, on_frame=on_frame, name=spec.name,
                       passthrough=getattr(spec, "passthrough", "never"))


class StreamLost(Exception):
    """The current stream ended, expired or vanished: make a new one."""


@dataclass(slots=True)
class KeeperTimings:
    check_interval: float = 5.0
    """Seconds between status checks (renewals are scheduled from the lease)."""
    first_frame_timeout: float = 30.0
    stale_after: float | None = 15.0
    """Restart a publisher whose frames stopped reaching the server for this long."""
    recreate_backoff: tuple[float, float] = (1.0, 30.0)
    publisher_backoff: tuple[float, float] = (1.0, 30.0)
