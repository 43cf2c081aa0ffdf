"""One long-lived MQTT connection per ``mqtt`` action, reconnecting with backoff.

The link runs a background task that connects, announces itself and then
reads incoming messages until the connection breaks; then it waits (1 s,
doubling to 30 s) and connects again. Publishing goes through
:meth:`MqttLink.publish`, which waits a bounded time for a connection and,
at QoS 1 or 2, for the broker's acknowledgement: a publish that returns was
delivered to the broker. Anything else raises :class:`DeliveryError` so the
outbox retries it later.

With an availability topic the link publishes ``online`` (retained) on every
connect, sets a last will ``offline`` (retained) that the broker publishes
when the connection dies without a goodbye (``kill -9``, network loss: after
1.5 x keepalive), and publishes ``offline`` itself on a clean stop.

Hooks: ``on_connect(client)`` runs after each (re)connect, before messages
are read (subscribe and republish there); ``on_message(message)`` gets every
incoming message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Awaitable, Callable

import aiomqtt

from watcher.actions.base import DeliveryError
from watcher.actions.mqtt_options import MqttOptions

log = logging.getLogger(__name__)

RECONNECT_MIN_S = 1.0
RECONNECT_MAX_S = 30.0
ONLINE, OFFLINE = "online", "offline"

OnConnect = Callable[[aiomqtt.Client], Awaitable[None]]
OnMessage = Callable[[aiomqtt.Message], Awaitable[None]]


def tls_context(options: MqttOptions) -> ssl.SSLContext | None:
    tls = options.tls
    if tls is None:
        return None
    context = ssl.create_default_context(cafile=tls.ca_file)
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if tls.cert_file is not None:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


class MqttLink:
    """The connection of one ``mqtt`` action; see the module docstring."""

    def __init__(self, name: str, options: MqttOptions, *,
                 availability_topic: str | None = None) -> None:
        self.name = name
        self.options = options
        self.availability_topic = availability_topic
        self.on_connect: list[OnConnect] = []
        self.on_message: list[OnMessage] = []
        self.connected = asyncio.Event()
        self.connects = 0
        """Successful connects so far (tests and status)."""
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._down_reported = False

    @property
    def label(self) -> str:
        return f"mqtt {self.name} ({self.options.host}:{self.options.broker_port})"

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"mqtt-{self.name}")

    async def publish(self, topic: str, payload: str | bytes, *, qos: int | None = None,
                      retain: bool = False) -> None:
        """Publish and, at QoS >= 1, wait for the broker's acknowledgement."""
        self.start()
        qos = self.options.qos if qos is None else qos
        timeout = self.options.timeout
        try:
            async with asyncio.timeout(timeout):
                await self.connected.wait()
                client = self._client
                if client is None:
                    raise DeliveryError(f"{self.label}: not connected")
                await client.publish(topic, payload, qos=qos, retain=retain, timeout=timeout)
        except TimeoutError:
            raise DeliveryError(f"{self.label}: no connection or acknowledgement within "
                                f"{timeout:g} s") from None
        except aiomqtt.MqttError as exc:
            raise DeliveryError(f"{self.label}: {_reason(exc)}") from None

    def publish_soon(self, topic: str, payload: str | bytes, *, retain: bool = True,
                     qos: int = 1) -> None:
        """Publish in the background while connected; dropped otherwise (every state is
        republished on the next connect)."""
        client = self._client
        if client is None:
            return

        async def send() -> None:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await client.publish(topic, payload, qos=qos, retain=retain,
                                     timeout=self.options.timeout)

        task = asyncio.get_running_loop().create_task(send())
        _background.add(task)
        task.add_done_callback(_background.discard)

    async def aclose(self) -> None:
        """Say ``offline`` (when announcing availability) and disconnect."""
        self._closing = True
        client = self._client
        if client is not None and self.availability_topic is not None:
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                await client.publish(self.availability_topic, OFFLINE, qos=1, retain=True,
                                     timeout=2.0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    # -- the connection loop ---------------------------------------------------------------
    def _client_for_attempt(self) -> aiomqtt.Client:
        o = self.options
        will = None
        if self.availability_topic is not None:
            will = aiomqtt.Will(self.availability_topic, OFFLINE, qos=1, retain=True)
        protocol = (aiomqtt.ProtocolVersion.V5 if o.protocol == "5"
                    else aiomqtt.ProtocolVersion.V311)
        return aiomqtt.Client(
            o.host, o.broker_port, username=o.username,
            password=None if o.password is None else o.password.get_secret_value(),
            identifier=o.client_identifier(self.name), protocol=protocol, will=will,
            keepalive=max(1, round(o.keepalive)), timeout=o.timeout,
            tls_context=tls_context(o), logger=_quiet)

    async def _run(self) -> None:
        delay = RECONNECT_MIN_S
        while not self._closing:
            try:
                async with self._client_for_attempt() as client:
                    await self._connected(client)
                    delay = RECONNECT_MIN_S
                    async for message in client.messages:
                        await self._dispatch(message)
            except aiomqtt.MqttError as exc:
                self._disconnected(exc)
            except Exception:
                log.exception("%s: unexpected error; reconnecting", self.label)
                self._disconnected(None)
            finally:
                self._client = None
                self.connected.clear()
            if self._closing:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    async def _connected(self, client: aiomqtt.Client) -> None:
        self._client = client
        self.connects += 1
        if self._down_reported:
            log.info("%s: connected again", self.label)
            self._down_reported = False
        else:
            log.info("%s: connected", self.label)
        if self.availability_topic is not None:
            await client.publish(self.availability_topic, ONLINE, qos=1, retain=True)
        for hook in self.on_connect:
            await hook(client)
        self.connected.set()

    async def _dispatch(self, message: aiomqtt.Message) -> None:
        for hook in self.on_message:
            try:
                await hook(message)
            except Exception:
                log.exception("%s: handling a message on %s failed", self.label,
                              message.topic.value)

    def _disconnected(self, exc: aiomqtt.MqttError | None) -> None:
        if self._closing:
            return
        if not self._down_reported:
            log.warning("%s: broker unreachable (%s); retrying with backoff", self.label,
                        _reason(exc) if exc is not None else "error")
            self._down_reported = True


_background: set[asyncio.Task[None]] = set()
_quiet = logging.getLogger("watcher.actions.mqtt.paho")
_quiet.setLevel(logging.ERROR)  # "N pending publish calls" and reconnect chatter: ours says it


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text[:200] if text else type(exc).__name__
