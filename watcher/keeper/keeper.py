"""One keeper per configured stream: create, publish, lease, recover, clean up.

The keeper's loop::

    wait for the source's first frame
    loop:
        create a stream (pull: with the camera URL; else publish to it)
        wait until the server has a frame, then expose the stream id
        every check: read the status; renew the lease when due;
                     reconnect a dropped publisher with the newest token
        the stream is lost (keepalive 404, state ended, lease run out):
            hide the id, stop the publisher, back off, create a new one

Rules only ever see :attr:`StreamKeeper.stream_id`: ``None`` while there is no
queryable stream, and switched in one assignment when a new one is live. On
``stop()`` every stream the keeper created is deleted.

What a keeper is given lives in :mod:`watcher.keeper.spec`; the publisher it
keeps up in :mod:`watcher.keeper.publishing`; its lease cadence in
:mod:`watcher.keeper.renewal`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any

import httpx

from watcher.backoff import Backoff
from watcher.clock import Clock, SystemClock
from watcher.errors import (
    AuthenticationError,
    NotFoundError,
    OvershootError,
    PermissionDeniedError,
    TransportError,
)
from watcher.keeper.health import StreamHealth
from watcher.keeper.meters import StaleWatch
from watcher.keeper.publishing import PublisherSlot
from watcher.keeper.renewal import LeaseRenewer
from watcher.keeper.spec import (
    KeeperTimings,
    PublisherFactory,
    Sleep,
    SourceFactory,
    StreamLost,
    StreamSpec,
    open_stream_source,
)
from watcher.media.changes import ChangeTracker
from watcher.media.publisher import make_publisher
from watcher.media.sources import VideoSource
from watcher.media.tracks import LatestFrame
from watcher.overshoot.client import OvershootClient
from watcher.overshoot.models import StreamSource

log = logging.getLogger(__name__)


class StreamKeeper:
    def __init__(
        self,
        spec: StreamSpec,
        client: OvershootClient,
        *,
        source_factory: SourceFactory = open_stream_source,
        publisher_factory: PublisherFactory = make_publisher,
        http: httpx.AsyncClient | None = None,
        clock: Clock | None = None,
        sleep: Sleep = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        timings: KeeperTimings | None = None,
        gate: Callable[[], bool] | None = None,
    ) -> None:
        """``gate`` (cluster mode): no frame is published while it says False."""
        self.spec = spec
        self.client = client
        self.frames = LatestFrame(gate, on_demand=True)
        """The newest frame of the source: what the keeper publishes (and rules may attach).
        A passthrough source fills it only while ``frames.demand`` says who needs every
        frame (the engine, for change thumbnails; a LiveKit publisher)."""
        self.changes = ChangeTracker()
        """Bumps its version when the published picture changes (for ``skip_unchanged``)."""
        self._source_factory = source_factory
        self.clock = clock or SystemClock()
        self._sleep = sleep
        self._rng = rng
        self.timings = timings or KeeperTimings()
        self.stream_id: str | None = None
        """The live, queryable stream, or None: the only thing rules read."""
        self.state = "starting"
        self._source: VideoSource | None = None
        self._publishing = PublisherSlot(spec, self.frames, publisher_factory, http=http,
                                         clock=self.clock, sleep=sleep)
        self._renewal = LeaseRenewer(client, self.clock, sleep=sleep, rng=rng,
                                     note=lambda message: self._note(message, warn=True))
        self._owned: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        # health counters
        self.streams_created = 0
        self.publisher_reconnects = 0
        self.last_error: str | None = None
        self._server_status: Any = None
        self._status_error: str | None = None
        self._status_read_at_ms: int | None = None

    # -- public --------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    def start(self) -> None:
        if self._task is not None:
            return
        if not self.spec.pull:
            self._source = self._source_factory(self.spec, self.frames, self.changes)
            self._source.start()
        self._task = asyncio.create_task(self._run(), name=f"keeper:{self.name}")

    async def stop(self) -> None:
        """Stop publishing and delete every stream this keeper created."""
        self.state = "stopping"
        self.stream_id = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._publishing.stop()
        for stream_id in sorted(self._owned):
            await self._delete(stream_id)
        if self._source is not None:
            await self._source.stop()
        self.state = "stopped"

    async def wait_live(self, timeout: float) -> str:
        """Wait until a stream is live; return its id."""
        async with asyncio.timeout(timeout):
            while self.stream_id is None:
                self._changed.clear()
                await self._changed.wait()
        return self.stream_id

    def health(self) -> StreamHealth:
        now = self.clock.now_ms()
        status = self._server_status
        return StreamHealth(
            name=self.name,
            state=self.state,
            stream_id=self.stream_id,
            frames_sent=self.frames_sent,
            publish_fps=self._publishing.fps(now),
            last_frame_at_ms=getattr(status, "last_frame_at_ms", None),
            last_keepalive_at_ms=self.last_keepalive_at_ms,
            lease_remaining_s=(self._renewal.lease.remaining_ms(now) / 1000
                               if self._renewal.lease else None),
            streams_created=self.streams_created,
            publisher_reconnects=self.publisher_reconnects,
            keepalives=self.keepalives,
            keepalive_failures=self.keepalive_failures,
            source_state=self._source.stats.state if self._source else "stopped",
            source_reconnects=self._source.stats.reconnects if self._source else 0,
            publish_path=self._source.stats.path if self._source else None,
            publish_path_reason=self._source.stats.path_reason if self._source else None,
            last_error=self.last_error,
            fps=self.spec.fps,
            pull=self.spec.pull,
            publisher_state=(None if self.spec.pull else self._publishing.publisher.state
                             if self._publishing.publisher is not None else "not connected"),
            status_error=self._status_error,
            status_read_at_ms=self._status_read_at_ms,
        )

    async def check_now(self, *, fresh_s: float = 0.5, timeout_s: float = 2.0) -> None:
        """Read the stream's status now (unless read in the last ``fresh_s``), for readiness.

        The result shows in :meth:`health`: a fresh ``last_frame_at_ms``, or ``status_error``.
        The keeper's own loop is left alone: it notices a lost stream by itself.
        """
        stream_id = self.stream_id
        now = self.clock.now_ms()
        if stream_id is None or (self._status_read_at_ms is not None
                                 and now - self._status_read_at_ms < fresh_s * 1000):
            return
        try:
            async with asyncio.timeout(timeout_s + 1):  # a safety net over the client's
                status = await self.client.get_stream(stream_id, timeout=timeout_s)
        except TimeoutError:
            self._status_error = f"the API did not answer within {timeout_s:g} s"
        except OvershootError as exc:
            self._status_error = f"the API answered: {exc}" if not isinstance(
                exc, TransportError) else f"the API is unreachable: {exc}"
        else:
            if self.stream_id == stream_id:
                self._server_status = status
                self._status_error = (None if status.state != "ended" else
                                      f"the stream ended ({status.end_reason})")
        self._status_read_at_ms = self.clock.now_ms()

    @property
    def frames_sent(self) -> int:
        return self._publishing.frames_sent

    @property
    def keepalives(self) -> int:
        return self._renewal.keepalives

    @property
    def keepalive_failures(self) -> int:
        return self._renewal.keepalive_failures

    @property
    def last_keepalive_at_ms(self) -> int | None:
        return self._renewal.last_keepalive_at_ms

    # -- the loop ------------------------------------------------------------
    async def _run(self) -> None:
        backoff = Backoff(*self.timings.recreate_backoff, rng=self._rng)
        await self._wait_for_source()
        while True:
            try:
                await self._establish()
                backoff.reset()
                await self._maintain()
            except asyncio.CancelledError:
                raise
            except StreamLost as exc:
                self._note(f"stream lost: {exc}", warn=True)
            except (AuthenticationError, PermissionDeniedError) as exc:
                self._note(f"not allowed: {exc}", warn=True)
                backoff.attempts = max(backoff.attempts, 5)  # no point hammering
            except (OvershootError, ConnectionError, TimeoutError) as exc:
                self._note(f"{type(exc).__name__}: {exc}", warn=True)
            except Exception as exc:
                log.exception("stream %s: unexpected error", self.name)
                self.last_error = f"{type(exc).__name__}: {exc}"
            await self._drop_stream()
            self._set_state("recovering")
            await self._sleep(backoff.next())

    async def _wait_for_source(self) -> None:
        """No stream is leased (and paid for) before the camera gives a frame."""
        if self.spec.pull:
            return
        self._set_state("waiting_for_source")
        while self.frames.seq == 0 and not self._source_delivered():
            await self._sleep(0.1)

    def _source_delivered(self) -> bool:
        """Whether the source delivered a frame, decoded or (passthrough) not."""
        return getattr(getattr(self._source, "stats", None), "frames", 0) > 0

    async def _establish(self) -> None:
        self._set_state("creating")
        source = None
        if self.spec.pull:
            kind = "hls" if self.spec.source.startswith(("http://", "https://")) else "rtsp"
            source = StreamSource(type=kind, url=self.spec.source)
        created = await self.client.create_stream(source)
        self._owned.add(created.id)
        self.streams_created += 1
        self._renewal.begin(created.ttl_seconds, created.expires_at_ms, created.publish)
        log.info("stream %s: created %s (lease %ss)", self.name, created.id,
                 created.ttl_seconds)
        status = await self._renewal.while_renewing(created.id, self._bring_up(created.id))
        self._server_status = status
        self._status_error, self._status_read_at_ms = None, self.clock.now_ms()
        self.stream_id = created.id
        self._set_state("live")
        log.info("stream %s: live as %s", self.name, created.id)

    async def _bring_up(self, stream_id: str) -> Any:
        """Connect the publisher (unless the server pulls) and wait for the first frame."""
        if not self.spec.pull:
            if self._renewal.publish is None:
                raise StreamLost("the server gave no publish endpoint")
            self._set_state("publishing")
            await self._connect_publisher(stream_id)
        self._set_state("waiting_for_first_frame")
        return await self.client.wait_for_first_frame(
            stream_id, timeout=self.timings.first_frame_timeout)

    async def _maintain(self) -> None:
        """Renew the lease and keep the publisher up until the stream is lost.

        A publisher reconnect is scheduled, not slept on, so the lease keeps being
        renewed while the publisher backs off.
        """
        assert self.stream_id is not None
        stream_id = self.stream_id
        renew_at = self._renewal.next_renewal_ms()
        reconnect_at: int | None = None
        stale = StaleWatch(self.timings.stale_after)
        backoff = Backoff(*self.timings.publisher_backoff, rng=self._rng)
        while True:
            now = self.clock.now_ms()
            due = renew_at if reconnect_at is None else min(renew_at, reconnect_at)
            await self._publishing.wait(min(self.timings.check_interval, max(0, due - now) / 1000))
            now = self.clock.now_ms()
            if now >= renew_at:
                renew_at = await self._renewal.renew(stream_id)
            status = await self._read_status(stream_id)
            if self.spec.pull:
                continue
            publisher = self._publishing.publisher
            if publisher is not None:
                frames_stopped = status is not None and stale.stopped(
                    status.last_frame_index, self.source_live, now)
                if not (publisher.closed.is_set() or frames_stopped):
                    if publisher.connected:
                        backoff.reset()
                    continue
                reason = ("connection closed" if publisher.closed.is_set()
                          else "frames stopped arriving")
                self._note(f"publisher {reason}; reconnecting", warn=True)
                await self._publishing.stop()
                reconnect_at = now + round(backoff.next() * 1000)
            if reconnect_at is not None and now < reconnect_at:
                continue
            reconnect_at = None
            self.publisher_reconnects += 1
            try:
                await self._connect_publisher(stream_id)
            except (OvershootError, ConnectionError, TimeoutError) as exc:
                # The stream is fine (StreamLost would have propagated): keep the lease
                # and try the publisher again after a pause.
                self._note(f"publisher reconnect failed ({exc}); retrying", warn=True)
                reconnect_at = self.clock.now_ms() + round(backoff.next() * 1000)
            stale.reset()

    async def _read_status(self, stream_id: str) -> Any:
        try:
            status = await self.client.get_stream(stream_id)
        except NotFoundError as exc:
            raise StreamLost("the stream is gone (404)") from exc
        except OvershootError as exc:
            self._note(f"status check failed: {exc}")
            self._status_error = f"status check failed: {exc}"
            self._status_read_at_ms = self.clock.now_ms()
            return None
        self._server_status = status
        self._status_error, self._status_read_at_ms = None, self.clock.now_ms()
        if status.state == "ended":
            raise StreamLost(f"the stream ended ({status.end_reason})")
        return status

    # -- helpers -------------------------------------------------------------
    async def _connect_publisher(self, stream_id: str) -> None:
        """Start a publisher with the newest token; refresh the token once on a 401."""
        await self._publishing.connect(lambda: self._renewal.publish,
                                       lambda: self._renewal.renew(stream_id), self._source)

    async def _drop_stream(self) -> None:
        """Hide the stream from rules, stop publishing, and delete it if it still exists."""
        self.stream_id = None
        await self._publishing.stop()
        for owned in sorted(self._owned):
            await self._delete(owned)

    async def _delete(self, stream_id: str) -> None:
        try:
            await self.client.delete_stream(stream_id)
        except NotFoundError:
            pass
        except OvershootError as exc:
            log.warning("stream %s: could not delete %s: %s", self.name, stream_id, exc)
            return
        self._owned.discard(stream_id)

    @property
    def source_live(self) -> bool:
        """Whether the camera delivers frames now (while it is down the picture is frozen)."""
        return self._source is not None and self._source.stats.state == "live"

    @property
    def source_resumed_at(self) -> float | None:
        """``time.monotonic()`` when the source last came back after a drop, if it ever did."""
        return self._source.stats.resumed_at if self._source is not None else None

    def _set_state(self, state: str) -> None:
        self.state = state
        self._changed.set()

    def _note(self, message: str, *, warn: bool = False) -> None:
        self.last_error = message
        (log.warning if warn else log.info)("stream %s: %s", self.name, message)
