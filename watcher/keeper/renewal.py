"""One keeper's lease cadence: keepalives on schedule, and the newest publish endpoint.

A keepalive that answers 404, or a lease that runs out after failed
keepalives, ends the stream (:class:`~watcher.keeper.spec.StreamLost`); a
failed keepalive while the lease still runs is retried soon. Every answer may
carry a fresh publish token, which the next publisher connects with.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from watcher.clock import Clock
from watcher.errors import NotFoundError, OvershootError
from watcher.keeper.lease import Lease
from watcher.keeper.spec import Sleep, StreamLost
from watcher.overshoot.client import OvershootClient
from watcher.overshoot.models import Publish

T = TypeVar("T")


class LeaseRenewer:
    """Renews the lease of the keeper's current stream; counts keepalives across streams."""

    def __init__(self, client: OvershootClient, clock: Clock, *, sleep: Sleep,
                 rng: Callable[[], float], note: Callable[[str], None]) -> None:
        """``note`` says a failed keepalive that is retried (the keeper's last error)."""
        self.client = client
        self.clock = clock
        self._sleep = sleep
        self._rng = rng
        self._note = note
        self.lease: Lease | None = None
        self.publish: Publish | None = None
        """Where and with which token to publish: from the stream or its newest keepalive."""
        self.keepalives = 0
        self.keepalive_failures = 0
        self.last_keepalive_at_ms: int | None = None

    def begin(self, ttl_seconds: float, expires_at_ms: int | None,
              publish: Publish | None) -> None:
        """A new stream was created with this lease and publish endpoint."""
        self.lease = Lease(int(ttl_seconds), self.clock.now_ms(), expires_at_ms)
        self.publish = publish

    def next_renewal_ms(self) -> int:
        assert self.lease is not None
        return self.lease.next_renewal_ms(self._rng)

    async def renew(self, stream_id: str) -> int:
        """Renew the lease; return when to renew next. Raises StreamLost when it is gone."""
        assert self.lease is not None
        try:
            renewed = await self.client.keepalive(stream_id)
        except NotFoundError as exc:
            raise StreamLost("keepalive answered 404") from exc
        except OvershootError as exc:
            self.keepalive_failures += 1
            now = self.clock.now_ms()
            if self.lease.expired(now):
                raise StreamLost(f"lease ran out after failed keepalives ({exc})") from exc
            self._note(f"keepalive failed ({exc}); retrying")
            return self.lease.retry_at_ms(now)
        self.keepalives += 1
        now = self.clock.now_ms()
        self.last_keepalive_at_ms = now
        self.lease = Lease(int(renewed.ttl_seconds), now, renewed.expires_at_ms)
        if renewed.publish is not None:
            self.publish = renewed.publish
        return self.lease.next_renewal_ms(self._rng)

    async def while_renewing(self, stream_id: str, work: Coroutine[Any, Any, T]) -> T:
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
        renew_at = self.next_renewal_ms()
        while True:
            await self._sleep(max(0, renew_at - self.clock.now_ms()) / 1000)
            renew_at = await self.renew(stream_id)
