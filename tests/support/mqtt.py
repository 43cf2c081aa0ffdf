"""MQTT brokers and a recording subscriber for tests.

* :func:`shared_broker`: the broker at ``WATCHER_TEST_MQTT`` (``host:port``),
  default 127.0.0.1:1883 (Mosquitto runs there on the test machines);
* :class:`PrivateBroker`: a Mosquitto process of the test's own on a free
  port, which the test may stop and start again (broker restarts, outages).

Where neither can be had the tests skip with the reason, except under
``CI=true``, where a missing broker fails the run.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiomqtt
from support.receivers import free_port
from support.skips import skip_or_fail


def _reachable(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2):
        return True
    return False


@dataclass(frozen=True)
class Broker:
    host: str
    port: int


def shared_broker() -> Broker:
    host, _, port = os.environ.get("WATCHER_TEST_MQTT", "127.0.0.1:1883").rpartition(":")
    broker = Broker(host or "127.0.0.1", int(port))
    if not _reachable(broker.host, broker.port):
        skip_or_fail(f"no MQTT broker at {broker.host}:{broker.port} "
                     "(set WATCHER_TEST_MQTT=host:port)")
    return broker


def mosquitto_binary() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()),
        None)


class PrivateBroker:
    """A Mosquitto of the test's own, stopped and started at will (same port)."""

    def __init__(self, directory: Path, *, persistent: bool = False,
                 tls: tuple[Path, Path] | None = None) -> None:
        binary = mosquitto_binary()
        if binary is None:
            skip_or_fail("no mosquitto binary to run a private broker (apt-get install "
                         "mosquitto)")
        self.binary = str(binary)
        self.port = free_port()
        self.host = "127.0.0.1"
        self.config = directory / "mosquitto.conf"
        persistence = (f"persistence true\npersistence_location {directory}/\n" if persistent
                       else "persistence false\n")
        # Keep our user: as root, mosquitto would switch to "mosquitto", which cannot
        # read the test's private temporary folder (certificates, persistence).
        listener = (f"user {getpass.getuser()}\nlistener {self.port} 127.0.0.1\n"
                    "allow_anonymous true\n")
        if tls is not None:
            cert, key = tls
            listener += f"certfile {cert}\nkeyfile {key}\n"
        self.config.write_text(listener + persistence)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def broker(self) -> Broker:
        return Broker(self.host, self.port)

    async def start(self) -> None:
        self.process = await asyncio.to_thread(
            subprocess.Popen, [self.binary, "-c", str(self.config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(200):
            if _reachable(self.host, self.port):
                return
            await asyncio.sleep(0.05)
        raise RuntimeError("the private mosquitto did not start")

    async def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            await asyncio.to_thread(self.process.wait)
            self.process = None


@dataclass
class Recorded:
    topic: str
    payload: bytes
    retain: bool

    @property
    def text(self) -> str:
        return self.payload.decode("utf-8", "replace")


@dataclass
class Subscriber:
    """Records every message on its filters; tests wait on what they expect."""

    broker: Broker
    filters: list[str]
    messages: list[Recorded] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def last(self, topic: str) -> Recorded | None:
        return next((m for m in reversed(self.messages) if m.topic == topic), None)

    def on(self, prefix: str) -> list[Recorded]:
        return [m for m in self.messages if m.topic.startswith(prefix)]

    async def wait_for(self, predicate: Callable[[], object], timeout: float = 60.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


@contextlib.asynccontextmanager
async def subscribed(broker: Broker, *filters: str, session: str | None = None,
                     ) -> AsyncIterator[Subscriber]:
    """A subscriber on ``filters`` (reconnecting if the broker restarts).

    With ``session`` (a client id), the broker keeps the subscription and queues
    QoS 1 messages while the subscriber is away (a persistent broker keeps them
    across its own restart too)."""
    sub = Subscriber(broker, list(filters))
    ready = asyncio.Event()
    identifier = session or f"test-{uuid.uuid4().hex[:8]}"

    async def run() -> None:
        while True:
            try:
                async with aiomqtt.Client(broker.host, broker.port, identifier=identifier,
                                          clean_session=session is None) as client:
                    for f in filters:
                        await client.subscribe(f, qos=1)
                    ready.set()
                    async for message in client.messages:
                        payload = message.payload if isinstance(message.payload, bytes) else (
                            str(message.payload).encode() if message.payload is not None
                            else b"")
                        sub.messages.append(Recorded(message.topic.value, payload,
                                                     bool(message.retain)))
                        sub._changed.set()
            except aiomqtt.MqttError:
                await asyncio.sleep(0.2)

    task = asyncio.create_task(run())
    try:
        await asyncio.wait_for(ready.wait(), 30)
        yield sub
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def unique_prefix() -> str:
    """A discovery prefix no other test run uses."""
    return f"hatest-{uuid.uuid4().hex[:10]}"
