"""LiveKitPublisher and make_publisher.

No LiveKit server can run here, so the publisher is driven through a fake
``livekit.rtc`` module (:class:`FakeRtc`), the one place this suite mocks: it
records connects, published tracks and captured frames and can reject a token,
drop the room or connect slowly. Everything else is real: frame conversion,
pacing, error mapping. A second group of tests holds the code against the REAL
installed SDK: every name it touches exists, real ``VideoFrame``s and
``TrackPublishOptions`` accept what it builds, a real ``VideoSource`` takes
its frames offline, and the SDK's real connect failures (a stub HTTP server
answering 401, a closed port) map to the right errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import itertools
import logging
import socket
import time
import typing
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import av
import cv2
import httpx
import numpy as np
import pytest
from livekit import rtc as real_rtc
from support.poll import eventually

from watcher.errors import AuthenticationError, TransportError
from watcher.media.livekit import LiveKitPublisher, redact_url
from watcher.media.livekit_track import publish_options, to_rtc_frame
from watcher.media.publisher import Publisher, make_publisher
from watcher.media.tracks import FrameTrack, LatestFrame
from watcher.media.whip import WhipPublisher

URL = "wss://project-abc.livekit.cloud"
TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJwdWJsaXNoZXIifQ.c2VjcmV0LXNpZ25hdHVyZS0x"
FRESH_TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJmcmVzaCJ9.ZnJlc2gtc2lnbmF0dXJlLTI"
W, H, FPS = 320, 240, 20

# Every name of livekit.rtc the publisher touches, with the attributes it uses on each.
RTC_NAMES: dict[str, tuple[str, ...]] = {
    "Room": ("connect", "disconnect", "on", "local_participant"),
    "RoomOptions": (),
    "VideoSource": ("capture_frame", "aclose"),
    "LocalVideoTrack": ("create_video_track",),
    "TrackPublishOptions": (),
    "TrackSource": ("SOURCE_CAMERA",),
    "VideoCodec": ("VP8", "H264"),
    "VideoEncoding": (),
    "VideoFrame": ("width", "height", "type", "data"),
    "VideoBufferType": ("I420", "RGBA"),
    "ConnectionState": ("CONN_CONNECTED", "CONN_RECONNECTING", "CONN_DISCONNECTED"),
    "DisconnectReason": ("Name", "CLIENT_INITIATED", "SERVER_SHUTDOWN"),
}

REAL_AUTH_FAILURE = ("engine: signal failure: client error: 401 Unauthorized - invalid token: "
                     "token is expired (exp)")
"""What the real SDK raises when the server answers 401 (see test_real_sdk_rejected_token)."""
REAL_REFUSED = ("engine: signal failure: transport connection error: IO error: "
                "Connection refused (os error 111)")


# -- the fake SDK boundary -------------------------------------------------------------------------
class FakeConnectError(Exception):
    """Like rtc.ConnectError: carries the SDK's message."""


@dataclass
class Captured:
    width: int
    height: int
    type: int
    size: int
    data: bytes
    at: float


class _Enum:
    """A protobuf-like enum: NAME attributes plus Name(value)."""

    def __init__(self, **values: int) -> None:
        self.__dict__.update(values)
        self._names = {v: k for k, v in values.items()}

    def Name(self, value: int) -> str:  # protobuf's spelling
        return self._names[value]


class FakeVideoFrame:
    _BYTES_PER_PIXEL = {1: 4.0, 4: 1.5}  # RGBA, I420 (even sizes)

    def __init__(self, width: int, height: int, type: int, data: bytearray) -> None:
        expected = int(width * height * self._BYTES_PER_PIXEL[type])
        if len(data) != expected:
            raise ValueError(f"buffer of {len(data)} bytes, {expected} expected")
        self._size, self._type, self._data = (width, height), type, data

    width = property(lambda self: self._size[0])
    height = property(lambda self: self._size[1])
    type = property(lambda self: self._type)
    data = property(lambda self: self._data)


class FakeVideoSource:
    world: FakeRtc  # bound per FakeRtc instance

    def __init__(self, width: int, height: int) -> None:
        world = self.world
        self.width, self.height = width, height
        self.frames: list[Captured] = []
        self.closed = False
        self.fail_capture = False
        world.sources.append(self)

    def capture_frame(self, frame: FakeVideoFrame, **_: Any) -> None:
        if self.closed or self.fail_capture:
            raise RuntimeError("capture on a closed source")
        self.frames.append(Captured(frame.width, frame.height, frame.type, len(frame.data),
                                    bytes(frame.data), self.world.clock()))

    async def aclose(self) -> None:
        self.closed = True


class FakeRoom:
    world: FakeRtc  # bound per FakeRtc instance

    def __init__(self) -> None:
        world = self.world
        self.handlers: dict[str, list[Callable[..., Any]]] = {}
        self.url: str | None = None
        self.token: str | None = None
        self.options: Any = None
        self.connected = False
        self.ever_connected = False
        self.disconnect_calls = 0
        self.published: list[tuple[Any, Any]] = []
        world.rooms.append(self)

    @property
    def local_participant(self) -> Any:
        return SimpleNamespace(publish_track=self._publish_track)

    def on(self, event: str, callback: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(callback):  # the real EventEmitter refuses these too
            raise ValueError("callbacks must be synchronous")
        self.handlers.setdefault(event, []).append(callback)
        return callback

    def emit(self, event: str, *args: Any) -> None:
        for callback in list(self.handlers.get(event, [])):
            callback(*args)

    async def connect(self, url: str, token: str, options: Any = None) -> None:
        self.url, self.token, self.options = url, token, options
        self.world.connects.append((url, token))
        if self.world.connect_delay:
            await asyncio.sleep(self.world.connect_delay)
        if self.world.connect_error:
            raise FakeConnectError(self.world.connect_error)
        self.connected = self.ever_connected = True
        self.emit("connection_state_changed", FakeRtc.ConnectionState.CONN_CONNECTED)
        self.emit("connected")

    async def _publish_track(self, track: Any, options: Any) -> Any:
        if self.world.publish_error:
            raise RuntimeError(self.world.publish_error)
        self.published.append((track, options))
        return SimpleNamespace(sid="TR_fake", track=track)

    async def disconnect(self) -> None:
        self.disconnect_calls += 1
        if self.connected:
            self.drop(FakeRtc.DisconnectReason.CLIENT_INITIATED)

    def drop(self, reason: int) -> None:
        """The room ends (server side, or our own leave): the SDK's two events, in its order."""
        self.connected = False
        self.emit("connection_state_changed", FakeRtc.ConnectionState.CONN_DISCONNECTED)
        self.emit("disconnected", reason)


class FakeRtc:
    """A stand-in for ``livekit.rtc`` with the names the publisher uses."""

    VideoBufferType = _Enum(RGBA=1, I420=4)
    TrackSource = _Enum(SOURCE_UNKNOWN=0, SOURCE_CAMERA=1)
    VideoCodec = _Enum(VP8=0, H264=1)
    ConnectionState = _Enum(CONN_DISCONNECTED=0, CONN_CONNECTED=1, CONN_RECONNECTING=2)
    DisconnectReason = _Enum(UNKNOWN_REASON=0, CLIENT_INITIATED=1, SERVER_SHUTDOWN=3)
    VideoFrame = FakeVideoFrame
    ConnectError = FakeConnectError

    def __init__(self) -> None:
        self.clock: Callable[[], float] = time.monotonic
        """What captured frames are stamped with (a test's virtual time)."""
        self.connect_error: str | None = None
        self.connect_delay = 0.0
        self.publish_error: str | None = None
        self.connects: list[tuple[str, str]] = []
        self.rooms: list[FakeRoom] = []
        self.sources: list[FakeVideoSource] = []
        self.Room = type("Room", (FakeRoom,), {"world": self})
        self.VideoSource = type("VideoSource", (FakeVideoSource,), {"world": self})
        self.LocalVideoTrack = SimpleNamespace(
            create_video_track=lambda name, source: SimpleNamespace(name=name, source=source))

    RoomOptions = staticmethod(SimpleNamespace)
    TrackPublishOptions = staticmethod(SimpleNamespace)
    VideoEncoding = staticmethod(SimpleNamespace)

    @property
    def room(self) -> FakeRoom:
        assert len(self.rooms) == 1
        return self.rooms[0]

    @property
    def frames(self) -> list[Captured]:
        return [frame for source in self.sources for frame in source.frames]


@pytest.fixture
def fake_rtc() -> FakeRtc:
    return FakeRtc()


class VirtualTime:
    """The pacer's clock and sleep: a sleep moves the clock by exactly its length, so
    frame counts and spacing do not depend on how fast (or loaded) the machine is."""

    def __init__(self) -> None:
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)

    def bind(self, rtc: FakeRtc) -> dict[str, Any]:
        """Stamp ``rtc``'s captured frames with this time; the publisher's keywords."""
        rtc.clock = self.clock
        return {"clock": self.clock, "sleep": self.sleep}


until = functools.partial(eventually, timeout=30.0, interval=0.001)
"""The pacer moves in milliseconds: poll often (a generous bound)."""


@pytest.fixture
def red_mailbox() -> LatestFrame:
    mailbox = LatestFrame()
    mailbox.put(np.full((H, W, 3), (0, 0, 255), np.uint8))
    return mailbox


def publisher(rtc: Any, source: Any, *, token: str = TOKEN, url: str = URL,
              **kw: Any) -> LiveKitPublisher:
    kw = {"width": W, "height": H, "fps": FPS, **kw}
    return LiveKitPublisher(url, token, source, rtc_module=rtc, **kw)


@contextlib.asynccontextmanager
async def running(pub: LiveKitPublisher) -> AsyncIterator[LiveKitPublisher]:
    await pub.start()
    try:
        yield pub
    finally:
        await pub.stop()


def pacer_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() == "livekit-pacer" and not t.done()]


# -- frames ----------------------------------------------------------------------------------------
async def test_frames_flow_at_fps_with_the_right_size_and_buffer_type(fake_rtc: FakeRtc) -> None:
    mailbox = LatestFrame()
    mailbox.put(np.zeros((120, 160, 3), np.uint8))  # smaller than configured: scaled up
    time_ = VirtualTime()
    pub = publisher(fake_rtc, mailbox, **time_.bind(fake_rtc))
    async with running(pub):
        await pub.wait_connected()
        assert pub.connected and pub.state == "connected"
        await until(lambda: pub.frames_sent >= 11)  # half a second of the pacer's time
        sent = pub.frames_sent
    frames = [f for f in fake_rtc.frames if f.at <= 0.5 + 1e-9]
    assert len(frames) == 11  # 0.5 s at 20 fps: one at t=0, then every 50 ms
    assert sent >= len(frames) and pub.ticks_skipped == 0
    assert {(f.width, f.height, f.type, f.size) for f in frames} == {
        (W, H, FakeRtc.VideoBufferType.I420, W * H * 3 // 2)}
    gaps = [b.at - a.at for a, b in itertools.pairwise(frames)]
    assert gaps == pytest.approx([1 / FPS] * 10)
    # One camera track, published with a frame-rate cap; no subscriptions.
    room = fake_rtc.room
    assert fake_rtc.connects == [(URL, TOKEN)]
    assert room.options.auto_subscribe is False
    [(track, options)] = room.published
    assert track.source is fake_rtc.sources[0]
    assert (fake_rtc.sources[0].width, fake_rtc.sources[0].height) == (W, H)
    assert options.source == FakeRtc.TrackSource.SOURCE_CAMERA
    assert options.simulcast is False and options.video_codec == FakeRtc.VideoCodec.VP8
    assert options.video_encoding.max_framerate == FPS
    assert options.video_encoding.max_bitrate == pub.max_bitrate > 0


async def test_the_newest_frame_is_sent_and_repeated_while_no_newer_one_comes(
        fake_rtc: FakeRtc) -> None:
    mailbox = LatestFrame()
    time_ = VirtualTime()
    pub = publisher(fake_rtc, mailbox, width=4, height=4, fps=50, **time_.bind(fake_rtc))
    async with running(pub):
        await until(lambda: time_.now >= 0.06)
        assert pub.frames_sent == 0  # nothing before the first frame
        mailbox.put(np.full((4, 4, 3), 10, np.uint8))
        await until(lambda: pub.frames_sent >= 5)
        mailbox.put(np.full((4, 4, 3), 200, np.uint8))
        sent = pub.frames_sent
        await until(lambda: pub.frames_sent >= sent + 5)
    lumas = [f.data[0] for f in fake_rtc.frames]
    assert lumas[0] < 50 and lumas[-1] > 150
    assert lumas == sorted(lumas)  # old, old, ..., new, new: never a stale frame after a new one
    assert sum(1 for y in lumas if y < 50) >= 3 and sum(1 for y in lumas if y > 150) >= 3


async def test_a_producer_is_asked_for_each_tick_and_failures_skip_a_frame(
        fake_rtc: FakeRtc, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[tuple[int, float]] = []

    def producer(n: int, t: float) -> np.ndarray:
        calls.append((n, t))
        if n == 2:
            raise RuntimeError("camera hiccup")
        return np.zeros((H, W, 3), np.uint8)

    time_ = VirtualTime()
    pub = publisher(fake_rtc, producer, fps=50, **time_.bind(fake_rtc))
    async with running(pub):
        await until(lambda: len(calls) >= 10)
    assert [n for n, _ in calls[:4]] == [0, 1, 2, 3]
    assert all(t == pytest.approx(n / 50) for n, t in calls)
    # every frame produced was sent but the failed one, and perhaps the one still being
    # produced when the publisher stopped
    assert pub.frames_failed == 1 and len(calls) - 2 <= pub.frames_sent <= len(calls) - 1
    assert "could not be produced" in caplog.text


async def test_odd_sizes_fall_back_to_rgba(fake_rtc: FakeRtc) -> None:
    mailbox = LatestFrame()
    mailbox.put(np.zeros((11, 15, 3), np.uint8))
    pub = publisher(fake_rtc, mailbox, width=15, height=11)
    assert pub.pixel_format == "rgba"
    async with running(pub):
        await until(lambda: bool(fake_rtc.frames))
    assert fake_rtc.frames
    rgba = FakeRtc.VideoBufferType.RGBA
    assert {(f.type, f.size) for f in fake_rtc.frames} == {(rgba, 15 * 11 * 4)}


def test_conversion_keeps_the_picture() -> None:
    bgr = np.zeros((8, 8, 3), np.uint8)
    bgr[:, :4] = (0, 0, 255)  # left half red
    bgr[:, 4:] = (255, 0, 0)  # right half blue
    i420 = to_rtc_frame(FakeRtc, bgr, 8, 8, "i420")
    back = cv2.cvtColor(np.frombuffer(bytes(i420.data), np.uint8).reshape(12, 8),
                        cv2.COLOR_YUV2BGR_I420)
    assert np.abs(back.astype(int) - bgr.astype(int)).max() <= 12
    rgba = np.frombuffer(bytes(to_rtc_frame(FakeRtc, bgr, 8, 8, "rgba").data), np.uint8)
    assert tuple(rgba.reshape(8, 8, 4)[0, 0]) == (255, 0, 0, 255)
    # av frames and gray frames are accepted too; other shapes are refused.
    av_frame = av.VideoFrame.from_ndarray(bgr, format="bgr24")
    assert to_rtc_frame(FakeRtc, av_frame, 8, 8).data == i420.data
    assert len(to_rtc_frame(FakeRtc, np.zeros((8, 8), np.uint8), 8, 8).data) == 96
    with pytest.raises(ValueError, match="BGR"):
        to_rtc_frame(FakeRtc, np.zeros((8, 8, 4), np.uint8), 8, 8)


# -- sessions --------------------------------------------------------------------------------------
async def test_a_reconnect_uses_a_new_publisher_and_the_fresh_token(
        fake_rtc: FakeRtc, red_mailbox: LatestFrame) -> None:
    first = publisher(fake_rtc, red_mailbox)
    async with running(first):
        await until(lambda: first.frames_sent > 0)
    with pytest.raises(RuntimeError, match="starts once"):
        await first.start()
    second = publisher(fake_rtc, red_mailbox, token=FRESH_TOKEN)  # after a keepalive
    async with running(second):
        await until(lambda: second.frames_sent > 0)
        assert second.connected
    assert fake_rtc.connects == [(URL, TOKEN), (URL, FRESH_TOKEN)]
    assert [r.token for r in fake_rtc.rooms] == [TOKEN, FRESH_TOKEN]
    assert all(not r.connected and r.ever_connected for r in fake_rtc.rooms)
    assert first.frames_sent > 0 and len(fake_rtc.frames) == first.frames_sent + second.frames_sent


@pytest.mark.parametrize("message", [
    REAL_AUTH_FAILURE,
    "engine: signal failure: access token has invalid characters",
    "engine: signal failure: client error: 401 Unauthorized - invalid token: go-jose/go-jose: "
    "error in cryptographic primitive",
])
async def test_a_rejected_token_is_an_authentication_error(
        fake_rtc: FakeRtc, red_mailbox: LatestFrame, message: str) -> None:
    fake_rtc.connect_error = message
    pub = publisher(fake_rtc, red_mailbox)
    with pytest.raises(AuthenticationError) as info:
        await pub.start()
    assert info.value.status == 401
    assert pub.closed.is_set() and not pub.connected_event.is_set() and pub.state == "failed"
    assert fake_rtc.sources == [] and not pacer_tasks()
    with pytest.raises(ConnectionError):
        await pub.wait_connected()


@pytest.mark.parametrize("message", [
    REAL_REFUSED,
    "engine: signal failure: server error: 503 Service Unavailable - draining",
    "engine: signal failure: Timeout",
])
async def test_other_connect_failures_are_transport_errors(
        fake_rtc: FakeRtc, red_mailbox: LatestFrame, message: str) -> None:
    fake_rtc.connect_error = message
    pub = publisher(fake_rtc, red_mailbox)
    with pytest.raises(TransportError, match="FakeConnectError"):
        await pub.start()
    assert pub.closed.is_set() and pub.state == "failed"


async def test_a_publish_failure_is_a_transport_error_and_leaves_the_room(
        fake_rtc: FakeRtc, red_mailbox: LatestFrame) -> None:
    fake_rtc.publish_error = "engine: publish failed"
    pub = publisher(fake_rtc, red_mailbox)
    with pytest.raises(TransportError, match="publish"):
        await pub.start()
    assert not fake_rtc.room.connected and fake_rtc.sources[0].closed and pub.closed.is_set()


async def test_a_disconnect_mid_session_sets_closed_and_stops_sending(
        fake_rtc: FakeRtc, red_mailbox: LatestFrame, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="watcher")
    pub = publisher(fake_rtc, red_mailbox)
    async with running(pub):
        await asyncio.sleep(0.1)
        assert not pub.closed.is_set()
        fake_rtc.room.drop(FakeRtc.DisconnectReason.SERVER_SHUTDOWN)
        assert pub.closed.is_set() and pub.state == "failed" and not pub.connected
        sent = pub.frames_sent
        await asyncio.sleep(0.15)
        assert pub.frames_sent == sent and not pacer_tasks()
        with pytest.raises(ConnectionError):
            await pub.wait_connected()
    assert pub.state == "closed"
    assert "SERVER_SHUTDOWN" in caplog.text


async def test_stop_leaves_the_room_and_ends_the_pacing_task(
        fake_rtc: FakeRtc, red_mailbox: LatestFrame) -> None:
    states: list[str] = []
    pub = publisher(fake_rtc, red_mailbox, on_state=states.append)
    await pub.start()
    await until(lambda: pub.frames_sent > 0)
    assert len(pacer_tasks()) == 1
    await pub.stop()
    room, source = fake_rtc.room, fake_rtc.sources[0]
    assert room.disconnect_calls == 1 and not room.connected and source.closed
    assert not pacer_tasks() and pub.closed.is_set() and pub.state == "closed"
    sent = pub.frames_sent
    await asyncio.sleep(0.1)
    assert pub.frames_sent == sent == len(source.frames) > 0
    await pub.stop()  # idempotent
    assert room.disconnect_calls == 1
    assert states == ["connecting", "connected", "closed"]  # our own leave is no failure


async def test_reconnecting_is_reported_and_frames_keep_flowing(
        fake_rtc: FakeRtc, red_mailbox: LatestFrame) -> None:
    states: list[str] = []
    pub = publisher(fake_rtc, red_mailbox, on_state=states.append)
    async with running(pub):
        fake_rtc.room.emit("connection_state_changed", FakeRtc.ConnectionState.CONN_RECONNECTING)
        assert pub.state == "reconnecting" and not pub.connected and not pub.closed.is_set()
        before = pub.frames_sent
        await until(lambda: pub.frames_sent > before)
        fake_rtc.room.emit("connection_state_changed", FakeRtc.ConnectionState.CONN_CONNECTED)
        assert pub.connected
    assert states == ["connecting", "connected", "reconnecting", "connected", "closed"]


async def test_a_failing_capture_closes_the_session(
        fake_rtc: FakeRtc, red_mailbox: LatestFrame) -> None:
    async with running(publisher(fake_rtc, red_mailbox)) as pub:
        await asyncio.sleep(0.06)
        fake_rtc.sources[0].fail_capture = True
        await asyncio.wait_for(pub.closed.wait(), 30)
        assert pub.state == "failed"


async def test_a_slow_connect_is_awaited(fake_rtc: FakeRtc, red_mailbox: LatestFrame) -> None:
    fake_rtc.connect_delay = 0.15
    pub = publisher(fake_rtc, red_mailbox, timeout=2)
    start = asyncio.create_task(pub.start())
    await asyncio.sleep(0.05)
    assert pub.state == "connecting" and not pub.connected
    await pub.wait_connected()
    await start
    assert pub.connected
    await pub.stop()


async def test_a_connect_slower_than_the_timeout_fails_and_the_late_room_is_left(
        fake_rtc: FakeRtc, red_mailbox: LatestFrame) -> None:
    fake_rtc.connect_delay = 0.15
    pub = publisher(fake_rtc, red_mailbox, timeout=0.05)
    with pytest.raises(TransportError, match="timed out"):
        await pub.start()
    room = fake_rtc.room
    assert not room.ever_connected  # it gave up before the connect could finish
    assert pub.closed.is_set() and pub.state == "failed"
    await until(lambda: room.ever_connected)  # the abandoned connect completes ...
    await until(lambda: not room.connected)  # ... and is left at once
    assert room.published == []


async def test_stop_during_connect_leaves_the_room(
        fake_rtc: FakeRtc, red_mailbox: LatestFrame) -> None:
    fake_rtc.connect_delay = 0.1
    pub = publisher(fake_rtc, red_mailbox)
    start = asyncio.create_task(pub.start())
    await asyncio.sleep(0.02)
    await pub.stop()
    with pytest.raises(TransportError, match="closed while connecting"):
        await start
    assert fake_rtc.room.ever_connected and not fake_rtc.room.connected
    assert pub.state == "closed" and not pacer_tasks()


async def test_the_token_never_reaches_logs_errors_or_repr(
        fake_rtc: FakeRtc, red_mailbox: LatestFrame, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"{URL}/rtc?access_token={TOKEN}&auto_subscribe=0"
    fake_rtc.connect_error = f"failed to connect to {url}: reset by peer (token {TOKEN})"
    failing = publisher(fake_rtc, red_mailbox, url=url)
    with pytest.raises(TransportError) as info:
        await failing.start()
    fake_rtc.connect_error = f"client error: 401 Unauthorized - invalid token: {TOKEN}"
    with pytest.raises(AuthenticationError) as auth:
        await publisher(fake_rtc, red_mailbox, url=url).start()
    fake_rtc.connect_error = None
    pub = publisher(fake_rtc, red_mailbox, url=url)
    async with running(pub):
        await asyncio.sleep(0.06)
        fake_rtc.rooms[-1].drop(FakeRtc.DisconnectReason.SERVER_SHUTDOWN)
        text = repr(pub)
    seen = [caplog.text, text, repr(failing), str(info.value), str(auth.value),
            *(str(r.args) for r in caplog.records)]
    assert caplog.text and "project-abc.livekit.cloud" in text
    for item in seen:
        assert TOKEN not in item
        assert "access_token=eyJ" not in item
    assert redact_url(url) == f"{URL}/rtc"


def test_bad_arguments_are_refused(fake_rtc: FakeRtc) -> None:
    with pytest.raises(ValueError, match="fps"):
        publisher(fake_rtc, LatestFrame(), fps=0)
    with pytest.raises(ValueError, match="codec"):
        publisher(fake_rtc, LatestFrame(), codec="theora")
    with pytest.raises(ValueError, match="pixel_format"):
        publisher(fake_rtc, LatestFrame(), pixel_format="nv12")


# -- make_publisher --------------------------------------------------------------------------------
async def test_make_publisher_whip() -> None:
    mailbox = LatestFrame()
    async with httpx.AsyncClient() as http:
        pub = make_publisher("whip", "http://127.0.0.1:8420/v1beta/streams/s1/whip", "tok-123456",
                             mailbox, fps=5, width=W, height=H, http=http)
        assert isinstance(pub, WhipPublisher) and isinstance(pub, Publisher)
        assert pub.url.endswith("/streams/s1/whip") and pub.state == "new"
        track = pub._track.source
        assert isinstance(track, FrameTrack) and track.source is mailbox and track.fps == 5
        assert pub._http is http


def test_make_publisher_livekit() -> None:
    mailbox = LatestFrame()
    pub = make_publisher("livekit", URL, TOKEN, mailbox, fps=5, width=W, height=H)
    assert isinstance(pub, LiveKitPublisher) and isinstance(pub, Publisher)
    assert (pub.url, pub.source, pub.width, pub.height, pub.fps) == (URL, mailbox, W, H, 5.0)
    assert pub.state == "new" and not pub.connected and pub.frames_sent == 0
    assert TOKEN not in repr(pub)


def test_make_publisher_unknown_type() -> None:
    with pytest.raises(ValueError, match=r"'rtmp'.*whip, livekit"):
        make_publisher("rtmp", URL, TOKEN, LatestFrame(), fps=5, width=W, height=H)


# -- against the real installed SDK ----------------------------------------------------------------
@pytest.mark.parametrize("module", [real_rtc, FakeRtc()], ids=["real", "fake"])
def test_every_name_the_publisher_touches_exists(module: Any) -> None:
    for name, attributes in RTC_NAMES.items():
        assert hasattr(module, name), name
        for attribute in attributes:
            assert hasattr(getattr(module, name), attribute), f"{name}.{attribute}"


def test_the_real_sdk_signatures_and_events_match() -> None:
    events = set(typing.get_args(real_rtc.room.EventTypes))
    assert {"disconnected", "connection_state_changed"} <= events
    assert list(inspect.signature(real_rtc.Room.connect).parameters)[:4] == [
        "self", "url", "token", "options"]
    assert list(inspect.signature(real_rtc.LocalParticipant.publish_track).parameters)[:3] == [
        "self", "track", "options"]
    assert real_rtc.RoomOptions(auto_subscribe=False).auto_subscribe is False
    options = publish_options(real_rtc, fps=20, max_bitrate=500_000, codec="vp8")
    assert options.source == real_rtc.TrackSource.SOURCE_CAMERA
    assert options.video_codec == real_rtc.VideoCodec.VP8 and options.simulcast is False
    assert (options.video_encoding.max_bitrate, options.video_encoding.max_framerate) == (
        500_000, 20)
    assert real_rtc.DisconnectReason.Name(real_rtc.DisconnectReason.SERVER_SHUTDOWN) == (
        "SERVER_SHUTDOWN")


@pytest.mark.parametrize(("fmt", "buffer", "size"), [
    ("i420", "I420", 64 * 48 * 3 // 2), ("rgba", "RGBA", 64 * 48 * 4)])
async def test_real_video_frames_build_and_capture_offline(fmt: str, buffer: str,
                                                           size: int) -> None:
    buffer_type = getattr(real_rtc.VideoBufferType, buffer)
    plain = real_rtc.VideoFrame(64, 48, buffer_type, bytearray(size))
    assert len(plain.data) == size
    frame = to_rtc_frame(real_rtc, np.zeros((96, 128, 3), np.uint8), 64, 48, fmt)  # type: ignore[arg-type]
    assert isinstance(frame, real_rtc.VideoFrame)
    assert (frame.width, frame.height, frame.type, len(frame.data)) == (64, 48, buffer_type, size)
    source = real_rtc.VideoSource(64, 48)  # a local FFI object: no server needed
    try:
        source.capture_frame(frame)
    finally:
        await source.aclose()


async def test_real_sdk_objects_carry_a_session_with_a_fake_room_only(fake_rtc: FakeRtc) -> None:
    """Real VideoSource, track, options and frames; only the room (the network) is fake."""
    hybrid = SimpleNamespace(**{name: getattr(real_rtc, name) for name in RTC_NAMES})
    hybrid.Room = fake_rtc.Room
    mailbox = LatestFrame()
    mailbox.put(np.zeros((48, 64, 3), np.uint8))
    pub = publisher(hybrid, mailbox, width=64, height=48, fps=50)
    async with running(pub):
        await asyncio.sleep(0.15)
    [(track, options)] = fake_rtc.room.published
    assert isinstance(track, real_rtc.LocalVideoTrack) and track.name == "camera"
    assert isinstance(options, real_rtc.TrackPublishOptions)
    assert pub.frames_sent >= 4 and pub.frames_failed == 0


@pytest.fixture
async def lk_stub_401() -> AsyncIterator[tuple[str, list[bytes]]]:
    """An HTTP server answering every request 401 (what LiveKit does with a stale token)."""
    requests: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        requests.append(await reader.read(65536))
        body = b"invalid token: token is expired (exp)"
        writer.write(b"HTTP/1.1 401 Unauthorized\r\ncontent-type: text/plain\r\n"
                     b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"ws://127.0.0.1:{port}", requests


async def test_real_sdk_rejected_token_is_an_authentication_error(
        lk_stub_401: tuple[str, list[bytes]], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    url, requests = lk_stub_401
    pub = LiveKitPublisher(url, TOKEN, LatestFrame(), width=64, height=48, fps=5, timeout=10)
    with pytest.raises(AuthenticationError, match="401") as info:
        await pub.start()
    assert requests and any(TOKEN.encode() in r for r in requests)  # the SDK did send it
    assert pub.closed.is_set() and TOKEN not in str(info.value)
    assert TOKEN not in caplog.text


async def test_real_sdk_unreachable_server_is_a_transport_error() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    pub = LiveKitPublisher(f"ws://127.0.0.1:{port}", TOKEN, LatestFrame(), width=64, height=48,
                           fps=5, timeout=10)
    with pytest.raises(TransportError, match="ConnectError") as info:
        await pub.start()
    assert not isinstance(info.value, AuthenticationError) and pub.closed.is_set()
