"""The ``mqtt`` action on a real broker: payloads, QoS acknowledgements, TLS, outages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.mqtt import PrivateBroker, shared_broker, subscribed, unique_prefix
from support.receivers import self_signed_cert

from watcher.actions.base import DeliveryError
from watcher.actions.mqtt import MqttAction
from watcher.actions.mqtt_options import MqttOptions, render_topic, topic_level
from watcher.engine.state import Kind
from watcher.engine.store import AlertEventRecord


def event(kind: Kind = Kind.FIRING, stream: str = "gate+yard") -> AlertEventRecord:
    return AlertEventRecord(
        event_key=f"gate-person:{stream}:1:{kind}", rule="gate-person", stream_key=stream,
        episode=1, kind=kind, notify=True, created_ms=1_700_000_000_000, severity="critical",
        labels={"site": "north"}, answer={"people": 1, "description": "a person at the gate"},
        id=7)


def test_topics_are_single_levels() -> None:
    assert topic_level("gate+yard") == "gate_yard"
    assert topic_level("a/b#") == "a_b_"
    assert render_topic("x/{rule}/{stream}/{severity}", {
        "rule": "r", "stream": "a+b", "severity": "info"}) == "x/r/a_b/info"


async def test_events_reach_the_broker_with_their_key() -> None:
    broker = shared_broker()
    root = unique_prefix()
    action = MqttAction("bus", MqttOptions(host=broker.host, port=broker.port,
                                           topic=root + "/{rule}/{stream}/{status}"))
    try:
        async with subscribed(broker, f"{root}/#") as sub:
            await action.send(event(), "key-1")
            await action.send(event(Kind.RESOLVED), "key-2")
            await action.send_summary([event(), event(Kind.RESOLVED)], "key-3")
            await sub.wait_for(lambda: len(sub.messages) == 3)
    finally:
        await action.aclose()
    firing, resolved, summary = sub.messages
    assert firing.topic == f"{root}/gate-person/gate_yard/firing"
    assert resolved.topic == f"{root}/gate-person/gate_yard/resolved"
    assert summary.topic == f"{root}/gate-person/gate_yard/summary"
    body = json.loads(firing.payload)
    assert body["idempotency_key"] == "key-1" and body["version"] == "1"
    assert (body["rule"], body["stream"], body["severity"]) == (
        "gate-person", "gate+yard", "critical")
    assert body["answer"]["description"] == "a person at the gate"
    assert json.loads(summary.payload)["count"] == 2
    assert not firing.retain


async def test_a_broker_that_is_down_fails_the_delivery_for_a_retry(tmp_path: Path) -> None:
    private = PrivateBroker(tmp_path)  # never started
    action = MqttAction("bus", MqttOptions(host=private.host, port=private.port, timeout=0.5))
    try:
        with pytest.raises(DeliveryError, match="no connection or acknowledgement") as info:
            await action.send(event(), "key-1")
        assert not info.value.permanent
        await private.start()
        async with subscribed(private.broker, "watcher/#") as sub:
            action.options = action.options.model_copy(update={"timeout": 30.0})
            action.link.options = action.options
            await action.send(event(), "key-1")
            await sub.wait_for(lambda: sub.messages)
        assert json.loads(sub.messages[0].payload)["idempotency_key"] == "key-1"
    finally:
        await action.aclose()
        await private.stop()


async def test_tls_with_a_ca_file(tmp_path: Path) -> None:
    cert, key = self_signed_cert(tmp_path)
    private = PrivateBroker(tmp_path, tls=(cert, key))
    await private.start()
    trusting = MqttAction("bus", MqttOptions(host="localhost", port=private.port,
                                             tls={"ca_file": str(cert)}))
    distrusting = MqttAction("bus", MqttOptions(host="localhost", port=private.port, tls=True,
                                                timeout=2))
    try:
        assert trusting.options.broker_port == private.port
        assert MqttOptions(host="h", tls=True).broker_port == 8883
        await trusting.send(event(), "key-1")
        with pytest.raises(DeliveryError):
            await distrusting.send(event(), "key-2")
    finally:
        await trusting.aclose()
        await distrusting.aclose()
        await private.stop()
