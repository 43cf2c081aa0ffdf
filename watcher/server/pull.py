"""Server-side pull: the server decodes a stream's rtsp/hls camera itself.

``POST /streams`` with ``{"source": {"type", "url"}}`` makes :class:`PullIngest`
run a :class:`~watcher.media.sources.VideoSource` for the stream (RTSP over
TCP for ``rtsp``; HLS or a progressive HTTP(S) stream for ``hls``) at 5 fps,
or ``max_stored_fps`` if lower. Frames take WHIP's path: the newest decoded
frame is JPEG-encoded off the event loop by
:func:`~watcher.server.encode.encode_frame` and added to the registry; a frame
replaced before it could be encoded counts as dropped, one over the stream's
``max_stored_fps`` is skipped before encoding.

``POST /streams`` waits (:meth:`PullIngest.wait_connected`) until the camera
delivered its first frame, at most ``pull_connect_timeout_seconds``: a camera
that cannot be opened fails the create instead of leaving a stream that never
gets a frame. Once connected, a camera that drops is retried with backoff for
as long as the stream lives.

``stream.last_pull_ms`` is when the last frame was pulled (stored or not);
``stream.pull_status`` reports the pull's health and never its URL (it carries
credentials): errors are stripped of URLs, and log lines name the stream id.
The pull stops when the stream ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from watcher.media.sources import VideoSource, open_source, source_kind
from watcher.media.tracks import LatestFrame
from watcher.server.encode import (
    MIN_JPEG_QUALITY,
    JpegEncoder,
    encode_frame,
    stream_frame_budget,
)
from watcher.server.problems import StreamProblem
from watcher.server.streams import PullSource, Stream, StreamRegistry

if TYPE_CHECKING:
    from watcher.backoff import Backoff
    from watcher.server.settings import ServerSettings

log = logging.getLogger(__name__)

DEFAULT_FPS = 5.0
STATUS_INTERVAL = 0.5
"""Seconds between refreshes of ``pull_status`` while no frame arrives."""

_KINDS = {"rtsp": ({"rtsp"}, "rtsp:// or rtsps://"),
          "hls": ({"hls", "http"}, "http:// or https://")}
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]*")


@dataclass(eq=False)
class _Pull:
    stream: Stream
    sink: LatestFrame
    encoder: JpegEncoder
    source: VideoSource | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by the first frame the camera delivers (and when the pull stops)."""
    task: asyncio.Task[None] | None = None
    seen: int = 0
    frames: int = 0
    dropped: int = 0
    skipped: int = 0
    width: int | None = None
    height: int | None = None
    closed: bool = False


class PullIngest:
    """Every server-pulled source of one server, one :class:`VideoSource` per stream."""

    def __init__(
        self,
        registry: StreamRegistry,
        settings: ServerSettings,
        *,
        fps: float = DEFAULT_FPS,
        width: int | None = None,
        height: int | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.registry = registry
        self.max_quality = settings.jpeg_quality
        if settings.max_stored_fps:  # decoding faster than frames are stored is wasted
            fps = min(fps, settings.max_stored_fps)
        self.fps, self.width, self.height = fps, width, height
        self.backoff = backoff
        self._pulls: dict[str, _Pull] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._closing = False

    def check(self, source: PullSource) -> None:
        """422 unless ``source`` is a network URL of its type (never a file or a device)."""
        if self._closing:
            raise StreamProblem(503, "the server is shutting down")
        kinds, expected = _KINDS[source.type]
        try:
            ok = source_kind(source.url) in kinds and bool(urlsplit(source.url).hostname)
        except ValueError:
            ok = False
        if not ok:
            raise StreamProblem(422, f"a {source.type} source needs an {expected} url")

    def start(self, stream: Stream) -> None:
        """Start pulling ``stream.source`` into the stream's frames."""
        if stream.source is None:
            raise ValueError("the stream has no source to pull")
        self.check(stream.source)
        loop = asyncio.get_running_loop()
        quality = self.max_quality
        pull = _Pull(stream, LatestFrame(), JpegEncoder(quality, min(MIN_JPEG_QUALITY, quality)))

        def woke(_frame: np.ndarray, _at: float) -> None:  # in the source's thread
            with contextlib.suppress(RuntimeError):  # the loop closed under us
                loop.call_soon_threadsafe(pull.wake.set)
                if not pull.connected.is_set():
                    loop.call_soon_threadsafe(pull.connected.set)

        pull.source = open_source(
            stream.source.url, fps=self.fps, width=self.width, height=self.height,
            sink=pull.sink, on_frame=woke, backoff=self.backoff,
            name=f"{stream.source.type} pull of stream {stream.id}")
        self._pulls[stream.id] = pull
        self._refresh(pull)
        pull.source.start()
        pull.task = asyncio.create_task(self._run(pull), name=f"pull-{stream.id}")
        log.info("stream %s: pulling its %s source", stream.id, stream.source.type)

    def stream_ended(self, stream: Stream) -> None:
        """Registry callback (sync): stop the ended stream's pull."""
        pull = self._pulls.pop(stream.id, None)
        if pull is None:
            return
        pull.closed = True
        pull.connected.set()  # wakes a create still waiting for the first frame
        if pull.source is not None:
            pull.source.request_stop()
        if pull.task is not None:
            pull.task.cancel()
        self._refresh(pull, state="stopped")
        self._spawn(self._stop(pull))

    @property
    def active_pulls(self) -> int:
        """Cameras pulled now, those still connecting included."""
        return len(self._pulls)

    async def wait_connected(self, stream: Stream, timeout: float) -> str | None:
        """Wait for the camera's first frame; None once it came, else why it did not.

        The reason never holds the URL (it may carry credentials).
        """
        pull = self._pulls.get(stream.id)
        if pull is None:
            return "the pull was stopped"
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pull.connected.wait(), timeout)
        if pull.closed:
            return "the stream ended while connecting"
        if pull.connected.is_set():
            return None
        stats = pull.source.stats if pull.source is not None else None
        error = stats.last_error if stats is not None else None
        return _URL.sub("<url>", error) if error else "no frame arrived"

    def pull_stats(self, stream_id: str) -> dict[str, object] | None:
        """``pull_status`` of a stream that is being pulled."""
        pull = self._pulls.get(stream_id)
        return pull.stream.pull_status if pull is not None else None

    async def aclose(self) -> None:
        """Stop every pull and wait for them."""
        self._closing = True
        for pull in list(self._pulls.values()):
            self.stream_ended(pull.stream)
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)

    # -- per pull -----------------------------------------------------------------------
    async def _run(self, pull: _Pull) -> None:
        while not pull.closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(pull.wake.wait(), STATUS_INTERVAL)
            pull.wake.clear()
            try:
                if pull.sink.seq != pull.seen:
                    await self._store(pull)
            except Exception:
                log.exception("stream %s: could not store a pulled frame", pull.stream.id)
            if not pull.closed:
                self._refresh(pull)

    async def _store(self, pull: _Pull) -> None:
        frame = pull.sink.get()
        seq = pull.sink.seq  # read after get: a frame put in between is seen next time
        pull.dropped += max(0, seq - pull.seen - 1)
        pull.seen = seq
        if frame is None:
            return
        stream = pull.stream
        stream.last_pull_ms = self.registry.clock.now_ms()  # pulled, whether stored or not
        if not self.registry.admit_frame(stream):  # over max_stored_fps: not encoded
            pull.skipped += 1
            return
        budget = stream_frame_budget(stream, self.registry.settings,
                                     self.registry.clock.now_ms())
        jpeg, pull.width, pull.height = await asyncio.to_thread(
            encode_frame, pull.encoder, frame, budget)
        if not pull.closed and self.registry.add_frame(stream, jpeg) is not None:
            pull.frames += 1
            stream.last_pull_ms = stream.last_frame_at_ms

    async def _stop(self, pull: _Pull) -> None:
        if pull.source is not None:
            await pull.source.stop()
        self._refresh(pull, state="stopped")
        log.info("stream %s: pull stopped after %d frames (%d dropped, %d skipped, "
                 "%d reconnects)", pull.stream.id, pull.frames, pull.dropped, pull.skipped,
                 pull.source.stats.reconnects if pull.source else 0)

    def _refresh(self, pull: _Pull, state: str | None = None) -> None:
        stats = pull.source.stats if pull.source is not None else None
        error = stats.last_error if stats is not None else None
        pull.stream.pull_status = {
            "state": state or (stats.state if stats is not None else "connecting"),
            "frames": pull.frames,
            "frames_dropped": pull.dropped,
            "frames_skipped": pull.skipped,
            "reconnects": stats.reconnects if stats is not None else 0,
            "last_error": _URL.sub("<url>", error) if error else None,
            "last_frame_at_ms": pull.stream.last_frame_at_ms,
            "width": pull.width,
            "height": pull.height,
        }

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no loop (a sync caller at exit): nothing left to stop with
            coro.close()
            return
        self._background.add(task)
        task.add_done_callback(self._background.discard)
