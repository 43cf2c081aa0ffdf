"""Durable state: alert states, events with evidence, the delivery outbox.

::

    store.py        AlertStore: the one object callers use (states, events, evidence, reviews)
    queue.py        its delivery outbox methods: claims, retries, dead letters
    base.py         its database: opening (schema check or migration), reads, fenced writes
    alerts.py       alert states and events (statements)
    deliveries.py   the outbox: claims, retries, dead letters (statements)
    records.py      what is stored: AlertEventRecord, DeliveryRecord, keys
    schema.py       the tables at the newest revision (SQLAlchemy Core)
    migrate.py      versioned schema: Alembic revisions in migrations/
    database.py     SQLite or PostgreSQL: engine, transactions, errors
    lock.py         one daemon per SQLite state file
    fence.py        fenced writes (the cluster's ownership epochs)
    config.py       the `state:` config section
    admin.py        `watcher db upgrade` and `watcher db status`
    errors.py       StoreError and its kinds
"""

from watcher.store.errors import (
    DuplicateEventError,
    FencedError,
    SchemaError,
    StateLockedError,
    StoreError,
)
from watcher.store.fence import Fence
from watcher.store.records import (
    MAX_ERROR_CHARS,
    ActionsFor,
    AlertEventRecord,
    DeliveryRecord,
    DeliveryStatus,
    delivery_key,
    event_key,
)
from watcher.store.store import AlertStore

__all__ = [
    "MAX_ERROR_CHARS",
    "ActionsFor",
    "AlertEventRecord",
    "AlertStore",
    "DeliveryRecord",
    "DeliveryStatus",
    "DuplicateEventError",
    "Fence",
    "FencedError",
    "SchemaError",
    "StateLockedError",
    "StoreError",
    "delivery_key",
    "event_key",
]
