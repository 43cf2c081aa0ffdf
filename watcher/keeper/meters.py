"""Two small measurements a keeper takes of its publishing: stalled frames and frame rate."""

from __future__ import annotations


class StaleWatch:
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


class RateMeter:
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
