"""`watcher db upgrade` and `watcher db status`, on both backends; errors keep the password
out."""

from __future__ import annotations

from pathlib import Path

import pytest
from support.legacy_state import write_state_file

from watcher.cli import main
from watcher.store.migrate import head

PASSWORD = "pg-canary-password-Lk02"


def config_for(tmp_path: Path, location: str) -> str:
    key = "url" if "://" in location else "path"
    path = tmp_path / "watcher.yaml"
    path.write_text(f"overshoot:\n  base_url: embedded\nstate:\n  {key}: {location}\n")
    return str(path)


def test_status_then_upgrade_then_status(tmp_path: Path, state_location: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    config = config_for(tmp_path, state_location)
    assert main(["db", "status", "-c", config]) == 1
    out = capsys.readouterr().out
    if "://" in state_location:
        assert "schema at revision (empty)" in out
    else:
        assert "no database yet" in out and not Path(state_location).exists()
    assert main(["db", "upgrade", "-c", config]) == 0
    assert f"schema upgraded from (empty) to revision {head()}" in capsys.readouterr().out
    assert main(["db", "upgrade", "-c", config]) == 0
    assert f"schema already at revision {head()}" in capsys.readouterr().out
    assert main(["db", "status", "-c", config]) == 0
    assert f"at revision {head()} (current)" in capsys.readouterr().out


def test_upgrade_of_an_old_state_file(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "old.sqlite3"
    write_state_file(state)
    config = config_for(tmp_path, str(state))
    assert main(["db", "status", "-c", config]) == 1
    out = capsys.readouterr().out
    assert "revision 0003" in out and "watcher db upgrade -c FILE" in out
    assert main(["alerts", "-c", config]) == 1  # read-only: it asks for the upgrade
    assert "watcher db upgrade -c FILE" in capsys.readouterr().err
    assert main(["db", "upgrade", "-c", config]) == 0
    assert f"from 0003 to revision {head()}" in capsys.readouterr().out
    assert main(["alerts", "-c", config, "--json"]) == 0
    assert "dock:cam1:1:firing:1000" in capsys.readouterr().out


def test_unreachable_database_errors_without_the_password(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = config_for(tmp_path, f"postgresql://watcher:{PASSWORD}@127.0.0.1:1/w")
    for command in (["db", "upgrade"], ["db", "status"], ["alerts"]):
        assert main([*command, "-c", config]) == 1
        captured = capsys.readouterr()
        assert "postgresql://watcher:***@127.0.0.1:1/w" in captured.err, captured.err
        assert PASSWORD not in captured.err + captured.out
