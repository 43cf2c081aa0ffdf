"""Bring the state database's schema to the newest revision, under a lock.

Alembic (revisions in ``watcher/store/migrations/versions``) does the work
on the same connection and in ONE transaction, so a failed upgrade leaves
the schema as it was. Concurrent upgraders wait for each other: on
PostgreSQL through a transaction-scoped advisory lock, on SQLite through
the write lock that ``BEGIN IMMEDIATE`` takes. The second one then finds
nothing left to do.

A SQLite file written before revisions existed carries its version in
``PRAGMA user_version`` (1 to 3); it is stamped with the matching revision
and upgraded from there. Afterwards ``user_version`` is set to
:data:`MANAGED_USER_VERSION`, so such an older watcher refuses the file
instead of misreading it. A database at a revision this watcher does not
know (written by a newer one) is refused: downgrades are not supported.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import AsyncConnection

from watcher.store.database import Database
from watcher.store.errors import SchemaError

MIGRATIONS = Path(__file__).with_name("migrations")
LEGACY_REVISIONS = {1: "0001", 2: "0002", 3: "0003"}
"""``PRAGMA user_version`` of the SQLite-only store -> the revision it equals."""
MANAGED_USER_VERSION = 100
"""Written to SQLite files once Alembic manages them (older watchers refuse a
``user_version`` above the 3 they know)."""
ADVISORY_LOCK_KEY = 0x77617463_68657201
"""The PostgreSQL advisory lock upgraders take (any 64-bit constant unique to us)."""
UPGRADE_COMMAND = "watcher db upgrade -c FILE"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    current: str | None
    """The database's revision; None for an empty database."""
    head: str
    """The newest revision this watcher knows."""

    @property
    def up_to_date(self) -> bool:
        return self.current == self.head


@functools.cache
def scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head() -> str:
    """The newest schema revision."""
    revision = scripts().get_current_head()
    assert revision is not None
    return revision


async def status(db: Database) -> SchemaStatus:
    """Where the database's schema stands (read-only)."""
    async def read(conn: AsyncConnection) -> str | None:
        return await conn.run_sync(_current, db.name)
    return SchemaStatus(await db.run(read, write=False), head())


async def upgrade(db: Database) -> tuple[str | None, str]:
    """Migrate to the newest revision under the lock; (revision before, revision after)."""
    async def run(conn: AsyncConnection) -> str | None:
        return await conn.run_sync(_upgrade, db.name)
    before = await db.run(run)
    if before != head():
        log.info("alert store %s: schema upgraded from %s to %s", db.name,
                 before or "(empty)", head())
    return before, head()


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _current(conn: Connection, name: str) -> str | None:
    current = MigrationContext.configure(conn).get_current_revision()
    if current is None:
        legacy = _legacy_version(conn, name)
        return None if legacy is None else LEGACY_REVISIONS[legacy]
    _known(current, name)
    return current


def _upgrade(conn: Connection, name: str) -> str | None:
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
    current = MigrationContext.configure(conn).get_current_revision()
    config = _config(conn)
    if current is None:
        legacy = _legacy_version(conn, name)
        if legacy is not None:
            current = LEGACY_REVISIONS[legacy]
            command.stamp(config, current)
    else:
        _known(current, name)
    if current != head():
        command.upgrade(config, "head")
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql(f"PRAGMA user_version = {MANAGED_USER_VERSION}")
    return current


def _legacy_version(conn: Connection, name: str) -> int | None:
    """The pre-Alembic version of a SQLite file, None if it has none (empty, or PostgreSQL)."""
    if conn.dialect.name != "sqlite":
        return None
    version = conn.exec_driver_sql("PRAGMA user_version").scalar_one()
    if version == 0:
        return None
    if version not in LEGACY_REVISIONS or not inspect(conn).has_table("alert_state"):
        raise SchemaError(
            f"alert store {name} has schema version {version}; this watcher knows up to "
            f"revision {head()} (downgrade is not supported)")
    return version


def _known(revision: str, name: str) -> None:
    try:
        known = scripts().get_revision(revision) is not None
    except CommandError:
        known = False
    if not known:
        raise SchemaError(
            f"alert store {name} has schema version {revision}, newer than this watcher "
            f"knows (up to {head()}); downgrade is not supported: run a newer watcher")
