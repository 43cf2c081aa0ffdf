"""Throwaway PostgreSQL databases on the server the suite is given.

The server: ``$WATCHER_TEST_POSTGRES_URL``, else
``postgresql://postgres@127.0.0.1:5432/test``. Every database made here has
a random name and is dropped afterwards, because several test runs may share
the server. Two ways to get one:

* the ``postgres_url`` fixture (tests/conftest.py): one database per run,
  emptied (a new ``public`` schema) before each test;
* :func:`fresh_database`: a database of its own for one test or benchmark
  (several processes connect to it, or it must outlive a schema reset).

Without a reachable server the tests that need it skip with the reason,
except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator

import asyncpg
from sqlalchemy.engine import make_url
from support.skips import skip_or_fail

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
ENV = "WATCHER_TEST_POSTGRES_URL"


def server_url() -> str:
    return os.environ.get(ENV) or DEFAULT_URL


def unavailable(reason: str) -> None:
    """Skip the test, or fail it under CI=true (a skipped backend is untested)."""
    skip_or_fail(f"PostgreSQL tests: {reason} (set {ENV})")


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(_dsn(url), timeout=10)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _problem(base: str) -> str | None:
    try:
        await _execute(base, "SELECT 1")
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"no server at {make_url(base).render_as_string(hide_password=True)}: {exc}"
    return None


def reachable(base: str) -> str | None:
    """None if the server answers, else why not."""
    return asyncio.run(_problem(base))


class ThrowawayDatabase:
    """One database with a random name on the server at ``base``."""

    def __init__(self, base: str, prefix: str = "watcher_test") -> None:
        self.name = f"{prefix}_{secrets.token_hex(4)}"
        self.base = base
        self.url = make_url(base).set(database=self.name).render_as_string(hide_password=False)

    async def create(self) -> None:
        await _execute(self.base, f'CREATE DATABASE "{self.name}"')

    async def drop(self) -> None:
        await _execute(self.base, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    async def reset(self) -> None:
        """Empty it: a new ``public`` schema."""
        await _execute(self.url, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public")


@contextlib.asynccontextmanager
async def fresh_database(prefix: str = "watcher_test") -> AsyncIterator[str]:
    """A new database on the server; yields its URL and drops it at the end."""
    base = server_url()
    problem = await _problem(base)
    if problem is not None:
        unavailable(problem)
    database = ThrowawayDatabase(base, prefix)
    await database.create()
    try:
        yield database.url
    finally:
        await database.drop()
