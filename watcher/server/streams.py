"""Streams of the embedded server: leases, tombstones, ownership and frames.

A stream is *active* until its lease runs out (``expired``), it is deleted
(``deleted``) or the server ends it (``reaped``). An ended stream stays
readable as a tombstone for ``tombstone_seconds`` and is then forgotten (404).
Expiry is checked lazily on every access and by a periodic sweep, so an
injected clock is all a test needs.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from watcher.clock import Clock
from watcher.server.frames import FrameStore, ReceivedRate, StoredFrame, StoredRateCap
from watcher.server.problems import StreamProblem

log = logging.getLogger(__name__)

SHORTFALL_WARN_EVERY_MS = 300_000

EndReason = Literal["expired", "deleted", "reaped"]


def key_id(api_key: str) -> str:
    """A stable, non-secret identifier of an API key (for ownership and logs)."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]


def generate_api_key() -> str:
    """A new random API key, shaped like the cloud's (``ovs-...``)."""
    return f"ovs-{secrets.token_urlsafe(24)}"


@dataclass(frozen=True, slots=True)
class PullSource:
    """A camera the server pulls itself. ``url`` may hold credentials: never echoed."""

    type: Literal["rtsp", "hls"]
    url: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class StreamSettings:
    ttl_seconds: int = 45
    retention_seconds: int = 600
    tombstone_seconds: int = 300
    max_bytes_per_stream: int = 64 * 1024 * 1024
    max_stored_fps: float | None = 5.0
    """Most frames per second stored per stream, whatever the publisher sends; None: all."""


@dataclass(eq=False)
class Stream:
    id: str
    owner: str
    created_at_ms: int
    ttl_seconds: int
    expires_at_ms: int
    publish_token: str
    frames: FrameStore
    source: PullSource | None = None
    state: Literal["active", "ended"] = "active"
    ended_at_ms: int | None = None
    end_reason: EndReason | None = None
    first_frame_at_ms: int | None = None
    last_frame_at_ms: int | None = None
    last_pull_ms: int | None = None
    """When the server last pulled a frame from the stream's camera (pull sources)."""
    pull_status: dict[str, object] | None = None
    """How the pull goes: state, counters, last error (never the URL)."""
    rate_cap: StoredRateCap | None = None
    """Thins the frames an ingest stores (see :meth:`StreamRegistry.admit_frame`)."""
    received: ReceivedRate = field(default_factory=ReceivedRate)
    """Frames an ingest received, stored or not."""
    extra: dict[str, object] = field(default_factory=dict)
    shortfall_warned_at_ms: int | None = None
    """When the log last said the byte cap cuts this stream's retention short."""

    @property
    def active(self) -> bool:
        return self.state == "active"

    def stream_time_ms(self, now_ms: int) -> int:
        """Milliseconds since the first frame (0 before any frame)."""
        if self.first_frame_at_ms is None:
            return 0
        end = self.ended_at_ms if self.ended_at_ms is not None else now_ms
        return max(0, end - self.first_frame_at_ms)

    def retention_shortfall(self) -> dict[str, object] | None:
        """How far the byte cap cut retention short, or None while it holds."""
        frames = self.frames
        if not frames.byte_cap_evictions or frames.held_ms_at_byte_cap is None:
            return None
        return {"retention_seconds": frames.retention_ms / 1000,
                "held_seconds": round(frames.held_ms_at_byte_cap / 1000, 1),
                "max_bytes": frames.max_bytes,
                "frames_evicted_early": frames.byte_cap_evictions}

    def status(self, now_ms: int) -> dict[str, object]:
        frames = self.frames
        first, last = frames.first, frames.last
        base = self.first_frame_at_ms
        body: dict[str, object] = {
            "id": self.id,
            "state": self.state,
            "created_at_ms": self.created_at_ms,
            "expires_at_ms": self.expires_at_ms,
            "ttl_seconds": self.ttl_seconds,
            "stream_time_ms": self.stream_time_ms(now_ms),
            "first_frame_at_ms": base,
            "last_frame_at_ms": self.last_frame_at_ms,
            "last_frame_index": frames.next_index - 1 if frames.next_index else None,
            "first_available_frame_index": first.index if first else None,
            "first_available_frame_at_ms": (
                base + first.timestamp_ms if first is not None and base is not None else None
            ),
            # Stored frames per second over the last 5 s (at most max_stored_fps): the
            # rate frame indices advance at. What the publisher sends is received_fps.
            "recent_fps": frames.recent_fps(self.stream_time_ms(now_ms)) if last else 0.0,
            "received_fps": self.received.fps(
                self.ended_at_ms if self.ended_at_ms is not None else now_ms),
            "max_stored_fps": self.rate_cap.max_fps if self.rate_cap is not None else None,
            "retained_frame_count": len(frames),
            "retained_bytes": frames.bytes,
            "evicted_frame_count": frames.evicted_count,
            # Not null once the byte cap evicted frames younger than the retention:
            # retention is shorter than configured, and says by how much.
            "retention_shortfall": self.retention_shortfall(),
            "ended_at_ms": self.ended_at_ms,
            "end_reason": self.end_reason,
            "audio": False,
        }
        if self.source is not None:
            body["source"] = {"type": self.source.type}
            body["last_pull"] = self.last_pull_ms
            body["pull"] = self.pull_status
        return body


EndListener = Callable[[Stream], None]


class StreamRegistry:
    """All streams of one server, keyed by id, owned by API key ids."""

    def __init__(self, clock: Clock, settings: StreamSettings) -> None:
        self.clock = clock
        self.settings = settings
        self._streams: dict[str, Stream] = {}
        self._end_listeners: list[EndListener] = []

    def on_end(self, listener: EndListener) -> None:
        """Call ``listener(stream)`` whenever a stream ends (to close its publisher)."""
        self._end_listeners.append(listener)

    # -- lifecycle -----------------------------------------------------------
    def create(self, owner: str, source: PullSource | None = None) -> Stream:
        self.sweep()
        now = self.clock.now_ms()
        ttl = self.settings.ttl_seconds
        stream = Stream(
            id=str(uuid.uuid4()),
            owner=owner,
            created_at_ms=now,
            ttl_seconds=ttl,
            expires_at_ms=now + ttl * 1000,
            publish_token=secrets.token_urlsafe(24),
            frames=FrameStore(self.settings.retention_seconds * 1000,
                              self.settings.max_bytes_per_stream),
            source=source,
            rate_cap=StoredRateCap(self.settings.max_stored_fps)
            if self.settings.max_stored_fps else None,
        )
        self._streams[stream.id] = stream
        log.info("stream %s created (owner %s, ttl %ss)", stream.id, owner, ttl)
        return stream

    def get(self, stream_id: str, owner: str) -> Stream:
        """The stream if ``owner`` may see it; 404 when unknown, 403 when foreign."""
        self.sweep()
        stream = self._streams.get(stream_id)
        if stream is None:
            raise StreamProblem(404, "stream not found")
        if stream.owner != owner:
            raise StreamProblem(403, "stream belongs to another API key")
        return stream

    def get_active(self, stream_id: str) -> Stream | None:
        """For ingest: the stream if it is still active, regardless of owner."""
        self.sweep()
        stream = self._streams.get(stream_id)
        return stream if stream is not None and stream.active else None

    def keepalive(self, stream_id: str, owner: str) -> Stream:
        stream = self.get(stream_id, owner)
        if not stream.active:
            raise StreamProblem(404, f"stream has ended ({stream.end_reason}); create a new one")
        stream.expires_at_ms = self.clock.now_ms() + stream.ttl_seconds * 1000
        stream.publish_token = secrets.token_urlsafe(24)
        return stream

    def delete(self, stream_id: str, owner: str) -> Stream:
        stream = self.get(stream_id, owner)
        if stream.active:
            self._end(stream, "deleted")
        return stream

    def reap(self, stream_id: str) -> None:
        """End a stream from the server side (shutdown, operator action, fault injection)."""
        stream = self._streams.get(stream_id)
        if stream is not None and stream.active:
            self._end(stream, "reaped")

    def discard(self, stream_id: str) -> None:
        """Forget a stream whose create failed: ended (listeners stop its ingest), then 404."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return
        if stream.active:
            self._end(stream, "reaped")
        del self._streams[stream_id]

    def active_count(self, owner: str) -> int:
        """How many active streams ``owner`` holds."""
        self.sweep()
        return sum(1 for s in self._streams.values() if s.owner == owner and s.active)

    def list(self, owner: str) -> list[Stream]:
        self.sweep()
        return [s for s in self._streams.values() if s.owner == owner]

    def all_active(self) -> list[Stream]:
        return [s for s in self._streams.values() if s.active]

    # -- frames --------------------------------------------------------------
    def admit_frame(self, stream: Stream) -> bool:
        """Whether an ingest should store a frame received now (``max_stored_fps``).

        Ask before converting and encoding the frame: a frame it says no to is skipped
        for good. Each yes takes a slot of the stream's schedule, so call it once per
        frame received, then :meth:`add_frame` the frames it admitted.
        """
        now = self.clock.now_ms()
        stream.received.record(now)
        return stream.rate_cap is None or stream.rate_cap.admit(now)

    def add_frame(self, stream: Stream, jpeg: bytes) -> StoredFrame | None:
        """Store a frame received now; ignored when the stream has ended."""
        if not stream.active:
            return None
        now = self.clock.now_ms()
        if stream.first_frame_at_ms is None:
            stream.first_frame_at_ms = now
        early = stream.frames.byte_cap_evictions
        frame = stream.frames.append(jpeg, now - stream.first_frame_at_ms)
        stream.last_frame_at_ms = stream.first_frame_at_ms + frame.timestamp_ms
        if stream.frames.byte_cap_evictions != early:
            self._warn_shortfall(stream, now)
        return frame

    def _warn_shortfall(self, stream: Stream, now_ms: int) -> None:
        """Say (at most every 5 minutes per stream) that retention is cut short."""
        last = stream.shortfall_warned_at_ms
        if last is not None and now_ms - last < SHORTFALL_WARN_EVERY_MS:
            return
        stream.shortfall_warned_at_ms = now_ms
        gap = stream.retention_shortfall()
        assert gap is not None
        log.warning(
            "stream %s: its frames do not fit: the %.1f MB byte cap holds only %.0f s of the "
            "%.0f s retention, so older frames are dropped early (raise max_mb_per_stream, or "
            "lower max_stored_fps)", stream.id,
            stream.frames.max_bytes / 1e6, gap["held_seconds"], gap["retention_seconds"])

    # -- housekeeping --------------------------------------------------------
    def sweep(self) -> None:
        """End expired streams, evict old frames, forget old tombstones."""
        now = self.clock.now_ms()
        forget_before = now - self.settings.tombstone_seconds * 1000
        for stream in list(self._streams.values()):
            if stream.active and now >= stream.expires_at_ms:
                self._end(stream, "expired", at_ms=stream.expires_at_ms)
            if stream.active:
                stream.frames.evict(stream.stream_time_ms(now))
            elif stream.ended_at_ms is not None and stream.ended_at_ms <= forget_before:
                del self._streams[stream.id]

    def shutdown(self) -> None:
        for stream in self.all_active():
            self._end(stream, "reaped")

    def _end(self, stream: Stream, reason: EndReason, at_ms: int | None = None) -> None:
        stream.state = "ended"
        stream.end_reason = reason
        stream.ended_at_ms = at_ms if at_ms is not None else self.clock.now_ms()
        stream.frames.clear()
        log.info("stream %s ended (%s)", stream.id, reason)
        for listener in self._end_listeners:
            try:
                listener(stream)
            except Exception:
                log.exception("end listener failed for stream %s", stream.id)
