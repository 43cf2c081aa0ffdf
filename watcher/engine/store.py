"""The alert store moved to :mod:`watcher.store`; these names stay importable from here."""

from watcher.store import (
    MAX_ERROR_CHARS,
    ActionsFor,
    AlertEventRecord,
    AlertStore,
    DeliveryRecord,
    DeliveryStatus,
    DuplicateEventError,
    StoreError,
    delivery_key,
    event_key,
)
from watcher.store.migrate import head as _head

SCHEMA_VERSION = _head()
"""The newest schema revision."""

__all__ = [
    "MAX_ERROR_CHARS",
    "SCHEMA_VERSION",
    "ActionsFor",
    "AlertEventRecord",
    "AlertStore",
    "DeliveryRecord",
    "DeliveryStatus",
    "DuplicateEventError",
    "StoreError",
    "delivery_key",
    "event_key",
]
