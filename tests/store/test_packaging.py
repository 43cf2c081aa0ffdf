"""The migrations ship inside the wheel, and upgrade a database from an installed copy."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UPGRADE = """
import asyncio, sys, watcher
from watcher.store import AlertStore
from watcher.store.migrate import head
assert watcher.__file__.startswith(sys.argv[1]), watcher.__file__
async def main():
    async with AlertStore(sys.argv[2]) as store:
        await store.save_switch("r", True)
        print(head(), await store.load_switches())
asyncio.run(main())
"""


def test_the_wheel_carries_the_migrations_and_they_run(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps",
         "--quiet", "-w", str(tmp_path / "dist"), str(REPO)],
        capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr
    [wheel] = (tmp_path / "dist").glob("watcher-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "installed")
    migrations = {n for n in names if n.startswith("watcher/store/migrations/")}
    assert {"watcher/store/migrations/env.py", "watcher/store/migrations/script.py.mako",
            "watcher/store/migrations/versions/0001_alerts.py"} <= migrations
    installed = tmp_path / "installed"
    run = subprocess.run(
        [sys.executable, "-c", UPGRADE, str(installed), str(tmp_path / "state.sqlite3")],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={"PYTHONPATH": str(installed), "PATH": "/usr/bin:/bin"})
    assert run.returncode == 0, run.stderr
    assert run.stdout.split()[0] == sorted(
        n.rsplit("/", 1)[1][:4] for n in migrations if "/versions/0" in n)[-1]
    assert "{'r': True}" in run.stdout
