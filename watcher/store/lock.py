"""One daemon per SQLite state file.

Two daemons on one file would each publish every camera, ask every rule and
send every notification. :class:`StateFileLock` takes an exclusive
``flock`` on ``<state file>.lock`` (a separate file: opening and closing
the database file itself would drop SQLite's own POSIX locks) and writes
its pid there. The kernel releases the lock when the process dies, however
it dies, so a stale lock file never blocks a restart. A second daemon fails
at once with :class:`~watcher.store.errors.StateLockedError`, naming the
file and the pid that holds it. Readers (``watcher alerts``) take no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import AsyncIterator
from pathlib import Path

from watcher.store.errors import StateLockedError, StoreError
from watcher.store.store import AlertStore


class StateFileLock:
    """Held from :meth:`acquire` until :meth:`release` (or the process ends)."""

    def __init__(self, state_path: str | Path) -> None:
        self.state_path = str(state_path)
        self.path = f"{self.state_path}.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot lock state file {self.state_path}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            holder = f"pid {pid}" if pid is not None else "another process"
            raise StateLockedError(
                f"state file {self.state_path} is in use by another watcher ({holder}); "
                "one daemon per SQLite file: stop it, or give this one its own state.path "
                "(several instances share state through state.url: postgresql://...)",
                path=self.state_path, pid=pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> StateFileLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


@contextlib.asynccontextmanager
async def daemon_store(location: str | Path, *, instance: str | None = None
                       ) -> AsyncIterator[AlertStore]:
    """The daemon's store: the SQLite file locked (one daemon per file), the schema
    upgraded under its lock, open until the block ends; fails at once otherwise."""
    store = AlertStore(location, instance=instance)
    lock = StateFileLock(store.db.sqlite_path) if store.db.sqlite_path is not None else None
    try:
        if lock is not None:
            lock.acquire()
        await store.open()
        yield store
    finally:
        await store.close()
        if lock is not None:
            lock.release()
