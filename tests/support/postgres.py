"""A throwaway PostgreSQL database per test run, on the server the suite is given.

The server: ``$WATCHER_TEST_POSTGRES_URL``, else
``postgresql://postgres@127.0.0.1:5432/test``. Each run creates its own
database (random suffix) and drops it at the end, because several test runs
may share the server; each test then starts from an empty ``public`` schema.
Without a reachable server the tests that need it skip with the reason,
except under ``CI=true``, where that is a failure.
"""

from __future__ import annotations

import asyncio
import os
import secrets

import asyncpg
import pytest
from sqlalchemy.engine import make_url

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
ENV = "WATCHER_TEST_POSTGRES_URL"


def server_url() -> str:
    return os.environ.get(ENV) or DEFAULT_URL


def unavailable(reason: str) -> None:
    """Skip the test, or fail it under CI=true (a skipped backend is untested)."""
    message = f"PostgreSQL tests: {reason} (set {ENV})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}; CI=true does not allow skipping them", pytrace=False)
    pytest.skip(message)


def _dsn(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


async def _execute(url: str, *statements: str) -> None:
    conn = await asyncpg.connect(_dsn(url), timeout=10)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


class ThrowawayDatabase:
    """One database created on the server for this run; ``reset()`` empties it."""

    def __init__(self, base: str) -> None:
        self.name = f"watcher_test_{secrets.token_hex(4)}"
        self.base = base
        self.url = make_url(base).set(database=self.name).render_as_string(hide_password=False)

    def create(self) -> None:
        asyncio.run(_execute(self.base, f'CREATE DATABASE "{self.name}"'))

    def drop(self) -> None:
        asyncio.run(_execute(self.base, f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))

    def reset(self) -> None:
        asyncio.run(_execute(self.url, "DROP SCHEMA public CASCADE", "CREATE SCHEMA public"))


def reachable(base: str) -> str | None:
    """None if the server answers, else why not."""
    try:
        asyncio.run(_execute(base, "SELECT 1"))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"no server at {make_url(base).render_as_string(hide_password=True)}: {exc}"
    return None
