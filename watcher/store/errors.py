"""The store's errors (all :class:`~watcher.errors.WatcherError`)::

    StoreError                 the store could not be opened, read or written
    ├── DuplicateEventError    an event_key is already stored; nothing was written
    ├── SchemaError            the schema is outdated (run `watcher db upgrade`) or newer
    ├── StateLockedError       another daemon holds the SQLite state file
    └── FencedError            a fenced write found its writer no longer owns the work

Messages name the database by its redacted URL: never a password.
"""

from __future__ import annotations

from watcher.errors import WatcherError


class StoreError(WatcherError):
    """The alert store could not be opened, read or written."""


class DuplicateEventError(StoreError):
    """An event with this ``event_key`` is already stored; nothing was written."""


class SchemaError(StoreError):
    """The database's schema is not the one this watcher speaks."""


class StateLockedError(StoreError):
    """Another daemon holds the SQLite state file (``pid`` when it is known)."""

    def __init__(self, message: str, *, path: str, pid: int | None) -> None:
        super().__init__(message)
        self.path = path
        self.pid = pid


class FencedError(StoreError):
    """A fenced write was refused: the writer lost the work it was fenced on.

    Nothing of that write was committed; the writer must stop working on it.
    """
