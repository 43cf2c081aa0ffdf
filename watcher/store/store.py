"""The alert store: alert states, events with evidence, and the delivery outbox.

One object for the engine, the outbox, the daemon and the CLI, on SQLite or
PostgreSQL (:class:`~watcher.store.database.Database`); the statements live
in one module per concern (:mod:`.alerts`, :mod:`.deliveries`, ...), and the
methods in three layers: opening and transactions (:mod:`.base`), the
delivery outbox (:mod:`.queue`), and here alert states, events, evidence and
what the console reviews.

Every step that changes an alert writes the new :class:`AlertState`, its
events (with their evidence: answer, frame URLs, snapshot) and their
deliveries in ONE transaction, before any action runs: a crash never leaves
a state change without its event, an event without its state, or a
notifying event without its deliveries. Replaying a step after a crash
cannot duplicate an event either: ``event_key`` is UNIQUE.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from watcher.engine.silences import Silence
from watcher.engine.state import AlertState
from watcher.store import alerts, budgets, evidence, reviews, timeline
from watcher.store import deliveries as outbox
from watcher.store.fence import Fence
from watcher.store.queue import DeliveryQueue
from watcher.store.records import ActionsFor, AlertEventRecord, delivery_key
from watcher.store.reviews import Ack, Clip, Feedback
from watcher.store.timeline import EventDetails, TimelineQuery


class AlertStore(DeliveryQueue):
    """Alert states, events and their deliveries, on SQLite or PostgreSQL; async methods.

    ``location`` is a SQLite file path (or ``:memory:``) or a
    ``postgresql://`` URL. ``instance`` names this store as a delivery
    claimer (default: host, pid and a random tag). ``upgrade=False`` refuses
    an outdated schema (naming ``watcher db upgrade``) instead of migrating.
    ``read_only`` (for ``watcher alerts``) never creates, migrates or
    changes anything: a missing SQLite file or an outdated schema is a
    :class:`StoreError`, and every write raises one.
    """

    # -- alert states and events ---------------------------------------------

    async def load_state(self, rule: str, stream_key: str) -> AlertState | None:
        return await self._read(lambda c: alerts.load_state(c, rule, stream_key))

    async def load_all_states(self) -> dict[tuple[str, str], AlertState]:
        """Every stored state, keyed by (rule, stream_key)."""
        return await self._read(alerts.load_all_states)

    async def record(
        self, rule: str, stream_key: str, state: AlertState,
        events: Iterable[AlertEventRecord] = (), *, actions_for: ActionsFor | None = None,
        fence: Fence | None = None,
    ) -> list[int]:
        """Write ``state``, ``events`` and their deliveries atomically; return the event ids.

        ``actions_for(event)`` names the actions a notifying event goes to (it
        is not asked about events with ``notify=False``, which go nowhere);
        one ``pending`` delivery per name is written with the event, due at
        once. Raises :class:`DuplicateEventError` (and writes nothing) if an
        ``event_key`` is already stored, :class:`FencedError` (and writes
        nothing) if ``fence`` says the writer lost the work.
        """
        events = list(events)
        targets: list[list[str]] = []
        for e in events:
            if (e.rule, e.stream_key) != (rule, stream_key):
                raise ValueError(f"event {e.event_key} is not for {rule}/{stream_key}")
            names = list(actions_for(e)) if actions_for is not None and e.notify else []
            if not all(isinstance(n, str) and n for n in names):
                raise ValueError(f"event {e.event_key}: action names must be non-empty strings")
            targets.append(list(dict.fromkeys(names)))
        state_row = alerts.state_row(rule, stream_key, state)
        event_rows = [alerts.event_row(e) for e in events]

        async def work(conn: AsyncConnection) -> list[int]:
            await alerts.save_state(conn, state_row)
            ids = await alerts.insert_events(conn, event_rows, self.path)
            await outbox.insert(conn, [
                outbox.new_row(i, name, delivery_key(e.event_key, name), e.created_ms)
                for e, i, names in zip(events, ids, targets, strict=True) for name in names])
            return ids
        return await self._write(work, fence)

    async def events(
        self, limit: int = 50, rule: str | None = None, status: str | None = None,
        since_ms: int | None = None, stream_key: str | None = None, snapshots: bool = True,
        dead_only: bool = False,
    ) -> list[AlertEventRecord]:
        """Events newest first (by ``created_ms``, then id), filtered.

        ``snapshots=False`` leaves ``snapshot`` None (``snapshot_type`` still
        says whether one is stored), for listings that do not show images.
        ``dead_only`` keeps the events with at least one dead delivery.
        """
        if limit < 0:
            raise ValueError("limit must be >= 0")
        return await self._read(lambda c: alerts.events(
            c, limit, rule, status, since_ms, stream_key, snapshots, dead_only))

    async def event(self, event_id: int) -> AlertEventRecord | None:
        return await self._read(lambda c: alerts.event(c, event_id))

    async def events_by_ids(self, event_ids: Iterable[int]) -> list[AlertEventRecord]:
        """The stored events among ``event_ids``, in the order given."""
        ids = list(event_ids)
        return await self._read(lambda c: alerts.events_by_ids(c, ids))

    async def forget(self, rule: str, *, fence: Fence | None = None) -> int:
        """Drop the states of a removed rule; its events stay as history. Returns the count."""
        return await self._write(lambda c: alerts.forget(c, rule), fence)

    async def prune(self, before_ms: int) -> int:
        """Delete events created before ``before_ms`` whose deliveries are all finished
        (sent, dead or summarized), with those deliveries and their snapshots. Returns how
        many events went."""
        return await self._write(lambda c: alerts.prune(c, before_ms))

    # -- health and evidence --------------------------------------------------

    async def ping(self) -> None:
        """Check that the store takes writes now; :class:`StoreError` if not.

        A write transaction (on SQLite it takes the write lock and rewrites one
        header field with its own value, so a full disk shows too).
        """
        async def work(conn: AsyncConnection) -> None:
            if conn.dialect.name == "sqlite":
                version = (await conn.exec_driver_sql("PRAGMA user_version")).scalar_one()
                await conn.exec_driver_sql(f"PRAGMA user_version = {int(version)}")
            else:
                await conn.execute(select(1))
        await self._write(work)

    async def evidence_bytes(self) -> int:
        """Bytes of evidence (snapshots, and any other blob kept with events) stored."""
        return await self._read(evidence.total_bytes)

    async def trim_evidence(self, max_bytes: int) -> tuple[int, int]:
        """Drop the oldest evidence until at most ``max_bytes`` remain; the events stay.
        Returns (events whose evidence was dropped, evidence bytes left)."""
        return await self._write(lambda c: evidence.trim(c, max_bytes))

    async def drop_oldest_evidence(self, fraction: float) -> tuple[int, int]:
        """Drop about ``fraction`` of the stored evidence, oldest first (when space runs
        short); returns what :meth:`trim_evidence` returns."""
        async def work(conn: AsyncConnection) -> tuple[int, int]:
            total = await evidence.total_bytes(conn)
            return await evidence.trim(conn, int(total * (1 - fraction)))
        return await self._write(work)

    async def save_switch(self, rule: str, enabled: bool, now_ms: int | None = None) -> None:
        """Remember that ``rule`` was switched on or off at run time (Home Assistant)."""
        at = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        await self._write(lambda c: alerts.save_switch(c, rule, enabled, at))

    async def load_switches(self) -> dict[str, bool]:
        """Every rule switched at run time: rule -> enabled."""
        return await self._read(alerts.load_switches)

    async def save_budget_spend(self, rows: Iterable[budgets.SpendRow]) -> None:
        """Keep the current windows' spend of budgets (see :mod:`watcher.engine.budget`)."""
        rows = list(rows)
        await self._write(lambda c: budgets.save_spend(c, rows))

    async def load_budget_spend(self) -> list[budgets.SpendRow]:
        """Every budget's stored spend, as ``(scope, name, period, window_start_ms, calls,
        tokens)``."""
        return await self._read(budgets.load_spend)

    # -- the console: timeline, silences, acks, feedback, clips ----------------
    # (statements in watcher.store.timeline and watcher.store.reviews)

    async def timeline(self, query: TimelineQuery) -> list[AlertEventRecord]:
        """The console's page of events (without snapshots)."""
        return await self._read(lambda c: timeline.timeline(c, query))

    async def timeline_page(self, query: TimelineQuery,
                            ) -> tuple[list[AlertEventRecord], EventDetails]:
        """A page of the timeline and what the console shows with it, in one read."""
        async def work(conn: AsyncConnection) -> tuple[list[AlertEventRecord], EventDetails]:
            events = await timeline.timeline(conn, query)
            return events, await timeline.event_details(conn, events)
        return await self._read(work)

    async def event_details(self, events: list[AlertEventRecord]) -> EventDetails:
        return await self._read(lambda c: timeline.event_details(c, events))

    async def episode_times(self, keys: Iterable[tuple[str, str, int]],
                            ) -> dict[tuple[str, str, int], tuple[int | None, int | None]]:
        """When each (rule, stream_key, episode) fired and resolved."""
        wanted = list(keys)
        return await self._read(lambda c: timeline.episode_times(c, wanted))

    async def snapshot(self, event_id: int) -> tuple[bytes, str] | None:
        """An event's snapshot and its content type, if it has one."""
        event = await self.event(event_id)
        if event is None or event.snapshot is None:
            return None
        return event.snapshot, event.snapshot_type or "image/jpeg"

    async def add_silence(self, silence: Silence) -> None:
        await self._write(lambda c: reviews.save_silence(c, silence))

    async def silences(self, since_ms: int | None = None) -> list[Silence]:
        """Silences ending after ``since_ms`` (every silence with None), newest first."""
        return await self._read(lambda c: reviews.load_silences(c, since_ms))

    async def expire_silence(self, silence_id: str, now_ms: int) -> bool:
        return await self._write(lambda c: reviews.expire_silence(c, silence_id, now_ms))

    async def add_ack(self, ack: Ack) -> bool:
        """Acknowledge a firing episode; False if it already was."""
        return await self._write(lambda c: reviews.save_ack(c, ack))

    async def acks(self, keys: Iterable[tuple[str, str, int]],
                   ) -> dict[tuple[str, str, int], Ack]:
        wanted = list(keys)
        return await self._read(lambda c: reviews.load_acks(c, wanted))

    async def set_feedback(self, mark: Feedback) -> None:
        await self._write(lambda c: reviews.save_feedback(c, mark))

    async def feedback(self, event_ids: Iterable[int] | None = None) -> dict[int, Feedback]:
        """Marks by event id (every mark with None)."""
        ids = None if event_ids is None else list(event_ids)
        return await self._read(lambda c: reviews.load_feedback(c, ids))

    async def save_clip(self, clip: Clip) -> bool:
        return await self._write(lambda c: reviews.save_clip(c, clip))

    async def clip(self, event_id: int, *, data: bool = True) -> Clip | None:
        return await self._read(lambda c: reviews.load_clip(c, event_id, data))

    async def clip_ids(self, event_ids: Iterable[int]) -> set[int]:
        ids = list(event_ids)
        return await self._read(lambda c: reviews.clip_ids(c, ids))

    async def clip_bytes(self) -> int:
        """Bytes of all stored clips."""
        return await self._read(reviews.clip_bytes)

    async def trim_clips(self, max_bytes: int, max_count: int | None = None) -> int:
        """Drop the oldest clips beyond the budget; alert records are never dropped."""
        return await self._write(lambda c: reviews.trim_clips(c, max_bytes, max_count))
