"""H.264 passthrough: a source's encoded packets published over WebRTC unchanged.

Most cameras and recordings already send H.264. Decoding, converting and
re-encoding every frame costs several times what decoding alone does, so a
source whose H.264 the peer accepts, at the configured size and frame rate, is
published as it arrives: the demuxed packets (in Annex B form, with SPS/PPS in
front of every keyframe) go to aiortc's H.264 packetizer, as with aiortc's
``MediaPlayer(decode=False)``. The source still decodes them, for what watcher
itself needs (the change thumbnail, snapshots, clips).

* :func:`choose_path` decides ``passthrough`` or ``transcode`` for a stream's
  ``passthrough: auto|always|never`` and the source's codec parameters;
* :class:`AnnexB` turns demuxed packets into Annex B access units;
* :class:`PacketFeed` fans packets out from the source's thread to one
  :class:`PacketTrack` per publisher. A track starts at a keyframe and keeps a
  bounded queue: when its reader falls behind it drops to the next keyframe,
  never a growing backlog.

Keyframe requests (PLI) cannot reach a camera or file through a passthrough:
a new or reconnecting receiver gets its first picture at the source's next
keyframe, within one GOP. :attr:`PacketTrack.first_picture_s` says how long it
waited.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

log = logging.getLogger(__name__)

PassthroughMode = Literal["auto", "always", "never"]
PublishPath = Literal["passthrough", "transcode"]
PASSTHROUGH_MODES: tuple[PassthroughMode, ...] = ("auto", "always", "never")
ACCEPTED_PROFILES = frozenset({"Baseline", "Constrained Baseline"})
"""What aiortc offers for H.264 (profile-level-id 42001f / 42e01f): no B-frames."""
FPS_TOLERANCE = 1.1
"""A source up to 10 % faster than the configured fps still counts as that fps."""
CLOCK_RATE = 90_000
TIME_BASE = Fraction(1, CLOCK_RATE)
MAX_QUEUED_PACKETS = 150
"""Per publisher: beyond this the reader has fallen behind; skip to the next keyframe."""
_START_CODE = b"\x00\x00\x00\x01"
_NAL_SPS = 7


@dataclass(frozen=True, slots=True)
class PathChoice:
    path: PublishPath
    reason: str

    @property
    def passthrough(self) -> bool:
        return self.path == "passthrough"


def choose_path(mode: PassthroughMode, stream: av.video.stream.VideoStream, *,
                width: int | None, height: int | None, fps: float) -> PathChoice:
    """Passthrough or transcode for ``stream`` under ``mode`` and the configured output.

    ``auto`` passes through H.264 in a profile the peer accepts, at the configured
    size (None: the source's) and no faster than ``fps``; ``always`` passes through
    any H.264; ``never`` and every other codec transcode.
    """
    ctx = stream.codec_context
    codec = ctx.name
    if mode == "never":
        return PathChoice("transcode", "passthrough: never")
    if codec != "h264":
        return PathChoice("transcode", f"the source is {codec}, not H.264")
    described = f"H.264 {ctx.profile or '?'} {ctx.width}x{ctx.height}"
    rate = stream.average_rate or stream.guessed_rate
    if rate:
        described += f" at {float(rate):g} fps"
    if mode == "always":
        return PathChoice("passthrough", f"{described} (passthrough: always)")
    if ctx.profile not in ACCEPTED_PROFILES or ctx.has_b_frames:
        return PathChoice("transcode", f"{described}: the peer takes Constrained Baseline "
                                       "H.264 without B-frames")
    want = (width or ctx.width, height or ctx.height)
    if want != (ctx.width, ctx.height):
        return PathChoice("transcode", f"{described}: resized to {want[0]}x{want[1]}")
    if rate and float(rate) > fps * FPS_TOLERANCE:
        return PathChoice("transcode", f"{described}: decimated to {fps:g} fps")
    return PathChoice("passthrough", described)


class AnnexB:
    """Demuxed H.264 packets as Annex B access units with SPS/PPS before keyframes.

    MP4/MOV carry length-prefixed NAL units and keep SPS/PPS in the stream's
    extradata (avcC): FFmpeg's ``h264_mp4toannexb`` filter rewrites them. RTSP and
    MPEG-TS packets are Annex B already; their SPS/PPS may live only in the SDP
    (extradata), so they are put in front of a keyframe that lacks them.
    """

    def __init__(self, stream: av.video.stream.VideoStream) -> None:
        extradata = stream.codec_context.extradata or b""
        self._filter = None
        self._parameter_sets = b""
        if extradata[:1] == b"\x01":  # avcC
            from av.bitstream import BitStreamFilterContext

            self._filter = BitStreamFilterContext("h264_mp4toannexb", stream)
        elif extradata.startswith((b"\x00\x00\x01", _START_CODE)):
            self._parameter_sets = extradata

    def __call__(self, packet: av.Packet) -> list[tuple[bytes, bool]]:
        """``(access unit, is_keyframe)`` for each output packet."""
        keyframe = packet.is_keyframe
        if self._filter is not None:
            return [(bytes(p), keyframe) for p in self._filter.filter(packet)]
        data = bytes(packet)
        if keyframe and self._parameter_sets and not _has_sps(data):
            data = self._parameter_sets + data
        return [(data, keyframe)]


def _has_sps(data: bytes) -> bool:
    at = data.find(b"\x00\x00\x01")
    while at != -1 and at + 3 < len(data):
        if data[at + 3] & 0x1F == _NAL_SPS:
            return True
        at = data.find(b"\x00\x00\x01", at + 3)
    return False


class PacketFeed:
    """Fans out a source's access units to every live :class:`PacketTrack` (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tracks: weakref.WeakSet[PacketTrack] = weakref.WeakSet()
        self.packets = 0
        self.keyframes = 0

    def track(self) -> PacketTrack:
        """A new track for one publisher (call it on the event loop it will be read on)."""
        track = PacketTrack(self)
        with self._lock:
            self._tracks.add(track)
        return track

    def put(self, data: bytes, keyframe: bool, media_time: float) -> None:
        """One access unit at ``media_time`` seconds on the source's timeline (any thread)."""
        self.packets += 1
        self.keyframes += keyframe
        pts = round(media_time * CLOCK_RATE)
        with self._lock:
            tracks = list(self._tracks)
        for track in tracks:
            track.offer(data, keyframe, pts)

    def _remove(self, track: PacketTrack) -> None:
        with self._lock:
            self._tracks.discard(track)


class PacketTrack(MediaStreamTrack):
    """A video track whose ``recv()`` returns encoded H.264 packets, from a keyframe on."""

    kind = "video"

    def __init__(self, feed: PacketFeed, max_queued: int = MAX_QUEUED_PACKETS) -> None:
        super().__init__()
        self._feed = feed
        self._loop = asyncio.get_running_loop()
        self._queue: deque[av.Packet] = deque()
        self._ready = asyncio.Event()
        self._max_queued = max_queued
        self._want_keyframe = True
        self.created_at = time.monotonic()
        self.first_picture_s: float | None = None
        """Seconds from this track's creation to the first keyframe it queued."""
        self.skipped = 0
        """Packets dropped while waiting for a keyframe (at the start or after falling behind)."""

    def offer(self, data: bytes, keyframe: bool, pts: int) -> None:
        """From the source's thread: queue a packet on the track's event loop."""
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody reads
            self._loop.call_soon_threadsafe(self._push, data, keyframe, pts)

    def _push(self, data: bytes, keyframe: bool, pts: int) -> None:
        if self.readyState != "live":
            return
        if len(self._queue) >= self._max_queued:
            self.skipped += len(self._queue)
            self._queue.clear()
            self._want_keyframe = True
        if self._want_keyframe:
            if not keyframe:
                self.skipped += 1
                return
            self._want_keyframe = False
            if self.first_picture_s is None:
                self.first_picture_s = time.monotonic() - self.created_at
                log.info("passthrough: first keyframe %.2f s after the publisher started",
                         self.first_picture_s)
        packet = av.Packet(data)
        packet.pts = packet.dts = pts
        packet.time_base = TIME_BASE
        self._queue.append(packet)
        self._ready.set()

    async def recv(self) -> av.Packet:  # type: ignore[override]
        while not self._queue:
            if self.readyState != "live":
                raise MediaStreamError
            self._ready.clear()
            await self._ready.wait()
        return self._queue.popleft()

    def stop(self) -> None:
        super().stop()
        self._feed._remove(self)
        self._ready.set()
