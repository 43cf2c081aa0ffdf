"""The ``mqtt`` action: publish each alert event to an MQTT broker.

Options: :mod:`watcher.actions.mqtt_options`. The payload is the webhook's
default JSON body (:func:`~watcher.actions.webhook.event_payload`, or
:func:`~watcher.actions.webhook.summary_payload` for a rate-limit summary)
with the delivery's ``idempotency_key`` inside, the same on every attempt, so
subscribers drop the repeats that QoS 1 allows.

Delivery goes through the outbox like every action: with QoS 1 or 2 a
delivery counts once the broker acknowledged it (PUBACK/PUBCOMP); a broker
that is down means a :class:`~watcher.actions.base.DeliveryError` and a
retry with backoff, so nothing is lost.

With ``discovery: true`` the same connection also serves Home Assistant
(:mod:`watcher.homeassistant`): availability, discovery configs, alert
states, snapshots and per-rule switches.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from watcher.actions.base import Action, register
from watcher.actions.mqtt_link import MqttLink
from watcher.actions.mqtt_options import MqttOptions, render_topic
from watcher.actions.templates import (
    DEFAULT_BODY,
    DEFAULT_TITLE,
    compile_template,
    event_context,
    render,
    summary_context,
)
from watcher.actions.webhook import event_payload, summary_payload, to_json
from watcher.engine.store import AlertEventRecord
from watcher.homeassistant.bridge import HomeAssistantBridge, SaveSwitch, rule_views
from watcher.homeassistant.topics import Topics

SUMMARY_TITLE = "{{ count }} alerts held back by the rate limit"
SUMMARY_BODY = "{% for e in events %}{{ e.rule }} on {{ e.stream }}: {{ e.status }}\n{% endfor %}"


@register
class MqttAction(Action):
    """Publishes events to :attr:`MqttOptions.topic` on :attr:`MqttOptions.host`."""

    type = "mqtt"
    options: MqttOptions

    def __init__(self, name: str, options: MqttOptions, *, http: Any = None) -> None:
        super().__init__(name, options)
        self.topics = Topics(options.base_topic)
        self.link = MqttLink(name, options, availability_topic=(
            self.topics.availability if options.discovery else None))
        self._title = compile_template(DEFAULT_TITLE)
        self._body = compile_template(DEFAULT_BODY)
        self._summary_title = compile_template(SUMMARY_TITLE)
        self._summary_body = compile_template(SUMMARY_BODY)
        self.bridge: HomeAssistantBridge | None = None
        self._engine: Any = None

    def bind(self, engine: Any, rules: Sequence[Any], *, public_url: str | None = None,
             save_switch: SaveSwitch | None = None) -> None:
        """Connect now and, with ``discovery``, serve Home Assistant the rules that notify
        through this action (called at start and after every reload)."""
        if self.options.discovery:
            if self.bridge is None:
                self.bridge = HomeAssistantBridge(
                    self.link, prefix=self.options.discovery_prefix, topics=self.topics,
                    answer_sensors=self.options.answer_sensors, public_url=public_url,
                    save_switch=save_switch)
                engine.observers.append(self.bridge.observe)
                self._engine = engine
            self.bridge.bind(engine, rule_views([r for r in rules if r.enabled], self.name))
        self.link.start()

    async def send(self, event: AlertEventRecord, idempotency_key: str) -> None:
        context = event_context(event, self.name)
        payload = event_payload(context, self._render(self._title, context, "title"),
                                self._render(self._body, context, "body"))
        payload["idempotency_key"] = idempotency_key
        await self.link.publish(self.topic_for(context), to_json(payload),
                                retain=self.options.retain)

    async def send_summary(self, events: list[AlertEventRecord], idempotency_key: str) -> None:
        context = summary_context(events, self.name)
        payload = summary_payload(context, self._render(self._summary_title, context, "title"),
                                  self._render(self._summary_body, context, "body"))
        payload["idempotency_key"] = idempotency_key
        topic_context = {**context, "status": "summary", "kind": "summary"}
        await self.link.publish(self.topic_for(topic_context), to_json(payload),
                                retain=self.options.retain)

    def topic_for(self, context: dict[str, Any]) -> str:
        return render_topic(self.options.topic, {k: str(context.get(k) or "")
                                                 for k in ("rule", "stream", "severity",
                                                           "status", "kind")})

    def _render(self, template: Any, context: dict[str, Any], what: str) -> str:
        return render(template, context, action=self.name, what=what)

    async def aclose(self) -> None:
        if self.bridge is not None and self.bridge.observe in self._engine.observers:
            self._engine.observers.remove(self.bridge.observe)
        await self.link.aclose()
