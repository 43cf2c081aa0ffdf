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
  are never reused even if old events are pruned, and ``foreign_keys`` is on:
  the delivery outbox (a later issue) can be a table
  ``alert_outbox(event_id INTEGER NOT NULL REFERENCES alert_events(id), action,
  attempts, next_attempt_ms, delivered_ms, ...)`` whose rows are inserted in
  the same transaction as their event (extend :meth:`AlertStore.record`), with
  ``event_key`` (plus the action name) as the delivery Idempotency-Key.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from watcher.engine.state import AlertState, Kind, Transition
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
)
SCHEMA_VERSION = len(_MIGRATIONS)

_EVENT_COLUMNS = (
    "id", "event_key", "rule", "stream_key", "episode", "kind", "notify", "created_ms",
    "severity", "labels", "answer", "urls", "stream_ids", "stream_time_ms", "model", "usage",
    "snapshot", "snapshot_type", "extra",
)


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


class AlertStore:
    """Alert states and events in SQLite (WAL); async methods, one worker thread."""

    def __init__(self, path: str | Path) -> None:
        self.path = str(path)
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
        events: Iterable[AlertEventRecord] = (),
    ) -> list[int]:
        """Write ``state`` and ``events`` atomically; return the new event ids in order.

        Raises :class:`DuplicateEventError` (and writes nothing) if an
        ``event_key`` is already stored.
        """
        events = list(events)
        for e in events:
            if (e.rule, e.stream_key) != (rule, stream_key):
                raise ValueError(f"event {e.event_key} is not for {rule}/{stream_key}")
        return await self._call(self._record, rule, stream_key, state, events)

    async def events(
        self, limit: int = 50, rule: str | None = None, status: str | None = None,
        since_ms: int | None = None, stream_key: str | None = None, snapshots: bool = True,
    ) -> list[AlertEventRecord]:
        """Events newest first (by ``created_ms``, then id), filtered.

        ``snapshots=False`` leaves ``snapshot`` None (``snapshot_type`` still
        says whether one is stored), for listings that do not show images.
        """
        if limit < 0:
            raise ValueError("limit must be >= 0")
        return await self._call(self._events, limit, rule, status, since_ms, stream_key,
                                snapshots)

    async def event(self, event_id: int) -> AlertEventRecord | None:
        return await self._call(self._event, event_id)

    async def forget(self, rule: str) -> int:
        """Drop the states of a removed rule; its events stay as history. Returns the count."""
        return await self._call(self._forget, rule)

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
        self, rule: str, stream_key: str, state: AlertState, events: list[AlertEventRecord]
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
        stream_key: str | None, snapshots: bool,
    ) -> list[AlertEventRecord]:
        where: list[str] = []
        params: list[Any] = []
        for column, op, value in (("rule", "=", rule), ("status", "=", status),
                                  ("created_ms", ">=", since_ms),
                                  ("stream_key", "=", stream_key)):
            if value is not None:
                where.append(f"{column} {op} ?")
                params.append(value)
        columns = ", ".join(c if c != "snapshot" or snapshots else "NULL" for c in _EVENT_COLUMNS)
        sql = f"SELECT {columns} FROM alert_events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY created_ms DESC, id DESC LIMIT ?"
        return [_event_from_row(row) for row in self._db().execute(sql, (*params, limit))]

    def _event(self, event_id: int) -> AlertEventRecord | None:
        row = self._db().execute(
            f"SELECT {', '.join(_EVENT_COLUMNS)} FROM alert_events WHERE id = ?", (event_id,)
        ).fetchone()
        return None if row is None else _event_from_row(row)

    def _forget(self, rule: str) -> int:
        return self._db().execute("DELETE FROM alert_state WHERE rule = ?", (rule,)).rowcount


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
        " snapshot, snapshot_type, extra)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            e.event_key, e.rule, e.stream_key, e.episode, str(e.kind), e.status, int(e.notify),
            e.created_ms, e.severity, _dumps(e.labels),
            None if e.answer is None else _dumps(e.answer), _dumps(list(e.urls)),
            _dumps(list(e.stream_ids)), e.stream_time_ms, e.model,
            None if e.usage is None else _dumps(e.usage), e.snapshot, e.snapshot_type,
            _dumps(e.extra),
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
    )


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
