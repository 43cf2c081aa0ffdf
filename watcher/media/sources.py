"""Video sources: files, cameras and network streams decoded into a :class:`LatestFrame`.

:func:`open_source` turns a spec into a :class:`VideoSource` that decodes in
its own thread and puts frames, scaled to ``width`` x ``height`` and
decimated to ``fps``, into a one-slot mailbox (only the newest frame is kept).

Decoded media stays in YUV end to end: an :class:`AvSource` delivers
``av.VideoFrame`` objects in ``yuv420p`` (the decoder's own frame when it is
already that format and size), which the encoder takes as they are; the
change tracker reads their Y plane. BGR is built only where a picture is
needed (a snapshot, a clip). The synthetic source renders BGR arrays.

With ``passthrough`` ``auto`` or ``always``, an H.264 source the peer can take
as it is (:func:`watcher.media.passthrough.choose_path`) hands its encoded
packets to :attr:`AvSource.packets` for the publisher and keeps them in
:attr:`AvSource.gop` (snapshots and clips are made from them, see
:mod:`watcher.media.gop`). It decodes them (one decoder thread) for the mailbox
and ``on_frame`` only while the mailbox wants every frame
(:attr:`LatestFrame.wants_frames`); its stats count access units either way.

Spec grammar::

    spec := "testsrc" [ ":" options ]          synthetic scene (watcher.media.testsrc)
          | "device:" N | "/dev/..."            local camera (v4l2)
          | ("rtsp" | "rtsps") "://" ...       RTSP over TCP
          | ("http" | "https") "://" ... ".m3u8" [ "?" ... ]   HLS
          | ("http" | "https") "://" ...       progressive stream (MPEG-TS, MP4, MJPEG, ...)
          | "file:" path | path                local file; ``loop=True`` loops it

Files, HTTP and HLS are played in real time by their timestamps (a file is
not decoded at 100x speed, and an HLS segment read in one burst is spread
over its duration); RTSP and cameras are live already and pass straight on.
A source that fails or drops reconnects after an exponential backoff
(1 s doubling up to 10 s, reset once frames flowed again). A file without
``loop`` ends cleanly at its end (state ``ended``).

Credentials in URLs (``user:pass@``, secret-looking query values) are masked
by :func:`redact` in every log line and in ``stats.last_error``.

One module, past the usual size, on purpose: the source classes share one thread,
stop, backoff and pacing machinery and are read together; the passthrough path
choice and packet handling live in :mod:`watcher.media.passthrough`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from typing import Literal
from urllib.parse import urlsplit

import av
from av.video.reformatter import VideoReformatter

from watcher.backoff import Backoff
from watcher.media.gop import GopBuffer, NewestPicture, UnitDecoder
from watcher.media.passthrough import (
    AnnexB,
    PacketFeed,
    PassthroughMode,
    PathChoice,
    choose_path,
)
from watcher.media.testsrc import SyntheticScene, is_spec, parse_spec
from watcher.media.tracks import Frame, LatestFrame, frame_size

log = logging.getLogger(__name__)

SourceKind = Literal["file", "rtsp", "http", "hls", "device", "testsrc"]
SourceState = Literal["connecting", "live", "reconnecting", "ended", "stopped"]
FrameCallback = Callable[[Frame, float], None]
"""``on_frame(frame, monotonic_time)``, called in the source's thread for each delivered frame
(an ``av.VideoFrame`` in yuv420p, or a BGR array from the synthetic source)."""
PUBLISH_FORMAT = "yuv420p"
"""What the video encoders take: frames in this format reach them without a conversion."""

OPEN_TIMEOUT = 10.0
READ_TIMEOUT = 10.0
HLS_READ_TIMEOUT = 30.0
"""A live playlist may wait a whole (long) segment for the next one: allow more."""
MAX_LAG = 1.0
"""Pacing: frames later than this behind schedule re-anchor the schedule (no catch-up burst)."""
MAX_AHEAD = 2.0
"""Pacing: a timestamp jump further ahead than this re-anchors instead of sleeping."""
STOP_GRACE = 2.0
RECONNECT_MAX_DELAY = 10.0
"""A camera that comes back is picked up within this long. Retrying a dead camera
every 10 s costs nothing; a longer cap would keep rules blind long after it returned."""
AVFMT_NOTIMESTAMPS = 0x0080
"""FFmpeg's input-format flag for containers without timestamps (MJPEG over HTTP, raw H.264)."""
ONE_DECODER_THREAD_UP_TO = 1920 * 1080 * 30
"""Pixels per second one decoder thread keeps up with on one core, with room to spare.
FFmpeg's automatic count starts a thread per core, plus one, for every camera."""

_USERINFO = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s'\"]*@")
_SECRET_QUERY = re.compile(
    r"(?i)([?&;](?:user(?:name)?|pass(?:word|wd)?|pwd|token|access_token|auth|key|api_?key"
    r"|sig|signature|secret)=)[^&#\s'\"]*")


def redact(text: str) -> str:
    """``text`` with URL credentials masked: ``rtsp://***@cam/…?token=***``."""
    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub(r"\g<scheme>***@", text))


def source_kind(spec: str) -> SourceKind:
    """Which kind of source a spec names; ValueError for unsupported schemes."""
    if is_spec(spec):
        return "testsrc"
    if spec.startswith(("device:", "/dev/")):
        return "device"
    scheme = urlsplit(spec).scheme.lower() if "://" in spec else ""
    if scheme in {"rtsp", "rtsps"}:
        return "rtsp"
    if scheme in {"http", "https"}:
        return "hls" if urlsplit(spec).path.lower().endswith(".m3u8") else "http"
    if scheme in {"", "file"} and spec.strip():
        return "file"
    raise ValueError(f"unsupported source {redact(spec)!r}: use a file path, rtsp(s)://, "
                     "http(s)://, device:N or testsrc[:...]")


@dataclass(slots=True)
class SourceStats:
    """What a source did; written by its thread, read by anyone."""

    state: SourceState = "connecting"
    frames: int = 0
    """Frames delivered: put in the sink or, passed through, sent on as access units."""
    frames_decoded: int = 0
    """Frames the source decoded itself (a passthrough source: only while wanted)."""
    last_frame_at: float | None = None
    """``time.monotonic()`` of the last delivered frame."""
    reconnects: int = 0
    loops: int = 0
    last_error: str | None = None
    width: int | None = None
    height: int | None = None
    resumed_at: float | None = None
    """``time.monotonic()`` when frames flowed again after a drop; None if it never dropped."""
    path: str | None = None
    """How the source is published: ``passthrough`` (its H.264 as it is) or ``transcode``."""
    path_reason: str | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


class RecentFrames:
    """The last ``size`` delivered frames, for evidence snapshots; pass it as ``on_frame``.

    Frames are shared with the sink, not copied: treat them as read-only.
    """

    def __init__(self, size: int = 5) -> None:
        self._lock = threading.Lock()
        self._frames: deque[tuple[float, Frame]] = deque(maxlen=size)

    def __call__(self, frame: Frame, at: float) -> None:
        with self._lock:
            self._frames.append((at, frame))

    def snapshot(self) -> list[tuple[float, Frame]]:
        """``(monotonic_time, frame)`` pairs, oldest first."""
        with self._lock:
            return list(self._frames)


def open_source(
    spec: str,
    *,
    fps: float,
    width: int | None = None,
    height: int | None = None,
    loop: bool = False,
    sink: LatestFrame,
    on_frame: FrameCallback | None = None,
    backoff: Backoff | None = None,
    name: str | None = None,
    passthrough: PassthroughMode = "never",
) -> VideoSource:
    """A (not yet started) source for ``spec``; see the module docstring for the grammar.

    ``width``/``height`` default to the source's size; giving one keeps the
    aspect ratio. ``loop`` applies to files. ``on_frame`` sees every delivered
    frame (e.g. a :class:`RecentFrames`); ``backoff`` is copied, not shared.
    ``name`` labels log lines (default: the spec, redacted). ``passthrough``
    (files and network sources) lets H.264 through undecoded for publishing.
    Raises ValueError for a bad spec.
    """
    kind = source_kind(spec)
    common = dict(fps=fps, width=width, height=height, sink=sink, on_frame=on_frame,
                  backoff=backoff, name=name)
    if kind == "testsrc":
        parse_spec(spec)  # fail now on a bad spec, not in the thread
        return SyntheticSource(spec, kind, **common)  # type: ignore[arg-type]
    return AvSource(spec, kind, loop=loop, passthrough=passthrough,
                    **common)  # type: ignore[arg-type]


class VideoSource:
    """A source decoded in its own thread into ``sink``; ``start()``, then ``await stop()``."""

    def __init__(
        self,
        spec: str,
        kind: SourceKind,
        *,
        fps: float,
        width: int | None,
        height: int | None,
        sink: LatestFrame,
        on_frame: FrameCallback | None = None,
        backoff: Backoff | None = None,
        name: str | None = None,
    ) -> None:
        if not fps > 0:
            raise ValueError("fps must be > 0")
        if (width is not None and width < 2) or (height is not None and height < 2):
            raise ValueError("width and height must be at least 2")
        self._spec = spec
        self.kind = kind
        self.name = name or redact(spec)
        self.fps = float(fps)
        self.width, self.height = width, height
        self.sink = sink
        self.on_frame = on_frame
        # A copy: a Backoff counts attempts, and one template may serve many sources.
        self.backoff = replace(backoff, attempts=0) if backoff else Backoff(
            maximum=RECONNECT_MAX_DELAY)
        self.stats = SourceStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._was_live = False

    def start(self) -> None:
        if self._thread is not None:
            raise RuntimeError("a source can be started once")
        self._thread = threading.Thread(target=self._run, name=f"source {self.name}",
                                        daemon=True)
        self._thread.start()

    def request_stop(self) -> None:
        """Stop delivering frames now, without waiting for the thread (sync callers)."""
        self._stop.set()

    async def stop(self, grace: float = STOP_GRACE) -> None:
        """Stop now: no frame is delivered after this returns.

        Waits up to ``grace`` seconds for the thread; a thread blocked in a
        network read exits by itself when the read times out.
        """
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive():
            await asyncio.to_thread(thread.join, grace)
        if thread is not None and thread.is_alive():
            log.warning("source %s is still blocked in a read; it exits on its read timeout",
                        self.name)
        if self.stats.state != "ended":
            self.stats.state = "stopped"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- the source's thread ---------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._was_live = False
                try:
                    outcome = self._play()
                except Exception as exc:
                    if self._stop.is_set():
                        break
                    self._failed(redact(f"{type(exc).__name__}: {exc}"))
                else:
                    if outcome == "ended":
                        self.stats.state = "ended"
                        log.info("source %s ended after %d frames", self.name,
                                 self.stats.frames)
                        return
                    if self._stop.is_set():
                        break
                    self._failed("the stream ended")
                if self._was_live:
                    self.backoff.reset()
                if self._stop.wait(self.backoff.next()):
                    break
                self.stats.reconnects += 1
        except Exception as exc:  # a bug, not a media error: do not spin
            log.exception("source %s failed", self.name)
            self.stats.state, self.stats.last_error = "ended", redact(repr(exc))
        finally:
            if self._stop.is_set():
                self.stats.state = "stopped"

    def _play(self) -> Literal["ended", "dropped", "stopped"]:
        """Deliver frames until the source ends, drops or is stopped; raise on errors."""
        raise NotImplementedError

    def _failed(self, error: str) -> None:
        stats = self.stats
        first = stats.state != "reconnecting" or error != stats.last_error
        stats.state, stats.last_error = "reconnecting", error
        log.log(logging.WARNING if first else logging.DEBUG,
                "source %s: %s; reconnecting (%d so far)", self.name, error, stats.reconnects)

    def _size(self, width: int, height: int) -> tuple[int, int]:
        """The output size for a source frame of ``width`` x ``height``."""
        if self.width and self.height:
            return self.width, self.height
        if self.width:
            return self.width, max(2, round(height * self.width / width / 2) * 2)
        if self.height:
            return max(2, round(width * self.height / height / 2) * 2), self.height
        return width, height

    def _deliver(self, frame: Frame) -> None:
        if self._stop.is_set():
            return
        self.sink.put(frame)
        self._hand_out(frame, self._alive(*frame_size(frame)))

    def _alive(self, width: int | None, height: int | None) -> float:
        """Count one delivered frame (decoded or not); its ``time.monotonic()``."""
        now = time.monotonic()
        stats = self.stats
        stats.frames += 1
        stats.last_frame_at = now
        stats.width, stats.height = width, height
        self._was_live = True
        if stats.state != "live":
            if stats.state == "reconnecting":
                stats.resumed_at = now
            stats.state = "live"
            log.info("source %s is live (%sx%s)", self.name, stats.width, stats.height)
        return now

    def _hand_out(self, frame: Frame, now: float) -> None:
        if self.on_frame is not None:
            try:
                self.on_frame(frame, now)
            except Exception:
                log.exception("on_frame callback of source %s failed", self.name)


class SyntheticSource(VideoSource):
    """``testsrc[:spec]``: renders :class:`SyntheticScene` frames at ``fps``."""

    def _play(self) -> Literal["stopped"]:
        spec = parse_spec(self._spec)
        width, height = self._size(spec.width, spec.height)
        scene = SyntheticScene.from_spec(spec, fps=self.fps, width=width, height=height)
        start, n, interval = time.monotonic(), 0, 1 / self.fps
        first = 0
        if spec.wall:
            # wall=1: frame n shows Unix time (first + n) / fps, delivered at that time
            first = math.ceil(time.time() * self.fps)
            start += first / self.fps - time.time()
        while not self._stop.is_set():
            delay = start + n * interval - time.monotonic()
            if delay > 0 and self._stop.wait(delay):
                break
            if -delay >= interval:  # fell behind by whole frames: skip to the current one
                n = math.floor((time.monotonic() - start) * self.fps)
            self.stats.frames_decoded += 1
            self._deliver(scene.frame(first + n))
            n += 1
        return "stopped"


@dataclass(frozen=True, slots=True)
class _OpenArgs:
    target: str
    format: str | None
    options: dict[str, str]
    timeout: tuple[float, float] | None
    paced: bool
    """Play at timestamp speed (files, HTTP, HLS), not as fast as decoding goes."""
    finite: bool
    """The end of the input is the end of the source (a file), not a dropped stream."""


def _open_args(spec: str, kind: SourceKind) -> _OpenArgs:
    if kind == "file":
        path = urlsplit(spec).path if spec.startswith("file://") else spec.removeprefix("file:")
        return _OpenArgs(path, None, {}, None, paced=True, finite=True)
    if kind == "device":
        rest = spec.removeprefix("device:")
        path = f"/dev/video{rest}" if rest.isdigit() else rest
        return _OpenArgs(path, "v4l2", {}, (OPEN_TIMEOUT, READ_TIMEOUT), paced=False,
                         finite=False)
    if kind == "rtsp":
        options = {"rtsp_transport": "tcp", "timeout": _micros(READ_TIMEOUT)}
        return _OpenArgs(spec, None, options, (OPEN_TIMEOUT, READ_TIMEOUT), paced=False,
                         finite=False)
    if kind == "hls":
        options = {"rw_timeout": _micros(HLS_READ_TIMEOUT), "live_start_index": "-1"}
        return _OpenArgs(spec, None, options, (OPEN_TIMEOUT, HLS_READ_TIMEOUT), paced=True,
                         finite=False)
    return _OpenArgs(spec, None, {"rw_timeout": _micros(READ_TIMEOUT)},
                     (OPEN_TIMEOUT, READ_TIMEOUT), paced=True, finite=False)


def _set_decoder_threads(stream: av.video.stream.VideoStream, fps: float, *,
                         paced: bool) -> None:
    """One decoder thread for a camera-sized stream; FFmpeg's choice for a bigger one."""
    ctx = stream.codec_context
    if (ctx.width or 0) * (ctx.height or 0) * fps <= ONE_DECODER_THREAD_UP_TO:
        stream.thread_type, ctx.thread_count = "SLICE", 1
    else:  # frame threading holds frames back: fine for paced media, not live cameras
        stream.thread_type = "AUTO" if paced else "SLICE"


def _micros(seconds: float) -> str:
    return str(int(seconds * 1_000_000))


class AvSource(VideoSource):
    """Files, RTSP, HTTP, HLS and cameras, demuxed and decoded with PyAV."""

    def __init__(self, spec: str, kind: SourceKind, *, loop: bool = False,
                 passthrough: PassthroughMode = "never", **kwargs: object) -> None:
        super().__init__(spec, kind, **kwargs)  # type: ignore[arg-type]
        self.loop = loop
        self.passthrough: PassthroughMode = passthrough
        self.packets: PacketFeed | None = PacketFeed() if passthrough != "never" else None
        """Encoded packets while :attr:`SourceStats.path` is ``passthrough``."""
        self.gop: GopBuffer | None = GopBuffer() if passthrough != "never" else None
        """The recent access units while passed through (snapshots, clips)."""
        self.pictures = NewestPicture(self.gop) if self.gop is not None else None
        self._decoder = UnitDecoder()
        self._args = _open_args(spec, kind)
        # One per source: it keeps its scaler from frame to frame (a bare
        # frame.reformat() builds a new one, with its own threads, every call).
        self._reformatter = VideoReformatter()
        self._reset_timeline()

    def _reset_timeline(self) -> None:
        self._arrival_timed = False
        self._offset = 0.0
        self._rebase: float | None = None
        self._last_t = 0.0
        self._next_due: float | None = None
        self._anchor: tuple[float, float] | None = None
        self._session_start = time.monotonic()

    def _play(self) -> Literal["ended", "dropped", "stopped"]:
        args = self._args
        container = av.open(args.target, format=args.format, options=args.options,
                            timeout=args.timeout)
        try:
            if not container.streams.video:
                raise ValueError("the source has no video stream")
            stream = container.streams.video[0]
            choice = choose_path(self.passthrough, stream, width=self.width,
                                 height=self.height, fps=self.fps)
            self._took(choice)
            annexb = AnnexB(stream) if choice.passthrough else None
            if annexb is not None and self.gop is not None:
                self.gop.new_session(stream.codec_context.width, stream.codec_context.height)
                self.sink.pictures = self.pictures
            rate = stream.average_rate or stream.guessed_rate
            if annexb is None:
                self.sink.pictures = None
                _set_decoder_threads(stream, float(rate or 25), paced=args.paced)
            size = (stream.codec_context.width or None, stream.codec_context.height or None)
            frame_time = 1 / float(rate) if rate else 1 / self.fps
            self._reset_timeline()
            # MJPEG-over-HTTP cameras and raw H.264 streams carry no timestamps: the
            # demuxer invents 25 fps ones. A live one is timed by arrival instead.
            self._arrival_timed = not args.finite and bool(
                container.format.flags & AVFMT_NOTIMESTAMPS)
            while True:
                for packet in container.demux(stream):
                    if self._stop.is_set():
                        return "stopped"
                    if annexb is not None:
                        if not self._pass(packet, annexb, size):
                            return "stopped"
                        continue
                    for frame in self._decode(packet):
                        self.stats.frames_decoded += 1
                        if not self._offer(frame):
                            return "stopped"
                if not args.finite:
                    return "dropped"
                if not self.loop:
                    return "ended"
                container.seek(0)
                self.stats.loops += 1
                self._rebase = self._last_t + frame_time  # the next pass continues the timeline
        finally:
            container.close()

    def _decode(self, packet: av.Packet) -> Iterable[av.VideoFrame]:
        try:
            return packet.decode()  # type: ignore[return-value]
        except av.EOFError:
            return ()
        except av.InvalidDataError as exc:  # one bad packet is not a dead stream
            log.debug("source %s: skipped a packet: %s", self.name, exc)
            return ()

    def _took(self, choice: PathChoice) -> None:
        """Record (and log, when it changed) which path the source's media takes."""
        stats = self.stats
        if (stats.path, stats.path_reason) != (choice.path, choice.reason):
            if self.packets is not None or stats.path is not None:
                log.info("source %s: %s (%s)", self.name,
                         "H.264 passthrough" if choice.passthrough else "transcoding",
                         choice.reason)
            stats.path, stats.path_reason = choice.path, choice.reason

    def _pass(self, packet: av.Packet, annexb: AnnexB,
              size: tuple[int | None, int | None]) -> bool:
        """Pace, keep and pass on one packet, decoding it only while the sink wants every
        frame; False when stopped."""
        if packet.size == 0:  # the demuxer's flush packet
            return True
        raw = None if packet.pts is None else float(packet.pts * packet.time_base)
        t = self._timeline(raw)
        if self._args.paced and not self._arrival_timed and not self._pace(t):
            return False
        assert self.packets is not None and self.gop is not None and self.pictures is not None
        for data, keyframe in annexb(packet):
            if self._stop.is_set():
                return False
            self.packets.put(data, keyframe, t)
            unit = self.gop.add(data, keyframe, t)
            now = self._alive(*size)
            if unit is None or not self.sink.wants_frames:
                self._decoder.reset()
                continue
            before = self._decoder.decoded
            frame = self._decoder.decode_to(self.gop.newest_gop())
            self.stats.frames_decoded += self._decoder.decoded - before
            if frame is not None:
                frame.pict_type = av.video.frame.PictureType.NONE
                if self._decoder.in_step:  # not a picture held back by reordering
                    self.pictures.note(unit, frame)
                self.sink.put(frame)
                self._hand_out(frame, now)
        return True

    def _offer(self, frame: av.VideoFrame) -> bool:
        """Decimate, pace, scale and deliver one frame; False when stopped meanwhile."""
        t = self._media_time(frame)
        interval = 1 / self.fps
        due = self._next_due
        if due is not None and due - 2.0 <= t < due - interval / 4:
            return True  # decimated away
        if due is None or t < due - 2.0 or t - due >= interval:
            due = t  # first frame, a jump back, or a gap: restart the schedule here
        self._next_due = due + interval
        if self._args.paced and not self._arrival_timed and not self._pace(t):
            return False
        self._deliver(self._publishable(frame))
        return True

    def _publishable(self, frame: av.VideoFrame) -> av.VideoFrame:
        """``frame`` in yuv420p at the configured size: as decoded when it already is."""
        width, height = self._size(frame.width, frame.height)
        if (frame.format.name != PUBLISH_FORMAT or frame.width != width
                or frame.height != height):
            frame = self._reformatter.reformat(frame, width, height, PUBLISH_FORMAT,
                                               threads=1)
        frame.pict_type = av.video.frame.PictureType.NONE  # the encoder picks keyframes
        return frame

    def _media_time(self, frame: av.VideoFrame) -> float:
        """Seconds on a timeline that continues across loops of a file."""
        return self._timeline(frame.time)

    def _timeline(self, raw: float | None) -> float:
        """A media timestamp (None: unknown) on the continuous timeline."""
        if self._arrival_timed:
            raw = None
        if raw is None:
            raw = time.monotonic() - self._session_start
        if self._rebase is not None:
            self._offset, self._rebase = self._rebase - raw, None
        self._last_t = raw + self._offset
        return self._last_t

    def _pace(self, t: float) -> bool:
        """Sleep until ``t`` is due in wall time; False when stopped while waiting."""
        now = time.monotonic()
        if self._anchor is not None:
            wall, start = self._anchor
            delay = wall + (t - start) - now
            if -MAX_LAG <= delay <= MAX_AHEAD:
                return delay <= 0 or not self._stop.wait(delay)
        self._anchor = (now, t)
        return True
