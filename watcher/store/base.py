"""What every part of the alert store shares: the database, opening it (checking or
migrating the schema), and running reads and (fenced) writes on it.

Opening: the constructor only parses the location; :meth:`StoreBase.open`
connects and brings the schema up to date under a lock
(:mod:`watcher.store.migrate`), so a bad location or a newer schema fails
at startup. Every method opens the store first if nobody did.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Self, TypeVar

from sqlalchemy.ext.asyncio import AsyncConnection

from watcher.store import migrate
from watcher.store.database import Database
from watcher.store.errors import SchemaError, StoreError
from watcher.store.fence import Fence

T = TypeVar("T")


def default_instance() -> str:
    """This process as a claimer: host name, pid and a random tag (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


class StoreBase:
    """The database of an :class:`~watcher.store.store.AlertStore` (whose docstring tells
    the constructor's arguments), and the transactions its methods run in."""

    def __init__(self, location: str | Path, *, instance: str | None = None,
                 upgrade: bool = True, read_only: bool = False) -> None:
        self.db = Database(location, read_only=read_only)
        self.read_only = read_only
        self.path = self.db.name
        """The database as logs name it: the SQLite path, or the URL without its password."""
        self.instance = instance or default_instance()
        self.upgrade = upgrade and not read_only
        self._opened = False
        self._opening = asyncio.Lock()
        self._closed = False

    @property
    def shared(self) -> bool:
        """Whether other processes may use this database at once (PostgreSQL)."""
        return not self.db.is_sqlite

    async def open(self) -> Self:
        """Connect and check (or migrate) the schema. Idempotent."""
        await self._ready()
        return self

    async def __aenter__(self) -> Self:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Finish running work and close the connections. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self.db.close()

    async def _ready(self) -> None:
        if self._closed:
            raise StoreError(f"alert store {self.path} is closed")
        if self._opened:
            return
        async with self._opening:
            if self._opened:
                return
            if self.upgrade:
                await migrate.upgrade(self.db)
            else:
                status = await migrate.status(self.db)
                if not status.up_to_date:
                    raise SchemaError(
                        f"alert store {self.path} is at schema revision "
                        f"{status.current or '(none)'}, this watcher needs {status.head}: "
                        f"run `{migrate.UPGRADE_COMMAND}`")
            self._opened = True

    async def _read(self, work: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        await self._ready()
        return await self.db.run(work, write=False)

    async def _write(self, work: Callable[[AsyncConnection], Awaitable[T]],
                     fence: Fence | None = None) -> T:
        if self.read_only:
            raise StoreError(f"alert store {self.path} is open read-only")
        await self._ready()
        if fence is None:
            return await self.db.run(work)

        async def fenced(conn: AsyncConnection) -> T:
            await fence.check(conn)
            return await work(conn)
        return await self.db.run(fenced)
