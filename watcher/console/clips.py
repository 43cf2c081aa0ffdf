"""Evidence clips: the last minute of each published stream, cut and encoded per firing.

::

    keeper.frames (the frame being published)
      --every 1/fps s: scale to clips.width, JPEG (a thread)--> FrameHistory (buffer_s)
    firing event stored --wait clips.after--> frames in
      [first match - window - before, fired + after] --av, a thread--> evidence_clips row

A stream published as H.264 passthrough is not sampled: its clip is cut from
the access units its source keeps (:mod:`watcher.console.gopclips`; an mp4 clip
is those units remuxed, nothing decoded or encoded).

Clips are made from this daemon's own published frames, so they work against
the cloud API too; a stream the API server pulls (``pull: true``) publishes
nothing from here and keeps its snapshot only. Frames are kept as JPEG
(about 27 KB at 640x480), so a minute at 5 fps costs ~8 MB per stream rather
than ~280 MB of raw pictures. Encoding runs in a worker thread, one clip at a
time, with one encoder thread, so its CPU time is measured (``encode_cpu_ms``)
and never competes with the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from functools import partial
from typing import Protocol

import av
import cv2
import numpy as np
from av.video.reformatter import VideoReformatter

from watcher.clock import Clock
from watcher.console.config import CONTENT_TYPES, ClipsConfig
from watcher.console.encoding import MIN_FRAMES, EncodedClip, encode_images, scaled_bgr
from watcher.console.gopclips import gop_clip
from watcher.engine.state import Kind
from watcher.engine.store import AlertEventRecord, AlertStore
from watcher.errors import WatcherError
from watcher.media.gop import AccessUnit
from watcher.media.tracks import Frame, LatestFrame
from watcher.store.reviews import Clip

log = logging.getLogger(__name__)

JPEG_QUALITY = 80


class Published(Protocol):
    """A stream keeper as clips see it."""

    frames: LatestFrame


class FrameHistory:
    """The last ``seconds`` of one stream as timestamped JPEGs (bounded: a deque)."""

    def __init__(self, seconds: float, fps: float) -> None:
        self.frames: deque[tuple[int, bytes]] = deque(maxlen=max(2, round(seconds * fps)))

    def add(self, at_ms: int, jpeg: bytes) -> None:
        self.frames.append((at_ms, jpeg))

    def between(self, start_ms: int, end_ms: int) -> list[tuple[int, bytes]]:
        return [(t, j) for t, j in list(self.frames) if start_ms <= t <= end_ms]

    @property
    def bytes(self) -> int:
        return sum(len(j) for _, j in list(self.frames))


def to_jpeg(frame: Frame, width: int, reformatter: VideoReformatter | None = None,
            ) -> bytes | None:
    """A BGR array or ``av.VideoFrame``, scaled down to ``width`` at most, as JPEG.

    ``reformatter``: the stream's own scaler, kept from frame to frame (see ``to_bgr``).
    """
    ok, buf = cv2.imencode(".jpg", scaled_bgr(frame, width, reformatter),
                           [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    return buf.tobytes() if ok else None


def encode_clip(frames: list[tuple[int, bytes]], fmt: str) -> EncodedClip:
    """Encode timestamped JPEGs into ``fmt`` (webm: VP8, mp4: H.264, webp: animated).

    Frames keep their real timing (pts in ms). Runs on the calling thread with one
    encoder thread, so ``cpu_ms`` (this thread's CPU time) is the whole cost.
    """
    if len(frames) < MIN_FRAMES:
        raise ValueError(f"a clip needs at least {MIN_FRAMES} frames, got {len(frames)}")
    started = time.thread_time()
    data = encode_images(((at_ms, _decode(jpeg)) for at_ms, jpeg in frames), fmt)
    cpu_ms = round((time.thread_time() - started) * 1000)
    return EncodedClip(data, CONTENT_TYPES[fmt], len(frames), cpu_ms)


def _decode(jpeg: bytes) -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError("a recorded frame is not a JPEG")
    return image


def clip_span(event: AlertEventRecord, config: ClipsConfig) -> tuple[int, int]:
    """``[first match - window - before, fired + after]``, at most ``max_length`` long."""
    extra = event.extra or {}
    first = int(extra.get("first_match_ms") or event.created_ms)
    window = int(extra.get("window_ms") or 0)
    end = event.created_ms + round(config.after * 1000)
    start = min(first, event.created_ms) - window - round(config.before * 1000)
    return max(start, end - round(config.max_length * 1000)), end


class ClipRecorder:
    """Keeps each published stream's recent frames and turns firing events into clips."""

    def __init__(self, config: ClipsConfig, store: AlertStore,
                 keepers: Mapping[str, Published], clock: Clock,
                 is_pulled: Callable[[str], bool]) -> None:
        self.config = config
        self.store = store
        self.keepers = keepers
        self.clock = clock
        self.is_pulled = is_pulled
        self.histories: dict[str, FrameHistory] = {}
        self._seen: dict[str, int] = {}
        self._scalers: dict[str, VideoReformatter] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sampler: asyncio.Task[None] | None = None
        self._encoding = asyncio.Lock()
        self.made = 0
        self.failed = 0

    def start(self) -> None:
        if self.config.enabled:
            self._sampler = asyncio.create_task(self._sample_forever(), name="clip-sampler")

    async def stop(self) -> None:
        tasks = [t for t in (self._sampler, *self._tasks) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def on_stored(self, events: list[AlertEventRecord]) -> None:
        """The engine's hook: schedule a clip for each stored firing event."""
        if not self.config.enabled:
            return
        for event in events:
            if event.kind is Kind.FIRING and event.id is not None:
                task = asyncio.create_task(self._make(event), name=f"clip:{event.id}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def wait_idle(self) -> None:
        """Wait for the clips being made (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _sample_forever(self) -> None:
        interval = 1.0 / self.config.fps
        while True:
            started = time.monotonic()
            for name, keeper in list(self.keepers.items()):
                if self.is_pulled(name):
                    continue
                await self._sample(name, keeper)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def _sample(self, name: str, keeper: Published) -> None:
        mailbox = keeper.frames
        pictures = mailbox.pictures
        if pictures is not None:  # passthrough: the clip is cut from the kept packets
            pictures.gop.retain(self.config.buffer_s)
            return
        if mailbox.seq == self._seen.get(name) or mailbox.seq == 0:
            return
        self._seen[name] = mailbox.seq
        frame = mailbox.peek()
        if frame is None:
            return
        at_ms = self.clock.now_ms()
        scaler = self._scalers.setdefault(name, VideoReformatter())
        jpeg = await asyncio.to_thread(to_jpeg, frame, self.config.width, scaler)
        if jpeg is not None:
            history = self.histories.get(name)
            if history is None:
                history = self.histories[name] = FrameHistory(self.config.buffer_s,
                                                              self.config.fps)
            history.add(at_ms, jpeg)

    def _units(self, stream: str, start_ms: int, end_ms: int) -> list[AccessUnit]:
        """The span's access units when ``stream`` is passed through, else none."""
        keeper = self.keepers.get(stream)
        pictures = keeper.frames.pictures if keeper is not None else None
        return pictures.gop.span(start_ms, end_ms) if pictures is not None else []

    async def _make(self, event: AlertEventRecord) -> None:
        assert event.id is not None
        stream = (event.extra.get("streams") or event.stream_key.split("+"))[0]
        start, end = clip_span(event, self.config)
        delay_s = min((end - self.clock.now_ms()) / 1000, self.config.after + 1.0)
        if delay_s > 0:  # let the "after" part be recorded
            await asyncio.sleep(delay_s)
        history = self.histories.get(stream)
        frames = history.between(start, end) if history is not None else []
        units = self._units(stream, start, end)
        if len(units) >= MIN_FRAMES:  # passthrough: the stream's own H.264
            encode: Callable[[], EncodedClip] = partial(
                gop_clip, units, self.config.format, self.config.width)
            first_ms, last_ms = units[0].at_ms, units[-1].at_ms
        elif len(frames) >= MIN_FRAMES:
            encode = partial(encode_clip, frames, self.config.format)
            first_ms, last_ms = frames[0][0], frames[-1][0]
        else:
            log.info("clip of event %d: too few frames of %s recorded (%d); keeping the "
                     "snapshot only", event.id, stream, max(len(frames), len(units)))
            return
        try:
            async with self._encoding:
                clip = await asyncio.to_thread(encode)
            stored = await self.store.save_clip(Clip(
                event_id=event.id, content_type=clip.content_type, bytes=len(clip.data),
                frames=clip.frames, start_ms=first_ms, end_ms=last_ms,
                encode_cpu_ms=clip.cpu_ms, created_ms=self.clock.now_ms(), data=clip.data))
            await self.store.trim_clips(round(self.config.max_total_mb * 1024 * 1024))
        except (WatcherError, ValueError, av.FFmpegError) as exc:
            self.failed += 1
            log.warning("clip of event %d could not be made: %s", event.id, exc)
            return
        if stored:
            self.made += 1
            log.info("clip of event %d: %d frames, %d KB, %d ms CPU", event.id, clip.frames,
                     len(clip.data) // 1024, clip.cpu_ms)
