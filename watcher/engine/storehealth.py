"""Whether the state store works now, said once per change, and counted.

Every part that talks to the store (rule steps, the outbox, status, pruning)
reaches it through :class:`MonitoredStore`, which reports each
:class:`~watcher.engine.store.StoreError` to one :class:`StoreHealth`. The
first failure logs ``state store unavailable: <cause>`` (one line, no
traceback); the store is back, and ``state store back`` is logged, only when a
*write* that matters succeeds: the pending alert steps were written (see
:mod:`watcher.engine.pending`), or, with nothing pending, a write probe
worked. A successful read proves little (SQLite serves reads while a writer
holds the lock), so reads only ever report failures.

``errors_total`` counts every failed call (``watcher_store_errors_total``);
``/readyz`` is unready while :attr:`StoreHealth.available` is False.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from watcher.clock import Clock, SystemClock
from watcher.store import DuplicateEventError, FencedError, StoreError

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 5.0
"""How often the store's writability is probed (so an outage is seen without traffic)."""
WRITES = frozenset({
    "record", "mark_delivering", "mark_sent", "mark_retry", "mark_dead", "mark_summarized",
    "reset_in_flight", "forget", "prune", "trim_evidence", "drop_oldest_evidence", "ping",
    "claim_due", "release_claims", "save_switch", "save_budget_spend",
})
"""Store methods that write (their success can prove the store is back)."""


class StoreHealth:
    """The store's availability, its error count, and the two log lines."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or SystemClock()
        self.available = True
        self.cause: str | None = None
        """The error that made it unavailable (the latest one while it stays so)."""
        self.since_ms: int | None = None
        """When it became unavailable."""
        self.errors_total = 0
        self.outages = 0
        self.pending: Callable[[], int] = lambda: 0
        """How many alert steps wait to be written (set by the step writer)."""

    def failed(self, exc: BaseException) -> None:
        """A store call failed: count it; log once when the store becomes unavailable."""
        self.errors_total += 1
        self.cause = _cause(exc)
        if self.available:
            self.available = False
            self.outages += 1
            self.since_ms = self.clock.now_ms()
            log.warning("state store unavailable: %s", self.cause)

    def wrote(self, *, flushed: bool = False) -> None:
        """A write succeeded. The store is back if nothing is left pending (or ``flushed``:
        the pending steps themselves were just written)."""
        if self.available or not (flushed or self.pending() == 0):
            return
        seconds = (self.clock.now_ms() - (self.since_ms or self.clock.now_ms())) / 1000
        self.available, self.cause, self.since_ms = True, None, None
        log.info("state store back (unavailable for %.1f s)", seconds)

    @property
    def reason(self) -> str | None:
        """Why it is not ready (None while available)."""
        return None if self.available else f"state store unavailable: {self.cause}"


class MonitoredStore:
    """The alert store, with every call reported to a :class:`StoreHealth`.

    It has the store's methods (attribute access is passed through), so it can be
    handed to whatever takes the store; a write probe (:meth:`probe_forever`) notices
    an outage even when nothing else writes.
    """

    def __init__(self, store: Any, health: StoreHealth) -> None:
        self.inner = store
        self.health = health

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.inner, name)
        if not callable(value) or name.startswith("_") or not asyncio.iscoroutinefunction(
                value):
            return value
        write = name in WRITES

        async def call(*args: Any, **kwargs: Any) -> Any:
            try:
                result = await value(*args, **kwargs)
            except (DuplicateEventError, FencedError):
                raise  # the store works: it refused a duplicate, or a stale writer
            except StoreError as exc:
                self.health.failed(exc)
                raise
            if write and name != "record":  # the step writer reports its own records
                self.health.wrote()
            return result

        call.__name__ = name
        return call

    async def probe_forever(self, interval_s: float = PROBE_INTERVAL_S,
                            sleep: Callable[[float], Any] = asyncio.sleep) -> None:
        """Probe writability every ``interval_s`` (a store without ``ping`` is not probed)."""
        ping = getattr(self.inner, "ping", None)
        if ping is None:
            return
        while True:
            with contextlib.suppress(StoreError):
                await self.ping()
            await sleep(interval_s)


def _cause(exc: BaseException) -> str:
    """One line: the store's message (it names the file, never a password)."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:299] + "…"
