"""A real daemon for console tests: a synthetic camera, a scripted VLM, a webhook receiver.

``Daemon.run`` with the embedded server, a ``testsrc`` camera published over
real WebRTC, and one rule asked every second of a model served by an
OpenAI-compatible HTTP server on loopback (the embedded server's upstream),
whose answer the test sets (``model.answer = {...}``). Alerts go to a real
webhook receiver; the status listener serves the console on a free port.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from support.poll import eventually
from support.receivers import HttpReceiver, Request, reply
from support.rundaemon import running_daemon

from watcher.daemon import Daemon

RULE = "door-alarm"
CONFIG = """\
overshoot:
  base_url: embedded
  model: scripted
  embedded:
    upstreams:
      - base_url: {model_url}
        models: {{scripted: scripted}}
state:
  path: {state}
status:
  enabled: true
  port: 0
  public_url: https://watcher.example.com
{status_extra}streams:
  - name: lobby
    source: testsrc:events=box,period=4,duration=2,start=0,size=320x240
    fps: 5
    width: 320
    height: 240
rules:
  - name: {rule}
    stream: lobby
    every: 1s
    window: 1s
    prompt: Is the door open?
    schema: {{alarm: boolean, description: string}}
    when: alarm
    repeat_every: 2s
    severity: critical
    labels: {{site: north}}
    actions: [hook]
actions:
  hook:
    type: webhook
    url: {hook_url}
clips:
  before: 1s
  after: 1s
"""


class ScriptedUpstream(HttpReceiver):
    """An OpenAI-compatible ``/v1/chat/completions`` answering ``answer`` as JSON text."""

    def __init__(self) -> None:
        super().__init__()
        self.answer: dict[str, Any] = {"alarm": False, "description": "all quiet"}
        self._answer_lock = threading.Lock()
        self.routes = {"/v1/chat/completions": self._complete}

    def set(self, **answer: Any) -> None:
        with self._answer_lock:
            self.answer = dict(answer)

    def _complete(self, request: Request) -> tuple[int, dict[str, str], bytes]:
        with self._answer_lock:
            content = json.dumps(self.answer)
        return reply(200, {
            "id": "chatcmpl-test", "object": "chat.completion", "created": 1,
            "model": "scripted",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 12, "total_tokens": 112}})


@dataclass
class Console:
    daemon: Daemon
    model: ScriptedUpstream
    hook: HttpReceiver
    url: str
    config_path: Path

    def runner(self) -> Any:
        assert self.daemon.engine is not None
        return self.daemon.engine.runners[RULE]

    def hook_events(self) -> list[dict[str, Any]]:
        return [r.json() for r in self.hook.requests if r.path == "/hook"]

    async def evaluations(self, more: int, timeout: float = 60) -> None:
        """Wait until the rule has answered ``more`` more times."""
        start = self.runner().stats.model_calls
        await eventually(lambda: self.runner().stats.model_calls >= start + more, timeout)

    async def api(self, path: str, token: str | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with httpx.AsyncClient(timeout=10) as client:
            return await client.get(self.url + path, headers=headers)


@contextlib.asynccontextmanager
async def running_console(tmp_path: Path, *, token: str | None = None,
                          ) -> AsyncIterator[Console]:
    with ScriptedUpstream() as model, HttpReceiver() as hook:
        status_extra = f"  token: {token}\n" if token else ""
        path = tmp_path / "watcher.yaml"
        path.write_text(CONFIG.format(model_url=model.url("/v1"), state=tmp_path / "s.sqlite3",
                                      status_extra=status_extra, rule=RULE,
                                      hook_url=hook.url("/hook")))
        async with running_daemon(path, stop_s=40) as daemon:
            await daemon.keepers["lobby"].wait_live(30)
            url = await eventually(lambda: _listener_url(daemon), 10)
            yield Console(daemon, model, hook, url, path)


def _listener_url(daemon: Daemon) -> str | None:
    return getattr(daemon, "status_url", None)
