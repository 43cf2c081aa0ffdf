"""What rule tests stand on without video: the embedded server with one live stream, called
in process, and the kept stream a rule reads it through.

The server's stream holds one JPEG frame, so it is live and every ask is
answered by the scripted models. :class:`KeptStream` has what a rule uses of
a keeper: the stream id, the newest frame and the change tracker.
:class:`RunnerEnv` adds a SQLite alert store and a manual clock, and makes
rule runners on them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from watcher.clock import ManualClock
from watcher.engine.rules import RuleConfig
from watcher.engine.runner import RuleRunner
from watcher.engine.store import AlertStore
from watcher.media.changes import ChangeTracker
from watcher.media.tracks import LatestFrame
from watcher.overshoot.client import OvershootClient
from watcher.server.app import create_app
from watcher.server.settings import ServerSettings

KEY = "ovs_rule_tests"
BASE_URL = "http://t/v1beta"


class KeptStream:
    """A kept stream as the engine and its runners see it; ``frame``: one shown at once."""

    def __init__(self, stream_id: str | None, frame: np.ndarray | None = None) -> None:
        self.stream_id = stream_id
        self.frames = LatestFrame()
        self.changes = ChangeTracker()
        self.source_live = True
        self.source_resumed_at: float | None = None
        if frame is not None:
            self.show(frame)

    def show(self, frame: np.ndarray, at: float | None = None) -> None:
        """Publish ``frame`` as the keeper does: into the mailbox and the change tracker."""
        self.frames.put(frame)
        self.changes(frame, at)


@dataclass
class LiveServer:
    app: Any
    stream_id: str
    """The live stream's id."""
    http: httpx.AsyncClient
    """Close it when done (or use it as a context manager)."""
    client: OvershootClient


def live_server(*models: Any) -> LiveServer:
    """The embedded server's app with ``models`` as backends and one live stream, and a
    client calling it in process."""
    app = create_app(ServerSettings(api_keys=[KEY]), backends=list(models))
    server = app.state.server
    live = server.registry.create(server.owner_of(f"Bearer {KEY}"))
    server.registry.add_frame(live, b"\xff\xd8jpeg")
    http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE_URL)
    return LiveServer(app, live.id, http, OvershootClient(BASE_URL, KEY, http=http))


class RunnerEnv:
    """Rule runners on a live server's stream (a grey picture), a SQLite state file and a
    manual clock. Close ``store`` and ``http`` when done."""

    def __init__(self, state: Path, *models: Any) -> None:
        site = live_server(*models)
        self.app, self.http, self.client = site.app, site.http, site.client
        self.stream = KeptStream(site.stream_id, np.full((48, 64, 3), 80, np.uint8))
        self.store = AlertStore(state)
        self.clock = ManualClock()

    def runner(self, **rule: object) -> RuleRunner:
        """A runner of rule ``r`` on ``cam`` asking ``triage``; ``rule`` overrides fields."""
        spec = {"name": "r", "stream": "cam", "every": "5s", "prompt": "anyone?",
                "schema": {"person": "boolean"}, "model": "triage", **rule}
        return RuleRunner(RuleConfig.model_validate(spec), default_model="triage",
                          client=self.client, streams={"cam": self.stream}, store=self.store,
                          clock=self.clock)
