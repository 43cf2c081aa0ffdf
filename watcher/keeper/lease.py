"""When to renew a lease, derived from what the server said, never hard-coded.

A keepalive is due a third of the TTL after the last renewal (15 s for the
cloud's 45 s lease, inside its recommended 10-20 s), with jitter so many
streams do not renew in lockstep. The deadline is measured on the local
clock from when the answer arrived: that is earlier than the server's own
``expires_at_ms`` by the request's latency, and immune to clock skew.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

RENEW_FRACTION = 1 / 3
JITTER_FRACTION = 0.1
MIN_INTERVAL_MS = 500
RETRY_INTERVAL_MS = 1_000
"""How soon to try again after a failed keepalive while the lease still runs."""


@dataclass(slots=True)
class Lease:
    ttl_seconds: int
    renewed_at_ms: int
    """Local clock time when the server last granted the lease."""
    server_expires_at_ms: int | None = None

    @property
    def deadline_ms(self) -> int:
        return self.renewed_at_ms + self.ttl_seconds * 1000

    def remaining_ms(self, now_ms: int) -> int:
        return max(0, self.deadline_ms - now_ms)

    def expired(self, now_ms: int) -> bool:
        return now_ms >= self.deadline_ms

    def next_renewal_ms(self, rng: Callable[[], float] = random.random) -> int:
        """Local time at which to renew, jittered by +-10% of the interval."""
        interval = max(MIN_INTERVAL_MS, self.ttl_seconds * 1000 * RENEW_FRACTION)
        jitter = (rng() * 2 - 1) * JITTER_FRACTION * interval
        return self.renewed_at_ms + round(interval + jitter)

    def retry_at_ms(self, now_ms: int) -> int:
        """After a failed renewal: try again soon, but before the deadline if possible."""
        return min(now_ms + RETRY_INTERVAL_MS, max(now_ms, self.deadline_ms - RETRY_INTERVAL_MS))
