"""The keeper's publisher: started with the newest token, stopped, its frames counted.

A publisher is not restartable, so each (re)connect makes a new one on the same
frames; the frames the stopped ones sent are kept in :attr:`PublisherSlot.frames_sent`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from watcher.clock import Clock
from watcher.errors import AuthenticationError, NotFoundError
from watcher.keeper.meters import RateMeter
from watcher.keeper.spec import PublisherFactory, Sleep, StreamLost, StreamSpec
from watcher.media.publisher import Publisher
from watcher.media.sources import VideoSource
from watcher.media.tracks import LatestFrame
from watcher.media.whip import DEFAULT_CODEC
from watcher.overshoot.models import Publish

PUBLISHER = "publisher"
"""The :attr:`LatestFrame.demand` holder of a publisher that sends decoded frames."""


class PublisherSlot:
    """Holds at most one publisher of a stream's frames."""

    def __init__(self, spec: StreamSpec, frames: LatestFrame, factory: PublisherFactory, *,
                 http: httpx.AsyncClient | None, clock: Clock, sleep: Sleep) -> None:
        self.spec = spec
        self.frames = frames
        self.factory = factory
        self.http = http
        self.clock = clock
        self._sleep = sleep
        self.publisher: Publisher | None = None
        self._frames_sent_before = 0
        self._rate = RateMeter()

    @property
    def frames_sent(self) -> int:
        current = self.publisher.frames_sent if self.publisher is not None else 0
        return self._frames_sent_before + current

    def fps(self, now_ms: int) -> float:
        """Frames per second published lately (all publishers of the slot together)."""
        return self._rate.rate(self.frames_sent, now_ms)

    async def connect(self, publish: Callable[[], Publish | None],
                      refresh: Callable[[], Awaitable[Any]],
                      source: VideoSource | None) -> None:
        """Start a publisher with the newest token (``publish()``); on a 401, ``refresh()``
        (a keepalive hands out a fresh token) and try once more."""
        for attempt in range(2):
            endpoint = publish()
            assert endpoint is not None
            extra: dict[str, Any] = {}
            packets = _passthrough_packets(source)
            if packets is not None:  # only then: factories that predate it keep working
                extra["packets"] = packets
            # Only WHIP sends a passthrough source's packets; other publishers read frames.
            self.frames.demand.set(PUBLISHER, packets is None or endpoint.type != "whip")
            publisher = self.factory(
                endpoint.type, endpoint.url, endpoint.token, self.frames,
                fps=self.spec.fps, width=self.spec.width, height=self.spec.height,
                http=self.http, codec=getattr(self.spec, "codec_mime", DEFAULT_CODEC),
                **extra)
            try:
                await publisher.start()
            except AuthenticationError:
                with contextlib.suppress(Exception):
                    await publisher.stop()
                if attempt:
                    raise
                await refresh()
                continue
            except NotFoundError as exc:
                with contextlib.suppress(Exception):
                    await publisher.stop()
                raise StreamLost("the publish endpoint is gone") from exc
            self.publisher = publisher
            self._rate.start(self.frames_sent, self.clock.now_ms())
            return

    async def stop(self) -> None:
        publisher, self.publisher = self.publisher, None
        self.frames.demand.set(PUBLISHER, False)
        if publisher is not None:
            self._frames_sent_before += publisher.frames_sent
            with contextlib.suppress(Exception):
                await publisher.stop()

    async def wait(self, seconds: float) -> None:
        """Sleep, but wake early when the publisher's connection closes."""
        closed = self.publisher.closed if self.publisher is not None else None
        if closed is None or closed.is_set():
            await self._sleep(seconds)
            return
        sleeper = asyncio.ensure_future(self._sleep(seconds))
        waiter = asyncio.ensure_future(closed.wait())
        try:
            await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waiter.cancel()


def _passthrough_packets(source: VideoSource | None) -> Any:
    """The source's packet feed when it publishes its H.264 as it is, else None."""
    if source is None or source.stats.path != "passthrough":
        return None
    return getattr(source, "packets", None)
