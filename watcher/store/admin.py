"""`watcher db ...`: the state database's schema, from the command line."""

from __future__ import annotations

import os
import sys
from typing import TextIO

from watcher.store import migrate
from watcher.store.config import StateConfig
from watcher.store.database import Database


async def upgrade(state: StateConfig, out: TextIO | None = None) -> int:
    """Migrate the schema to the newest revision (under its lock); print what happened."""
    out = out or sys.stdout
    db = Database(state.location)
    try:
        before, after = await migrate.upgrade(db)
    finally:
        await db.close()
    if before == after:
        print(f"{db.name}: schema already at revision {after}", file=out)
    else:
        print(f"{db.name}: schema upgraded from {before or '(empty)'} to revision {after}",
              file=out)
    return 0


async def status(state: StateConfig, out: TextIO | None = None) -> int:
    """Print the schema's revision; exit 0 if current, 1 if it needs `watcher db upgrade`.

    Read-only: a SQLite file that does not exist yet is reported, not created.
    """
    out = out or sys.stdout
    db = Database(state.location, read_only=True)
    if db.sqlite_path is not None and not os.path.exists(db.sqlite_path):  # noqa: ASYNC240
        print(f"{db.name}: no database yet (`watcher run` or `watcher db upgrade` creates it)",
              file=out)
        await db.close()
        return 1
    try:
        found = await migrate.status(db)
    finally:
        await db.close()
    if found.up_to_date:
        print(f"{db.name}: schema at revision {found.head} (current)", file=out)
        return 0
    print(f"{db.name}: schema at revision {found.current or '(empty)'}, this watcher needs "
          f"{found.head}: run `{migrate.UPGRADE_COMMAND}`", file=out)
    return 1
