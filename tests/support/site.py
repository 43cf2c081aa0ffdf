"""A real daemon (in this process) with a scripted model, publishing to a real broker."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from support.models import ScriptedModel
from support.mqtt import Broker, unique_prefix
from support.poll import eventually
from support.rundaemon import running_daemon

from watcher.daemon import Daemon
from watcher.server.embedded import run_embedded
from watcher.server.settings import ServerSettings

MODEL = "scripted"


class Scene:
    """What the scripted model answers: the rule matches while ``alarm`` is set."""

    def __init__(self) -> None:
        self.alarm = False

    def answer(self, request: object) -> str:
        return json.dumps({"alarm": self.alarm, "people": 2 if self.alarm else 0,
                           "description": "two people at the door" if self.alarm
                           else "nobody"})


@dataclass
class Site:
    daemon: Daemon
    scene: Scene
    model: ScriptedModel
    prefix: str
    root: str
    rule: str
    path: Path

    @property
    def runner(self):  # type: ignore[no-untyped-def]
        assert self.daemon.engine is not None
        return self.daemon.engine.runners[self.rule]


def site_config(base_url: str, key_var: str, broker: Broker, *, prefix: str, root: str,
                rule: str, state: Path, extra_action: str = "") -> str:
    return f"""\
overshoot:
  base_url: {base_url}
  api_key: ${{{key_var}}}
  model: {MODEL}
state:
  path: {state}
actions:
  home:
    type: mqtt
    host: {broker.host}
    port: {broker.port}
    username: watcher
    password: ${{TEST_MQTT_PASSWORD}}
    keepalive: 2s
    timeout: 3s
    discovery: true
    discovery_prefix: {prefix}
    base_topic: {root}
    topic: {root}/{{rule}}/{{stream}}/event
{extra_action}rules:
  - name: {rule}
    stream: door
    every: 300ms
    prompt: Is there an alarm at the door?
    schema: {{alarm: boolean, people: integer, description: string}}
    when: alarm
    labels: {{device_class: occupancy}}
    actions: [home]
streams:
  - name: door
    source: testsrc:size=160x120
    fps: 5
    width: 160
    height: 120
"""


@contextlib.asynccontextmanager
async def running_site(tmp_path: Path, broker: Broker) -> AsyncIterator[Site]:
    scene = Scene()
    model = ScriptedModel(MODEL, scene.answer)
    prefix, root = unique_prefix(), unique_prefix()
    rule = "door-alarm"
    async with run_embedded(ServerSettings(ttl_seconds=10)) as endpoint:
        endpoint.app.state.server.backends[MODEL] = model
        os.environ["TEST_SITE_KEY"] = endpoint.api_key
        os.environ.setdefault("TEST_MQTT_PASSWORD", "mqtt-canary-pass-5c1e")
        path = tmp_path / "watcher.yaml"
        path.write_text(site_config(endpoint.base_url, "TEST_SITE_KEY", broker, prefix=prefix,
                                    root=root, rule=rule, state=tmp_path / "state.sqlite3"))
        async with running_daemon(path) as daemon:
            site = Site(daemon, scene, model, prefix, root, rule, path)
            await eventually(lambda: site.runner.stats.evaluations > 0, 60)
            yield site
