"""Fixtures for the whole suite."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import postgres
from support.logstate import kept_logging
from support.postgres import ThrowawayDatabase


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`watcher.cli.main` configures logging for the whole process; undo it after each test."""
    with kept_logging():
        yield


@pytest.fixture(scope="session")
def _postgres_database() -> Iterator[ThrowawayDatabase | str]:
    """This run's own database (or why there is none)."""
    base = postgres.server_url()
    problem = postgres.reachable(base)
    if problem is not None:
        yield problem
        return
    database = ThrowawayDatabase(base)
    asyncio.run(database.create())
    try:
        yield database
    finally:
        asyncio.run(database.drop())


@pytest.fixture
def postgres_url(_postgres_database: ThrowawayDatabase | str) -> str:
    """The URL of an empty PostgreSQL database for this test (skips without a server)."""
    if isinstance(_postgres_database, str):
        postgres.unavailable(_postgres_database)
    assert isinstance(_postgres_database, ThrowawayDatabase)
    asyncio.run(_postgres_database.reset())
    return _postgres_database.url


@pytest.fixture(params=["sqlite", "postgresql"])
def state_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty state database on each backend: a SQLite file, then PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "state" / "alerts.db")
    return request.getfixturevalue("postgres_url")
