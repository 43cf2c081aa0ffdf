"""Publish a video track to a WHIP endpoint (RFC 9725) with aiortc.

One :class:`WhipPublisher` is one WHIP session: ``start()`` POSTs an SDP
offer carrying every ICE candidate (no trickle) and applies the answer;
``stop()`` DELETEs the session resource and closes the peer connection. A
publisher is not restartable: a keeper that reconnects (after a failure or a
token rotation) makes a new one and may hand it the same source track, which
the publisher never stops.

HTTP errors map to :mod:`watcher.errors` at this one boundary: 401 is an
:class:`~watcher.errors.AuthenticationError` (the publish token is stale:
fetch a fresh one with a keepalive), 404 a :class:`~watcher.errors.NotFoundError`
(the stream has ended: create a new one).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import httpx
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from watcher.errors import (
    APIError,
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    ServerError,
    ServiceUnavailableError,
    TransportError,
    UnprocessableError,
)
from watcher.media.ice import ensure_ice_candidates
from watcher.media.session import wait_connected

log = logging.getLogger(__name__)

DEFAULT_CODEC = "video/VP8"
"""VP8 costs about half of H264 per frame in aiortc (software encoders)."""

StateCallback = Callable[[str], Any]


class WhipPublisher:
    """Sends ``track`` to the WHIP endpoint ``url`` authorised by ``token``."""

    def __init__(
        self,
        url: str,
        token: str,
        track: MediaStreamTrack,
        *,
        http: httpx.AsyncClient | None = None,
        codec: str | None = DEFAULT_CODEC,
        timeout: float = 15.0,
        on_state: StateCallback | None = None,
    ) -> None:
        if track.kind != "video":
            raise ValueError("WhipPublisher sends one video track")
        self.url = url
        self._token = token
        self._track = _CountingTrack(track)
        self._http = http
        self._own_http = http is None
        self.codec = codec
        self.timeout = timeout
        self.on_state = on_state
        self.location: str | None = None
        """Absolute URL of the WHIP session resource once started."""
        self.pc: RTCPeerConnection | None = None
        self.connected_event = asyncio.Event()
        self.closed = asyncio.Event()
        """Set once the connection failed or closed (or ``stop()`` ran): reconnect then."""
        self._started = False

    # -- state -------------------------------------------------------------------
    @property
    def state(self) -> str:
        """The peer connection's state: new, connecting, connected, failed or closed."""
        return self.pc.connectionState if self.pc is not None else "new"

    @property
    def connected(self) -> bool:
        return self.pc is not None and self.pc.connectionState == "connected"

    @property
    def frames_sent(self) -> int:
        """Frames handed to the encoder by this session."""
        return self._track.count

    async def wait_connected(self) -> None:
        """Wait (at most ``timeout`` s) until ICE and DTLS are up.

        Raises TimeoutError, or ConnectionError when the connection failed first.
        """
        await wait_connected(self.connected_event, self.closed, self.timeout,
                             f"WebRTC connection {self.state}")

    # -- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Negotiate the session; returns once the answer is applied (media may lag a bit)."""
        if self._started:
            raise RuntimeError("a WhipPublisher starts once; make a new one to reconnect")
        self._started = True
        ensure_ice_candidates()
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self.timeout)
        pc = self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.on("connectionstatechange", self._on_state_change)
        try:
            transceiver = pc.addTransceiver(self._track, direction="sendonly")
            if self.codec:
                codecs = [c for c in RTCRtpSender.getCapabilities("video").codecs
                          if c.mimeType.lower() in {self.codec.lower(), "video/rtx"}]
                if any(c.mimeType.lower() == self.codec.lower() for c in codecs):
                    transceiver.setCodecPreferences(codecs)
            await pc.setLocalDescription(await pc.createOffer())  # gathers every candidate
            answer = await self._post_offer(pc.localDescription.sdp)
            await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        except BaseException:
            await self._close_quietly()
            raise
        log.info("WHIP publishing to %s (session %s)", _redact(self.url), self.location)

    async def stop(self) -> None:
        """End the session: DELETE the resource (best effort) and close the connection."""
        location, self.location = self.location, None
        if location is not None and self._http is not None:
            try:
                response = await self._http.delete(location, headers=self._auth())
                if response.status_code >= 400 and response.status_code != 404:
                    log.warning("WHIP DELETE answered %s", response.status_code)
            except httpx.HTTPError as exc:
                log.warning("WHIP DELETE failed: %s", type(exc).__name__)
        await self._close_quietly()
        log.info("WHIP publishing to %s stopped", _redact(self.url))

    async def __aenter__(self) -> WhipPublisher:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- internals ---------------------------------------------------------------
    def _auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._token}"}

    async def _post_offer(self, offer: str) -> str:
        assert self._http is not None
        headers = {**self._auth(), "content-type": "application/sdp",
                   "accept": "application/sdp"}
        try:
            response = await self._http.post(self.url, content=offer.encode(), headers=headers)
        except httpx.HTTPError as exc:
            raise TransportError(f"WHIP offer to {_redact(self.url)} failed: "
                                 f"{type(exc).__name__}: {exc}") from exc
        if response.status_code != 201:
            raise _api_error(response)
        location = response.headers.get("location")
        if not location:
            raise APIError("WHIP answer has no Location header", status=response.status_code)
        self.location = str(httpx.URL(self.url).join(location))
        return response.text

    async def _on_state_change(self) -> None:
        pc = self.pc
        if pc is None:
            return
        state = pc.connectionState
        log.debug("WHIP connection %s", state)
        if state == "connected":
            self.connected_event.set()
        elif state in {"failed", "closed"}:
            if state == "failed":
                log.info("WHIP connection to %s failed", _redact(self.url))
            self.closed.set()
        if self.on_state is not None:
            result = self.on_state(state)
            if asyncio.iscoroutine(result):
                await result

    async def _close_quietly(self) -> None:
        pc = self.pc
        if pc is not None:
            with contextlib.suppress(Exception):
                await pc.close()
        self._track.stop()
        self.closed.set()
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None


class _CountingTrack(MediaStreamTrack):
    """Forwards frames of the source track and counts them; stopping it spares the source."""

    def __init__(self, source: MediaStreamTrack) -> None:
        super().__init__()
        self.kind = source.kind
        self.source = source
        self.count = 0

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self.source.recv()
        self.count += 1
        return frame


def _api_error(response: httpx.Response) -> APIError:
    status = response.status_code
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    message = detail if isinstance(detail, str) else response.reason_phrase or "WHIP error"
    kw: dict[str, Any] = {"status": status, "body": detail}
    if status == 401:
        return AuthenticationError(f"WHIP publish token rejected: {message}", **kw)
    if status == 403:
        return PermissionDeniedError(message, **kw)
    if status == 404:
        return NotFoundError(f"no stream to publish to: {message}", **kw)
    if status in {400, 415, 422}:
        return UnprocessableError(message, **kw)
    if status == 503:
        return ServiceUnavailableError(message, **kw)
    if status >= 500:
        return ServerError(message, **kw)
    return APIError(message, **kw)


def _redact(url: str) -> str:
    """The URL without query or userinfo (tokens never reach the log)."""
    parsed = httpx.URL(url)
    return str(parsed.copy_with(query=None, userinfo=b""))
