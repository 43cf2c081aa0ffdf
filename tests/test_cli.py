"""The command line as a newcomer meets it: help, clear errors, read-only tools, JSON shapes."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from watcher.cli import _parser, main
from watcher.config import parse_config
from watcher.engine.state import AlertState, Kind, Transition
from watcher.engine.store import AlertEventRecord, AlertStore

WATCHER = str(Path(sys.executable).with_name("watcher"))


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_option_has_help_and_shows_its_default() -> None:
    root = _parser()
    parsers = {"watcher": root, **_subparsers(root)}
    missing: list[str] = []
    for name, parser in parsers.items():
        for action in parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            if isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            flag = f"{name} {action.option_strings[-1]}"
            if not action.help:
                missing.append(f"{flag}: no help")
            elif action.default not in (None, False, []) and "default" not in action.help:
                missing.append(f"{flag}: default {action.default!r} not shown")
    assert missing == []
    assert "``" not in (root.description or "") and "Overshoot" in (root.description or "")
    assert "``" not in root.format_help()


def test_serve_on_a_busy_port_fails_first_with_one_line() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = subprocess.run([WATCHER, "serve", "--port", str(port)], capture_output=True,
                              text=True, timeout=120)
    assert done.returncode == 1
    assert done.stdout == ""  # no "Serving ..." and no generated key before the failure
    assert done.stderr.splitlines() == [
        f"watcher serve: cannot listen on 127.0.0.1:{port}: Address already in use"]


def write_config(tmp_path: Path, state: Path) -> Path:
    path = tmp_path / "watcher.yaml"
    path.write_text(f"state:\n  path: {state}\nstreams:\n  - {{name: cam, source: testsrc}}\n")
    return path


def test_alerts_without_state_creates_nothing_and_says_so(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "var" / "lib" / "watcher" / "state.sqlite3"
    path = write_config(tmp_path, state)
    assert main(["alerts", "-c", str(path)]) == 0
    err = capsys.readouterr().err
    assert f"no alert state: {state} does not exist yet" in err
    assert not (tmp_path / "var").exists()
    assert main(["alerts", "-c", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert not (tmp_path / "var").exists()


async def _store_one_event(state: Path) -> None:
    async with AlertStore(state) as store:
        t = Transition(Kind.FIRING, True, 1_796_411_399_123, 1)
        event = AlertEventRecord.from_transition("door", "cam", t, answer={"open": True})
        await store.record("door", "cam", AlertState(), [event], actions_for=lambda e: [])


def test_alerts_reads_without_writing_and_json_times_are_iso_8601(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state.sqlite3"
    asyncio.run(_store_one_event(state))
    before = (state.stat().st_mtime_ns, state.stat().st_size)
    os.chmod(state, 0o444)  # a read-only open is all it needs
    try:
        assert main(["alerts", "-c", str(write_config(tmp_path, state)), "--json"]) == 0
    finally:
        os.chmod(state, 0o644)
    [event] = json.loads(capsys.readouterr().out)
    assert event["created_at"] == "2026-12-04T19:09:59.123Z"
    assert (state.stat().st_mtime_ns, state.stat().st_size) == before


@pytest.mark.parametrize("value", ["-3", "0", "ten"])
def test_alerts_limit_must_be_positive(
        value: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, tmp_path / "state.sqlite3")
    with pytest.raises(SystemExit) as caught:
        main(["alerts", "-c", str(path), "--limit", value])
    assert caught.value.code == 2
    err = capsys.readouterr().err
    assert re.search(r"argument --limit: .*(positive|whole) number", err), err
    assert "Traceback" not in err


def test_models_json_marks_the_default(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "watcher.yaml"
    path.write_text("overshoot:\n  model: local/frames\n")
    assert main(["models", "-c", str(path), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["data"]
    assert {m["id"]: m["default"] for m in listed} == {"local/frames": True,
                                                       "local/vision": False}


def test_a_status_port_without_enabled_turns_the_listener_on() -> None:
    assert parse_config("status:\n  port: 9999\n").status.enabled is True
    assert parse_config("status:\n  host: 0.0.0.0\n").status.enabled is True
    assert parse_config("status:\n  port: 9999\n  enabled: false\n").status.enabled is False
    assert parse_config("{}\n").status.enabled is False
