"""Log formats: readable text by default, JSON lines for pipelines; no secret in any field."""

from __future__ import annotations

import io
import json
import logging
import secrets
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from support.logstate import kept_logging

from watcher.cli import main
from watcher.logs import (
    REDACTED,
    JsonFormatter,
    RedactingFormatter,
    configure_logging,
    register_secret,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def keep_logging() -> Iterator[None]:
    """``main()`` and ``configure_logging`` reconfigure logging; put it back afterwards."""
    with kept_logging():
        yield


@pytest.fixture
def canary() -> str:
    """A registered secret with characters JSON escapes (a quote, a backslash, non-ASCII)."""
    value = f'canary-{secrets.token_hex(6)}-"q\\é'
    register_secret(value)
    return value


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_the_record_and_no_secret(canary: str) -> None:
    out = io.StringIO()
    configure_logging("DEBUG", "json", stream=out)
    log = logging.getLogger("watcher.test")
    log.info("connecting with %s", canary, extra={
        "stream": "cam", "attempt": 3, "ratio": float("nan"), "path": Path("/tmp/x"),
        "headers": {"authorization": f"Bearer {canary}", canary: "as a key"},
        "tokens": [canary, 1]})
    try:
        raise ConnectionError(f"refused for key {canary}")
    except ConnectionError:
        log.exception("lost the API")
    log.warning("no extras", stack_info=True)

    text = out.getvalue()
    assert canary not in text
    assert json.dumps(canary) not in text and json.dumps(canary)[1:-1] not in text
    first, second, third = lines(out)

    assert set(first) >= {"timestamp", "level", "logger", "message"}
    assert first["timestamp"].endswith("Z")
    assert datetime.fromisoformat(first["timestamp"].replace("Z", "+00:00")).utcoffset() \
        is not None
    assert (first["level"], first["logger"]) == ("INFO", "watcher.test")
    assert first["message"] == f"connecting with {REDACTED}"
    assert (first["stream"], first["attempt"], first["ratio"], first["path"]) == (
        "cam", 3, "nan", "/tmp/x")
    assert first["headers"] == {"authorization": f"Bearer {REDACTED}", REDACTED: "as a key"}
    assert first["tokens"] == [REDACTED, 1]
    assert "exception" not in first and "args" not in first and "msg" not in first

    assert (second["level"], second["message"]) == ("ERROR", "lost the API")
    assert "Traceback (most recent call last)" in second["exception"]
    assert f"ConnectionError: refused for key {REDACTED}" in second["exception"]

    assert third["message"] == "no extras" and "Stack (most recent call last)" in third["stack"]


def test_text_is_the_default_and_redacted(canary: str) -> None:
    out = io.StringIO()
    configure_logging("INFO", stream=out)
    assert isinstance(logging.getLogger().handlers[0].formatter, RedactingFormatter)
    logging.getLogger("watcher.test").warning("key %s", canary)
    line = out.getvalue()
    assert canary not in line and line.rstrip().endswith(f"WARNING watcher.test: key {REDACTED}")
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        configure_logging("INFO", "xml")


def test_cli_log_format_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "watcher.yaml"
    config.write_text("streams: []\n")
    assert main(["--log-format", "json", "check", "-c", str(config)]) == 0
    assert isinstance(logging.getLogger().handlers[0].formatter, JsonFormatter)
    monkeypatch.setenv("WATCHER_LOG_FORMAT", "json")
    assert main(["--log-format", "text", "check", "-c", str(config)]) == 0
    assert isinstance(logging.getLogger().handlers[0].formatter, RedactingFormatter)
    assert main(["check", "-c", str(config)]) == 0
    assert isinstance(logging.getLogger().handlers[0].formatter, JsonFormatter)
    with pytest.raises(SystemExit):
        main(["--log-format", "xml", "check", "-c", str(config)])
    assert "invalid choice: 'xml'" in capsys.readouterr().err


def test_json_lines_on_stderr_of_a_real_process() -> None:
    canary = f"canary-{secrets.token_hex(8)}"
    script = (
        "import logging\n"
        "from watcher.logs import configure_logging, register_secret\n"
        f"register_secret({canary!r})\n"
        "configure_logging('INFO', 'json')\n"
        f"logging.getLogger('watcher.daemon').info('using key %s', {canary!r},\n"
        f"    extra={{'url': 'https://x/?key={canary}'}})\n"
        "logging.getLogger('apscheduler.executors.default').info('job ran')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=REPO, timeout=60, check=True)
    assert done.stdout == "" and canary not in done.stderr
    [line] = [json.loads(text) for text in done.stderr.splitlines()]
    assert line["message"] == f"using key {REDACTED}"
    assert line["url"] == f"https://x/?key={REDACTED}"
