"""Without a PostgreSQL server the backend's tests skip with the reason; under CI=true
they fail instead (a skipped backend would pass untested)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_store_test(ci: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["WATCHER_TEST_POSTGRES_URL"] = "postgresql://postgres@127.0.0.1:1/test"  # nobody
    if ci is not None:
        env["CI"] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         "tests/store/test_store.py", "-k", "round_trip"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("ci", [None, "false"])
def test_skips_with_the_reason(ci: str | None) -> None:
    run = run_store_test(ci)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 passed, 1 skipped" in run.stdout
    assert "PostgreSQL tests: no server at postgresql://postgres@127.0.0.1:1/test" in run.stdout


def test_fails_under_ci() -> None:
    run = run_store_test("true")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 passed" in run.stdout and "1 error" in run.stdout  # the fixture failed
    assert "CI=true does not allow skipping them" in run.stdout
