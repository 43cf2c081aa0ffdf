"""An action's delivery limits as the outbox applies them: its rate limit and ``max_age``.

Rate limit (``rate_limit: {count, per}``): a sliding window of at most
``count`` messages (a summary counts as one) in any ``per`` seconds, kept in
memory (a restart starts with a full allowance).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

from watcher.actions.base import Action
from watcher.duration import parse_duration
from watcher.store import DeliveryRecord

DEFAULT_MAX_AGE_S = 86_400.0


class SlidingWindow:
    """At most ``count`` messages in any ``per_ms``: a log of send times."""

    def __init__(self, count: int, per_ms: int) -> None:
        if count < 1 or per_ms <= 0:
            raise ValueError("rate limit needs count >= 1 and per > 0")
        self.count, self.per_ms = count, per_ms
        self._sent: deque[int] = deque()
        self.reopens_ms: int | None = None
        """When the window last became full, the time it reopened (or reopens):
        a delivery due before that was held."""

    def available(self, now_ms: int) -> int:
        while self._sent and self._sent[0] <= now_ms - self.per_ms:
            self._sent.popleft()
        return self.count - len(self._sent)

    def opens_ms(self, now_ms: int) -> int | None:
        """When the next message may go, if not now."""
        return None if self.available(now_ms) > 0 else self._sent[0] + self.per_ms

    def take(self, now_ms: int) -> bool:
        """Use one message of the allowance; False (nothing used) if none is left."""
        if self.available(now_ms) == 0:
            return False
        self._sent.append(now_ms)
        if self.available(now_ms) == 0:
            self.reopens_ms = self._sent[0] + self.per_ms
        return True

    def held(self, delivery: DeliveryRecord) -> bool:
        """Whether ``delivery`` was due while the window was full."""
        return self.reopens_ms is not None and delivery.next_attempt_ms < self.reopens_ms


def rate_limit(action: Action) -> SlidingWindow | None:
    """The window of the action's ``rate_limit`` option (None: unlimited)."""
    limit = _option(action.options, "rate_limit")
    if limit is None:
        return None
    count, per = _option(limit, "count"), _option(limit, "per")
    if not count or per is None:
        return None
    return SlidingWindow(int(count), round(parse_duration(per) * 1000))


def max_age_ms(action: Action) -> int:
    """How long a delivery to the action may stay undelivered before it is dead."""
    value = _option(action.options, "max_age")
    return round((DEFAULT_MAX_AGE_S if value is None else parse_duration(value)) * 1000)


def _option(options: Any, name: str) -> Any:
    if isinstance(options, Mapping):
        return options.get(name)
    return getattr(options, name, None)
