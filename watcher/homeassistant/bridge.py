"""Keeps Home Assistant in step with the rule engine, over one ``mqtt`` action's link.

On every (re)connect, and whenever Home Assistant announces ``online`` on
its status topic, the bridge publishes (retained) every discovery config,
every alert's state and attributes, each rule's switch state and the newest
snapshot per stream, so Home Assistant shows the truth after a broker or
Home Assistant restart. Between connects it publishes only changes: the
engine calls :meth:`HomeAssistantBridge.observe` after each step that
changed an alert.

A command ``ON``/``OFF`` on ``watcher/{rule}/set`` switches the rule on or
off in the engine (its ticks stop; alert state is kept), is persisted
through ``save_switch`` so it survives a restart, and is echoed on the
switch's state topic.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Protocol

import aiomqtt

from watcher.actions.mqtt_link import MqttLink
from watcher.actions.templates import answer_fields, iso, started_ms
from watcher.engine.state import AlertState, Status
from watcher.engine.store import AlertEventRecord
from watcher.homeassistant.discovery import RuleView, discovery_configs
from watcher.homeassistant.topics import Topics, ha_status_topic

log = logging.getLogger(__name__)

SaveSwitch = Callable[[str, bool], Awaitable[None]]


class Engine(Protocol):
    """What the bridge needs of :class:`~watcher.engine.engine.RuleEngine`."""

    runners: Mapping[str, Any]

    def is_enabled(self, name: str) -> bool: ...

    def set_enabled(self, name: str, enabled: bool) -> bool: ...


class HomeAssistantBridge:
    def __init__(self, link: MqttLink, *, prefix: str, topics: Topics,
                 answer_sensors: bool = True,
                 public_url: str | None = None, save_switch: SaveSwitch | None = None,
                 ) -> None:
        self.link = link
        self.prefix = prefix
        self.topics = topics
        self.answer_sensors = answer_sensors
        self.public_url = public_url.rstrip("/") if public_url else None
        self.save_switch = save_switch
        self.engine: Engine | None = None
        self.rules: dict[str, RuleView] = {}
        self.configs: dict[str, dict[str, Any]] = {}
        self._attributes: dict[tuple[str, str], dict[str, Any]] = {}
        self._snapshots: dict[str, bytes] = {}
        link.on_connect.append(self._on_connect)
        link.on_message.append(self._on_message)

    # -- configuration ---------------------------------------------------------------------
    def bind(self, engine: Engine, rules: Iterable[RuleView]) -> None:
        """Cover ``rules`` (those using this action); clear the configs of rules gone."""
        self.engine = engine
        self.rules = {r.name: r for r in rules}
        configs = discovery_configs(self.prefix, self.rules.values(), topics=self.topics,
                                    answer_sensors=self.answer_sensors)
        for topic in self.configs.keys() - configs.keys():
            self.link.publish_soon(topic, b"")
        for topic, payload in configs.items():
            if self.configs.get(topic) != payload:
                self.link.publish_soon(topic, _json(payload))
        self.configs = configs
        for name in self.rules:
            self._publish_rule(name)

    # -- engine steps ----------------------------------------------------------------------
    def observe(self, rule: str, stream_key: str, state: AlertState,
                events: list[AlertEventRecord]) -> None:
        """After a step that changed the alert ``(rule, stream_key)``."""
        if rule not in self.rules:
            return
        if events:
            self._attributes[(rule, stream_key)] = self._event_attributes(events[-1], state)
            snapshot = next((e.snapshot for e in reversed(events) if e.snapshot), None)
            stream = self.rules[rule].stream_names[0]
            if snapshot is not None:
                self._snapshots[stream] = snapshot
                self.link.publish_soon(self.topics.snapshot(stream), snapshot)
        self._publish_alert(rule, stream_key, state)

    def _event_attributes(self, event: AlertEventRecord, state: AlertState) -> dict[str, Any]:
        return {
            "status": str(state.status), "answer": answer_fields(event.answer),
            "severity": event.severity or "warning", "episode": event.episode,
            "started_at": iso(started_ms(event)), "changed_at": iso(event.created_ms),
            "changed_ms": event.created_ms, "event_id": event.id,
            "event_url": (f"{self.public_url}/events/{event.id}"
                          if self.public_url and event.id is not None else None),
        }

    def _publish_alert(self, rule: str, stream_key: str, state: AlertState) -> None:
        on = state.status is Status.FIRING
        attributes = self._attributes.get((rule, stream_key)) or {
            "status": str(state.status), "answer": {}, "severity": None, "episode": state.episode,
            "started_at": iso(state.firing_since_ms), "changed_at": iso(state.updated_ms),
            "changed_ms": state.updated_ms, "event_id": None, "event_url": None}
        attributes = {**attributes, "status": str(state.status)}
        self.link.publish_soon(self.topics.alert_attributes(rule, stream_key),
                               _json(attributes))
        self.link.publish_soon(self.topics.alert_state(rule, stream_key),
                               "ON" if on else "OFF")

    def _publish_rule(self, name: str) -> None:
        engine = self.engine
        runner = engine.runners.get(name) if engine is not None else None
        enabled = engine.is_enabled(name) if engine is not None else True
        self.link.publish_soon(self.topics.switch_state(name), "ON" if enabled else "OFF")
        if runner is not None:
            self._publish_alert(name, runner.stream_key, runner.state)

    # -- the connection --------------------------------------------------------------------
    async def _on_connect(self, client: aiomqtt.Client) -> None:
        await client.subscribe(self.topics.set_filter, qos=1)
        await client.subscribe(ha_status_topic(self.prefix), qos=1)
        await self._republish(client)

    async def _republish(self, client: aiomqtt.Client) -> None:
        for topic, payload in self.configs.items():
            await client.publish(topic, _json(payload), qos=1, retain=True)
        for stream, snapshot in self._snapshots.items():
            await client.publish(self.topics.snapshot(stream), snapshot, qos=1, retain=True)
        engine = self.engine
        for name in self.rules:
            enabled = engine.is_enabled(name) if engine is not None else True
            await client.publish(self.topics.switch_state(name), "ON" if enabled else "OFF",
                                 qos=1, retain=True)
            runner = engine.runners.get(name) if engine is not None else None
            if runner is not None:
                key = (name, runner.stream_key)
                attributes = self._attributes.get(key, {"answer": {}})
                await client.publish(self.topics.alert_attributes(*key),
                                     _json({**attributes, "status": str(runner.state.status)}),
                                     qos=1, retain=True)
                on = runner.state.status is Status.FIRING
                await client.publish(self.topics.alert_state(*key), "ON" if on else "OFF",
                                     qos=1, retain=True)

    async def _on_message(self, message: aiomqtt.Message) -> None:
        topic = message.topic.value
        payload = _text(message.payload).strip()
        if topic == ha_status_topic(self.prefix):
            if payload == "online":
                log.info("Home Assistant is online: publishing discovery and states again")
                self._republish_soon()
            return
        rule = self.topics.rule_of_command(topic)
        if rule is None or rule not in self.rules or self.engine is None:
            return
        if payload.upper() not in ("ON", "OFF"):
            log.warning("rule %s: ignoring switch command %r (expected ON or OFF)", rule,
                        payload[:20])
            return
        enabled = payload.upper() == "ON"
        if self.engine.set_enabled(rule, enabled):
            log.info("rule %s switched %s over MQTT", rule, "on" if enabled else "off")
            if self.save_switch is not None:
                await self.save_switch(rule, enabled)
        self.link.publish_soon(self.topics.switch_state(rule),
                               "ON" if self.engine.is_enabled(rule) else "OFF")

    def _republish_soon(self) -> None:
        for topic, payload in self.configs.items():
            self.link.publish_soon(topic, _json(payload))
        for stream, snapshot in self._snapshots.items():
            self.link.publish_soon(self.topics.snapshot(stream), snapshot)
        for name in self.rules:
            self._publish_rule(name)


def rule_views(rules: Iterable[Any], action: str) -> list[RuleView]:
    """The rules (RuleConfig) that notify through ``action``."""
    return [RuleView(name=r.name, stream_names=tuple(r.stream_names), labels=dict(r.labels),
                     schema=r.schema, description=r.description)
            for r in rules if action in r.actions]


def _json(payload: Mapping[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), default=str).encode()


def _text(payload: object) -> str:
    if isinstance(payload, bytes | bytearray):
        return bytes(payload).decode("utf-8", "replace")
    return "" if payload is None else str(payload)
