"""A state file exactly as the SQLite-only store wrote it (``PRAGMA user_version`` 1 to 3)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

VERSION_1 = (
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
)
VERSION_2 = (
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
)
VERSION_3 = (
    """CREATE TABLE rule_switches (
        rule TEXT PRIMARY KEY,
        enabled INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    ) WITHOUT ROWID""",
)
FIRING_STATE = ('{"episode":1,"episode_notified":true,"firing_since_ms":1000,'
                '"last_notified_ms":1000,"status":"firing","updated_ms":1000}')
JPEG = b"\xff\xd8\xff\xe0legacy\xff\xd9"


def write_state_file(path: Path, version: int = 3) -> None:
    """A file at ``version`` with one firing alert, its event (with a snapshot), from
    version 2 a delivery sent and one left in flight by a crash, and at version 3 a rule
    switched off."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path, isolation_level=None) as db:
        db.execute("PRAGMA journal_mode = WAL")
        for statement in (VERSION_1 + (VERSION_2 if version >= 2 else ())
                          + (VERSION_3 if version >= 3 else ())):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {version}")
        db.execute("INSERT INTO alert_state VALUES ('dock', 'cam1', 'firing', ?, 1000)",
                   (FIRING_STATE,))
        db.execute(
            "INSERT INTO alert_events (event_key, rule, stream_key, episode, kind, status,"
            " notify, created_ms, severity, labels, answer, urls, stream_ids, stream_time_ms,"
            " model, usage, snapshot, snapshot_type, extra) VALUES ('dock:cam1:1:firing:1000',"
            " 'dock', 'cam1', 1, 'firing', 'firing', 1, 1000, 'warning', '{\"site\":\"n\"}',"
            " '{\"answer\":true}', '[\"ovs://streams/s1?frame_index=-1\"]', '[\"s1\"]', 990,"
            " 'qwen-vl', '{\"total_tokens\":12}', ?, 'image/jpeg', '{}')", (JPEG,))
        if version >= 2:
            db.execute(
                "INSERT INTO deliveries (event_id, action, idempotency_key, status, attempts,"
                " next_attempt_ms, created_ms, updated_ms, sent_ms) VALUES"
                " (1, 'hook', 'dock:cam1:1:firing:1000:hook', 'sent', 1, 1000, 1000, 1100,"
                " 1100),"
                " (1, 'mail', 'dock:cam1:1:firing:1000:mail', 'delivering', 1, 1000, 1000,"
                " 1100, NULL)")
        if version >= 3:
            db.execute("INSERT INTO rule_switches VALUES ('gate', 0, 1200)")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
