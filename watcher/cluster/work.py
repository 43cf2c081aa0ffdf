"""A config's camera groups, and the part of the config the groups an instance owns make up.

The daemon runs keepers for :func:`owned_streams` and rules for
:func:`owned_rules` only; the coordinator decides which groups those are.
A rule belongs to the group of its streams (they are all in one group, by
construction); a rule naming a disabled stream belongs to no group and runs
nowhere, as it could never be answered.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from watcher.cluster.groups import CameraGroup, camera_groups, group_of

if TYPE_CHECKING:
    from watcher.config import StreamConfig, WatcherConfig
    from watcher.engine.rules import RuleConfig


def config_groups(config: WatcherConfig) -> list[CameraGroup]:
    """The camera groups of the enabled streams, tied by the enabled rules."""
    streams = [s.name for s in config.streams if s.enabled]
    rules = [r for r in config.rules if r.enabled]
    by_name = {r.name: r for r in rules}
    # A rule asked when another fires (on_alert) runs where the leader runs: tie their
    # streams into one group.
    follow_ups = [[*r.stream_names, *by_name[leader].stream_names]
                  for r in rules for leader in r.on_alert if leader in by_name]
    return camera_groups(streams, [r.stream_names for r in rules] + follow_ups)


def rule_group(rule: RuleConfig, groups: dict[str, str]) -> str | None:
    """The group id of ``rule`` (``groups``: stream -> group id), or None if it has none."""
    found = {groups.get(name) for name in rule.stream_names}
    if len(found) != 1 or None in found:
        return None
    return found.pop()


def owned_streams(config: WatcherConfig, owned: Collection[str]) -> list[StreamConfig]:
    groups = group_of(config_groups(config))
    return [s for s in config.streams if s.enabled and groups.get(s.name) in owned]


def owned_rules(config: WatcherConfig, owned: Collection[str]) -> list[RuleConfig]:
    groups = group_of(config_groups(config))
    return [r for r in config.rules if r.enabled and rule_group(r, groups) in owned]
