"""Home Assistant MQTT discovery configs for a set of rules (pure: no I/O).

Following Home Assistant's conventions, each entity's config is published
retained at ``{prefix}/{component}/{node}/{object_id}/config`` (node ``watcher``
by default) with a
``unique_id``, a ``device`` block and the availability topic. Entities:

* per stream: a **device** (the camera) and an ``image`` entity holding the
  newest evidence snapshot;
* per (rule, stream key): a ``binary_sensor`` that is on while the alert
  fires (``device_class`` from the rule's ``device_class`` label, else
  ``problem``), with the last answer, severity, started_at and the event
  page's URL as attributes; and, with ``answer_sensors``, a ``sensor`` per
  scalar field of the rule's answer schema;
* per rule: a ``switch`` that turns the rule on and off at run time, on the
  watcher device that the cameras hang off (``via_device``).

An entity that goes away (a rule removed by a reload) is cleared by
publishing an empty retained payload to its config topic.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from watcher.actions.mqtt_options import topic_level
from watcher.engine.schema import schema_fields
from watcher.homeassistant.topics import Topics

BINARY_SENSOR_CLASSES = frozenset({
    "battery", "battery_charging", "carbon_monoxide", "cold", "connectivity", "door",
    "garage_door", "gas", "heat", "light", "lock", "moisture", "motion", "moving",
    "occupancy", "opening", "plug", "power", "presence", "problem", "running", "safety",
    "smoke", "sound", "tamper", "update", "vibration", "window"})
"""Home Assistant's binary_sensor device classes."""
SCALAR_TYPES = frozenset({"boolean", "integer", "number", "string"})


@dataclass(frozen=True, slots=True)
class RuleView:
    """What discovery needs of one rule."""

    name: str
    stream_names: tuple[str, ...]
    labels: dict[str, str]
    schema: dict[str, Any]
    description: str | None = None

    @property
    def stream_key(self) -> str:
        return "+".join(self.stream_names)


def node_id(topics: Topics) -> str:
    """Names this installation in config topics, unique ids and device identifiers
    (``watcher`` with the default ``base_topic``)."""
    return _object_id(topics.root)


def config_topic(prefix: str, component: str, node: str, object_id: str) -> str:
    return f"{prefix}/{component}/{node}/{object_id}/config"


def _object_id(*parts: str) -> str:
    return "_".join(topic_level(p).replace("-", "_") for p in parts)


def hub_device(node: str) -> dict[str, Any]:
    return {"identifiers": [node], "name": node, "manufacturer": "watcher",
            "model": "video monitor"}


def camera_device(node: str, stream: str) -> dict[str, Any]:
    return {"identifiers": [f"{node}_camera_{_object_id(stream)}"], "name": stream,
            "manufacturer": "watcher", "model": "camera", "via_device": node}


def _common(topics: Topics, device: dict[str, Any]) -> dict[str, Any]:
    return {"availability_topic": topics.availability, "payload_available": "online",
            "payload_not_available": "offline", "device": device}


def device_class(rule: RuleView) -> str:
    wanted = rule.labels.get("device_class", "problem")
    return wanted if wanted in BINARY_SENSOR_CLASSES else "problem"


def discovery_configs(prefix: str, rules: Iterable[RuleView], *, topics: Topics,
                      answer_sensors: bool = True) -> dict[str, dict[str, Any]]:
    """Every config topic and its payload, for ``rules`` and their streams."""
    node = node_id(topics)
    configs: dict[str, dict[str, Any]] = {}
    streams: dict[str, None] = {}
    for rule in rules:
        streams.update(dict.fromkeys(rule.stream_names))
        device = camera_device(node, rule.stream_names[0])
        key = rule.stream_key
        object_id = _object_id(rule.name, key)
        state_topic = topics.alert_state(rule.name, key)
        attributes_topic = topics.alert_attributes(rule.name, key)
        configs[config_topic(prefix, "binary_sensor", node, object_id)] = {
            "name": f"{rule.name} alert" if len(rule.stream_names) == 1
            else f"{rule.name} alert ({', '.join(rule.stream_names)})",
            "unique_id": f"{node}_{object_id}_alert",
            "object_id": f"{node}_{object_id}",
            "state_topic": state_topic, "payload_on": "ON", "payload_off": "OFF",
            "json_attributes_topic": attributes_topic,
            "device_class": device_class(rule), **_common(topics, device)}
        if answer_sensors:
            for field, kind in schema_fields(rule.schema).items():
                if kind not in SCALAR_TYPES:
                    continue
                field_id = _object_id(rule.name, key, field)
                configs[config_topic(prefix, "sensor", node, field_id)] = {
                    "name": f"{rule.name} {field}", "unique_id": f"{node}_{field_id}",
                    "object_id": f"{node}_{field_id}", "state_topic": attributes_topic,
                    "value_template": "{{ value_json.answer." + field + " }}",
                    **_common(topics, device)}
        rule_id = _object_id(rule.name)
        configs[config_topic(prefix, "switch", node, rule_id)] = {
            "name": f"{rule.name} rule", "unique_id": f"{node}_{rule_id}_rule",
            "object_id": f"{node}_{rule_id}_rule",
            "command_topic": topics.switch_command(rule.name),
            "state_topic": topics.switch_state(rule.name),
            "payload_on": "ON", "payload_off": "OFF", "state_on": "ON", "state_off": "OFF",
            "icon": "mdi:cctv", **_common(topics, hub_device(node))}
    for stream in streams:
        stream_id = _object_id(stream)
        configs[config_topic(prefix, "image", node, stream_id)] = {
            "name": f"{stream} evidence", "unique_id": f"{node}_{stream_id}_evidence",
            "object_id": f"{node}_{stream_id}_evidence",
            "image_topic": topics.snapshot(stream), "content_type": "image/jpeg",
            **_common(topics, camera_device(node, stream))}
    return configs
