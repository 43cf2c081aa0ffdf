"""`watcher check` knows the models: names the API serves, schemas local/vision can answer."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from support.receivers import free_port

from watcher.cli import main

WATCHER = str(Path(sys.executable).with_name("watcher"))

STREAM = "streams:\n  - {name: cam, source: testsrc}\n"


def check(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str) -> tuple[int, str]:
    path = tmp_path / "watcher.yaml"
    path.write_text(text)
    code = main(["check", "-c", str(path)])
    return code, capsys.readouterr().err


def test_the_readmes_minimal_rule_on_the_default_model_is_caught(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check(tmp_path, capsys, STREAM + (
        "rules:\n"                                       # 3
        "  - name: anyone\n"                             # 4
        "    stream: cam\n"                              # 5
        "    every: 10s\n"                               # 6
        "    prompt: Is anyone at the door?\n"))         # 7
    assert code == 2
    first = err.splitlines()[0]
    assert first.startswith(f"{tmp_path / 'watcher.yaml'}:4: rules[0].schema: local/vision "
                            "(the default model, overshoot.model) cannot answer")
    assert "'answer'" in first and "vision-language model" in first


def test_motion_without_a_window_is_caught_and_with_one_passes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rule = ("rules:\n"
            "  - name: moving\n"
            "    stream: cam\n"
            "    every: 5s\n"
            "    model: local/vision\n"
            "    prompt: Is anything moving?\n"
            "    schema: {motion: number, people: integer}\n"   # 9
            "    when: motion > 0.01\n")
    code, err = check(tmp_path, capsys, STREAM + rule)
    assert code == 2
    assert ":9: rules[0].schema: local/vision cannot answer this schema" in err
    assert "'motion'" in err and "window" in err
    code, err = check(tmp_path, capsys, STREAM + rule + "    window: 5s\n")
    assert (code, err) == (0, "")


def test_a_confirm_block_on_local_vision_is_checked_too(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check(tmp_path, capsys, STREAM + (
        "rules:\n"
        "  - name: people\n"
        "    stream: cam\n"
        "    every: 5s\n"
        "    prompt: How many people?\n"
        "    schema: {people: integer}\n"
        "    when: people > 0\n"
        "    confirm:\n"                               # 10
        "      prompt: Really?\n"))
    assert code == 2
    assert ":10: rules[0].confirm.schema: local/vision (the default model" in err


def test_embedded_model_names_are_checked(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    upstream = ("overshoot:\n"
                "  model: qwen\n"
                "  embedded:\n"
                "    enable_vision: false\n"
                "    upstreams: [{base_url: 'http://127.0.0.1:9/v1', models: {qwen: q}}]\n")
    rules = ("rules:\n"
             "  - name: people\n"
             "    stream: cam\n"
             "    every: 5s\n"
             "    model: qwne\n"                              # 12
             "    fallback_models: [local/vision]\n"          # 13
             "    prompt: Anyone?\n"
             "    confirm: {model: local/frames, prompt: Sure}\n")  # 15
    code, err = check(tmp_path, capsys, upstream + STREAM + rules)
    assert code == 2
    lines = err.splitlines()
    assert lines[0].endswith(":12: rules[0].model: unknown model 'qwne': the embedded server "
                             "does not serve it (did you mean qwen?)")
    assert lines[1].endswith(":13: rules[0].fallback_models[0]: unknown model 'local/vision': "
                             "the embedded server does not serve it (it serves: local/frames, "
                             "qwen)")
    assert len(lines) == 3  # local/frames is served; the count line
    code, err = check(tmp_path, capsys, upstream + STREAM + rules.replace("qwne", "qwen")
                      .replace("fallback_models: [local/vision]", "fallback_models: []"))
    assert (code, err) == (0, "")


def test_an_unknown_default_model_is_reported_where_it_is_set(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check(tmp_path, capsys, "overshoot:\n  model: gemma-3\n" + STREAM + (
        "rules:\n  - {name: r, stream: cam, every: 5s, prompt: q}\n"))
    assert code == 2
    assert err.splitlines()[0].endswith(
        ":2: overshoot.model: unknown model 'gemma-3': the embedded server does not serve it "
        "(it serves: local/frames, local/vision)")


@pytest.fixture
def served_api(tmp_path: Path) -> Iterator[str]:
    """A real `watcher serve` on a free port; yields its base URL."""
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [WATCHER, "serve", "--port", str(port), "--api-key", "ovs-check-key", "--no-vision"],
        stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1beta"
    try:
        for _ in range(600):
            try:
                if httpx.get(f"{base}/models", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None:
                raise AssertionError((tmp_path / "serve.log").read_text())
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def test_a_remote_apis_model_list_is_checked_when_it_answers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], served_api: str) -> None:
    head = (f"overshoot:\n  base_url: {served_api}\n  api_key: ovs-check-key\n"
            "  model: local/frames\n")
    rules = "rules:\n  - {name: r, stream: cam, every: 5s, prompt: q, model: qwen-vl}\n"
    code, err = check(tmp_path, capsys, head + STREAM + rules)
    assert code == 2
    assert err.splitlines()[0].endswith(
        f":8: rules[0].model: unknown model 'qwen-vl': {served_api}/models does not "
        "serve it (it serves: local/frames)")
    code, _ = check(tmp_path, capsys, head + STREAM + rules.replace(", model: qwen-vl", ""))
    assert code == 0


def test_an_unreachable_api_is_noted_not_failed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = f"http://127.0.0.1:{free_port()}/v1beta"
    head = f"overshoot:\n  base_url: {base}\n  api_key: ovs-x\n  model: anything\n" + STREAM
    (tmp_path / "watcher.yaml").write_text(
        head + "rules:\n  - {name: r, stream: cam, every: 5s, prompt: q}\n")
    assert main(["check", "-c", str(tmp_path / "watcher.yaml")]) == 0
    assert "(model names not checked: GET /models:" in capsys.readouterr().out
    (tmp_path / "watcher.yaml").write_text(head)  # no rules: no model to check, no request
    assert main(["check", "-c", str(tmp_path / "watcher.yaml")]) == 0
    assert "not checked" not in capsys.readouterr().out
