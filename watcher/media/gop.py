"""A passthrough source's recent H.264 access units, and pictures decoded from them on demand.

A source that publishes its H.264 as it is (:mod:`watcher.media.passthrough`)
decodes nothing for itself unless someone needs every frame (see
:class:`Demand`). What watcher needs of its pictures otherwise comes from the
access units it keeps here:

* :class:`GopBuffer` holds the units (Annex B bytes, keyframe flag, media time,
  wall-clock arrival) from a keyframe on, bounded in seconds and bytes: at least
  the current GOP (for a snapshot), more while evidence clips want
  ``buffer_s`` of it (for a clip cut from the packets themselves);
* :class:`UnitDecoder` decodes units with one decoder thread, following a GOP
  incrementally: the next picture of the same GOP costs one decode;
* :class:`NewestPicture` is the newest picture, decoded when asked (in the
  caller's thread: a worker, never the event loop), once per access unit.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from dataclasses import dataclass

import av

from watcher.clock import Clock, SystemClock

MAX_BYTES = 64 * 1024 * 1024
"""Per stream. A minute of 640x480 H.264 is a few MB: this bounds a runaway bitrate."""


@dataclass(frozen=True, slots=True)
class AccessUnit:
    data: bytes
    """Annex B, with SPS/PPS in front of a keyframe."""
    keyframe: bool
    media_time: float
    """Seconds on the source's timeline (continuous across loops of a file)."""
    at_ms: int
    """Wall-clock arrival (Unix ms): the clock evidence clip spans are cut on."""
    seq: int
    session: int
    """Bumped when the source (re)opens: units of two sessions never mix in a clip."""
    size: tuple[int, int]
    """The picture's width and height (what a container needs to know)."""


class Demand:
    """Who needs every frame of a stream decoded now, by holder name (thread-safe reads)."""

    def __init__(self) -> None:
        self._holders: frozenset[str] = frozenset()

    def set(self, holder: str, wanted: bool) -> None:
        self._holders = (self._holders | {holder}) if wanted else (self._holders - {holder})

    @property
    def holders(self) -> frozenset[str]:
        return self._holders

    def __bool__(self) -> bool:
        return bool(self._holders)


class GopBuffer:
    """Recent access units from a keyframe on (written by the source's thread, read by any).

    Whole GOPs are dropped from the front once the next keyframe is older than
    ``seconds`` before the newest unit, or the buffer passes ``max_bytes``; the
    current GOP always stays (a single GOP past ``max_bytes`` is dropped and the
    buffer waits for the next keyframe).
    """

    def __init__(self, *, seconds: float = 0.0, max_bytes: int = MAX_BYTES,
                 clock: Clock | None = None) -> None:
        self.seconds = seconds
        self.max_bytes = max_bytes
        self._clock = clock or SystemClock()
        self._lock = threading.Lock()
        self._units: deque[AccessUnit] = deque()
        self._gop: list[AccessUnit] = []
        self._bytes = 0
        self._keyframes = 0
        self._seq = 0
        self._session = 0
        self._size = (0, 0)
        self._want_keyframe = True

    def retain(self, seconds: float) -> None:
        """Keep at least ``seconds`` of units from now on (the longest asked for wins)."""
        self.seconds = max(self.seconds, seconds)

    def new_session(self, width: int, height: int) -> None:
        """The source (re)opened, at this size: what follows starts at its next keyframe."""
        with self._lock:
            self._session += 1
            self._size = (width, height)
            self._gop = []
            self._want_keyframe = True

    def add(self, data: bytes, keyframe: bool, media_time: float) -> AccessUnit | None:
        """Keep one unit; None when it cannot be decoded (no keyframe before it yet)."""
        with self._lock:
            if self._want_keyframe and not keyframe:
                return None
            self._want_keyframe = False
            self._seq += 1
            unit = AccessUnit(data, keyframe, media_time, self._clock.now_ms(), self._seq,
                              self._session, self._size)
            self._units.append(unit)
            self._bytes += len(data)
            if keyframe:
                self._keyframes += 1
                self._gop = [unit]
            else:
                self._gop.append(unit)
            self._trim(unit.at_ms)
            return unit

    def _trim(self, now_ms: int) -> None:
        keep_from = now_ms - self.seconds * 1000
        while self._keyframes > 1:
            nxt = next(u for i, u in enumerate(self._units) if i and u.keyframe)
            if nxt.at_ms > keep_from and self._bytes <= self.max_bytes:
                break
            self._drop_gop()
        if self._bytes > self.max_bytes:  # one GOP alone is too big
            while self._units:
                self._drop_gop()
            self._gop, self._want_keyframe = [], True

    def _drop_gop(self) -> None:
        unit = self._units.popleft()
        self._bytes -= len(unit.data)
        self._keyframes -= 1
        while self._units and not self._units[0].keyframe:
            self._bytes -= len(self._units.popleft().data)

    @property
    def seq(self) -> int:
        """How many units were ever kept."""
        return self._seq

    @property
    def bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._units)

    def newest_gop(self) -> list[AccessUnit]:
        """The units from the newest keyframe to the newest unit (empty before one)."""
        with self._lock:
            return list(self._gop)

    def span(self, start_ms: int, end_ms: int) -> list[AccessUnit]:
        """The units up to ``end_ms`` from the keyframe at or before ``start_ms`` (the first
        kept one if none is that old), of one session: the newest in the span."""
        with self._lock:
            units = [u for u in self._units if u.at_ms <= end_ms]
        if not units:
            return []
        session = units[-1].session
        units = [u for u in units if u.session == session]
        first = next((i for i in range(len(units) - 1, -1, -1)
                      if units[i].keyframe and units[i].at_ms <= start_ms), None)
        if first is None:
            first = next((i for i, u in enumerate(units) if u.keyframe), len(units))
        return units[first:]


def h264_decoder() -> av.CodecContext:
    """An H.264 decoder of one thread: a camera-sized picture decodes in about a
    millisecond, and FFmpeg's automatic count would start a thread per core."""
    decoder = av.CodecContext.create("h264", "r")
    decoder.thread_count, decoder.thread_type = 1, "SLICE"
    return decoder


class UnitDecoder:
    """An H.264 decoder (one thread) fed access units; one caller thread at a time.

    :meth:`decode_to` remembers how far into a GOP it got, so following a
    stream unit by unit decodes each unit once, and catching up with a GOP
    (after a while of not decoding) decodes its units from the keyframe.
    """

    def __init__(self) -> None:
        self._ctx: av.CodecContext | None = None
        self._key_seq: int | None = None
        self._fed_seq = 0
        self._behind = 0
        """Units fed to the decoder whose picture it has not given back yet (reordering)."""
        self.decoded = 0
        """Frames decoded."""

    def reset(self) -> None:
        """Let the decoder go (its reference pictures) until the next :meth:`decode_to`."""
        self._ctx = None

    @property
    def in_step(self) -> bool:
        """Whether the last picture given back is the last unit fed's (no pictures held)."""
        return self._ctx is not None and self._behind == 0

    def decode_to(self, gop: list[AccessUnit], *, exact: bool = False,
                  ) -> av.VideoFrame | None:
        """The newest picture the decoder gives after ``gop[-1]`` (``gop``: units from a
        keyframe on); None while it holds pictures back. ``exact``: the picture of
        ``gop[-1]`` itself, draining a decoder that holds pictures back (B-frames), so
        the next call starts afresh from the keyframe."""
        if not gop:
            return None
        if self._ctx is not None and gop[0].seq == self._fed_seq + 1:
            self._key_seq = gop[0].seq  # the next GOP of the stream followed: go on
        if self._ctx is None or self._key_seq != gop[0].seq or self._fed_seq >= gop[-1].seq:
            self._ctx = h264_decoder()
            self._key_seq, self._fed_seq, self._behind = gop[0].seq, 0, 0
        frame: av.VideoFrame | None = None
        for unit in gop:
            if unit.seq <= self._fed_seq:
                continue
            self._fed_seq = unit.seq
            try:
                frames = self._ctx.decode(av.Packet(unit.data))
            except av.InvalidDataError:
                continue
            self._behind += 1 - len(frames)
            self.decoded += len(frames)
            if frames:
                frame = frames[-1]  # type: ignore[assignment]
        if exact and self._behind > 0:
            frames = self._ctx.decode(None)
            self.decoded += len(frames)
            frame = frames[-1] if frames else frame  # type: ignore[assignment]
            self._ctx = None
        return frame


class NewestPicture:
    """The newest picture of a :class:`GopBuffer`, decoded when asked, once per unit."""

    def __init__(self, gop: GopBuffer) -> None:
        self.gop = gop
        self._lock = threading.Lock()
        self._decoder = UnitDecoder()
        self._cached: tuple[int, av.VideoFrame] | None = None

    @property
    def decoded(self) -> int:
        """Frames decoded for pictures asked for (not those noted by the source)."""
        return self._decoder.decoded

    def note(self, unit: AccessUnit, frame: av.VideoFrame) -> None:
        """The source decoded ``unit`` itself: asking for it decodes nothing."""
        self._cached = (unit.seq, frame)

    def cached(self) -> av.VideoFrame | None:
        """The newest unit's picture if it is decoded already."""
        cached = self._cached
        return cached[1] if cached is not None and cached[0] == self.gop.seq else None

    def decode(self) -> av.VideoFrame | None:
        """The newest picture (blocking: call it in a worker thread)."""
        with self._lock:
            gop = self.gop.newest_gop()
            cached = self._cached
            if not gop:  # the source reopened: its last picture until a keyframe
                return cached[1] if cached is not None else None
            if cached is not None and cached[0] == gop[-1].seq:
                return cached[1]
            frame = self._decoder.decode_to(gop, exact=True)
            if frame is not None:
                self._cached = (gop[-1].seq, frame)
            return frame

    async def newest(self) -> av.VideoFrame | None:
        """:meth:`decode` off the event loop (no thread when it is decoded already)."""
        frame = self.cached()
        return frame if frame is not None else await asyncio.to_thread(self.decode)
