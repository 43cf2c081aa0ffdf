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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

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
from watcher.keeper.lease import Lease
from watcher.media.changes import ChangeTracker
from watcher.media.publisher import Publisher, make_publisher
from watcher.media.sources import FrameCallback, VideoSource, open_source
from watcher.media.tracks import LatestFrame
from watcher.media.whip import DEFAULT_CODEC
from watcher.overshoot.client import OvershootClient
from watcher.overshoot.models import Publish, StreamSource

log = logging.getLogger(__name__)
T = TypeVar("T")

Sleep = Callable[[float], Awaitable[Any]]


class StreamSpec(Protocol):
    """What a keeper needs of a configured stream (``watcher.config.StreamConfig``)."""

    name: str
    source: str
    loop: bool
    fps: float
    width: int
    height: int
    pull: bool


SourceFactory = Callable[[StreamSpec, LatestFrame, FrameCallback], VideoSource]


def open_stream_source(spec: StreamSpec, sink: LatestFrame,
                       on_frame: FrameCallback) -> VideoSource:
    """The configured camera, file or synthetic source, scaled and paced as configured."""
    return open_source(spec.source, fps=spec.fps, width=spec.width, height=spec.height,
                       loop=spec.loop, sink=sink, on_frame=on_frame, name=spec.name,
                       passthrough=getattr(spec, "passthrough", "never"))
PublisherFactory = Callable[..., Publisher]


class StreamLost(Exception):
    """The current stream ended, expired or vanished: make a new one."""


@dataclass(slots=True)
class KeeperTimings:
    check_interval: float = 5.0
    """Seconds between status checks (renewals are scheduled from the lease)."""
    first_frame_timeout: float = 30.0
    stale_after: float | None = 15.0
    """Restart a publisher whose frames stopped reaching the server for this long."""
    recreate_backoff: tuple[float, float] = (1.0, 30.0)
    publisher_backoff: tuple[float, float] = (1.0, 30.0)


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
        self.frames = LatestFrame(gate)
        """The newest frame of the source: what the keeper publishes (and rules may attach)."""
        self.changes = ChangeTracker()
        """Bumps its version when the published picture changes (for ``skip_unchanged``)."""
        self._source_factory = source_factory
        self._publisher_factory = publisher_factory
        self._http = http
        self.clock = clock or SystemClock()
        self._sleep = sleep
        self._rng = rng
        self.timings = timings or KeeperTimings()
        self.stream_id: str | None = None
        """The live, queryable stream, or None: the only thing rules read."""
        self.state = "starting"
        self._source: VideoSource | None = None
        self._publisher: Publisher | None = None
        self._publish: Publish | None = None
        self._lease: Lease | None = None
        self._owned: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        # health counters
        self.streams_created = 0
        self.publisher_reconnects = 0
        self.keepalives = 0
        self.keepalive_failures = 0
        self.last_keepalive_at_ms: int | None = None
        self.last_error: str | None = None
        self._frames_sent_before = 0
        self._server_status: Any = None
        self._status_error: str | None = None
        self._status_read_at_ms: int | None = None
        self._rate = _RateMeter()

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
        await self._stop_publisher()
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
            publish_fps=self._rate.rate(self.frames_sent, now),
            last_frame_at_ms=getattr(status, "last_frame_at_ms", None),
            last_keepalive_at_ms=self.last_keepalive_at_ms,
            lease_remaining_s=(self._lease.remaining_ms(now) / 1000 if self._lease else None),
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
            publisher_state=(None if self.spec.pull else self._publisher.state
                             if self._publisher is not None else "not connected"),
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
        current = self._publisher.frames_sent if self._publisher is not None else 0
        return self._frames_sent_before + current

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
        while self.frames.seq == 0:
            await self._sleep(0.1)

    async def _establish(self) -> None:
        self._set_state("creating")
        source = None
        if self.spec.pull:
            kind = "hls" if self.spec.source.startswith(("http://", "https://")) else "rtsp"
            source = StreamSource(type=kind, url=self.spec.source)
        created = await self.client.create_stream(source)
        self._owned.add(created.id)
        self.streams_created += 1
        self._lease = Lease(int(created.ttl_seconds), self.clock.now_ms(), created.expires_at_ms)
        self._publish = created.publish
        log.info("stream %s: created %s (lease %ss)", self.name, created.id,
                 created.ttl_seconds)
        status = await self._while_renewing(created.id, self._bring_up(created.id))
        self._server_status = status
        self._status_error, self._status_read_at_ms = None, self.clock.now_ms()
        self.stream_id = created.id
        self._set_state("live")
        log.info("stream %s: live as %s", self.name, created.id)

    async def _bring_up(self, stream_id: str) -> Any:
        """Connect the publisher (unless the server pulls) and wait for the first frame."""
        if not self.spec.pull:
            if self._publish is None:
                raise StreamLost("the server gave no publish endpoint")
            self._set_state("publishing")
            await self._connect_publisher(stream_id)
        self._set_state("waiting_for_first_frame")
        return await self.client.wait_for_first_frame(
            stream_id, timeout=self.timings.first_frame_timeout)

    async def _while_renewing(self, stream_id: str, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` while renewing the lease on schedule.

        Establishing a stream (a publisher's ICE and DTLS, then the wait for
        the first frame) can take longer than a short TTL: the lease must not
        run out before the stream is live. A lost lease (StreamLost) ends ``work``.
        """
        job = asyncio.ensure_future(work)
        renewer = asyncio.ensure_future(self._renew_forever(stream_id))
        try:
            await asyncio.wait({job, renewer}, return_when=asyncio.FIRST_COMPLETED)
            if not job.done():
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await job
                renewer.result()  # raises why the lease was lost
            return job.result()
        finally:
            for task in (job, renewer):
                if not task.done():
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def _renew_forever(self, stream_id: str) -> None:
        assert self._lease is not None
        renew_at = self._lease.next_renewal_ms(self._rng)
        while True:
            await self._sleep(max(0, renew_at - self.clock.now_ms()) / 1000)
            renew_at = await self._renew(stream_id)

    async def _maintain(self) -> None:
        """Renew the lease and keep the publisher up until the stream is lost.

        A publisher reconnect is scheduled, not slept on, so the lease keeps being
        renewed while the publisher backs off.
        """
        assert self._lease is not None and self.stream_id is not None
        stream_id = self.stream_id
        renew_at = self._lease.next_renewal_ms(self._rng)
        reconnect_at: int | None = None
        stale = _StaleWatch(self.timings.stale_after)
        backoff = Backoff(*self.timings.publisher_backoff, rng=self._rng)
        while True:
            now = self.clock.now_ms()
            due = renew_at if reconnect_at is None else min(renew_at, reconnect_at)
            await self._wait(min(self.timings.check_interval, max(0, due - now) / 1000))
            now = self.clock.now_ms()
            if now >= renew_at:
                renew_at = await self._renew(stream_id)
            status = await self._read_status(stream_id)
            if self.spec.pull:
                continue
            publisher = self._publisher
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
                await self._stop_publisher()
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

    async def _renew(self, stream_id: str) -> int:
        """Renew the lease; return when to renew next. Raises StreamLost when it is gone."""
        assert self._lease is not None
        try:
            renewed = await self.client.keepalive(stream_id)
        except NotFoundError as exc:
            raise StreamLost("keepalive answered 404") from exc
        except OvershootError as exc:
            self.keepalive_failures += 1
            now = self.clock.now_ms()
            if self._lease.expired(now):
                raise StreamLost(f"lease ran out after failed keepalives ({exc})") from exc
            self._note(f"keepalive failed ({exc}); retrying", warn=True)
            return self._lease.retry_at_ms(now)
        self.keepalives += 1
        now = self.clock.now_ms()
        self.last_keepalive_at_ms = now
        self._lease = Lease(int(renewed.ttl_seconds), now, renewed.expires_at_ms)
        if renewed.publish is not None:
            self._publish = renewed.publish
        return self._lease.next_renewal_ms(self._rng)

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

    # -- publisher -----------------------------------------------------------
    async def _connect_publisher(self, stream_id: str) -> None:
        """Start a publisher with the newest token; refresh the token once on a 401."""
        for attempt in range(2):
            assert self._publish is not None
            extra: dict[str, Any] = {}
            packets = self._passthrough_packets()
            if packets is not None:  # only then: factories that predate it keep working
                extra["packets"] = packets
            publisher = self._publisher_factory(
                self._publish.type, self._publish.url, self._publish.token, self.frames,
                fps=self.spec.fps, width=self.spec.width, height=self.spec.height,
                http=self._http, codec=getattr(self.spec, "codec_mime", DEFAULT_CODEC),
                **extra)
            try:
                await publisher.start()
            except AuthenticationError:
                with contextlib.suppress(Exception):
                    await publisher.stop()
                if attempt:
                    raise
                await self._renew(stream_id)  # a keepalive hands out a fresh token
                continue
            except NotFoundError as exc:
                with contextlib.suppress(Exception):
                    await publisher.stop()
                raise StreamLost("the publish endpoint is gone") from exc
            self._publisher = publisher
            self._rate.start(self.frames_sent, self.clock.now_ms())
            return

    def _passthrough_packets(self) -> Any:
        """The source's packet feed when it publishes its H.264 as it is, else None."""
        source = self._source
        if source is None or source.stats.path != "passthrough":
            return None
        return getattr(source, "packets", None)

    async def _stop_publisher(self) -> None:
        publisher, self._publisher = self._publisher, None
        if publisher is not None:
            self._frames_sent_before += publisher.frames_sent
            with contextlib.suppress(Exception):
                await publisher.stop()

    # -- helpers -------------------------------------------------------------
    async def _wait(self, seconds: float) -> None:
        """Sleep, but wake early when the publisher's connection closes."""
        closed = self._publisher.closed if self._publisher is not None else None
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

    async def _drop_stream(self) -> None:
        """Hide the stream from rules, stop publishing, and delete it if it still exists."""
        self.stream_id = None
        await self._stop_publisher()
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


class _StaleWatch:
    """Notices when the server's newest frame index stops moving while the source is live."""

    def __init__(self, stale_after: float | None) -> None:
        self.stale_after_ms = None if stale_after is None else stale_after * 1000
        self.reset()

    def reset(self) -> None:
        self._index: int | None = None
        self._since_ms: int | None = None

    def stopped(self, index: int | None, source_live: bool, now_ms: int) -> bool:
        if self.stale_after_ms is None or not source_live:
            self.reset()
            return False
        if index != self._index or self._since_ms is None:
            self._index, self._since_ms = index, now_ms
            return False
        return now_ms - self._since_ms >= self.stale_after_ms


class _RateMeter:
    """Frames per second from two samples at least a few seconds apart.

    The first sample is taken when publishing starts (:meth:`start`), so the
    first reading already tells the rate (over the time since then, once that
    is :data:`FIRST_READING_MS` long), instead of 0 while frames flow.
    """

    WINDOW_MS = 2000
    FIRST_READING_MS = 500

    def __init__(self) -> None:
        self._sample: tuple[int, int] | None = None
        self._rate = 0.0
        self._measured = False

    def start(self, count: int, now_ms: int) -> None:
        """Publishing (re)starts with ``count`` frames sent so far."""
        if self._sample is None or count < self._sample[0]:
            self._sample = (count, now_ms)

    def rate(self, count: int, now_ms: int) -> float:
        if self._sample is None or count < self._sample[0]:
            self._sample = (count, now_ms)
            return self._rate
        elapsed = now_ms - self._sample[1]
        first = (not self._measured and elapsed >= self.FIRST_READING_MS
                 and count > self._sample[0])
        if elapsed >= self.WINDOW_MS or first:
            self._rate = round((count - self._sample[0]) * 1000 / elapsed, 2)
            self._measured = True
            if elapsed >= self.WINDOW_MS:
                self._sample = (count, now_ms)
        return self._rate
