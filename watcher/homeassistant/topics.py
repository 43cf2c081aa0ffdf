"""The topics watcher publishes for Home Assistant, and the ones it listens to.

With the default ``base_topic`` (``watcher``)::

    watcher/availability                  online | offline (retained; offline is the will)
    watcher/{rule}/{stream}/state         ON | OFF: the alert fires (retained)
    watcher/{rule}/{stream}/attributes    JSON: answer, severity, started_at, ... (retained)
    watcher/{stream}/snapshot             JPEG of the newest evidence (retained)
    watcher/{rule}/switch                 ON | OFF: the rule runs (retained)
    watcher/{rule}/set                    ON | OFF: commands that switch the rule
    homeassistant/status                  online: Home Assistant (re)started

Rule and stream names are slugs; a cross-camera stream key ``a+b`` is
written ``a_b`` (``+`` is a wildcard in MQTT).
"""

from __future__ import annotations

from dataclasses import dataclass

from watcher.actions.mqtt_options import topic_level


@dataclass(frozen=True, slots=True)
class Topics:
    root: str = "watcher"

    @property
    def availability(self) -> str:
        return f"{self.root}/availability"

    @property
    def set_filter(self) -> str:
        return f"{self.root}/+/set"

    def alert_state(self, rule: str, stream_key: str) -> str:
        return f"{self.root}/{topic_level(rule)}/{topic_level(stream_key)}/state"

    def alert_attributes(self, rule: str, stream_key: str) -> str:
        return f"{self.root}/{topic_level(rule)}/{topic_level(stream_key)}/attributes"

    def snapshot(self, stream: str) -> str:
        return f"{self.root}/{topic_level(stream)}/snapshot"

    def switch_state(self, rule: str) -> str:
        return f"{self.root}/{topic_level(rule)}/switch"

    def switch_command(self, rule: str) -> str:
        return f"{self.root}/{topic_level(rule)}/set"

    def rule_of_command(self, topic: str) -> str | None:
        """The rule a ``{root}/{rule}/set`` topic commands, else None."""
        head, sep, rest = topic.partition(self.root + "/")
        if head or not sep:
            return None
        rule, _, tail = rest.partition("/")
        return rule if tail == "set" and rule else None


def ha_status_topic(prefix: str) -> str:
    return f"{prefix}/status"
