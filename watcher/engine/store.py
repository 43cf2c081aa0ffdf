"""Durable alert states and events in one SQLite file.

Every step that changes an alert writes the new :class:`AlertState` and its
events (with their evidence: answer, frame URLs, snapshot) in ONE
transaction, before any action runs: a crash never leaves a state change
without its event, or an event without its state. Replaying a step after a
crash cannot duplicate an event either: ``event_key`` is UNIQUE.

Threading: the daemon is asyncio, and a commit waits for an fsync
(``synchronous=FULL``, so an event survives power loss, not only a crash),
which can take milliseconds. So the one connection lives on one worker
thread (``ThreadPoolExecutor(max_workers=1)``) and every method is a
coroutine that runs its blocking work there, in submission order. Only the
constructor blocks: it opens the file and migrates the schema at once, so a
bad path or a newer schema fails at startup rather than at the first alert.
A cancelled ``await store.record(...)`` may still commit; the state on disk
is the truth to reload.

Schema (``PRAGMA user_version`` = :data:`SCHEMA_VERSION`; each entry of
``_MIGRATIONS`` moves it up by one, in its own transaction):

* ``alert_state``: (rule, stream_key) -> status, state JSON, updated_ms.
* ``alert_events``: one row per transition. ``id`` is AUTOINCREMENT so ids
  are never reused even if old events are pruned, and ``foreign_keys`` is on.
* ``deliveries`` (the outbox, migration 2): one row per (notifying event,
  action), inserted by :meth:`AlertStore.record` in the SAME transaction as
  its event, so an event is committed before any delivery starts and a
  committed notifying event always has its deliveries. ``idempotency_key`` is
  ``f"{event_key}:{action}"``, the same on every attempt. Status::

      pending --mark_delivering--> delivering --mark_sent--------> sent
                                   delivering --mark_retry-------> pending (due later)
      pending, delivering --mark_dead--------------------------> dead (kept: dead letter)
      pending, delivering --mark_summarized--------------------> summarized
      delivering --reset_in_flight (startup)-------------------> pending

  ``reset_in_flight``: a crash mid-delivery means delivering again
  (at-least-once). ``summarized``: a rate-limit summary message stood for it.
  ``attempts`` counts started attempts (``mark_delivering``), so an attempt
  cut short by a crash still counts. ``last_error`` is bounded to
  :data:`MAX_ERROR_CHARS`; actions must keep secrets out of their errors.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from watcher.engine import reviews
from watcher.engine.reviews import Ack, Clip, Feedback
from watcher.engine.silences import Silence
from watcher.engine.state import AlertState, Kind, Transition
from watcher.engine.timeline import TimelineQuery, episode_times, timeline_rows
from watcher.errors import WatcherError

T = TypeVar("T")

_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE alert_state (
            rule TEXT NOT NULL,
            stream_key TEXT NOT NULL,
            status TEXT NOT NULL,
            state TEXT NOT NULL,
            updated_ms INTEGER,
            PRIMARY KEY (rule, stream_key)
        ) WITHOUT ROWID""",
        """CREATE TABLE alert_events (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            event_key TEXT NOT NULL UNIQUE,
            rule TEXT NOT NULL,
            stream_key TEXT NOT NULL,
            episode INTEGER NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('firing', 'resolved', 'repeat')),
            status TEXT NOT NULL CHECK (status IN ('firing', 'resolved')),
            notify INTEGER NOT NULL,
            created_ms INTEGER NOT NULL,
            severity TEXT,
            labels TEXT NOT NULL,
            answer TEXT,
            urls TEXT NOT NULL,
            stream_ids TEXT NOT NULL,
            stream_time_ms INTEGER,
            model TEXT,
            usage TEXT,
            snapshot BLOB,
            snapshot_type TEXT,
            extra TEXT NOT NULL
        )""",
        "CREATE INDEX alert_events_by_time ON alert_events (created_ms, id)",
        "CREATE INDEX alert_events_by_rule ON alert_events (rule, created_ms)",
    ),
    (
        """CREATE TABLE deliveries (
            id INTEGER PRIMARY KEY AUTOINCREMENT,
            event_id INTEGER NOT NULL REFERENCES alert_events(id),
            action TEXT NOT NULL,
            idempotency_key TEXT NOT NULL UNIQUE,
            status TEXT NOT NULL CHECK (status IN
                ('pending', 'delivering', 'sent', 'dead', 'summarized')),
            attempts INTEGER NOT NULL DEFAULT 0,
            next_attempt_ms INTEGER NOT NULL,
            created_ms INTEGER NOT NULL,
            updated_ms INTEGER NOT NULL,
            sent_ms INTEGER,
            last_error TEXT,
            summary_id TEXT
        )""",
        "CREATE INDEX deliveries_due ON deliveries (status, next_attempt_ms, id)",
        "CREATE INDEX deliveries_by_event ON deliveries (event_id)",
        "CREATE INDEX deliveries_by_action ON deliveries (action, status)",
    ),
    reviews.MIGRATION,
)
SCHEMA_VERSION = len(_MIGRATIONS)
MAX_ERROR_CHARS = 500
"""``last_error`` is cut to this many characters."""

_EVENT_COLUMNS = (
    "id", "event_key", "rule", "stream_key", "episode", "kind", "notify", "created_ms",
    "severity", "labels", "answer", "urls", "stream_ids", "stream_time_ms", "model", "usage",
    "snapshot", "snapshot_type", "extra", "silenced_by",
)
_DELIVERY_COLUMNS = (
    "id", "event_id", "action", "idempotency_key", "status", "attempts", "next_attempt_ms",
    "created_ms", "updated_ms", "sent_ms", "last_error", "summary_id",
)
ActionsFor = Callable[["AlertEventRecord"], Iterable[str]]


class StoreError(WatcherError):
    """The alert store could not be opened, read or written."""


class DuplicateEventError(StoreError):
    """An event with this ``event_key`` is already stored; nothing was written."""


def event_key(rule: str, stream_key: str, transition: Transition) -> str:
    """Stable id of one event, later the delivery Idempotency-Key.

    The time is part of it so that a rule removed (:meth:`AlertStore.forget`)
    and added again, restarting at episode 1, never collides with old events.
    """
    t = transition
    return f"{rule}:{stream_key}:{t.episode}:{t.kind}:{t.at_ms}"


@dataclass(frozen=True, slots=True)
class AlertEventRecord:
    """One recorded transition with its evidence. ``id`` is set once stored."""

    event_key: str
    rule: str
    stream_key: str
    episode: int
    kind: Kind
    notify: bool
    created_ms: int
    severity: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    answer: Any = None
    """The validated JSON answer that decided the verdict."""
    urls: tuple[str, ...] = ()
    """The ovs:// frame or window references the model was shown."""
    stream_ids: tuple[str, ...] = ()
    stream_time_ms: int | None = None
    model: str | None = None
    usage: dict[str, Any] | None = None
    snapshot: bytes | None = field(default=None, repr=False)
    snapshot_type: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    silenced_by: str | None = None
    """The id of the silence that kept this event from notifying."""
    id: int | None = None

    @property
    def status(self) -> str:
        """``firing`` (for firing and repeat events) or ``resolved``."""
        return "resolved" if self.kind is Kind.RESOLVED else "firing"

    @classmethod
    def from_transition(
        cls, rule: str, stream_key: str, transition: Transition, **evidence: Any
    ) -> AlertEventRecord:
        """The record of ``transition``; ``evidence`` fills the optional fields."""
        if evidence.get("snapshot") is not None:
            evidence.setdefault("snapshot_type", "image/jpeg")
        return cls(
            event_key=event_key(rule, stream_key, transition), rule=rule,
            stream_key=stream_key, episode=transition.episode, kind=transition.kind,
            notify=transition.notify, created_ms=transition.at_ms, **evidence,
        )


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERING = "delivering"
    SENT = "sent"
    DEAD = "dead"
    SUMMARIZED = "summarized"


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One (event, action) delivery in the outbox."""

    id: int
    event_id: int
    action: str
    idempotency_key: str
    status: DeliveryStatus
    attempts: int
    next_attempt_ms: int
    created_ms: int
    updated_ms: int
    sent_ms: int | None = None
    last_error: str | None = None
    summary_id: str | None = None
    """The idempotency key of the summary message that stood for this delivery."""


def delivery_key(event_key: str, action: str) -> str:
    """The Idempotency-Key of delivering one event to one action."""
    return f"{event_key}:{action}"


class AlertStore:
    """Alert states, events and their deliveries in SQLite (WAL); async methods, one thread."""

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        """Open (creating it, with its folder, unless ``read_only``) the store at ``path``.

        ``read_only`` (for ``watcher alerts``) never creates or changes the file:
        a missing file is a :class:`StoreError`.
        """
        self.path = str(path)
        self.read_only = read_only
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="alert-store")
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        try:
            self._executor.submit(self._open).result()
        except BaseException:
            self._executor.shutdown(wait=False)
            raise

    async def __aenter__(self) -> AlertStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def load_state(self, rule: str, stream_key: str) -> AlertState | None:
        return await self._call(self._load_state, rule, stream_key)

    async def load_all_states(self) -> dict[tuple[str, str], AlertState]:
        """Every stored state, keyed by (rule, stream_key)."""
        return await self._call(self._load_all_states)

    async def record(
        self, rule: str, stream_key: str, state: AlertState,
        events: Iterable[AlertEventRecord] = (), *, actions_for: ActionsFor | None = None,
    ) -> list[int]:
        """Write ``state``, ``events`` and their deliveries atomically; return the event ids.

        ``actions_for(event)`` names the actions a notifying event goes to (it
        is not asked about events with ``notify=False``, which go nowhere);
        one ``pending`` delivery per name is written with the event, due at
        once. Raises :class:`DuplicateEventError` (and writes nothing) if an
        ``event_key`` is already stored.
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
        return await self._call(self._record, rule, stream_key, state, events, targets)

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
        return await self._call(self._events, limit, rule, status, since_ms, stream_key,
                                snapshots, dead_only)

    async def event(self, event_id: int) -> AlertEventRecord | None:
        return await self._call(self._event, event_id)

    async def events_by_ids(self, event_ids: Iterable[int]) -> list[AlertEventRecord]:
        """The stored events among ``event_ids``, in the order given."""
        return await self._call(self._events_by_ids, list(event_ids))

    async def timeline(self, query: TimelineQuery) -> list[AlertEventRecord]:
        """The console's page of events (without snapshots); see :mod:`~watcher.engine.timeline`."""
        columns = ", ".join(c if c != "snapshot" else "NULL" for c in _EVENT_COLUMNS)
        rows = await self._call(timeline_rows_of, self, columns, query)
        return [_event_from_row(row) for row in rows]

    async def episode_times(self, keys: Iterable[tuple[str, str, int]],
                            ) -> dict[tuple[str, str, int], tuple[int | None, int | None]]:
        """When each (rule, stream_key, episode) fired and resolved."""
        wanted = list(keys)
        return await self._call(lambda: episode_times(self._db(), wanted))

    async def snapshot(self, event_id: int) -> tuple[bytes, str] | None:
        """An event's snapshot and its content type, if it has one."""
        return await self._call(self._snapshot, event_id)

    # -- silences, acks, feedback, clips (:mod:`watcher.engine.reviews`) --------
    async def add_silence(self, silence: Silence) -> None:
        await self._call(lambda: reviews.save_silence(self._db(), silence))

    async def silences(self, since_ms: int | None = None) -> list[Silence]:
        """Silences ending after ``since_ms`` (every silence with None), newest first."""
        return await self._call(lambda: reviews.load_silences(self._db(), since_ms))

    async def expire_silence(self, silence_id: str, now_ms: int) -> bool:
        return await self._call(lambda: reviews.expire_silence(self._db(), silence_id, now_ms))

    async def add_ack(self, ack: Ack) -> bool:
        return await self._call(lambda: reviews.save_ack(self._db(), ack))

    async def acks(self, keys: Iterable[tuple[str, str, int]]) -> dict[tuple[str, str, int], Ack]:
        wanted = list(keys)
        return await self._call(lambda: reviews.load_acks(self._db(), wanted))

    async def set_feedback(self, feedback: Feedback) -> None:
        await self._call(lambda: reviews.save_feedback(self._db(), feedback))

    async def feedback(self, event_ids: Iterable[int] | None = None) -> dict[int, Feedback]:
        """Marks by event id (every mark with None)."""
        ids = None if event_ids is None else list(event_ids)
        return await self._call(lambda: reviews.load_feedback(self._db(), ids))

    async def save_clip(self, clip: Clip) -> bool:
        return await self._call(lambda: reviews.save_clip(self._db(), clip))

    async def clip(self, event_id: int, *, data: bool = True) -> Clip | None:
        return await self._call(lambda: reviews.load_clip(self._db(), event_id, data))

    async def clip_ids(self, event_ids: Iterable[int]) -> set[int]:
        ids = list(event_ids)
        return await self._call(lambda: reviews.clip_ids(self._db(), ids))

    async def trim_clips(self, max_bytes: int, max_count: int | None = None) -> int:
        """Drop the oldest clips beyond the budget; alert records are never dropped."""
        return await self._call(lambda: reviews.trim_clips(self._db(), max_bytes, max_count))

    # -- the delivery outbox ---------------------------------------------------

    async def due_deliveries(
        self, now_ms: int, limit: int = 100, exclude_actions: Iterable[str] = (),
        action: str | None = None,
    ) -> list[DeliveryRecord]:
        """Pending deliveries due at ``now_ms``, oldest due first (then by id)."""
        if limit < 0:
            raise ValueError("limit must be >= 0")
        return await self._call(self._due, now_ms, limit, tuple(exclude_actions), action)

    async def next_due_ms(self, exclude_actions: Iterable[str] = ()) -> int | None:
        """When the next pending delivery (of an action not excluded) is due; None if none."""
        return await self._call(self._next_due, tuple(exclude_actions))

    async def mark_delivering(self, delivery_id: int, now_ms: int,
                              summary_id: str | None = None) -> bool:
        """pending -> delivering, counting one attempt; False if it was not pending.

        ``summary_id``: the delivery goes out as a member of that summary message;
        the key is kept, so a summary whose outcome is unknown is sent again
        under the same key (see :meth:`summary_members`).
        """
        if summary_id is None:
            return await self._call(
                self._update, delivery_id, now_ms, (DeliveryStatus.PENDING,),
                "status = 'delivering', attempts = attempts + 1", ())
        return await self._call(
            self._update, delivery_id, now_ms, (DeliveryStatus.PENDING,),
            "status = 'delivering', attempts = attempts + 1, summary_id = ?", (summary_id,))

    async def summary_members(self, summary_id: str) -> list[DeliveryRecord]:
        """The unfinished (pending or delivering) members of a summary, by event id."""
        return await self._call(self._summary_members, summary_id)

    async def mark_sent(self, delivery_id: int, now_ms: int) -> bool:
        return await self._call(
            self._update, delivery_id, now_ms, (DeliveryStatus.DELIVERING,),
            "status = 'sent', sent_ms = ?", (now_ms,))

    async def mark_retry(self, delivery_id: int, next_attempt_ms: int, error: str,
                         now_ms: int) -> bool:
        """Back to pending, due again at ``next_attempt_ms``."""
        return await self._call(
            self._update, delivery_id, now_ms, (DeliveryStatus.DELIVERING,),
            "status = 'pending', next_attempt_ms = ?, last_error = ?",
            (next_attempt_ms, _bounded(error)))

    async def mark_dead(self, delivery_id: int, error: str, now_ms: int) -> bool:
        """Dead-letter a pending or in-flight delivery; it is kept for ``watcher alerts``."""
        return await self._call(
            self._update, delivery_id, now_ms,
            (DeliveryStatus.PENDING, DeliveryStatus.DELIVERING),
            "status = 'dead', last_error = ?", (_bounded(error),))

    async def mark_summarized(self, delivery_ids: Iterable[int], summary_id: str,
                              now_ms: int) -> int:
        """Mark deliveries a sent summary stood for; returns how many changed."""
        return await self._call(self._summarized, list(delivery_ids), summary_id, now_ms)

    async def reset_in_flight(self, now_ms: int) -> int:
        """delivering -> pending, for startup: a crash mid-delivery means deliver again.

        Only one outbox may work on a store: this takes back every in-flight row.
        """
        return await self._call(self._reset_in_flight, now_ms)

    async def delivery_counts(self) -> dict[str, dict[str, int]]:
        """``{action: {status: count}}`` over all deliveries (for metrics and status)."""
        return await self._call(self._delivery_counts)

    async def deliveries_for_event(self, event_id: int) -> list[DeliveryRecord]:
        return (await self.deliveries_for_events([event_id])).get(event_id, [])

    async def deliveries_for_events(
        self, event_ids: Iterable[int]
    ) -> dict[int, list[DeliveryRecord]]:
        """The deliveries of each event (by id, then in insertion order)."""
        return await self._call(self._deliveries_for, list(event_ids))

    async def forget(self, rule: str) -> int:
        """Drop the states of a removed rule; its events stay as history. Returns the count."""
        return await self._call(self._forget, rule)

    async def prune(self, before_ms: int) -> int:
        """Delete events created before ``before_ms`` whose deliveries are all finished
        (sent, dead or summarized), with those deliveries. Returns how many events went."""
        return await self._call(self._prune, before_ms)

    async def close(self) -> None:
        """Finish queued work and close the file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._close)
        finally:
            self._executor.shutdown(wait=False)

    # -- on the worker thread -------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise StoreError(f"alert store {self.path} is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise StoreError(f"alert store {self.path}: {exc}") from exc

    def _open(self) -> None:
        if self.read_only:
            self._open_read_only()
            return
        if self.path != ":memory:" and not self.path.startswith("file:"):
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(self.path, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open alert store {self.path}: {exc}") from exc
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal" and self.path != ":memory:":
                raise StoreError(f"alert store {self.path}: cannot use WAL (journal_mode={mode})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            _migrate(conn, self.path)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError(f"cannot open alert store {self.path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _open_read_only(self) -> None:
        uri = f"file:{urllib.parse.quote(os.path.abspath(self.path))}?mode=ro"
        try:
            conn = sqlite3.connect(uri, uri=True, isolation_level=None)
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchall()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read alert store {self.path}: {exc}") from exc
        self._conn = conn

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"alert store {self.path} is closed")
        return self._conn

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _load_state(self, rule: str, stream_key: str) -> AlertState | None:
        row = self._db().execute(
            "SELECT state FROM alert_state WHERE rule = ? AND stream_key = ?", (rule, stream_key)
        ).fetchone()
        return None if row is None else AlertState.from_dict(json.loads(row[0]))

    def _load_all_states(self) -> dict[tuple[str, str], AlertState]:
        rows = self._db().execute(
            "SELECT rule, stream_key, state FROM alert_state ORDER BY rule, stream_key"
        )
        return {(r, k): AlertState.from_dict(json.loads(s)) for r, k, s in rows}

    def _record(
        self, rule: str, stream_key: str, state: AlertState, events: list[AlertEventRecord],
        targets: list[list[str]],
    ) -> list[int]:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT INTO alert_state (rule, stream_key, status, state, updated_ms)"
                " VALUES (?, ?, ?, ?, ?) ON CONFLICT (rule, stream_key) DO UPDATE SET"
                " status = excluded.status, state = excluded.state,"
                " updated_ms = excluded.updated_ms",
                (rule, stream_key, str(state.status), _dumps(state.to_dict()), state.updated_ms),
            )
            ids = [_insert_event(db, e) for e in events]
            db.executemany(
                "INSERT INTO deliveries (event_id, action, idempotency_key, status,"
                " next_attempt_ms, created_ms, updated_ms)"
                " VALUES (?, ?, ?, 'pending', ?, ?, ?)",
                [(i, name, delivery_key(e.event_key, name), e.created_ms, e.created_ms,
                  e.created_ms)
                 for e, i, names in zip(events, ids, targets, strict=True) for name in names],
            )
            db.execute("COMMIT")
        except sqlite3.IntegrityError as exc:
            db.execute("ROLLBACK")
            if "event_key" in str(exc):
                raise DuplicateEventError(
                    f"alert store {self.path}: duplicate event key: {exc}"
                ) from exc
            raise
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return ids

    def _events(
        self, limit: int, rule: str | None, status: str | None, since_ms: int | None,
        stream_key: str | None, snapshots: bool, dead_only: bool,
    ) -> list[AlertEventRecord]:
        where: list[str] = []
        params: list[Any] = []
        for column, op, value in (("rule", "=", rule), ("status", "=", status),
                                  ("created_ms", ">=", since_ms),
                                  ("stream_key", "=", stream_key)):
            if value is not None:
                where.append(f"{column} {op} ?")
                params.append(value)
        if dead_only:
            where.append("id IN (SELECT event_id FROM deliveries WHERE status = 'dead')")
        columns = ", ".join(c if c != "snapshot" or snapshots else "NULL" for c in _EVENT_COLUMNS)
        sql = f"SELECT {columns} FROM alert_events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_ms DESC, id DESC LIMIT ?"
        return [_event_from_row(row) for row in self._db().execute(sql, (*params, limit))]

    def _snapshot(self, event_id: int) -> tuple[bytes, str] | None:
        row = self._db().execute(
            "SELECT snapshot, snapshot_type FROM alert_events WHERE id = ?", (event_id,)
        ).fetchone()
        if row is None or row[0] is None:
            return None
        return bytes(row[0]), row[1] or "image/jpeg"

    def _event(self, event_id: int) -> AlertEventRecord | None:
        row = self._db().execute(
            f"SELECT {', '.join(_EVENT_COLUMNS)} FROM alert_events WHERE id = ?", (event_id,)
        ).fetchone()
        return None if row is None else _event_from_row(row)

    def _events_by_ids(self, event_ids: list[int]) -> list[AlertEventRecord]:
        found: dict[int, AlertEventRecord] = {}
        for chunk in _chunks(event_ids):
            rows = self._db().execute(
                f"SELECT {', '.join(_EVENT_COLUMNS)} FROM alert_events"
                f" WHERE id IN ({_marks(chunk)})", chunk)
            found.update((row[0], _event_from_row(row)) for row in rows)
        return [found[i] for i in event_ids if i in found]

    def _prune(self, before_ms: int) -> int:
        db = self._db()
        old = ("SELECT id FROM alert_events WHERE created_ms < ? AND NOT EXISTS ("
               "SELECT 1 FROM deliveries d WHERE d.event_id = alert_events.id"
               " AND d.status IN ('pending', 'delivering'))")
        db.execute("BEGIN IMMEDIATE")
        try:
            for table in ("deliveries", *reviews.PRUNE_DEPENDENTS):
                db.execute(f"DELETE FROM {table} WHERE event_id IN ({old})", (before_ms,))
            count = db.execute(f"DELETE FROM alert_events WHERE id IN ({old})",
                               (before_ms,)).rowcount
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return count

    def _forget(self, rule: str) -> int:
        return self._db().execute("DELETE FROM alert_state WHERE rule = ?", (rule,)).rowcount

    def _due(self, now_ms: int, limit: int, exclude: tuple[str, ...],
             action: str | None) -> list[DeliveryRecord]:
        sql = (f"SELECT {', '.join(_DELIVERY_COLUMNS)} FROM deliveries"
               " WHERE status = 'pending' AND next_attempt_ms <= ?")
        params: list[Any] = [now_ms]
        if exclude:
            sql += f" AND action NOT IN ({_marks(exclude)})"
            params += exclude
        if action is not None:
            sql += " AND action = ?"
            params.append(action)
        sql += " ORDER BY next_attempt_ms, id LIMIT ?"
        return [_delivery_from_row(r) for r in self._db().execute(sql, (*params, limit))]

    def _summary_members(self, summary_id: str) -> list[DeliveryRecord]:
        sql = (f"SELECT {', '.join(_DELIVERY_COLUMNS)} FROM deliveries WHERE summary_id = ?"
               " AND status IN ('pending', 'delivering') ORDER BY event_id, id")
        return [_delivery_from_row(r) for r in self._db().execute(sql, (summary_id,))]

    def _next_due(self, exclude: tuple[str, ...]) -> int | None:
        sql = "SELECT MIN(next_attempt_ms) FROM deliveries WHERE status = 'pending'"
        if exclude:
            sql += f" AND action NOT IN ({_marks(exclude)})"
        return self._db().execute(sql, exclude).fetchone()[0]

    def _update(self, delivery_id: int, now_ms: int, from_status: tuple[DeliveryStatus, ...],
                assignments: str, params: tuple[Any, ...]) -> bool:
        cursor = self._db().execute(
            f"UPDATE deliveries SET {assignments}, updated_ms = ?"
            f" WHERE id = ? AND status IN ({_marks(from_status)})",
            (*params, now_ms, delivery_id, *map(str, from_status)))
        return cursor.rowcount == 1

    def _summarized(self, delivery_ids: list[int], summary_id: str, now_ms: int) -> int:
        db = self._db()
        db.execute("BEGIN IMMEDIATE")
        try:
            changed = sum(db.execute(
                "UPDATE deliveries SET status = 'summarized', summary_id = ?, sent_ms = ?,"
                " updated_ms = ? WHERE status IN ('pending', 'delivering')"
                f" AND id IN ({_marks(chunk)})", (summary_id, now_ms, now_ms, *chunk)).rowcount
                for chunk in _chunks(delivery_ids))
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return changed

    def _reset_in_flight(self, now_ms: int) -> int:
        return self._db().execute(
            "UPDATE deliveries SET status = 'pending', updated_ms = ?"
            " WHERE status = 'delivering'", (now_ms,)).rowcount

    def _delivery_counts(self) -> dict[str, dict[str, int]]:
        counts: dict[str, dict[str, int]] = {}
        rows = self._db().execute(
            "SELECT action, status, COUNT(*) FROM deliveries GROUP BY action, status"
            " ORDER BY action, status")
        for action, status, n in rows:
            counts.setdefault(action, {})[status] = n
        return counts

    def _deliveries_for(self, event_ids: list[int]) -> dict[int, list[DeliveryRecord]]:
        out: dict[int, list[DeliveryRecord]] = {}
        for chunk in _chunks(event_ids):
            rows = self._db().execute(
                f"SELECT {', '.join(_DELIVERY_COLUMNS)} FROM deliveries"
                f" WHERE event_id IN ({_marks(chunk)}) ORDER BY event_id, id", chunk)
            for row in rows:
                d = _delivery_from_row(row)
                out.setdefault(d.event_id, []).append(d)
        return out


def timeline_rows_of(store: AlertStore, columns: str, query: TimelineQuery) -> list[tuple]:
    return timeline_rows(store._db(), columns, query)


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"alert store {path} has schema version {version}; this watcher knows"
                    f" up to {SCHEMA_VERSION} (downgrade is not supported)"
                )
            if version == SCHEMA_VERSION:
                conn.execute("COMMIT")
                return
            for statement in _MIGRATIONS[version]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {version + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _insert_event(db: sqlite3.Connection, e: AlertEventRecord) -> int:
    cursor = db.execute(
        "INSERT INTO alert_events (event_key, rule, stream_key, episode, kind, status, notify,"
        " created_ms, severity, labels, answer, urls, stream_ids, stream_time_ms, model, usage,"
        " snapshot, snapshot_type, extra, silenced_by)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            e.event_key, e.rule, e.stream_key, e.episode, str(e.kind), e.status, int(e.notify),
            e.created_ms, e.severity, _dumps(e.labels),
            None if e.answer is None else _dumps(e.answer), _dumps(list(e.urls)),
            _dumps(list(e.stream_ids)), e.stream_time_ms, e.model,
            None if e.usage is None else _dumps(e.usage), e.snapshot, e.snapshot_type,
            _dumps(e.extra), e.silenced_by,
        ),
    )
    assert cursor.lastrowid is not None
    return cursor.lastrowid


def _event_from_row(row: tuple[Any, ...]) -> AlertEventRecord:
    r = dict(zip(_EVENT_COLUMNS, row, strict=True))
    return AlertEventRecord(
        id=r["id"], event_key=r["event_key"], rule=r["rule"], stream_key=r["stream_key"],
        episode=r["episode"], kind=Kind(r["kind"]), notify=bool(r["notify"]),
        created_ms=r["created_ms"], severity=r["severity"], labels=json.loads(r["labels"]),
        answer=None if r["answer"] is None else json.loads(r["answer"]),
        urls=tuple(json.loads(r["urls"])), stream_ids=tuple(json.loads(r["stream_ids"])),
        stream_time_ms=r["stream_time_ms"], model=r["model"],
        usage=None if r["usage"] is None else json.loads(r["usage"]),
        snapshot=None if r["snapshot"] is None else bytes(r["snapshot"]),
        snapshot_type=r["snapshot_type"], extra=json.loads(r["extra"]),
        silenced_by=r["silenced_by"],
    )


def _delivery_from_row(row: tuple[Any, ...]) -> DeliveryRecord:
    r = dict(zip(_DELIVERY_COLUMNS, row, strict=True))
    r["status"] = DeliveryStatus(r["status"])
    return DeliveryRecord(**r)


def _bounded(error: str) -> str:
    return error if len(error) <= MAX_ERROR_CHARS else error[: MAX_ERROR_CHARS - 1] + "…"


def _marks(values: Iterable[Any]) -> str:
    return ", ".join("?" for _ in values)


def _chunks(values: list[T], size: int = 500) -> list[list[T]]:
    """Pieces small enough for SQLite's limit on ``?`` parameters."""
    return [values[i:i + size] for i in range(0, len(values), size)]


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
