"""Fixtures for the whole suite."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.logstate import kept_logging


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`watcher.cli.main` configures logging for the whole process; undo it after each test."""
    with kept_logging():
        yield
