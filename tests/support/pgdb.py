"""A fresh PostgreSQL database per test (or per module), dropped afterwards.

The server is ``WATCHER_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``). When none answers, the tests
that need it skip with the reason, except under ``CI=true``, where that is a
failure.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def server_url() -> str:
    return os.environ.get("WATCHER_TEST_POSTGRES_URL", DEFAULT_URL)


def with_database(url: str, database: str, *, driver: str | None = None) -> str:
    parts = urlsplit(url)
    scheme = "postgresql" if driver is None else f"postgresql+{driver}"
    return urlunsplit((scheme, parts.netloc, f"/{database}", parts.query, ""))


def unavailable(reason: str) -> None:
    message = f"PostgreSQL at {urlsplit(server_url()).netloc} is not usable: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@contextlib.asynccontextmanager
async def fresh_database(prefix: str = "watcher_test") -> AsyncIterator[str]:
    """Create a database with a random name; yield its ``postgresql://`` URL; drop it."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    try:
        admin = await asyncpg.connect(server_url(), timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable(f"{type(exc).__name__}: {exc}")
        raise AssertionError("unreachable") from exc
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield with_database(server_url(), name)
    finally:
        admin = await asyncpg.connect(server_url(), timeout=10)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
