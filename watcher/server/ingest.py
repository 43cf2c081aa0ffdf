"""WHIP ingest (RFC 9725): receive a publisher's WebRTC video into a stream's frames.

``POST .../whip`` hands :meth:`WhipIngest.publish` the SDP offer; the answer
carries every ICE candidate (no trickle). Each session consumes the video
track in two tasks: a reader that drains aiortc's (unbounded) receive queue
at once into a one-frame slot, and a storer that converts the newest frame to
BGR and JPEG off the event loop and adds it to the registry. The storer
first asks the stream's stored-rate cap (``max_stored_fps``): a frame it
says no to is skipped, never converted or encoded. When encoding falls
behind, frames waiting in the slot are replaced (latest-frame semantics) and
counted as dropped; nothing queues up.

One publisher per stream: a new publish replaces (closes) the previous
session. Sessions end on ``DELETE`` of their resource, when the stream ends,
when the connection fails or closes, when it does not come up within
``connect_timeout`` seconds, and on :meth:`WhipIngest.aclose`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Coroutine
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from watcher.media.ice import ensure_ice_candidates
from watcher.server.decoders import use_single_threaded_decoders
from watcher.server.encode import (
    MIN_JPEG_QUALITY,
    JpegEncoder,
    encode_frame,
    stream_frame_budget,
)
from watcher.server.jitter import complete_frames_at_marker
from watcher.server.problems import StreamProblem
from watcher.server.streams import Stream, StreamRegistry

if TYPE_CHECKING:
    from av import VideoFrame

    from watcher.server.settings import ServerSettings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_SECONDS = 30.0
STATS_KEY = "whip"
"""Key of the current/last session's :class:`SessionStats` in ``Stream.extra``."""


@dataclass(slots=True)
class SessionStats:
    """What one publisher session did; times are registry-clock Unix ms."""

    session_id: str
    stream_id: str
    created_at_ms: int
    state: str = "new"
    connected_at_ms: int | None = None
    closed_at_ms: int | None = None
    close_reason: str | None = None
    frames_received: int = 0
    frames_stored: int = 0
    frames_skipped: int = 0
    """Over ``max_stored_fps``: skipped on purpose, before encoding."""
    frames_dropped: int = 0
    """Replaced while waiting for the encoder, or failed to encode."""
    bytes_stored: int = 0
    last_frame_at_ms: int | None = None
    width: int | None = None
    height: int | None = None
    jpeg_quality: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(eq=False)
class _Session:
    id: str
    stream: Stream
    pc: RTCPeerConnection
    stats: SessionStats
    encoder: JpegEncoder
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    pending: VideoFrame | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    track_ended: bool = False
    closed: bool = False


class WhipIngest:
    """All WHIP publisher sessions of one server."""

    def __init__(
        self,
        registry: StreamRegistry,
        settings: ServerSettings,
        *,
        connect_timeout: float = CONNECT_TIMEOUT_SECONDS,
    ) -> None:
        use_single_threaded_decoders()
        complete_frames_at_marker()
        self.registry = registry
        self.max_quality = settings.jpeg_quality
        self.min_quality = min(MIN_JPEG_QUALITY, settings.jpeg_quality)
        self.connect_timeout = connect_timeout
        self._sessions: dict[str, _Session] = {}
        self._by_stream: dict[str, _Session] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._closing = False

    # -- API used by the routes ------------------------------------------------------
    async def publish(self, stream: Stream, offer_sdp: str) -> tuple[str, str]:
        """Accept a WHIP offer for ``stream``; returns ``(session_id, answer_sdp)``."""
        if self._closing:
            raise StreamProblem(503, "the server is shutting down")
        ensure_ice_candidates()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            track = await self._negotiate(pc, offer_sdp)
        except BaseException:
            with contextlib.suppress(Exception):
                await pc.close()
            raise
        if self._closing or not stream.active:
            await pc.close()
            raise StreamProblem(404, "the stream ended while negotiating")
        now = self.registry.clock.now_ms()
        session_id = uuid.uuid4().hex
        session = _Session(
            id=session_id, stream=stream, pc=pc,
            stats=SessionStats(session_id, stream.id, created_at_ms=now, state="connecting"),
            encoder=JpegEncoder(self.max_quality, self.min_quality),
        )
        previous = self._by_stream.get(stream.id)
        self._sessions[session_id] = session
        self._by_stream[stream.id] = session
        stream.extra[STATS_KEY] = session.stats
        pc.on("connectionstatechange", lambda: self._on_state(session))
        session.tasks = [
            asyncio.create_task(self._read(session, track), name=f"whip-read-{session_id}"),
            asyncio.create_task(self._store(session), name=f"whip-store-{session_id}"),
            asyncio.create_task(self._watchdog(session), name=f"whip-watchdog-{session_id}"),
        ]
        if previous is not None:
            self._spawn(self._close(previous, "replaced by a new publisher"))
        log.info("WHIP session %s on stream %s accepted", session_id, stream.id)
        return session_id, pc.localDescription.sdp

    async def unpublish(self, stream_id: str, session_id: str) -> bool:
        """Close a session (``DELETE`` of its resource); False when there is no such session."""
        session = self._sessions.get(session_id)
        if session is None or session.stream.id != stream_id:
            return False
        await self._close(session, "deleted by the publisher")
        return True

    def stream_ended(self, stream: Stream) -> None:
        """Registry callback (sync): close the ended stream's publisher soon."""
        session = self._by_stream.get(stream.id)
        if session is not None:
            self._spawn(self._close(session, f"stream {stream.end_reason or 'ended'}"))

    def sessions(self) -> list[dict[str, Any]]:
        """Stats of every open session."""
        return [s.stats.as_dict() for s in self._sessions.values()]

    def session_stats(self, stream_id: str) -> SessionStats | None:
        """Stats of the stream's open session, if it has one."""
        session = self._by_stream.get(stream_id)
        return session.stats if session is not None else None

    async def aclose(self) -> None:
        """Close every session and wait for pending closes."""
        self._closing = True
        await asyncio.gather(
            *(self._close(s, "server shutting down") for s in list(self._sessions.values())),
            return_exceptions=True,
        )
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # -- negotiation -------------------------------------------------------------------
    async def _negotiate(self, pc: RTCPeerConnection, offer_sdp: str) -> MediaStreamTrack:
        """Apply the offer, keep its first video as recvonly, answer; returns that track."""
        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        except Exception as exc:
            raise StreamProblem(400, f"invalid SDP offer: {exc}"[:300]) from exc
        video = None
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "video" and video is None:
                transceiver.direction = "recvonly"
                video = transceiver
            else:
                # Audio and extra videos are refused: nothing would read their frames.
                transceiver.direction = "inactive"
        if video is None or video.receiver.track is None:
            raise StreamProblem(400, "the offer must send one video track")
        await pc.setLocalDescription(await pc.createAnswer())  # gathers every candidate
        return video.receiver.track

    # -- media -----------------------------------------------------------------------------
    async def _read(self, session: _Session, track: MediaStreamTrack) -> None:
        """Drain the track into the one-frame slot; a frame still waiting there is dropped."""
        stats = session.stats
        try:
            while True:
                frame = await track.recv()
                stats.frames_received += 1
                if session.pending is not None:
                    stats.frames_dropped += 1
                session.pending = frame
                session.wake.set()
        except MediaStreamError:
            pass
        finally:
            session.track_ended = True
            session.wake.set()

    async def _store(self, session: _Session) -> None:
        stream, stats, settings = session.stream, session.stats, self.registry.settings
        while True:
            if session.pending is None:
                if session.track_ended:
                    return
                session.wake.clear()
                await session.wake.wait()
                continue
            frame, session.pending = session.pending, None
            if not self.registry.admit_frame(stream):  # over max_stored_fps: not encoded
                stats.frames_skipped += 1
                continue
            budget = stream_frame_budget(stream, settings, self.registry.clock.now_ms())
            try:
                jpeg, width, height = await asyncio.to_thread(
                    _encode, session.encoder, frame, budget)
            except Exception:
                log.exception("WHIP session %s: could not encode a frame", session.id)
                stats.frames_dropped += 1
                continue
            if session.closed:
                return
            stored = self.registry.add_frame(stream, jpeg)
            if stored is None:
                return  # the stream ended; stream_ended closes the session
            stats.frames_stored += 1
            stats.bytes_stored += len(jpeg)
            stats.last_frame_at_ms = stream.last_frame_at_ms
            stats.width, stats.height = width, height
            stats.jpeg_quality = session.encoder.quality

    async def _watchdog(self, session: _Session) -> None:
        await asyncio.sleep(self.connect_timeout)
        if session.stats.connected_at_ms is None:
            await self._close(session, f"not connected within {self.connect_timeout:g} s")

    # -- lifecycle ---------------------------------------------------------------------------
    def _on_state(self, session: _Session) -> None:
        state = session.pc.connectionState
        if session.closed:
            return
        session.stats.state = state
        if state == "connected" and session.stats.connected_at_ms is None:
            session.stats.connected_at_ms = self.registry.clock.now_ms()
            log.info("WHIP session %s on stream %s connected", session.id, session.stream.id)
        elif state in {"failed", "closed"}:
            self._spawn(self._close(session, f"connection {state}"))

    async def _close(self, session: _Session, reason: str) -> None:
        if session.closed:
            return
        session.closed = True
        stats = session.stats
        stats.state, stats.close_reason = "closed", reason
        stats.closed_at_ms = self.registry.clock.now_ms()
        self._sessions.pop(session.id, None)
        if self._by_stream.get(session.stream.id) is session:
            del self._by_stream[session.stream.id]
        current = asyncio.current_task()
        for task in session.tasks:
            if task is not current:
                task.cancel()
        with contextlib.suppress(Exception):
            await session.pc.close()
        log.info(
            "WHIP session %s on stream %s closed (%s): %d frames received, %d stored, "
            "%d skipped (max_stored_fps), %d dropped",
            session.id, session.stream.id, reason, stats.frames_received, stats.frames_stored,
            stats.frames_skipped, stats.frames_dropped,
        )

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no loop (a sync caller at exit): nothing left to close with
            coro.close()
            return
        self._background.add(task)
        task.add_done_callback(self._background.discard)


_encode = encode_frame
"""The shared encoding path, module-level so a test can slow it down."""
