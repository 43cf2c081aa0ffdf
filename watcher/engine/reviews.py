"""What people add to alerts: silences, acknowledgements, feedback marks, and evidence clips.

The rows live in the alert store's file (migration 3 of
:mod:`watcher.engine.store`); the functions here run on the store's worker
thread with its connection, called through the store's async methods.

* ``silences``: one row per silence; matchers as JSON (Alertmanager's shape).
* ``acks``: (rule, stream_key, episode): an acknowledged firing episode. Acks
  name the episode, so the next episode is not acknowledged.
* ``feedback``: one mark per event: ``real`` or ``false_alarm``, a note, who, when.
* ``evidence_clips``: one short video per event (see :mod:`watcher.console.clips`).
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import Any

from watcher.engine.silences import Matcher, Silence

MIGRATION: tuple[str, ...] = (
    "ALTER TABLE alert_events ADD COLUMN silenced_by TEXT",
    "CREATE INDEX alert_events_by_stream ON alert_events (stream_key, created_ms)",
    "CREATE INDEX alert_events_by_episode ON alert_events (rule, stream_key, episode)",
    "CREATE INDEX alert_events_silenced ON alert_events (created_ms, id)"
    " WHERE silenced_by IS NOT NULL",
    """CREATE TABLE silences (
        id TEXT PRIMARY KEY,
        matchers TEXT NOT NULL,
        starts_ms INTEGER NOT NULL,
        ends_ms INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        comment TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        expired_ms INTEGER
    ) WITHOUT ROWID""",
    """CREATE TABLE acks (
        rule TEXT NOT NULL,
        stream_key TEXT NOT NULL,
        episode INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        comment TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        PRIMARY KEY (rule, stream_key, episode)
    ) WITHOUT ROWID""",
    """CREATE TABLE feedback (
        event_id INTEGER PRIMARY KEY REFERENCES alert_events(id),
        label TEXT NOT NULL CHECK (label IN ('real', 'false_alarm')),
        note TEXT NOT NULL,
        created_by TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    )""",
    """CREATE TABLE evidence_clips (
        event_id INTEGER PRIMARY KEY REFERENCES alert_events(id),
        content_type TEXT NOT NULL,
        data BLOB NOT NULL,
        bytes INTEGER NOT NULL,
        frames INTEGER NOT NULL,
        start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL,
        encode_cpu_ms INTEGER NOT NULL,
        created_ms INTEGER NOT NULL
    )""",
    "CREATE INDEX evidence_clips_by_time ON evidence_clips (created_ms)",
)
FEEDBACK_LABELS = ("real", "false_alarm")


@dataclass(frozen=True, slots=True)
class Ack:
    rule: str
    stream_key: str
    episode: int
    created_by: str
    comment: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class Feedback:
    event_id: int
    label: str
    """``real`` or ``false_alarm``."""
    note: str
    created_by: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class Clip:
    """An event's evidence clip; ``data`` is None when only the metadata was read."""

    event_id: int
    content_type: str
    bytes: int
    frames: int
    start_ms: int
    end_ms: int
    encode_cpu_ms: int
    created_ms: int
    data: bytes | None = None


# -- silences ------------------------------------------------------------------
def save_silence(db: sqlite3.Connection, s: Silence) -> None:
    db.execute(
        "INSERT INTO silences (id, matchers, starts_ms, ends_ms, created_by, comment,"
        " created_ms, expired_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (s.id, json.dumps([m.to_dict() for m in s.matchers]), s.starts_ms, s.ends_ms,
         s.created_by, s.comment, s.created_ms, s.expired_ms))


def load_silences(db: sqlite3.Connection, since_ms: int | None) -> list[Silence]:
    """Silences ending after ``since_ms`` (all with None), newest first."""
    sql = ("SELECT id, matchers, starts_ms, ends_ms, created_by, comment, created_ms,"
           " expired_ms FROM silences")
    params: tuple[Any, ...] = ()
    if since_ms is not None:
        sql += " WHERE ends_ms > ?"
        params = (since_ms,)
    rows = db.execute(sql + " ORDER BY created_ms DESC, id", params)
    return [Silence(id=r[0], matchers=tuple(Matcher.from_dict(m) for m in json.loads(r[1])),
                    starts_ms=r[2], ends_ms=r[3], created_by=r[4], comment=r[5],
                    created_ms=r[6], expired_ms=r[7]) for r in rows]


def expire_silence(db: sqlite3.Connection, silence_id: str, now_ms: int) -> bool:
    """End an active or pending silence now; False if unknown or already over."""
    return db.execute(
        "UPDATE silences SET ends_ms = ?, expired_ms = ? WHERE id = ? AND ends_ms > ?",
        (now_ms, now_ms, silence_id, now_ms)).rowcount == 1


# -- acks ------------------------------------------------------------------------
def save_ack(db: sqlite3.Connection, ack: Ack) -> bool:
    """Record ``ack``; False if that episode was already acknowledged."""
    return db.execute(
        "INSERT OR IGNORE INTO acks (rule, stream_key, episode, created_by, comment,"
        " created_ms) VALUES (?, ?, ?, ?, ?, ?)",
        (ack.rule, ack.stream_key, ack.episode, ack.created_by, ack.comment,
         ack.created_ms)).rowcount == 1


def load_acks(db: sqlite3.Connection, keys: list[tuple[str, str, int]]) -> dict[
        tuple[str, str, int], Ack]:
    out: dict[tuple[str, str, int], Ack] = {}
    for key in keys:  # primary-key lookups (a row-value IN would scan)
        row = db.execute(
            "SELECT created_by, comment, created_ms FROM acks WHERE rule = ? AND"
            " stream_key = ? AND episode = ?", key).fetchone()
        if row is not None:
            out[key] = Ack(*key, *row)
    return out


# -- feedback --------------------------------------------------------------------
def save_feedback(db: sqlite3.Connection, fb: Feedback) -> None:
    """Set (or replace) the event's mark."""
    db.execute(
        "INSERT INTO feedback (event_id, label, note, created_by, created_ms)"
        " VALUES (?, ?, ?, ?, ?) ON CONFLICT (event_id) DO UPDATE SET label = excluded.label,"
        " note = excluded.note, created_by = excluded.created_by,"
        " created_ms = excluded.created_ms",
        (fb.event_id, fb.label, fb.note, fb.created_by, fb.created_ms))


def load_feedback(db: sqlite3.Connection, event_ids: list[int] | None) -> dict[int, Feedback]:
    """Marks of ``event_ids`` (every mark with None)."""
    sql = "SELECT event_id, label, note, created_by, created_ms FROM feedback"
    if event_ids is None:
        return {r[0]: Feedback(*r) for r in db.execute(sql + " ORDER BY event_id")}
    out: dict[int, Feedback] = {}
    for i in range(0, len(event_ids), 500):
        chunk = event_ids[i:i + 500]
        marks = ", ".join("?" for _ in chunk)
        out.update((r[0], Feedback(*r))
                   for r in db.execute(f"{sql} WHERE event_id IN ({marks})", chunk))
    return out


# -- clips -----------------------------------------------------------------------
def save_clip(db: sqlite3.Connection, clip: Clip) -> bool:
    """Store ``clip`` unless its event is gone (pruned meanwhile); True when stored."""
    if db.execute("SELECT 1 FROM alert_events WHERE id = ?", (clip.event_id,)).fetchone() is None:
        return False
    db.execute(
        "INSERT OR REPLACE INTO evidence_clips (event_id, content_type, data, bytes, frames,"
        " start_ms, end_ms, encode_cpu_ms, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (clip.event_id, clip.content_type, clip.data, clip.bytes, clip.frames, clip.start_ms,
         clip.end_ms, clip.encode_cpu_ms, clip.created_ms))
    return True


def load_clip(db: sqlite3.Connection, event_id: int, data: bool) -> Clip | None:
    row = db.execute(
        "SELECT event_id, content_type, bytes, frames, start_ms, end_ms, encode_cpu_ms,"
        f" created_ms, {'data' if data else 'NULL'} FROM evidence_clips WHERE event_id = ?",
        (event_id,)).fetchone()
    if row is None:
        return None
    return Clip(*row[:8], data=None if row[8] is None else bytes(row[8]))


def clip_ids(db: sqlite3.Connection, event_ids: list[int]) -> set[int]:
    out: set[int] = set()
    for i in range(0, len(event_ids), 500):
        chunk = event_ids[i:i + 500]
        marks = ", ".join("?" for _ in chunk)
        out.update(r[0] for r in db.execute(
            f"SELECT event_id FROM evidence_clips WHERE event_id IN ({marks})", chunk))
    return out


def trim_clips(db: sqlite3.Connection, max_bytes: int, max_count: int | None) -> int:
    """Drop the oldest clips until they fit ``max_bytes`` (and ``max_count``); the events stay."""
    total, count = db.execute(
        "SELECT COALESCE(SUM(bytes), 0), COUNT(*) FROM evidence_clips").fetchone()
    dropped = 0
    if total <= max_bytes and (max_count is None or count <= max_count):
        return 0
    rows = db.execute("SELECT event_id, bytes FROM evidence_clips ORDER BY created_ms, event_id"
                      ).fetchall()
    doomed = []
    for event_id, size in rows:
        if total <= max_bytes and (max_count is None or count <= max_count):
            break
        doomed.append(event_id)
        total -= size
        count -= 1
    for event_id in doomed:
        dropped += db.execute("DELETE FROM evidence_clips WHERE event_id = ?",
                              (event_id,)).rowcount
    return dropped


PRUNE_DEPENDENTS = ("feedback", "evidence_clips")
"""Tables whose rows go with a pruned event."""
