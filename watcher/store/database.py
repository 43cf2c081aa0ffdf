"""One connection point to the state database, whichever backend it is.

:class:`Database` turns a state location (a SQLite path or a
``postgresql://`` URL) into a SQLAlchemy async engine with the backend's
settings, runs units of work in transactions, and maps driver errors to
:class:`~watcher.store.errors.StoreError` whose messages name the database
by its redacted URL (never its password).

Per backend:

* SQLite (aiosqlite): WAL, ``synchronous=FULL`` (an event survives power
  loss, not only a crash), ``foreign_keys`` on, and every transaction opens
  with ``BEGIN IMMEDIATE`` so a write never upgrades a read lock midway. All
  work on one store runs one unit at a time (an ``asyncio.Lock``), like the
  single writer SQLite is.
* PostgreSQL (asyncpg): a small pool with pre-ping, so a restarted server
  costs one failed unit of work, not a broken pool. Units run concurrently.

A unit of work runs to completion even if its caller is cancelled (it is
shielded): a cancelled ``await store.record(...)`` may still commit, and the
state in the database is the truth to reload.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import StaticPool

from watcher.logs import register_secret
from watcher.store.errors import StoreError

T = TypeVar("T")
MEMORY = ":memory:"
SQLITE_BUSY_TIMEOUT_MS = 5000
POSTGRES_SCHEMES = ("postgresql", "postgres")
READ_OPTION = "watcher_read"
"""Execution option marking a read-only unit of work (a deferred BEGIN on SQLite)."""
Work = Callable[[AsyncConnection], Awaitable[T]]


def parse_location(location: str | Path) -> URL:
    """The SQLAlchemy URL (async driver) of a state location.

    ``location`` is a SQLite file path (or ``:memory:``), a ``sqlite:///path``
    URL, or a ``postgresql://user:pass@host:5432/db`` URL (``postgres://`` and
    ``postgresql+asyncpg://`` are accepted too). Raises ValueError for anything
    else; the message never holds the password.
    """
    text = str(location).strip()
    if not text:
        raise ValueError("is empty")
    if "://" not in text:
        return URL.create("sqlite+aiosqlite", database=text)
    try:
        url = make_url(text)
    except ArgumentError:
        raise ValueError("is not a valid database URL "
                         "(expected postgresql://user:password@host:5432/database)") from None
    scheme, _, driver = url.drivername.partition("+")
    if scheme == "sqlite" and driver in ("", "aiosqlite"):
        if not url.database:
            raise ValueError("sqlite URL names no file (expected sqlite:///path/to/file)")
        return url.set(drivername="sqlite+aiosqlite")
    if scheme in POSTGRES_SCHEMES and driver in ("", "asyncpg"):
        if not url.database:
            raise ValueError(f"{shown(url)} names no database (…:5432/DATABASE)")
        return url.set(drivername="postgresql+asyncpg")
    raise ValueError(f"{shown(url)}: unsupported database (use a SQLite file path or "
                     "postgresql://user:password@host:5432/database)")


def shown(url: URL) -> str:
    """``url`` as it may be logged: the password masked, the async driver left out."""
    if url.get_backend_name() == "sqlite":
        return url.database or MEMORY
    plain = url.set(drivername=url.get_backend_name())
    return plain.render_as_string(hide_password=True)


class Database:
    """An async engine on the state database plus how to run work on it.

    ``read_only``: a SQLite file is opened read-only (never created or
    changed; a missing file is an error at the first unit of work).
    """

    def __init__(self, location: str | Path, *, read_only: bool = False) -> None:
        try:
            self.url = parse_location(location)
        except ValueError as exc:
            raise StoreError(f"state database: {exc}") from None
        if self.url.password:
            register_secret(str(self.url.password))
        self.backend = self.url.get_backend_name()
        self.read_only = read_only
        self.name = shown(self.url)
        """The database as logs and errors name it (password masked)."""
        self.engine = self._create_engine()
        self._serial = asyncio.Lock() if self.is_sqlite else None
        self._running: set[asyncio.Task[Any]] = set()

    @property
    def is_sqlite(self) -> bool:
        return self.backend == "sqlite"

    @property
    def sqlite_path(self) -> str | None:
        """The SQLite file (None for PostgreSQL and for ``:memory:``)."""
        if not self.is_sqlite or self.url.database in (None, MEMORY):
            return None
        return self.url.database

    def _create_engine(self) -> AsyncEngine:
        if not self.is_sqlite:
            return create_async_engine(self.url, pool_size=5, max_overflow=5,
                                       pool_pre_ping=True, pool_recycle=3600)
        path = self.sqlite_path
        url = self.url
        if path is not None and self.read_only:
            url = URL.create("sqlite+aiosqlite", database=f"file:{quote(os.path.abspath(path))}",
                             query={"mode": "ro", "uri": "true"})
        elif path is not None and not path.startswith("file:"):
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"cannot open alert store {path}: {exc}") from exc
        options: dict[str, Any] = {"poolclass": StaticPool} if path is None else {}
        engine = create_async_engine(url, **options)
        settings = _sqlite_read_only_settings if self.read_only else _sqlite_settings
        event.listen(engine.sync_engine, "connect", settings)
        event.listen(engine.sync_engine, "begin", _sqlite_begin)
        return engine

    async def run(self, work: Work[T], *, write: bool = True) -> T:
        """``work(conn)`` in one transaction (committed unless it raises); errors mapped.

        ``write=False`` (a read) begins a deferred transaction on SQLite,
        which takes no write lock: a reader in another process (`watcher alerts`)
        never waits for the daemon.
        """
        task = asyncio.ensure_future(self._run(work, write))
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return await asyncio.shield(task)

    async def _run(self, work: Work[T], write: bool) -> T:
        try:
            if self._serial is None:
                return await self._transaction(work, write)
            async with self._serial:
                return await self._transaction(work, write)
        except StoreError:
            raise
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"alert store {self.name}: {describe(exc)}") from exc

    async def _transaction(self, work: Work[T], write: bool) -> T:
        async with self.engine.connect() as conn:
            if not write:
                await conn.execution_options(**{READ_OPTION: True})
            async with conn.begin():
                return await work(conn)

    async def close(self) -> None:
        """Let running work finish, then close every connection."""
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        await self.engine.dispose()


def describe(exc: BaseException) -> str:
    """A driver error in one line, without the SQL or its parameters (snapshots, secrets)."""
    cause = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    text = " ".join(str(cause).split()) or type(cause).__name__
    return text if len(text) <= 300 else text[:299] + "…"


def _sqlite_settings(dbapi_connection: Any, _record: Any) -> None:
    # Transactions are begun by _sqlite_begin, not by the driver's own logic.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        mode = cursor.fetchone()[0]
        cursor.execute("PRAGMA database_list")
        file = next((row[2] for row in cursor.fetchall() if row[1] == "main"), "")
        if mode != "wal" and file:
            raise StoreError(f"alert store {file}: cannot use WAL (journal_mode={mode})")
        cursor.execute("PRAGMA synchronous = FULL")
        cursor.execute("PRAGMA foreign_keys = ON")
    finally:
        cursor.close()


def _sqlite_read_only_settings(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
    finally:
        cursor.close()


def _sqlite_begin(conn: Any) -> None:
    reading = conn.get_execution_options().get(READ_OPTION) or conn.engine.url.query.get("mode")
    conn.exec_driver_sql("BEGIN" if reading else "BEGIN IMMEDIATE")

