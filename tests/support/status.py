"""A small daemon for status and metrics tests, built from the real parts.

A StreamKeeper publishing over real WebRTC to the embedded server, a RuleEngine
asking a scripted model about it every 300 ms, the SQLite alert store, the
Outbox delivering the rule's alerts to an in-memory action, and the status
listener on a free loopback port: what ``Daemon.run`` wires together.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from support.keeper import KEY, Harness, make_harness
from support.models import Reply as ScriptedReply
from support.models import ScriptedModel

from watcher.actions.base import Action
from watcher.actions.outbox import Outbox
from watcher.clock import SystemClock
from watcher.engine.engine import RuleEngine
from watcher.engine.pending import StepWriter
from watcher.engine.rules import RuleConfig
from watcher.engine.store import AlertEventRecord, AlertStore
from watcher.engine.storehealth import MonitoredStore, StoreHealth
from watcher.keeper.keeper import StreamKeeper
from watcher.keeper.spec import KeeperTimings
from watcher.observe.server import serve_status
from watcher.observe.source import StatusSource
from watcher.server.settings import ServerSettings

MODEL = "scripted"
RULE = {"name": "door-open", "stream": "cam", "every": "300ms", "model": MODEL,
        "prompt": "Is the door open?", "actions": ["ops"], "severity": "warning"}


class Recorder(Action):
    """An action that keeps what it was sent."""

    type = "recorder"

    def __init__(self, name: str) -> None:
        super().__init__(name, {})
        self.keys: list[str] = []
        self.events: list[AlertEventRecord] = []

    async def send(self, event: AlertEventRecord, idempotency_key: str) -> None:
        self.keys.append(idempotency_key)
        self.events.append(event)

    async def send_summary(self, events: list[AlertEventRecord], idempotency_key: str) -> None:
        self.keys.append(idempotency_key)


@dataclass
class Running:
    harness: Harness
    keeper: StreamKeeper
    engine: RuleEngine
    store: MonitoredStore
    outbox: Outbox
    action: Recorder
    model: ScriptedModel
    source: StatusSource
    url: str
    health: StoreHealth
    writer: StepWriter

    @property
    def runner(self):  # type: ignore[no-untyped-def]
        return self.engine.runners[RULE["name"]]

    async def get(self, path: str, **kwargs) -> httpx.Response:  # type: ignore[no-untyped-def]
        async with httpx.AsyncClient(timeout=5) as http:
            return await http.get(self.url + path, **kwargs)


@contextlib.asynccontextmanager
async def running_daemon(tmp_path: Path, *, timings: KeeperTimings | None = None,
                         reply: ScriptedReply = '{"answer": true}',
                         state_path: Path | None = None, max_pending_age: float = 60.0,
                         max_pending_steps: int = 1000, probe_interval: float = 5.0,
                         rule: dict | None = None) -> AsyncIterator[Running]:
    """Wired as ``Daemon.run`` wires it: the store behind a StoreHealth, one StepWriter."""
    harness = await make_harness(ServerSettings(api_keys=[KEY], ttl_seconds=6), SystemClock())
    model = ScriptedModel(MODEL, reply)
    harness.server.backends[MODEL] = model
    keeper = harness.keeper(timings=timings)
    health = StoreHealth()
    store = MonitoredStore(AlertStore(state_path or tmp_path / "state.sqlite3"), health)
    action = Recorder("ops")
    outbox = Outbox(store, {"ops": action}, SystemClock())  # type: ignore[arg-type]
    writer = StepWriter(store, health=health, actions={"ops": action},
                        max_age_s=max_pending_age, max_steps=max_pending_steps,
                        on_recorded=outbox.wake)
    engine = RuleEngine([RuleConfig.model_validate(rule or RULE)], client=harness.client,
                        streams={"cam": keeper}, store=store,  # type: ignore[arg-type]
                        default_model=MODEL, actions={"ops": action},
                        on_recorded=outbox.wake, writer=writer)
    source = StatusSource(keepers={"cam": keeper}, engine=engine, outbox=outbox,
                          store=store, store_health=health)  # type: ignore[arg-type]
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(harness.http.aclose)
        stack.push_async_callback(harness.server.aclose)
        stack.push_async_callback(store.close)
        keeper.start()
        stack.push_async_callback(keeper.stop)
        outbox.start()
        stack.push_async_callback(outbox.stop)
        await engine.start()
        stack.push_async_callback(engine.stop)
        endpoint = await stack.enter_async_context(serve_status(source, port=0))
        probe = asyncio.create_task(store.probe_forever(probe_interval))
        stack.callback(probe.cancel)
        yield Running(harness, keeper, engine, store, outbox, action, model, source,
                      endpoint.url, health, writer)
