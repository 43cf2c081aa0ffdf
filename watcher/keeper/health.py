"""A snapshot of one stream keeper's health, for status output and metrics."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class StreamHealth:
    name: str
    state: str
    """starting, waiting_for_source, creating, publishing, waiting_for_first_frame, live,
    recovering, stopping or stopped."""
    stream_id: str | None
    frames_sent: int
    publish_fps: float
    last_frame_at_ms: int | None
    """When the server last received a frame (server clock)."""
    last_keepalive_at_ms: int | None
    lease_remaining_s: float | None
    streams_created: int
    publisher_reconnects: int
    keepalives: int
    keepalive_failures: int
    source_state: str
    source_reconnects: int
    last_error: str | None
    publish_path: str | None = None
    """``passthrough`` (the source's H.264 as it is) or ``transcode``; None before it opened."""
    publish_path_reason: str | None = None
    fps: float | None = None
    """The configured frame rate (a few frame intervals is how old the newest frame may be)."""
    pull: bool = False
    """The API server pulls the camera itself (no publisher here)."""
    publisher_state: str | None = None
    """The publisher's connection: new, connecting, connected, failed, closed; None if none."""
    status_error: str | None = None
    """Why the last status read of the stream failed; None once one succeeds."""
    status_read_at_ms: int | None = None
    """When the stream's status was last read (local clock)."""

    @property
    def live(self) -> bool:
        return self.state == "live" and self.stream_id is not None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
