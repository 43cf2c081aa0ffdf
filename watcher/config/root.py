"""The whole config file: :class:`WatcherConfig`, one field per section.

Conventions (after Frigate's config): one model per YAML section, deriving
from :class:`~watcher.configbase.Section` (``extra="forbid"``: a typo is an
error, with a "did you mean"); ``Field(description=...)`` on every option;
cross-field checks are small named validators without side effects.
Durations use :data:`watcher.duration.Duration`. Any string value may use
``${VAR}`` and ``${VAR:-default}`` (see :mod:`watcher.yamlfile`). Top-level
keys starting with ``x-`` are ignored: a place for YAML anchors
(``x-camera: &camera {...}``).

Checks that span items or sections (unique names, "unknown stream 'x'") live
in :meth:`WatcherConfig.check_references`, which returns ``(loc, message)``
pairs; :func:`~watcher.config.load_config` maps each ``loc`` to the line it
came from. The helpers of :mod:`watcher.config.references` build those pairs.

**Adding a section** (``rules``, ``actions``, ...): write its model deriving
from :class:`~watcher.configbase.Section` (in this package, or in its own
package when it grows), add one field to :class:`WatcherConfig` with a
description and a default (or none, if the section is required), mention it
in :meth:`WatcherConfig.summary`, and if it names other items, extend
:meth:`WatcherConfig.check_references`::

    rules: list[RuleConfig] = Field(default_factory=list, description="...")

    def check_references(self) -> list[Problem]:
        problems = [...]  # the existing checks
        streams = self.stream_names
        for i, rule in enumerate(self.rules):
            problems += reference_problems(("rules", i, "stream"), rule.stream, streams)
        return problems

A model built in code keeps ``include`` but reads no files (rule packs are
read by :func:`~watcher.config.parse_config`, see :mod:`watcher.config.packs`).

Secrets (the API key, upstream keys, passwords and tokens in source URLs,
the secret options of actions: see each options model's ``secrets()``, the
password in ``state.url``) are hidden from ``repr``/``str`` of the models
and registered with :func:`watcher.logs.register_secret` by
:func:`~watcher.config.load_config`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from watcher.actions.config import ActionConfig
from watcher.cluster.config import ClusterConfig
from watcher.config.overshoot import OvershootConfig
from watcher.config.references import (
    binding_problems,
    duplicate_names,
    duplicate_rules,
    notify_problems,
    reference_problems,
)
from watcher.config.streams import StreamConfig
from watcher.configbase import DEFER_CHECKS, Section, source_secrets
from watcher.configerrors import Problem
from watcher.console.config import ClipsConfig
from watcher.duration import format_duration
from watcher.engine.includes import IncludeEntry
from watcher.engine.rules import ConfirmConfig, RuleConfig
from watcher.logs import register_secret
from watcher.observe.config import StatusConfig
from watcher.store.config import StateConfig
from watcher.store.database import parse_location
from watcher.yamlfile import Loc, format_loc


class WatcherConfig(Section):
    """The whole config file."""

    overshoot: OvershootConfig = Field(
        default_factory=OvershootConfig,
        description="The Overshoot API (cloud, or the embedded server).")
    streams: list[StreamConfig] = Field(
        default_factory=list, description="Live video sources to keep published.")
    rules: list[RuleConfig] = Field(
        default_factory=list, description="Scheduled questions about the streams, and when "
        "an answer is an alert.")
    include: list[IncludeEntry] = Field(
        default_factory=list, description="Rule pack files or globs (rules/*.yaml), relative "
        "to this file, whose rules join `rules`; an entry {path, stream|streams, actions, "
        "name_prefix} binds the pack's rules.")
    actions: dict[str, ActionConfig] = Field(
        default_factory=dict, description="Named places alerts are sent (type: webhook, "
        "slack, email or mqtt, with its options), referred to by rules' `actions`.")
    state: StateConfig = Field(
        default_factory=dict, validate_default=True,  # type: ignore[arg-type]
        description="Where alert state is kept across restarts.")
    status: StatusConfig = Field(
        default_factory=StatusConfig,
        description="The daemon's HTTP listener for /healthz, /readyz, Prometheus /metrics "
        "and /status (read by `watcher status`); off unless enabled.")
    clips: ClipsConfig = Field(
        default_factory=ClipsConfig,
        description="The short evidence video kept with each firing event.")
    cluster: ClusterConfig | None = Field(
        None, description="Cluster mode: every `watcher run` started with this config (and "
        "one PostgreSQL `state.url`) shares the cameras; {instance_id, heartbeat, lease}.")

    @model_validator(mode="before")
    @classmethod
    def _drop_extension_keys(cls, data: object) -> object:
        """Top-level keys starting with ``x-`` are free for YAML anchors (as in Compose)."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not str(k).startswith("x-")}
        return data

    @field_validator("include", mode="before")
    @classmethod
    def _one_include(cls, value: object) -> object:
        """``include: rules/*.yaml`` is a list of one."""
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _references_resolve(self, info: ValidationInfo) -> WatcherConfig:
        context = info.context if isinstance(info.context, Mapping) else {}
        if context.get(DEFER_CHECKS):
            return self
        problems = self.check_references()
        if problems:
            raise ValueError("; ".join(f"{format_loc(loc)}: {text}" for loc, text in problems))
        return self

    def check_references(self) -> list[Problem]:
        """Checks across items and sections, as ``(loc, message)`` pairs (none: all good).

        Runs after every section validated. :func:`~watcher.config.load_config`
        reports each pair at the line of ``loc``; a model built in code raises them
        as one ``ValueError``. Later sections extend this (call ``super()`` in
        subclasses).
        """
        problems = duplicate_names(self.streams, ("streams",), "stream")
        problems += duplicate_rules(self.rules)
        streams, actions = self.stream_names, list(self.actions)
        for index, entry in enumerate(self.include):
            problems += binding_problems(("include", index), entry.stream, entry.streams,
                                         entry.actions, streams, actions)
        for index, rule in enumerate(self.rules):
            bound = rule.origin.bound if rule.origin is not None else frozenset()
            own_streams = not bound & {"stream", "streams"}  # else checked at the include
            problems += binding_problems(
                ("rules", index), rule.stream if own_streams else None,
                rule.streams if own_streams else None,
                None if "actions" in bound else rule.actions, streams, actions)
            problems += self._window_problems(("rules", index), rule)
            problems += self._trigger_problems(("rules", index), rule)
            if rule.confirm is not None:
                problems += self._window_problems(("rules", index, "confirm"), rule.confirm)
            if rule.budget is not None:
                problems += notify_problems(("rules", index, "budget"), rule.budget, actions)
        for model, budget in self.overshoot.budgets.items():
            problems += notify_problems(("overshoot", "budgets", model), budget, actions)
        if self.cluster is not None and parse_location(
                self.state.location).get_backend_name() != "postgresql":
            problems.append((("cluster",), "cluster mode needs a database every instance "
                             "shares: set state.url: postgresql://user:password@host:5432/db"))
        return problems

    def _trigger_problems(self, loc: Loc, rule: RuleConfig) -> list[Problem]:
        """``on_alert`` names rules that exist; ``on_change`` needs streams published here."""
        problems: list[Problem] = []
        names = [r.name for r in self.rules]
        for index, leader in enumerate(rule.on_alert):
            problems += reference_problems((*loc, "on_alert", index), leader, names, "rule")
        if rule.on_change:
            pulled = [s.name for s in self.streams
                      if s.pull and s.name in rule.stream_names]
            if pulled:
                problems.append(((*loc, "on_change"), f"stream {pulled[0]!r} is pulled by the "
                                 "API server (pull: true), so watcher sees none of its frames "
                                 "to notice a change; use a schedule for it, or publish it "
                                 "from here (remove pull)"))
        return problems

    def _window_problems(self, loc: Loc, question: RuleConfig | ConfirmConfig,
                         ) -> list[Problem]:
        if not self.overshoot.is_embedded or question.window is None:
            return []
        embedded = self.overshoot.embedded
        problems: list[Problem] = []
        if question.window > embedded.retention_seconds:
            problems.append(((*loc, "window"), f"{format_duration(question.window)} is longer "
                             "than the embedded server keeps frames (overshoot.embedded."
                             f"retention_seconds: {format_duration(embedded.retention_seconds)})"))
        stored = embedded.max_stored_fps
        if stored and question.max_fps is not None and question.max_fps > stored:
            problems.append(((*loc, "max_fps"), f"{question.max_fps:g} is more frames per "
                             "second than the embedded server keeps (overshoot.embedded."
                             f"max_stored_fps: {stored:g}); lower it, or raise max_stored_fps"))
        return problems

    @property
    def stream_names(self) -> list[str]:
        return [stream.name for stream in self.streams]

    def stream(self, name: str) -> StreamConfig:
        for stream in self.streams:
            if stream.name == name:
                return stream
        raise KeyError(name)

    def summary(self) -> str:
        """A few words on what the config holds, e.g. ``2 streams, 3 rules, embedded server``.

        Rules and actions are counted when there are any; the status listener is named
        when enabled.
        """
        parts = [_count_enabled(self.streams, "stream")]
        if self.rules:
            parts.append(_count_enabled(self.rules, "rule"))
        if self.actions:
            parts.append(_count(len(self.actions), "action"))
        parts.append("embedded server" if self.overshoot.is_embedded else self.overshoot.base_url)
        if self.status.enabled:
            parts.append(f"status at {self.status.url}")
        if self.cluster is not None:
            parts.append("cluster mode")
        return ", ".join(parts)

    def register_secrets(self) -> None:
        """Tell the log redactor every secret in this config."""
        if self.overshoot.api_key is not None:
            register_secret(self.overshoot.api_key.get_secret_value())
        for upstream in self.overshoot.embedded.upstreams:
            if upstream.api_key is not None:
                register_secret(upstream.api_key.get_secret_value())
        for stream in self.streams:
            secrets = source_secrets(stream.source)
            for secret in secrets:
                register_secret(secret)
            if secrets:
                register_secret(stream.source)
        for action in self.actions.values():
            for secret in action.secrets():
                register_secret(secret)
        self.state.register_secrets()
        if self.status.token is not None:
            register_secret(self.status.token.get_secret_value())


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _count_enabled(items: list[Any], noun: str) -> str:
    disabled = sum(not item.enabled for item in items)
    return _count(len(items), noun) + (f" ({disabled} disabled)" if disabled else "")
