"""`watcher test-rule` and `watcher alerts` end to end (embedded server, real WebRTC)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.logstate import kept_logging

from watcher.cli import main

CONFIG = """\
overshoot:
  base_url: embedded
state:
  path: {state}
rules:
  - name: lobby-motion
    stream: lobby
    every: 2s
    window: 1s
    max_fps: 4
    prompt: Is anything moving?
    schema: {{motion_detected: boolean, motion: number}}
    when: motion_detected
streams:
  - name: lobby
    source: testsrc:events=box,period=4,duration=3,start=0,size=320x240
    fps: 8
    width: 320
    height: 240
"""


def test_test_rule_prints_request_answer_and_verdict(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "watcher.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state.sqlite3"))
    with kept_logging():
        assert main(["test-rule", "-c", str(config), "lobby-motion"]) == 0
    out = capsys.readouterr().out
    request = json.loads(out[out.index("{"): out.index("\noutcome:")])
    assert request["model"] == "local/vision"
    assert request["response_format"]["json_schema"]["strict"] is True
    video = request["messages"][-1]["content"][1]["video_url"]["url"]
    assert video.startswith("ovs://streams/") and "start_offset_ms=-1000" in video
    assert "outcome: answered" in out
    answer = json.loads(out.split("answer: ", 1)[1].splitlines()[0])
    assert set(answer) == {"motion_detected", "motion"}
    assert f"when: motion_detected  ->  {answer['motion_detected']}" in out
    assert not (tmp_path / "state.sqlite3").exists()  # test-rule records nothing


def test_unknown_rule_and_empty_alert_list(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "watcher.yaml"
    config.write_text(CONFIG.format(state=tmp_path / "state.sqlite3"))
    with kept_logging():
        assert main(["test-rule", "-c", str(config), "lobby-motoin"]) == 2
        assert "no rule named 'lobby-motoin'" in capsys.readouterr().err
        assert main(["alerts", "-c", str(config)]) == 0
        assert "no alert state:" in capsys.readouterr().err
        assert main(["alerts", "-c", str(config), "--json"]) == 0
        assert json.loads(capsys.readouterr().out) == []



def test_the_configured_timeout_bounds_every_request() -> None:
    from watcher.daemon.api import request_policies

    short, long = request_policies(5.0), request_policies(90.0)
    assert (short.chat.timeout, short.keepalive.timeout, short.create.timeout) == (5, 5, 5)
    assert long.chat.timeout == 90 and long.keepalive.timeout == 10
    assert long.create.timeout == 15 and long.read.timeout == 10


def test_test_rule_waits_for_the_window_and_fails_when_the_model_does(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "watcher.yaml"
    # local/frames answers what the window resolved to, which fits no answer schema.
    config.write_text(CONFIG.format(state=tmp_path / "state.sqlite3").replace(
        "    window: 1s\n", "    window: 5s\n    model: local/frames\n"))
    with kept_logging():
        assert main(["test-rule", "-c", str(config), "lobby-motion"]) == 1
    captured = capsys.readouterr()
    assert "outcome: invalid" in captured.out
    assert "the rule could not be evaluated (invalid)" in captured.err
    assert "waiting 5 s for the 5 s window to fill" in captured.err
    raw = captured.out.split("\nanswer: ", 1)[1].splitlines()[0]
    [part] = json.loads(raw)["parts"]
    times = [f["timestamp_ms"] for f in part["frames"]]
    # Asked once the window had filled: its frames span (almost) all of it.
    assert times[-1] - times[0] >= 4000, times
