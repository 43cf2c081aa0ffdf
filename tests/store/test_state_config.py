"""The `state:` section: path or url, ${VAR} substitution, errors at file:line, no password
anywhere."""

from __future__ import annotations

from pathlib import Path

import pytest

from watcher.cli import main
from watcher.config import load_config

PASSWORD = "pg-canary-password-Qz71"


def write(tmp_path: Path, state: str) -> Path:
    path = tmp_path / "watcher.yaml"
    path.write_text(f"overshoot:\n  base_url: embedded\nstate:\n{state}")
    return path


def test_url_with_env_password_is_kept_secret(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASS_TEST", PASSWORD)
    config = load_config(write(tmp_path, "  url: postgresql://watcher:${PGPASS_TEST}@db:5432/w\n"))
    assert config.state.location == f"postgresql://watcher:{PASSWORD}@db:5432/w"
    assert config.state.shown == "postgresql://watcher:***@db:5432/w"
    assert PASSWORD not in repr(config) and PASSWORD not in str(config.state)
    assert PASSWORD not in config.model_dump_json()


def test_relative_sqlite_url_and_path_resolve_next_to_the_config(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "  url: sqlite:///data/state.db\n"))
    assert config.state.location == f"sqlite:///{tmp_path / 'data' / 'state.db'}"
    assert load_config(write(tmp_path, "  path: s.db\n")).state.location == str(
        tmp_path / "s.db")


@pytest.mark.parametrize("state, expected", [
    ("  url: mysql://u:" + PASSWORD + "@h/db\n",
     "watcher.yaml:4: state.url: mysql://u:***@h/db: unsupported database"),
    ("  url: postgresql://u:" + PASSWORD + "@h:5432\n",
     "watcher.yaml:4: state.url: postgresql://u:***@h:5432 names no database"),
    ("  url: state.db\n", "watcher.yaml:4: state.url: is not a database URL"),
    ("  path: a.db\n  url: postgresql://h/db\n",
     "watcher.yaml:3: state: set `path` (SQLite) or `url`, not both"),
])
def test_bad_state_is_named_at_file_line_without_the_password(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        state: str, expected: str) -> None:
    write(tmp_path, state)
    monkeypatch.chdir(tmp_path)
    assert main(["check", "-c", "watcher.yaml"]) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert PASSWORD not in err
