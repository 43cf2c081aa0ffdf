"""Home Assistant discovery against a real broker and a real daemon.

The discovery payloads are checked against Home Assistant's required keys
per component (written down below from its MQTT integration docs).
"""

from __future__ import annotations

import json
from pathlib import Path

import aiomqtt
import jsonschema
from support.mqtt import PrivateBroker, shared_broker, subscribed
from support.poll import eventually
from support.site import running_site

from watcher.engine.state import Status

DEVICE = {"type": "object", "required": ["identifiers", "name"],
          "properties": {"identifiers": {"type": "array", "minItems": 1,
                                         "items": {"type": "string", "minLength": 1}}}}
COMMON = {"unique_id": {"type": "string", "minLength": 1},
          "availability_topic": {"type": "string", "minLength": 1},
          "device": DEVICE, "name": {"type": "string"}}
REQUIRED = ["unique_id", "availability_topic", "device"]
COMPONENT_SCHEMAS = {
    "binary_sensor": {"type": "object", "required": [*REQUIRED, "state_topic"],
                      "properties": {**COMMON, "state_topic": {"type": "string"},
                                     "payload_on": {"const": "ON"},
                                     "payload_off": {"const": "OFF"},
                                     "device_class": {"type": "string"},
                                     "json_attributes_topic": {"type": "string"}}},
    "sensor": {"type": "object", "required": [*REQUIRED, "state_topic", "value_template"],
               "properties": {**COMMON, "state_topic": {"type": "string"}}},
    "switch": {"type": "object", "required": [*REQUIRED, "command_topic", "state_topic"],
               "properties": {**COMMON, "command_topic": {"type": "string"}}},
    "image": {"type": "object", "required": [*REQUIRED, "image_topic", "content_type"],
              "not": {"required": ["url_topic"]},
              "properties": {**COMMON, "image_topic": {"type": "string"}}},
}


def configs(sub, prefix: str) -> dict[str, dict]:
    found = {}
    for message in sub.on(prefix + "/"):
        if message.topic.endswith("/config"):
            found[message.topic] = json.loads(message.payload) if message.payload else None
    return found


async def test_discovery_states_and_switches(tmp_path: Path) -> None:
    broker = shared_broker()
    async with running_site(tmp_path, broker) as site, \
            subscribed(broker, f"{site.prefix}/#", f"{site.root}/#") as sub:
        # Discovery: every entity, retained, valid for its component.
        await sub.wait_for(lambda: len(configs(sub, site.prefix)) >= 6)
        found = configs(sub, site.prefix)
        components = sorted(topic.split("/")[1] for topic in found)
        assert components == ["binary_sensor", "image", "sensor", "sensor", "sensor", "switch"]
        for topic, payload in found.items():
            jsonschema.validate(payload, COMPONENT_SCHEMAS[topic.split("/")[1]])
            assert sub.last(topic).retain
        binary = next(p for t, p in found.items() if "/binary_sensor/" in t)
        assert binary["device_class"] == "occupancy"
        assert binary["device"]["name"] == "door"
        assert len({p["unique_id"] for p in found.values()}) == len(found)
        state_topic, attributes_topic = binary["state_topic"], binary["json_attributes_topic"]
        await sub.wait_for(lambda: sub.last(f"{site.root}/availability") is not None, 10)
        assert sub.last(f"{site.root}/availability").text == "online"
        await sub.wait_for(lambda: sub.last(state_topic) is not None)
        assert sub.last(state_topic).text == "OFF"

        # The binary sensor follows the alert: on when it fires, off when it resolves.
        site.scene.alarm = True
        await sub.wait_for(lambda: (m := sub.last(state_topic)) and m.text == "ON")
        attributes = json.loads(sub.last(attributes_topic).payload)
        assert attributes["answer"]["description"] == "two people at the door"
        assert attributes["severity"] == "warning" and attributes["started_at"]
        assert site.runner.state.status is Status.FIRING
        site.scene.alarm = False
        await sub.wait_for(lambda: (m := sub.last(state_topic)) and m.text == "OFF")
        await sub.wait_for(lambda: len(sub.on(f"{site.root}/{site.rule}/door/event")) >= 2)
        events = [json.loads(m.payload) for m in sub.on(f"{site.root}/{site.rule}/door/event")]
        assert [e["status"] for e in events][:2] == ["firing", "resolved"]
        assert all(e["idempotency_key"].endswith(":home") for e in events)

        # The switch: OFF stops the rule's evaluations, ON resumes them.
        switch = next(p for t, p in found.items() if "/switch/" in t)
        async with aiomqtt.Client(broker.host, broker.port) as client:
            await client.publish(switch["command_topic"], "OFF", qos=1)
            await sub.wait_for(lambda: (m := sub.last(switch["state_topic"]))
                               and m.text == "OFF")
            await eventually(lambda: not site.runner._lock.locked(), 10)
            stopped_at = site.runner.stats.evaluations
            # The camera goes on publishing: 10 frames at 5 fps span ~6 of the rule's
            # 300 ms intervals, none of which may ask.
            keeper = site.daemon.keepers["door"]
            frames = keeper.frames_sent
            await eventually(lambda: keeper.frames_sent >= frames + 10, 60)
            assert site.runner.stats.evaluations == stopped_at
            await client.publish(switch["command_topic"], "ON", qos=1)
            await sub.wait_for(lambda: (m := sub.last(switch["state_topic"])) and m.text == "ON")
            await eventually(lambda: site.runner.stats.evaluations > stopped_at, 30)
        assert site.daemon.store is not None
        assert await site.daemon.store.load_switches() == {site.rule: True}


async def test_states_come_back_after_a_broker_restart(tmp_path: Path, caplog) -> None:
    private = PrivateBroker(tmp_path)
    await private.start()
    try:
        async with running_site(tmp_path, private.broker) as site:
            site.scene.alarm = True
            await eventually(lambda: site.runner.state.status is Status.FIRING, 60)
            await private.stop()
            await private.start()  # an empty broker: nothing retained survives
            async with subscribed(private.broker, f"{site.prefix}/#", f"{site.root}/#") as sub:
                state = f"{site.root}/{site.rule}/door/state"
                await sub.wait_for(lambda: (m := sub.last(state)) and m.text == "ON")
                await sub.wait_for(lambda: len(configs(sub, site.prefix)) >= 6)
                await sub.wait_for(lambda: sub.last(f"{site.root}/availability") is not None)
                assert sub.last(f"{site.root}/availability").text == "online"
            async with subscribed(private.broker, f"{site.root}/#") as late:
                await late.wait_for(lambda: late.last(state) is not None)
                assert (late.last(state).text, late.last(state).retain) == ("ON", True)
    finally:
        await private.stop()
    assert "mqtt-canary-pass-5c1e" not in caplog.text


async def test_a_broker_outage_loses_no_event(tmp_path: Path) -> None:
    """Events while the broker is down are delivered, each with its key, once it is back."""
    private = PrivateBroker(tmp_path, persistent=True)
    await private.start()
    session = f"test-outage-{tmp_path.name[-8:]}"
    try:
        async with running_site(tmp_path, private.broker) as site:
            events = f"{site.root}/{site.rule}/door/event"
            async with subscribed(private.broker, events, session=session) as sub:
                await private.stop()
                for _ in range(2):
                    site.scene.alarm = True
                    await eventually(lambda: site.runner.state.status is Status.FIRING, 60)
                    site.scene.alarm = False
                    await eventually(lambda: site.runner.state.status is Status.RESOLVED, 60)
                store = site.daemon.store
                assert store is not None
                recorded = [e for e in await store.events(limit=20) if e.notify]
                assert len(recorded) == 4
                assert (await store.delivery_counts())["home"].get("sent", 0) == 0
                await private.start()
                expected = {f"{e.event_key}:home" for e in recorded}
                await sub.wait_for(lambda: expected <= {
                    json.loads(m.payload)["idempotency_key"] for m in sub.messages}, 120)
                keys = [json.loads(m.payload)["idempotency_key"] for m in sub.messages]
                assert set(keys) == expected
                await eventually(lambda: _sent(store), 60)
    finally:
        await private.stop()


async def _sent(store) -> bool:
    return (await store.delivery_counts())["home"] == {"sent": 4}


async def test_home_assistant_restart_and_reload(tmp_path: Path) -> None:
    broker = shared_broker()
    async with running_site(tmp_path, broker) as site, \
            subscribed(broker, f"{site.prefix}/#", f"{site.root}/#") as sub:
        await sub.wait_for(lambda: len(configs(sub, site.prefix)) >= 6)
        switch_topic = next(t for t in configs(sub, site.prefix) if "/switch/" in t)
        sent = len(sub.on(switch_topic))
        # Home Assistant came back: everything is published again.
        async with aiomqtt.Client(broker.host, broker.port) as client:
            await client.publish(f"{site.prefix}/status", "online", qos=1)
        await sub.wait_for(lambda: len(sub.on(switch_topic)) > sent)

        # A rule removed by a reload: its configs are cleared (empty and retained).
        site.path.write_text(site.path.read_text().replace(site.rule, "door-renamed"))
        assert await site.daemon.reload()
        await sub.wait_for(lambda: (m := sub.last(switch_topic)) and m.payload == b"")
        cleared = {t for t, p in configs(sub, site.prefix).items() if p is None}
        assert any(f"/{site.rule.replace('-', '_')}" in t for t in cleared)
        assert all("renamed" not in t for t in cleared)
        await sub.wait_for(lambda: any("door_renamed" in t and p is not None
                                       for t, p in configs(sub, site.prefix).items()))
    # A clean stop says goodbye (retained).
    async with subscribed(broker, f"{site.root}/availability") as late:
        await late.wait_for(lambda: late.messages)
        assert late.messages[-1].text == "offline"
