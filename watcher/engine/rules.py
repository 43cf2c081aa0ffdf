"""The ``rules:`` section, rule packs (``include:``), and the sections rules name.

::

    RuleConfig            one scheduled question and when its answer is an alert
    └── confirm: ConfirmConfig    a second question asked before the rule may fire
    IncludeConfig         one `include:` entry: a rule pack file or glob, maybe bound
    RulePack              the contents of a rule pack file: `rules:` only
    StateConfig           `state:`: where alert state is kept

A rule in full::

    rules:
      - name: dock-occupied                 # unique slug
        stream: dock                        # or `streams: [dock, yard]`: one question
        every: 5s                           # or `cron: "*/5 * * * *"`; `jitter: 1s`
        window: 10s                         # the last 10 s of video (absent: latest frame)
        max_fps: 2                          # frames per second sampled from the window
        prompt: Is anyone at the loading dock?
        schema: {people: integer, person_present: boolean}     # see engine.schema
        when: person_present and people > 0                     # see engine.condition
        for: 3                              # 3 matching answers in a row (or `for: 30s`)
        cooldown: 5m                        # quiet time after it fired
        keep_firing_for: 30s                # stay firing through short gaps
        repeat_every: 1h                    # re-notify while it keeps firing
        severity: warning                   # info | warning | critical
        labels: {site: north}
        actions: [ops-slack]
        budget: {calls_per_hour: 120}       # see engine.budget
        confirm:                            # optional second opinion before firing
          model: big/model
          prompt: Is there really a person (not a shadow)?
          when: answer

``schema`` defaults to ``{answer: boolean}`` (a yes/no question) and ``when``
defaults to the schema's only boolean field, when it has exactly one;
otherwise ``when`` is required. ``model`` defaults to ``overshoot.model``.

**Rule packs** are YAML files holding a ``rules:`` list (and ``x-`` keys for
anchors), included from the main file; paths and globs are relative to the
main file's directory, and a glob takes the ``.yaml``/``.yml`` files it
matches (one that matches none is an error)::

    include:
      - rules/*.yaml                        # as written: the pack names its streams
      - path: rules/after-hours.yaml        # bound: every rule of the pack asks about
        stream: lobby                       #   `lobby` (or `streams: [a, b]`) and
        actions: [ops]                      #   notifies `ops`, whatever the pack says
      - {path: rules/after-hours.yaml, stream: garage, name_prefix: garage-}

A pack rule may leave ``stream`` out when its include entry binds one. Errors
inside a pack are reported at the pack's own file:line; loading lives in
:func:`watcher.config.parse_config`, the checks across sections in
:meth:`watcher.config.WatcherConfig.check_references`.

The ``include:`` entry and a rule's origin are defined in :mod:`watcher.engine.includes`,
the checks the fields share (and :func:`~watcher.engine.rulechecks.cron_trigger`) in
:mod:`watcher.engine.rulechecks`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from functools import cached_property
from typing import Annotated, Any

from apscheduler.triggers.cron import CronTrigger
from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from watcher.configbase import Section
from watcher.duration import Duration, format_duration
from watcher.engine.budget import BudgetConfig
from watcher.engine.condition import Condition
from watcher.engine.includes import IN_PACK, RuleOrigin
from watcher.engine.rulechecks import (
    PositiveDuration,
    Severity,
    condition_for,
    cron_trigger,
    for_value,
    max_fps_needs_window,
    scalar_labels,
    slug,
    stream_or_streams,
    text,
)
from watcher.engine.schema import DEFAULT_SCHEMA, expand_schema, schema_fields
from watcher.media.changes import DEFAULT_CHANGE_THRESHOLD
from watcher.store.config import DEFAULT_STATE_PATH, StateConfig
from watcher.store.database import MEMORY

__all__ = [
    "DEFAULT_STATE_PATH",
    "MEMORY",
    "ConfirmConfig",
    "RuleConfig",
    "RulePack",
    "StateConfig",
]

DEFAULT_HEARTBEAT_S = 60.0
"""The schedule of an ``on_change``/``on_alert`` rule that gives none."""


class _Question(Section):
    """What a rule and its confirm block share: a question, its answer's schema, a condition.

    Subclasses declare the fields (``prompt``, ``window``, ``max_fps``, ``schema``,
    ``when``) with their own descriptions; the checks and views are here.
    """

    @field_validator("max_fps", check_fields=False)
    @classmethod
    def _max_fps_needs_window(cls, value: float, info: ValidationInfo) -> float:
        return max_fps_needs_window(value, info)

    @field_validator("schema_", mode="before", check_fields=False)
    @classmethod
    def _expand_schema(cls, value: object) -> dict[str, Any]:
        return expand_schema(value)

    @field_validator("when", check_fields=False)
    @classmethod
    def _when_fits_schema(cls, value: str | None, info: ValidationInfo) -> str | None:
        return condition_for(value, info)

    @property
    def schema(self) -> dict[str, Any]:  # type: ignore[override]
        """The expanded, strict JSON Schema of the answer (``response_format``)."""
        return self.schema_  # type: ignore[attr-defined]

    @property
    def fields(self) -> dict[str, str]:
        """The answer's fields and their JSON types."""
        return schema_fields(self.schema_)  # type: ignore[attr-defined]

    @cached_property
    def condition(self) -> Condition:
        """``when``, compiled."""
        assert self.when is not None  # type: ignore[attr-defined]  # filled in by validation
        return Condition(self.when, self.fields)  # type: ignore[attr-defined]

    @property
    def window_ms(self) -> int | None:
        window = self.window  # type: ignore[attr-defined]
        return None if window is None else round(window * 1000)


class ConfirmConfig(_Question):
    """A second question, asked when a rule's answer matched, before the rule may fire."""

    model: str | None = Field(None, min_length=1, description="Model to ask (default: the "
                              "rule's model), e.g. a larger one than the rule's.")
    prompt: str = Field(description="The confirming question.")
    window: PositiveDuration | None = Field(
        None, description="How much recent video to show (absent: the latest frame).")
    max_fps: float = Field(1.0, gt=0, le=30, description="Frames per second sampled from the "
                           "window (only with window).")
    schema_: dict[str, Any] = Field(
        default_factory=lambda: dict(DEFAULT_SCHEMA), alias="schema", validate_default=True,
        description="The confirming answer's fields: shorthand or JSON Schema "
        "(default: {answer: boolean}).")
    when: str | None = Field(None, validate_default=True, description="Condition on the "
                             "confirming answer (default: its only boolean field).")

    model_config = ConfigDict(populate_by_name=True)

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        return text(value, "ask the confirming question")


class RuleConfig(_Question):
    """One scheduled question about one stream (or several), and when it is an alert."""

    model_config = ConfigDict(populate_by_name=True)

    name: str = Field(description="Unique slug naming the rule in alerts and logs.")
    description: str = Field("", description="What the rule is for, for people.")
    enabled: bool = Field(True, description="Set false to keep the rule but never run it.")
    stream: str | None = Field(None, min_length=1, description="The stream asked about.")
    streams: list[str] | None = Field(
        None, min_length=1, description="Several streams asked about in one question "
        "(a cross-camera question); instead of `stream`.")
    every: PositiveDuration | None = Field(
        None, description="Ask this often (5s, 1m); or give `cron`.")
    cron: str | None = Field(
        None, description="Ask on a 5-field crontab schedule ('*/5 * * * *', '0 9 * * mon-fri'"
        "; weekdays by name; times in UTC); instead of `every`.")
    jitter: Duration = Field(0.0, description="Delay each ask by up to this much at random, to "
                             "spread rules over time.")
    window: PositiveDuration | None = Field(
        None, description="How much recent video the model sees (10s); absent: the latest "
        "frame only.")
    max_fps: float = Field(1.0, gt=0, le=30, description="Frames per second sampled from the "
                           "window (only with window).")
    model: str | None = Field(None, min_length=1,
                              description="Model to ask (default: overshoot.model).")
    fallback_models: list[str] = Field(
        default_factory=list, description="Models to ask, in order, when the model is "
        "unavailable.")
    prompt: str = Field(description="The question asked about the video.")
    schema_: dict[str, Any] = Field(
        default_factory=lambda: dict(DEFAULT_SCHEMA), alias="schema", validate_default=True,
        description="The answer's fields: shorthand ({people: integer, note?: string}) or a "
        "JSON Schema object (default: {answer: boolean}).")
    when: str | None = Field(
        None, validate_default=True, description="Condition on the answer that makes it a "
        "match (people > 0 and person_present); default: the schema's only boolean field.")
    for_: int | timedelta | None = Field(
        None, alias="for", description="Fire only after this many matching answers in a row "
        "(3), or matching for this long (30s); default: the first match.")
    cooldown: Duration = Field(0.0, description="After the alert resolves, do not fire again "
                               "for this long.")
    keep_firing_for: Duration = Field(
        0.0, description="Keep firing this long after the answers stop matching "
        "(rides over a missed detection).")
    repeat_every: PositiveDuration | None = Field(
        None, description="Notify again this often while still firing (default: once).")
    severity: Severity = Field("warning", description="info, warning or critical.")
    labels: Annotated[dict[str, str], BeforeValidator(scalar_labels)] = Field(
        default_factory=dict, description="Extra key: value pairs carried by the alerts.")
    actions: list[str] = Field(default_factory=list,
                               description="Names of the actions (from `actions:`) notified.")
    skip_unchanged: bool = Field(
        False, description="Skip asking while the video has not changed since the last ask.")
    max_tokens: int = Field(300, ge=1, le=32_768,
                            description="Longest answer the model may give, in tokens.")
    timeout: PositiveDuration | None = Field(
        None, description="Deadline of one evaluation, model retries and fallbacks included "
        "(default: none; each request still has overshoot.timeout_seconds).")
    confirm: ConfirmConfig | None = Field(
        None, description="A second question asked before the rule may fire.")
    on_change: bool = Field(
        False, description="Also ask as soon as the picture of one of the rule's streams "
        "changes; the schedule stays as a heartbeat (default 1m).")
    change_threshold: float = Field(
        DEFAULT_CHANGE_THRESHOLD, gt=0, le=1, description="With on_change: the fraction of "
        "the picture that must change (of a 32x24 grey thumbnail, brightness removed; 0.01 "
        "= 1 %).")
    min_interval: PositiveDuration = Field(
        1.0, description="With on_change or on_alert: at most one triggered ask per this "
        "interval; triggers meanwhile coalesce into one follow-up ask.")
    on_alert: list[str] = Field(
        default_factory=list, description="Ask at once when one of these rules fires; the "
        "prompt may use {{ trigger.rule }}, {{ trigger.stream }} and "
        "{{ trigger.answer.FIELD }} (the default schedule is then a 1m heartbeat).")

    budget: BudgetConfig | None = Field(
        None, description="Caps on this rule's model calls or tokens per UTC hour and day "
        "({calls_per_hour, calls_per_day, tokens_per_hour, tokens_per_day, notify}); once "
        "spent, its asks are skipped until the window rolls.")

    _origin: RuleOrigin | None = PrivateAttr(None)

    @field_validator("name")
    @classmethod
    def _name_is_slug(cls, value: str) -> str:
        return slug(value)

    @field_validator("streams")
    @classmethod
    def _one_way_to_name_streams(cls, value: list[str] | None, info: ValidationInfo,
                                 ) -> list[str] | None:
        stream_or_streams(value, info)
        if value is not None and len(set(value)) != len(value):
            raise ValueError("names a stream twice")
        return value

    @field_validator("cron")
    @classmethod
    def _cron_is_valid(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if info.data.get("every") is not None:
            raise ValueError("give `every` or `cron`, not both")
        value = " ".join(value.split())
        cron_trigger(value, timezone="UTC")
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        return text(value, "ask a question, e.g. Is anyone at the loading dock?")

    @field_validator("for_", mode="before")
    @classmethod
    def _count_or_duration(cls, value: object) -> object:
        return for_value(value)

    @model_validator(mode="after")
    def _needs_streams_and_schedule(self, info: ValidationInfo) -> RuleConfig:
        if self.stream is None and self.streams is None:
            context = info.context if isinstance(info.context, Mapping) else {}
            hint = (" (or bind the pack's rules to streams in the `include:` entry: "
                    "{path: ..., stream: NAME})" if context.get(IN_PACK) else "")
            raise ValueError("needs `stream: NAME`, or `streams: [A, B]` for a cross-camera "
                             f"question{hint}")
        if self.every is None and self.cron is None:
            if not (self.on_change or self.on_alert):
                raise ValueError("needs a schedule: `every: 30s`, or `cron: '*/5 * * * *'` "
                                 "(or `on_change: true`, with a 1m heartbeat)")
            self.every = DEFAULT_HEARTBEAT_S
        if self.name in self.on_alert:
            raise ValueError("on_alert names the rule itself")
        if self.on_alert:
            from watcher.actions.templates import compile_template

            try:
                compile_template(self.prompt)
            except ValueError as exc:
                raise ValueError(f"prompt: {exc}") from None
        return self

    # --- views ---

    @property
    def origin(self) -> RuleOrigin | None:
        """Where the rule was written (set when loaded from a file)."""
        return self._origin

    def set_origin(self, origin: RuleOrigin) -> None:
        self._origin = origin

    @property
    def stream_names(self) -> list[str]:
        """The streams asked about, in order (one, unless a cross-camera question)."""
        return list(self.streams) if self.streams is not None else [str(self.stream)]

    @property
    def trigger(self) -> str:
        """The schedule in words: ``every 5s``, ``cron '*/5 * * * *'`` (+ jitter)."""
        text = (f"every {format_duration(self.every)}" if self.every is not None
                else f"cron {self.cron!r}")
        return text + (f" (jitter {format_duration(self.jitter)})" if self.jitter else "")

    def cron_trigger(self, timezone: object = None) -> CronTrigger | None:
        """The APScheduler trigger of ``cron`` (None for an ``every`` rule)."""
        return None if self.cron is None else cron_trigger(self.cron, timezone)

    @property
    def for_count(self) -> int | None:
        """``for`` as a count of matching answers in a row (None if a duration or unset)."""
        return self.for_ if isinstance(self.for_, int) else None

    @property
    def for_seconds(self) -> float | None:
        """``for`` as seconds of matching (None if a count or unset)."""
        return self.for_.total_seconds() if isinstance(self.for_, timedelta) else None

    @property
    def for_ms(self) -> int | None:
        seconds = self.for_seconds
        return None if seconds is None else round(seconds * 1000)

    def models(self, default: str) -> list[str]:
        """The models to ask, in order: the rule's (or ``default``), then its fallbacks."""
        return list(dict.fromkeys([self.model or default, *self.fallback_models]))


class RulePack(Section):
    """A rule pack file: a ``rules:`` list (top-level ``x-`` keys are free for anchors)."""

    rules: list[RuleConfig] = Field(default_factory=list, description="The pack's rules.")

    @model_validator(mode="before")
    @classmethod
    def _drop_extension_keys(cls, data: object) -> object:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not str(k).startswith("x-")}
        return data
