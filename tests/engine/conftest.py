"""Fixtures of the rule engine's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from support.livestream import RunnerEnv
from support.models import ScriptedModel


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[..., RunnerEnv]]:
    """``make(*models)``: a :class:`RunnerEnv` with a state file of its own, closed after
    the test."""
    envs: list[RunnerEnv] = []

    def factory(*models: ScriptedModel) -> RunnerEnv:
        envs.append(RunnerEnv(tmp_path / f"state{len(envs)}.sqlite3", *models))
        return envs[-1]

    yield factory
    for env in envs:
        await env.store.close()
        await env.http.aclose()
