"""The tables at the newest schema revision, as SQLAlchemy Core objects for queries.

Migrations (``migrations/versions``) create and change these tables; this
module only describes their current shape. A new table or column goes in
both: a new revision (see ``migrations/__init__.py``) and here.

* ``alert_state``: (rule, stream_key) -> status, state JSON, updated_ms.
* ``alert_events``: one row per transition, with its evidence (answer, frame
  URLs, JPEG snapshot). ``id`` never repeats, even after pruning.
* ``rule_switches``: rules switched on or off at run time (Home Assistant),
  so the choice survives a restart.
* ``budget_spend``: calls and tokens spent in the current UTC hour and day of
  each rule and model budget, so a restart keeps counting.
* ``deliveries``: the outbox, one row per (notifying event, action);
  ``idempotency_key`` is ``f"{event_key}:{action}"``, the same on every attempt.
* ``cluster_members``, ``cluster_leases``: cluster mode's heartbeats and camera
  group leases (see :mod:`watcher.cluster.sqlstore`).
* ``silences``, ``acks``, ``feedback``, ``evidence_clips``: what people add in
  the console (:mod:`watcher.store.reviews`); ``alert_events.silenced_by``
  names the silence that kept an event from notifying.

Times are integer milliseconds since the epoch (BIGINT on PostgreSQL); JSON
is stored as text, written by :func:`dumps` (sorted keys, no NaN).
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

Id = BigInteger().with_variant(Integer(), "sqlite")
"""Row ids: BIGINT on PostgreSQL, INTEGER (the rowid alias) on SQLite."""

alert_state = Table(
    "alert_state", metadata,
    Column("rule", Text, primary_key=True),
    Column("stream_key", Text, primary_key=True),
    Column("status", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("updated_ms", BigInteger),
)

alert_events = Table(
    "alert_events", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("event_key", Text, nullable=False, unique=True),
    Column("rule", Text, nullable=False),
    Column("stream_key", Text, nullable=False),
    Column("episode", Integer, nullable=False),
    Column("kind", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("notify", Integer, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("severity", Text),
    Column("labels", Text, nullable=False),
    Column("answer", Text),
    Column("urls", Text, nullable=False),
    Column("stream_ids", Text, nullable=False),
    Column("stream_time_ms", BigInteger),
    Column("model", Text),
    Column("usage", Text),
    Column("snapshot", LargeBinary),
    Column("snapshot_type", Text),
    Column("extra", Text, nullable=False),
    Column("silenced_by", Text),
)

deliveries = Table(
    "deliveries", metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("event_id", Id, ForeignKey("alert_events.id"), nullable=False),
    Column("action", Text, nullable=False),
    Column("idempotency_key", Text, nullable=False, unique=True),
    Column("status", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_ms", BigInteger, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
    Column("sent_ms", BigInteger),
    Column("last_error", Text),
    Column("summary_id", Text),
    Column("claimed_by", Text),
    Column("claim_expires_ms", BigInteger),
)

cluster_members = Table(
    "cluster_members", metadata,
    Column("instance_id", String(200), primary_key=True),
    Column("last_seen_ms", BigInteger, nullable=False),
    Column("started_ms", BigInteger, nullable=False),
    Column("info", Text, nullable=False),
)

cluster_leases = Table(
    "cluster_leases", metadata,
    Column("group_id", Text, primary_key=True),
    Column("owner", String(200), nullable=True),
    Column("epoch", BigInteger, nullable=False),
    Column("expires_ms", BigInteger, nullable=False),
    Column("acquired_ms", BigInteger, nullable=False),
)


rule_switches = Table(
    "rule_switches", metadata,
    Column("rule", Text, primary_key=True),
    Column("enabled", Integer, nullable=False),
    Column("updated_ms", BigInteger, nullable=False),
)

silences = Table(
    "silences", metadata,
    Column("id", Text, primary_key=True),
    Column("matchers", Text, nullable=False),
    Column("starts_ms", BigInteger, nullable=False),
    Column("ends_ms", BigInteger, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("comment", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
    Column("expired_ms", BigInteger),
)

acks = Table(
    "acks", metadata,
    Column("rule", Text, primary_key=True),
    Column("stream_key", Text, primary_key=True),
    Column("episode", Integer, primary_key=True, autoincrement=False),
    Column("created_by", Text, nullable=False),
    Column("comment", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

feedback = Table(
    "feedback", metadata,
    Column("event_id", Id, ForeignKey("alert_events.id"), primary_key=True,
           autoincrement=False),
    Column("label", Text, nullable=False),
    Column("note", Text, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)

evidence_clips = Table(
    "evidence_clips", metadata,
    Column("event_id", Id, ForeignKey("alert_events.id"), primary_key=True,
           autoincrement=False),
    Column("content_type", Text, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("frames", Integer, nullable=False),
    Column("start_ms", BigInteger, nullable=False),
    Column("end_ms", BigInteger, nullable=False),
    Column("encode_cpu_ms", Integer, nullable=False),
    Column("created_ms", BigInteger, nullable=False),
)


budget_spend = Table(
    "budget_spend", metadata,
    Column("scope", Text, primary_key=True),
    Column("name", Text, primary_key=True),
    Column("period", Text, primary_key=True),
    Column("window_start_ms", BigInteger, nullable=False),
    Column("calls", BigInteger, nullable=False),
    Column("tokens", BigInteger, nullable=False),
)


def dumps(value: Any) -> str:
    """JSON as stored: compact, sorted keys; ValueError for NaN or infinity."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)


def loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)
