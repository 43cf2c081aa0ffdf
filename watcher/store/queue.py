"""The delivery outbox's side of the alert store: due deliveries, claims, and how each
attempt ends (statements in :mod:`watcher.store.deliveries`).

A delivery is written with its event (see :meth:`AlertStore.record
<watcher.store.store.AlertStore.record>`); from then on an outbox claims it
for a while, counting an attempt, and marks it sent, due again, dead or
summarized. Claims carry this store's ``instance``, so a claim whose holder
died lapses at its deadline, or is released at once by a cluster that knows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from watcher.store import deliveries as outbox
from watcher.store.base import StoreBase
from watcher.store.fence import Fence
from watcher.store.records import DeliveryRecord

DEFAULT_CLAIM_MS = 10 * 60_000
"""How long a delivery claim holds unless the claimer says otherwise."""


class DeliveryQueue(StoreBase):
    """The outbox's methods of :class:`~watcher.store.store.AlertStore`."""

    async def due_deliveries(
        self, now_ms: int, limit: int = 100, exclude_actions: Iterable[str] = (),
        action: str | None = None,
    ) -> list[DeliveryRecord]:
        """Deliveries to claim at ``now_ms`` (pending and due, or whose claim lapsed),
        oldest due first (then by id)."""
        if limit < 0:
            raise ValueError("limit must be >= 0")
        exclude = tuple(exclude_actions)
        return await self._read(lambda c: outbox.due(c, now_ms, limit, exclude, action))

    async def next_due_ms(self, exclude_actions: Iterable[str] = ()) -> int | None:
        """When the next delivery (of an action not excluded) is due or its claim lapses;
        None if none."""
        exclude = tuple(exclude_actions)
        return await self._read(lambda c: outbox.next_due_ms(c, exclude))

    async def mark_delivering(self, delivery_id: int, now_ms: int,
                              summary_id: str | None = None, *,
                              claim_ms: int = DEFAULT_CLAIM_MS,
                              fence: Fence | None = None) -> bool:
        """Claim one delivery for ``claim_ms`` (pending, or its last claim lapsed), counting
        one attempt; False if it was not claimable (another instance has it, or done).

        ``summary_id``: the delivery goes out as a member of that summary message;
        the key is kept, so a summary whose outcome is unknown is sent again
        under the same key (see :meth:`summary_members`).
        """
        claimed = await self._write(lambda c: outbox.claim(
            c, [delivery_id], now_ms, self.instance, claim_ms, summary_id), fence)
        return claimed == [delivery_id]

    async def summary_members(self, summary_id: str) -> list[DeliveryRecord]:
        """The unfinished (pending or delivering) members of a summary, by event id."""
        return await self._read(lambda c: outbox.summary_members(c, summary_id))

    async def claim_due(self, now_ms: int, limit: int = 100,
                        exclude_actions: Iterable[str] = (), *,
                        claim_ms: int = DEFAULT_CLAIM_MS) -> list[DeliveryRecord]:
        """Claim up to ``limit`` due deliveries at once (``FOR UPDATE SKIP LOCKED``)."""
        exclude = tuple(exclude_actions)
        return await self._write(lambda c: outbox.claim_due(
            c, now_ms, limit, exclude, self.instance, claim_ms))

    async def mark_sent(self, delivery_id: int, now_ms: int, *,
                        fence: Fence | None = None) -> bool:
        """delivering (claimed by this store) -> sent."""
        return await self._finish(delivery_id, now_ms, outbox.sent(now_ms), fence)

    async def mark_retry(self, delivery_id: int, next_attempt_ms: int, error: str,
                         now_ms: int, *, fence: Fence | None = None) -> bool:
        """Back to pending, due again at ``next_attempt_ms``."""
        return await self._finish(delivery_id, now_ms, outbox.retry(next_attempt_ms, error),
                                  fence)

    async def mark_dead(self, delivery_id: int, error: str, now_ms: int, *,
                        fence: Fence | None = None) -> bool:
        """Dead-letter a pending or claimed delivery; it is kept for ``watcher alerts``."""
        return await self._finish(delivery_id, now_ms, outbox.dead(error), fence,
                                  allow_pending=True)

    async def mark_summarized(self, delivery_ids: Iterable[int], summary_id: str,
                              now_ms: int, *, fence: Fence | None = None) -> int:
        """Pending or claimed deliveries a summary message stood for; returns the count."""
        ids = list(delivery_ids)
        return await self._write(
            lambda c: outbox.summarized(c, ids, summary_id, now_ms, self.instance), fence)

    async def _finish(self, delivery_id: int, now_ms: int, values: dict[str, Any],
                      fence: Fence | None, allow_pending: bool = False) -> bool:
        return await self._write(lambda c: outbox.finish(
            c, delivery_id, now_ms, self.instance, allow_pending=allow_pending, **values),
            fence)

    async def reset_in_flight(self, now_ms: int) -> int:
        """Deliveries in flight at a crash become pending again (at-least-once).

        Call once before the outbox starts. On SQLite (one daemon per file)
        this takes back every in-flight row; on a shared database only the
        rows this instance claimed and those whose claim lapsed (the others
        are being delivered by live instances).
        """
        return await self._write(lambda c: outbox.reset_in_flight(
            c, now_ms, self.instance, everything=not self.shared))

    async def release_claims(self, claimers: Iterable[str], now_ms: int) -> int:
        """Take back the in-flight deliveries of claimers known to be dead; returns how many.

        A claim lapses by itself at its deadline (the attempt timeout plus a
        margin, minutes); a cluster that learns sooner that an instance died
        (its heartbeats stopped) calls this with the dead instances' ids, so
        their deliveries go out again at once, with the same Idempotency-Key.
        The store's ``instance`` must then be the cluster's instance id.
        """
        names = list(claimers)
        return await self._write(lambda c: outbox.release_claims(c, names, now_ms))

    async def delivery_counts(self) -> dict[str, dict[str, int]]:
        """``{action: {status: count}}`` over all deliveries (for metrics and status)."""
        return await self._read(outbox.counts)

    async def deliveries_for_event(self, event_id: int) -> list[DeliveryRecord]:
        return (await self.deliveries_for_events([event_id])).get(event_id, [])

    async def deliveries_for_events(
        self, event_ids: Iterable[int]
    ) -> dict[int, list[DeliveryRecord]]:
        """The deliveries of each event (by id, then in insertion order)."""
        ids = list(event_ids)
        return await self._read(lambda c: outbox.for_events(c, ids))
