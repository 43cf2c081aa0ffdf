"""An aiortc video track fed by a frame producer, paced at a fixed frame rate.

A producer is either

* a callable ``producer(n, t) -> frame | None`` asked for frame number ``n``
  at ``t = n / fps`` seconds (a :class:`~watcher.media.testsrc.SyntheticScene`
  is one), run in a worker thread so rendering never blocks the event loop, or
* a :class:`LatestFrame` mailbox that a capture thread or task overwrites:
  only the newest frame is kept, never a queue. When no newer frame arrived by
  a tick, the track waits for one up to a frame interval (a camera at the
  stream's own rate delivers out of step with the ticks: waiting sends each
  frame as it arrives instead of up to an interval later, so what happens in
  front of the camera reaches the API sooner), then sends the newest again (a
  frozen camera stays a live stream).

A frame is a BGR ``uint8`` array or an ``av.VideoFrame`` (sent as it is:
sources deliver yuv420p, what the encoders take); ``None`` skips a tick.
Timestamps use the 90 kHz RTP video clock and follow the pacing schedule, so
``pts`` stays true to wall time even when ticks are skipped because the
consumer fell behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from collections.abc import Awaitable, Callable
from fractions import Fraction

import numpy as np
from aiortc.mediastreams import MediaStreamError, VideoStreamTrack
from av import VideoFrame
from av.video.frame import PictureType
from av.video.reformatter import VideoReformatter

from watcher.media.gop import Demand, NewestPicture

log = logging.getLogger(__name__)

VIDEO_CLOCK_RATE = 90_000
VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK_RATE)

Frame = np.ndarray | VideoFrame
FrameProducer = Callable[[int, float], Frame | None]


class LatestFrame:
    """A one-slot, thread-safe mailbox: ``put`` replaces, ``get`` reads the newest;
    :meth:`wait_newer` lets an event loop wait for the next ``put`` of any thread.

    A source that publishes its H.264 as it is (passthrough) need not decode it:
    with ``on_demand`` it fills this mailbox only while :attr:`demand` names
    someone who needs every frame (change thumbnails, a LiveKit publisher), and
    attaches :attr:`pictures`, from which :meth:`newest` decodes the newest
    picture when asked (snapshots, the console).
    """

    def __init__(self, gate: Callable[[], bool] | None = None, *,
                 on_demand: bool = False) -> None:
        """``gate`` (cluster mode: "this instance still owns the camera"): while it says
        False, ``get`` hands out nothing, so nothing is published or attached."""
        self._gate = gate
        self.on_demand = on_demand
        self.demand = Demand()
        """Who needs every frame decoded now (read by a passthrough source per packet)."""
        self.pictures: NewestPicture | None = None
        """Set by a passthrough source: its newest picture, decoded when asked."""
        self._lock = threading.Lock()
        self._frame: Frame | None = None
        self._seq = 0
        self._read_seq = 0
        self.replaced = 0
        """Frames overwritten before anyone read them (the producer outran the track)."""
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def put(self, frame: Frame) -> None:
        with self._lock:
            if self._frame is not None and self._read_seq != self._seq:
                self.replaced += 1
            self._frame = frame
            self._seq += 1
            waiters, self._waiters = self._waiters, []
        for loop, waiter in waiters:
            with contextlib.suppress(RuntimeError):  # that loop has closed
                loop.call_soon_threadsafe(_wake, waiter)

    async def wait_newer(self, seq: int, timeout_s: float,
                         sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        """Until a frame newer than ``seq`` is put or ``timeout_s`` passed (by ``sleep``,
        so a test's clock can drive it), whichever is first."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._seq > seq:
                return
            self._waiters.append((loop, waiter))
        timer = asyncio.ensure_future(sleep(timeout_s))
        try:
            await asyncio.wait((waiter, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            with self._lock:
                self._waiters = [w for w in self._waiters if w[1] is not waiter]

    def get(self) -> Frame | None:
        """The newest frame (possibly one already read), or None before the first (or
        while the gate is shut)."""
        return self.take()[0]

    def take(self) -> tuple[Frame | None, int]:
        """:meth:`get` and the sequence number of the frame it returns."""
        if self._gate is not None and not self._gate():
            return None, self._seq
        with self._lock:
            self._read_seq = self._seq
            return self._frame, self._seq

    def peek(self) -> Frame | None:
        """The newest frame, without counting it as read (for observers such as clips)."""
        with self._lock:
            return self._frame

    @property
    def seq(self) -> int:
        """How many frames were ever put."""
        return self._seq

    @property
    def wants_frames(self) -> bool:
        """Whether a passthrough source should decode every frame into this mailbox."""
        return not self.on_demand or bool(self.demand)

    async def newest(self, *, gated: bool = True) -> Frame | None:
        """The newest picture: decoded off the event loop from a passthrough source's
        packets (once per packet), else the newest frame put. ``gated``: as :meth:`get`
        (None while the gate is shut), without counting the frame as read."""
        if gated and self._gate is not None and not self._gate():
            return None
        pictures = self.pictures
        if pictures is not None:
            return await pictures.newest()
        return self.peek()


class FrameTrack(VideoStreamTrack):
    """A video track that sends frames from ``source`` at ``fps``."""

    kind = "video"

    def __init__(
        self,
        source: FrameProducer | LatestFrame,
        fps: float,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``clock`` (seconds, monotonic) and ``sleep`` pace the ticks: a test passes a
        clock that ``sleep`` advances, so pacing never depends on the machine's load."""
        super().__init__()
        if not fps > 0:
            raise ValueError("fps must be > 0")
        self.source = source
        self.fps = float(fps)
        self._clock = clock
        self._sleep = sleep
        self._start: float | None = None
        self._next = 0
        self._sent_seq = -1
        """The :class:`LatestFrame` sequence number of the frame sent last."""
        self.frames_sent = 0
        self.ticks_skipped = 0
        """Ticks dropped because ``recv`` was called late (consumer or producer too slow)."""

    async def recv(self) -> VideoFrame:  # type: ignore[override]
        while True:
            if self.readyState != "live":
                raise MediaStreamError
            n = await self._wait_tick()
            try:
                frame = await self._produce(n)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("frame producer failed; stopping the track")
                self.stop()
                raise MediaStreamError from None
            if frame is None:
                continue
            frame.pts = round(n * VIDEO_CLOCK_RATE / self.fps)
            frame.time_base = VIDEO_TIME_BASE
            # A frame sent again keeps no keyframe request of the last encode.
            frame.pict_type = PictureType.NONE
            self.frames_sent += 1
            return frame

    async def _wait_tick(self) -> int:
        """Sleep until the next tick is due and return its frame number."""
        now = self._clock()
        if self._start is None:
            self._start = now
        n = self._next
        due = self._start + n / self.fps
        if now < due:
            await self._sleep(due - now)
        elif now - due >= 1 / self.fps:
            # Late by a whole interval or more: skip to the tick that is due now.
            current = math.floor((now - self._start) * self.fps)
            self.ticks_skipped += current - n
            n = current
        self._next = n + 1
        return n

    async def _produce(self, n: int) -> VideoFrame | None:
        if isinstance(self.source, LatestFrame):
            if self.source.seq <= self._sent_seq:
                # Sent already: wait for the next frame rather than send it an interval late.
                await self.source.wait_newer(self._sent_seq, 1 / self.fps, self._sleep)
            frame, self._sent_seq = self.source.take()
            if frame is None or isinstance(frame, VideoFrame):
                return frame  # nothing to convert: no worker thread
            return await asyncio.to_thread(_to_video_frame, frame)
        producer = self.source
        return await asyncio.to_thread(
            lambda: _to_video_frame(producer(n, n / self.fps))
        )


def frame_size(frame: Frame) -> tuple[int, int]:
    """``(width, height)`` of a BGR array or an av frame."""
    if isinstance(frame, VideoFrame):
        return frame.width, frame.height
    return frame.shape[1], frame.shape[0]


def to_bgr(frame: Frame, reformatter: VideoReformatter | None = None) -> np.ndarray:
    """A BGR array of ``frame``, converted on the calling thread.

    FFmpeg's scaler left at its automatic thread count starts a pool of threads,
    one per core, for every conversion, and ``VideoFrame.to_ndarray`` builds a new
    scaler each call. A caller converting a stream's frames one after another
    passes its own ``reformatter`` (one per stream, used by one thread at a time),
    which keeps its scaler from frame to frame.
    """
    if isinstance(frame, VideoFrame):
        scaler = reformatter if reformatter is not None else VideoReformatter()
        return scaler.reformat(frame, format="bgr24", threads=1).to_ndarray()
    return frame


def _to_video_frame(frame: Frame | None) -> VideoFrame | None:
    if frame is None or isinstance(frame, VideoFrame):
        return frame
    return VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="bgr24")


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
