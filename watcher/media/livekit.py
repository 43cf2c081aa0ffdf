"""Publish a video track to a LiveKit room (the Overshoot cloud's ingest) with the livekit SDK.

One :class:`LiveKitPublisher` is one room session: ``start()`` joins the room
with the publish token, publishes one camera track and starts a pacing task
that converts the newest BGR frame of the source to I420 (RGBA when a side is
odd) and hands it to the SDK's ``VideoSource`` at ``fps``; ``stop()`` ends the
task and leaves the room. Like :class:`~watcher.media.whip.WhipPublisher` it is
not restartable: a keeper that reconnects (after ``closed`` was set, or with
the fresh token of a keepalive) makes a new one on the same source.

Connect failures map to :mod:`watcher.errors` at this one boundary: a rejected
token (401, invalid, expired or malformed) is an
:class:`~watcher.errors.AuthenticationError` (fetch a fresh one with a
keepalive), anything else a :class:`~watcher.errors.TransportError`. The token
and the URL's query never reach a log line, an exception message or ``repr``.

The SDK is reached only through ``rtc_module`` (default ``livekit.rtc``), so
tests can hand in a fake with the same names: no LiveKit server runs offline.
Frames and the track's options, as the SDK takes them, are made in
:mod:`watcher.media.livekit_track`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from watcher.errors import AuthenticationError, OvershootError, TransportError
from watcher.media.livekit_track import PixelFormat, default_bitrate, publish_options, to_rtc_frame
from watcher.media.session import wait_connected
from watcher.media.tracks import FrameProducer, LatestFrame

log = logging.getLogger(__name__)

StateCallback = Callable[[str], Any]

DISCONNECT_TIMEOUT = 5.0
"""Seconds ``stop()`` waits for the SDK to leave the room."""

_AUTH_FAILURE = re.compile(
    r"\b401\b|unauthori[sz]ed|invalid[\w ]*token|token[\w ]*(invalid|expired|malformed)"
    r"|access token has invalid characters|\bjwt\b|go-jose",
    re.IGNORECASE,
)
_TOKEN_IN_QUERY = re.compile(r"((?:access_)?token=)[^&\s'\"]+", re.IGNORECASE)


class LiveKitPublisher:
    """Sends frames of ``source`` to the LiveKit room ``url`` joined with ``token``."""

    def __init__(
        self,
        url: str,
        token: str,
        source: LatestFrame | FrameProducer,
        *,
        width: int,
        height: int,
        fps: float,
        track_name: str = "camera",
        pixel_format: PixelFormat = "i420",
        codec: str = "VP8",
        max_bitrate: int | None = None,
        timeout: float = 15.0,
        on_state: StateCallback | None = None,
        rtc_module: Any = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if width <= 0 or height <= 0:
            raise ValueError("width and height must be > 0")
        if not fps > 0:
            raise ValueError("fps must be > 0")
        if pixel_format not in ("i420", "rgba"):
            raise ValueError(f"unknown pixel_format {pixel_format!r}: use 'i420' or 'rgba'")
        if rtc_module is None:
            rtc_module = _import_rtc()
        self.url = url
        self._token = token
        self.source = source
        self.width = width
        self.height = height
        self.fps = float(fps)
        self.track_name = track_name
        # I420 halves the chroma planes, so both sides must be even.
        self.pixel_format: PixelFormat = (
            "rgba" if pixel_format == "i420" and (width % 2 or height % 2) else pixel_format
        )
        if getattr(rtc_module.VideoCodec, codec.upper(), None) is None:
            raise ValueError(f"unknown video codec {codec!r}")
        self.codec = codec.upper()
        self.max_bitrate = max_bitrate or default_bitrate(width, height, self.fps)
        self.timeout = timeout
        self.on_state = on_state
        self._rtc = rtc_module
        self._clock = clock
        self._sleep = sleep
        self.room: Any = None
        self._video_source: Any = None
        self._pacer: asyncio.Task[None] | None = None
        self._side_tasks: set[asyncio.Task[Any]] = set()
        self._state = "new"
        self._started = False
        self._stopping = False
        self._frames_sent = 0
        self.frames_failed = 0
        """Ticks whose frame could not be produced or converted (logged once per streak)."""
        self.ticks_skipped = 0
        """Ticks dropped because the pacing task ran late."""
        self.connected_event = asyncio.Event()
        self.closed = asyncio.Event()
        """Set once the room disconnected or failed (or ``stop()`` ran): reconnect then."""

    # -- state -------------------------------------------------------------------
    @property
    def state(self) -> str:
        """new, connecting, connected, reconnecting, failed or closed."""
        return self._state

    @property
    def connected(self) -> bool:
        return self._state == "connected"

    @property
    def frames_sent(self) -> int:
        """Frames handed to the SDK's video source by this session."""
        return self._frames_sent

    async def wait_connected(self) -> None:
        """Wait (at most ``timeout`` s) until the track is published.

        Raises TimeoutError, or ConnectionError when the session closed first.
        """
        await wait_connected(self.connected_event, self.closed, self.timeout,
                             f"LiveKit session {self.state}")

    def __repr__(self) -> str:
        return (f"LiveKitPublisher(url={redact_url(self.url)!r}, state={self._state!r}, "
                f"frames_sent={self._frames_sent})")

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Join the room, publish the track and start sending frames.

        Raises AuthenticationError when the token is rejected, TransportError otherwise.
        """
        if self._started:
            raise RuntimeError("a LiveKitPublisher starts once; make a new one to reconnect")
        self._started = True
        rtc = self._rtc
        self._set_state("connecting")
        room = self.room = rtc.Room()
        room.on("disconnected", self._on_disconnected)
        room.on("connection_state_changed", self._on_connection_state)
        try:
            async with asyncio.timeout(self.timeout):
                await self._connect(room)
                await self._publish(room)
        except TimeoutError:
            await self._close("failed")
            raise TransportError(f"LiveKit connect to {redact_url(self.url)} timed out "
                                 f"after {self.timeout:g} s") from None
        except BaseException:
            await self._close("failed")
            raise
        if self._stopping or self.closed.is_set():
            # stop() ran (and may have dropped self.room), or the room fell, while joining.
            await _disconnect_quietly(room)
            await self._close("closed" if self._stopping else "failed")
            raise TransportError(f"LiveKit session to {redact_url(self.url)} closed while "
                                 "connecting")
        self._set_state("connected")
        self.connected_event.set()
        self._pacer = asyncio.create_task(self._pace(), name="livekit-pacer")
        log.info("LiveKit publishing %dx%d@%g fps (%s) to %s", self.width, self.height,
                 self.fps, self.pixel_format, redact_url(self.url))

    async def stop(self) -> None:
        """Stop sending frames and leave the room. Safe to call more than once."""
        self._stopping = True
        already = self._state == "closed"
        await self._close("closed")
        if not already:
            log.info("LiveKit publishing to %s stopped", redact_url(self.url))

    async def __aenter__(self) -> LiveKitPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- connect -----------------------------------------------------------------
    async def _connect(self, room: Any) -> None:
        rtc = self._rtc
        options = rtc.RoomOptions(auto_subscribe=False)
        connect = asyncio.ensure_future(room.connect(self.url, self._token, options=options))
        try:
            # Shielded: cancelling the SDK's connect mid-flight can leave a room joined
            # behind our back; instead let it finish and leave it (see _leave_late).
            await asyncio.shield(connect)
        except asyncio.CancelledError:
            if not connect.done():
                connect.add_done_callback(lambda task: self._leave_late(room, task))
            raise
        except Exception as exc:
            raise self._connect_error(exc) from None

    async def _publish(self, room: Any) -> None:
        rtc = self._rtc
        self._video_source = rtc.VideoSource(self.width, self.height)
        track = rtc.LocalVideoTrack.create_video_track(self.track_name, self._video_source)
        options = publish_options(rtc, fps=self.fps, max_bitrate=self.max_bitrate,
                                  codec=self.codec)
        try:
            await room.local_participant.publish_track(track, options)
        except Exception as exc:
            raise TransportError(f"LiveKit publish to {redact_url(self.url)} failed: "
                                 f"{type(exc).__name__}: {self._scrub(str(exc))}") from None

    def _connect_error(self, exc: BaseException) -> OvershootError:
        message = self._scrub(str(exc)) or type(exc).__name__
        if _AUTH_FAILURE.search(message):
            return AuthenticationError(f"LiveKit rejected the publish token: {message}",
                                       status=401)
        return TransportError(f"LiveKit connect to {redact_url(self.url)} failed: "
                              f"{type(exc).__name__}: {message}")

    def _scrub(self, text: str) -> str:
        """``text`` without the token, any token-like query value, or the URL's query."""
        if self._token:
            text = text.replace(self._token, "***")
        text = text.replace(self.url, redact_url(self.url))
        return _TOKEN_IN_QUERY.sub(r"\1***", text)

    def _leave_late(self, room: Any, connect: asyncio.Future[Any]) -> None:
        """The abandoned connect finished after all: leave the room it joined."""
        if connect.cancelled() or connect.exception() is not None:
            return
        log.info("LiveKit connect to %s finished after it was abandoned; leaving",
                 redact_url(self.url))
        self._spawn(_disconnect_quietly(room))

    # -- pacing ------------------------------------------------------------------
    async def _pace(self) -> None:
        """Capture the newest frame every 1/fps s until the session closes."""
        start = self._clock()
        n = 0
        failing = False
        while not self.closed.is_set():
            now = self._clock()
            due = start + n / self.fps
            if now < due:
                await self._sleep(due - now)
            elif now - due >= 1 / self.fps:
                current = math.floor((now - start) * self.fps)
                self.ticks_skipped += current - n
                n = current
            try:
                frame = await asyncio.to_thread(self._render, n)
            except Exception:
                self.frames_failed += 1
                if not failing:
                    log.exception("LiveKit frame %d could not be produced; skipping", n)
                failing = True
                frame = None
            else:
                if failing and frame is not None:
                    log.info("LiveKit frames flow again after %d failed", self.frames_failed)
                    failing = False
            n += 1
            if frame is None or self.closed.is_set():
                continue
            try:
                self._video_source.capture_frame(frame)
            except Exception as exc:
                log.warning("LiveKit capture failed (%s); closing the session",
                            type(exc).__name__)
                self._set_state("failed")
                self.closed.set()
                return
            self._frames_sent += 1

    def _render(self, n: int) -> Any:
        """The SDK frame for tick ``n``, or None (runs in a worker thread)."""
        if isinstance(self.source, LatestFrame):
            frame = self.source.get()
        else:
            frame = self.source(n, n / self.fps)
        if frame is None:
            return None
        return to_rtc_frame(self._rtc, frame, self.width, self.height, self.pixel_format)

    # -- room events (the SDK calls these synchronously on the loop) -------------
    def _on_disconnected(self, reason: Any = None) -> None:
        if self._stopping:
            return
        log.info("LiveKit room %s disconnected (%s)", redact_url(self.url),
                 _enum_name(self._rtc, "DisconnectReason", reason))
        self._set_state("failed")
        self.closed.set()

    def _on_connection_state(self, state: Any) -> None:
        rtc = self._rtc
        if self._stopping or self._state in {"new", "failed", "closed"}:
            return
        if state == rtc.ConnectionState.CONN_RECONNECTING and self._state == "connected":
            self._set_state("reconnecting")
        elif state == rtc.ConnectionState.CONN_CONNECTED and self._state == "reconnecting":
            self._set_state("connected")

    # -- internals ---------------------------------------------------------------
    def _set_state(self, state: str) -> None:
        if state == self._state:
            return
        self._state = state
        log.debug("LiveKit session %s", state)
        if self.on_state is not None:
            result = self.on_state(state)
            if asyncio.iscoroutine(result):
                self._spawn(result)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._side_tasks.add(task)
        task.add_done_callback(self._side_tasks.discard)

    async def _close(self, state: str) -> None:
        pacer, self._pacer = self._pacer, None
        if pacer is not None:
            pacer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pacer
        room, self.room = self.room, None
        if room is not None:
            self._stopping = True  # our own leave is no failure
            await _disconnect_quietly(room)
        source, self._video_source = self._video_source, None
        if source is not None:
            with contextlib.suppress(Exception):
                await source.aclose()
        if self._state != "failed" or state == "closed":
            self._set_state(state)
        self.closed.set()


def redact_url(url: str) -> str:
    """The URL without userinfo, query or fragment (tokens never reach a log line)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<invalid url>"
    return f"{parts.scheme}://{host}{port}{parts.path}" if parts.scheme else "<invalid url>"


def _import_rtc() -> Any:
    try:
        from livekit import rtc
    except ImportError as exc:
        raise ImportError("publishing to LiveKit needs the 'livekit' package "
                          "(pip install 'livekit>=1')") from exc
    return rtc


async def _disconnect_quietly(room: Any) -> None:
    try:
        async with asyncio.timeout(DISCONNECT_TIMEOUT):
            await room.disconnect()
    except Exception as exc:
        log.warning("LiveKit disconnect failed: %s", type(exc).__name__)


def _enum_name(rtc: Any, enum: str, value: Any) -> str:
    with contextlib.suppress(Exception):
        return str(getattr(rtc, enum).Name(value))
    return str(value)
