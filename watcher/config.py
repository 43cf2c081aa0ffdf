"""The one YAML file users run watcher from: its models and :func:`load_config`.

::

    WatcherConfig
    ├── overshoot: OvershootConfig        the API (cloud URL, or `embedded`), key, default model
    │   └── embedded: EmbeddedServerConfig    options of the in-process server
    ├── streams: [StreamConfig]           live sources kept published (or pulled by the API)
    ├── rules: [RuleConfig]               scheduled questions and their alert conditions
    ├── include: [IncludeConfig]          rule pack files whose rules join `rules`
    ├── actions: {name: ActionConfig}     where alerts go (webhook, slack, email, mqtt)
    ├── state: StateConfig                the state database (SQLite file or PostgreSQL)
    ├── status: StatusConfig              health, metrics, status and the console (watcher.observe)
    ├── clips: ClipsConfig                evidence clips kept with alert events (watcher.console)
    └── cluster: ClusterConfig            several instances sharing the cameras (watcher.cluster)

The rule-related models live in :mod:`watcher.engine.rules` (they derive from
:class:`Section`, so that module is imported at the bottom of this one).

Conventions (after Frigate's config): one model per YAML section, deriving
from :class:`Section` (``extra="forbid"``: a typo is an error, with a "did you
mean"); ``Field(description=...)`` on every option; cross-field checks are
small named validators without side effects. Durations use
:data:`watcher.duration.Duration`. Any string value may use ``${VAR}`` and
``${VAR:-default}`` (see :mod:`watcher.yamlfile`). Top-level keys starting
with ``x-`` are ignored: a place for YAML anchors (``x-camera: &camera {...}``).

Checks that span items or sections (unique names, "unknown stream 'x'") live
in :meth:`WatcherConfig.check_references`, which returns ``(loc, message)``
pairs; :func:`load_config` maps each ``loc`` to the line it came from. Helpers
:func:`duplicate_names` and :func:`reference_problems` build those pairs.

**Adding a section** (``rules``, ``actions``, ...): write its model deriving
from :class:`Section` (here, or in its own package when it grows), add one
field to :class:`WatcherConfig` with a description and a default (or none, if
the section is required), mention it in :meth:`WatcherConfig.summary`, and if
it names other items, extend :meth:`WatcherConfig.check_references`::

    rules: list[RuleConfig] = Field(default_factory=list, description="...")

    def check_references(self) -> list[Problem]:
        problems = [...]  # the existing checks
        streams = self.stream_names
        for i, rule in enumerate(self.rules):
            problems += reference_problems(("rules", i, "stream"), rule.stream, streams)
        return problems

Rule packs (``include:``) are read by :func:`parse_config` after the main
file validated: each pack's rules are validated on their own (errors name the
pack's file:line) and appended to ``rules``; each rule remembers where it was
written (:attr:`~watcher.engine.rules.RuleConfig.origin`), which is how a
problem found by :meth:`WatcherConfig.check_references` is reported in the
right file. A model built in code keeps ``include`` but reads no files.

Secrets (the API key, upstream keys, passwords and tokens in source URLs,
the secret options of actions: see each options model's ``secrets()``, the
password in ``state.url``) are hidden from ``repr``/``str`` of the models
and registered with :func:`watcher.logs.register_secret` by
:func:`load_config`.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from glob import glob
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from watcher.actions.config import ActionConfig
from watcher.cluster.config import ClusterConfig
from watcher.configbase import (
    _SCHEME,
    BASE_DIR,
    DEFER_CHECKS,
    Section,
    redact_source,
    source_secrets,
)
from watcher.configerrors import (
    Problem,
    did_you_mean,
    validation_messages,
)
from watcher.console.config import ClipsConfig
from watcher.duration import Duration, format_duration
from watcher.engine import rules as _rules
from watcher.engine.budget import BudgetConfig
from watcher.engine.modelcheck import ServedModels, model_problems
from watcher.errors import ConfigError
from watcher.logs import register_secret
from watcher.media.testsrc import parse_spec
from watcher.observe.config import StatusConfig
from watcher.server.backends.upstream import UpstreamSettings
from watcher.server.settings import ServerSettings
from watcher.store.database import parse_location
from watcher.yamlfile import Loc, YamlDocument, format_loc, read_yaml

__all__ = [
    "BASE_DIR",
    "DEFER_CHECKS",
    "EMBEDDED",
    "EmbeddedServerConfig",
    "OvershootConfig",
    "Problem",
    "Section",
    "SourceKind",
    "StreamConfig",
    "WatcherConfig",
    "classify_source",
    "duplicate_names",
    "load_config",
    "parse_config",
    "redact_source",
    "reference_problems",
    "source_secrets",
]

EMBEDDED = "embedded"
"""``overshoot.base_url`` value meaning: run the embedded server in-process."""
DEFAULT_MODEL = "local/vision"
SourceKind = Literal["file", "rtsp", "http", "device", "testsrc"]
NETWORK_KINDS: frozenset[str] = frozenset({"rtsp", "http"})
CODECS = {"vp8": "video/VP8", "h264": "video/H264"}

_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_SCHEME_KINDS: dict[str, SourceKind] = {
    "rtsp": "rtsp", "rtsps": "rtsp", "http": "http", "https": "http",
}

# --- sources -------------------------------------------------------------------------------

def classify_source(source: str) -> SourceKind:
    """What kind of source ``source`` names (no file-system access).

    ``testsrc``/``testsrc:SPEC`` is synthetic video, ``/dev/...`` and
    ``device:N`` a camera, ``rtsp(s)://`` and ``http(s)://`` URLs network
    sources; anything else is a file path. Raises ``ValueError`` for other URLs.
    """
    if source == "testsrc" or source.startswith("testsrc:"):
        return "testsrc"
    if source.startswith(("/dev/", "device:")):
        return "device"
    match = _SCHEME.match(source)
    if match:
        kind = _SCHEME_KINDS.get(match.group(1).lower())
        if kind is None:
            raise ValueError(
                f"unsupported URL scheme {match.group(1)!r}: use rtsp://, rtsps://, http:// "
                "or https:// (a local file is a plain path)")
        return kind
    return "file"


def _check_url(source: str) -> None:
    try:
        parts = urlsplit(source)
        port = parts.port
    except ValueError:
        raise ValueError("is not a valid URL (check the host and port)") from None
    if not parts.hostname:
        raise ValueError("URL has no host")
    if port == 0:
        raise ValueError("URL has port 0")


def _check_device(source: str) -> None:
    if source.startswith("device:") and not source[len("device:"):].isdigit():
        raise ValueError("a camera is device:N with N a number (device:0), or a /dev/video* path")


def _existing_file(source: str, base_dir: Path) -> str:
    path = Path(source).expanduser()
    relative = not path.is_absolute()
    path = Path(os.path.normpath(base_dir / path))
    hint = " (relative paths are resolved against the config file's directory)" if relative else ""
    shown = _show_path(path)
    try:
        is_dir = path.is_dir()
        exists = is_dir or path.exists()
    except (OSError, ValueError):
        raise ValueError(f"cannot use {shown} as a file path{hint}") from None
    if not exists:
        raise ValueError(f"file not found: {shown}{hint}")
    if is_dir:
        raise ValueError(f"{shown} is a directory, not a video file")
    return str(path)


def _show_path(path: Path) -> str:
    text = str(path)
    if text.isprintable() and len(text) <= 200:
        return text
    text = repr(text)
    return text if len(text) <= 200 else text[:197] + "..."


def _base_dir(info: ValidationInfo) -> Path:
    context = info.context if isinstance(info.context, Mapping) else {}
    base = context.get(BASE_DIR)
    return Path(base) if base is not None else Path.cwd()


# --- sections ------------------------------------------------------------------------------

class StreamConfig(Section):
    """One live source that the daemon keeps published (or the API server pulls)."""

    name: str = Field(description="Unique slug naming the stream in rules and alerts "
                      "(lowercase letters, digits, '-' and '_').")
    source: str = Field(description="A video file (relative to the config file), an "
                        "rtsp(s):// or http(s):// URL, a camera (/dev/video0 or device:0), or "
                        "`testsrc[:SPEC]` for synthetic video.")
    enabled: bool = Field(True, description="Set false to keep the stream configured but idle.")
    pull: bool = Field(False, description="Let the API server pull the camera itself instead of "
                       "publishing it from here (rtsp(s):// and http(s):// sources only).")
    loop: bool = Field(False, description="Start a file source over when it ends (files only).")
    fps: float = Field(5.0, gt=0, le=60, description="Frames per second sent to the API.")
    width: int = Field(640, ge=32, le=4096, description="Frame width in pixels (even).")
    height: int = Field(480, ge=32, le=4096, description="Frame height in pixels (even).")
    codec: Literal["vp8", "h264"] = Field(
        "vp8", description="Video codec when publishing over WebRTC: vp8 costs about half "
        "the CPU of h264.")
    passthrough: Literal["auto", "always", "never"] = Field(
        "auto", description="Publish an H.264 source's packets as they are instead of "
        "decoding and re-encoding them (several times less CPU). auto: when the source is "
        "Constrained Baseline H.264 at this width/height and no faster than fps; always: "
        "any H.264 source, whatever its size and rate; never: always re-encode to `codec`. "
        "The log and `watcher status` say which path the stream took.")
    description: str = Field("", description="What the camera looks at, for the people "
                             "reading the config and `watcher status`.")

    @field_validator("name")
    @classmethod
    def _name_is_slug(cls, value: str) -> str:
        if not _SLUG.fullmatch(value):
            raise ValueError(
                "must be a slug of at most 63 lowercase letters, digits, '-' and '_', "
                "starting with a letter or digit")
        return value

    @field_validator("source")
    @classmethod
    def _source_is_usable(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip()
        if not value:
            raise ValueError("is empty: give a file, an rtsp:// or http(s):// URL, a camera "
                             "(/dev/video0, device:0) or testsrc")
        kind = classify_source(value)
        if kind in NETWORK_KINDS:
            _check_url(value)
        elif kind == "device":
            _check_device(value)
        elif kind == "file":
            return _existing_file(value, _base_dir(info))
        elif kind == "testsrc":
            parse_spec(value)  # a ValueError names the bad option
        return value

    @field_validator("pull")
    @classmethod
    def _pull_needs_network_source(cls, value: bool, info: ValidationInfo) -> bool:
        kind = _kind_of(info.data.get("source"))
        if value and kind is not None and kind not in NETWORK_KINDS:
            raise ValueError(f"only rtsp(s):// and http(s):// sources can be pulled by the API "
                             f"server, not a {kind} source (remove `pull`)")
        return value

    @field_validator("loop")
    @classmethod
    def _loop_needs_file(cls, value: bool, info: ValidationInfo) -> bool:
        kind = _kind_of(info.data.get("source"))
        if value and kind is not None and kind != "file":
            raise ValueError(f"only file sources can loop, not a {kind} source (remove `loop`)")
        return value

    @field_validator("passthrough")
    @classmethod
    def _passthrough_needs_encoded_source(cls, value: str, info: ValidationInfo) -> str:
        kind = _kind_of(info.data.get("source"))
        if value == "always" and kind in ("testsrc", "device"):
            raise ValueError(f"a {kind} source has no H.264 to pass through (use auto or "
                             "never)")
        return value

    @field_validator("width", "height")
    @classmethod
    def _even(cls, value: int) -> int:
        if value % 2:
            raise ValueError("must be an even number (video encoders need it)")
        return value

    @property
    def kind(self) -> SourceKind:
        return classify_source(self.source)

    @property
    def testsrc_spec(self) -> str | None:
        """The synthetic scene's spec string (``testsrc:SPEC`` -> SPEC), if any."""
        return self.source.partition(":")[2] if self.kind == "testsrc" else None

    @property
    def display_source(self) -> str:
        """``source`` with credentials masked: safe to log and show."""
        return redact_source(self.source)

    @property
    def codec_mime(self) -> str:
        return CODECS[self.codec]

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        for name, value in super().__repr_args__():
            yield name, (self.display_source if name == "source" else value)


def _kind_of(source: object) -> SourceKind | None:
    if not isinstance(source, str):
        return None
    try:
        return classify_source(source)
    except ValueError:
        return None


class EmbeddedServerConfig(Section):
    """Options of the Overshoot-compatible server started in-process (`base_url: embedded`)."""

    host: str = Field("127.0.0.1", min_length=1, description="Address to listen on.")
    port: int = Field(0, ge=0, le=65535, description="Port to listen on; 0 picks a free one.")
    ttl_seconds: Duration = Field(45.0, ge=1, description="Lease length a keepalive renews to.")
    retention_seconds: Duration = Field(600.0, ge=1, description="How long frames are retained.")
    tombstone_seconds: Duration = Field(
        300.0, ge=0, description="How long an ended stream stays readable before it is a 404.")
    max_mb_per_stream: float = Field(
        40.0, gt=0, description="Memory cap for one stream's retained frames, in MB.")
    jpeg_quality: int = Field(
        80, ge=10, le=100, description="Highest JPEG quality frames are retained at.")
    max_stored_fps: float | None = Field(
        5.0, ge=0, allow_inf_nan=False, description="Most frames per second stored per "
        "stream, whatever the camera sends; windows can't be sampled faster. 0 or null: "
        "store every frame.")
    public_url: str | None = Field(
        None, description="Base URL publishers reach the server at (default: the one it "
        "listens on).")
    enable_vision: bool = Field(True, description="Serve the local/vision model.")
    forward_media_urls: bool = Field(
        False, description="Send http(s) image_url/video_url parts to upstream models as "
        "given (off: refused with a 400).")
    allow_private_sources: bool = Field(
        True, description="Let `pull: true` cameras live on loopback, private and link-local "
        "addresses (cameras are on private networks); false refuses them, as `watcher serve` "
        "does by default.")
    pull_connect_timeout_seconds: Duration = Field(
        15.0, gt=0, le=600, description="How long creating a pulled stream waits for the "
        "camera's first frame before it fails (the keeper then retries with backoff).")
    max_streams_per_key: int = Field(
        64, ge=1, description="Most active streams one API key may hold.")
    max_pulls: int = Field(16, ge=0, description="Most cameras the server pulls at once.")
    upstreams: list[UpstreamSettings] = Field(
        default_factory=list,
        description="OpenAI-compatible servers (Ollama, vLLM, ...) whose models the embedded "
        "server lists: {base_url, api_key, models: {listed-name: upstream-name}, ...}.")

    @field_validator("public_url")
    @classmethod
    def _public_url_is_http(cls, value: str | None) -> str | None:
        if value is not None:
            _check_http_url(value)
        return value

    def server_settings(self, api_keys: list[str]) -> ServerSettings:
        """The embedded server's settings, accepting ``api_keys``."""
        return ServerSettings(
            api_keys=api_keys,
            ttl_seconds=math.ceil(self.ttl_seconds),
            retention_seconds=math.ceil(self.retention_seconds),
            tombstone_seconds=math.ceil(self.tombstone_seconds),
            max_mb_per_stream=self.max_mb_per_stream,
            jpeg_quality=self.jpeg_quality,
            max_stored_fps=self.max_stored_fps,
            public_url=self.public_url,
            upstreams=self.upstreams,
            enable_vision=self.enable_vision,
            forward_media_urls=self.forward_media_urls,
            allow_private_sources=self.allow_private_sources,
            pull_connect_timeout_seconds=self.pull_connect_timeout_seconds,
            max_streams_per_key=self.max_streams_per_key,
            max_pulls=self.max_pulls,
        )


def _check_http_url(value: str) -> str:
    try:
        parts = urlsplit(value)
        _ = parts.port
    except ValueError:
        raise ValueError("is not a valid URL (check the host and port)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    if "@" in parts.netloc:
        raise ValueError("must not carry credentials (use api_key)")
    return value.rstrip("/")


class ModelPrice(Section):
    """What one model costs, for cost estimates (`watcher backtest`)."""

    input_per_mtok: float = Field(0.0, ge=0, description="Price of a million prompt tokens.")
    output_per_mtok: float = Field(0.0, ge=0,
                                   description="Price of a million completion tokens.")
    per_call: float = Field(0.0, ge=0, description="Price of one call, on top of tokens.")


class OvershootConfig(Section):
    """Where the Overshoot API is and how to talk to it."""

    base_url: str = Field(
        EMBEDDED, description="`embedded` runs an Overshoot-compatible server in-process (on "
        "a free port, with a random key); otherwise the API's URL, e.g. "
        "https://api.overshoot.ai/v1beta.")
    api_key: SecretStr | None = Field(
        None, validate_default=True, description="API key (ovs-...); required unless base_url "
        "is embedded, where it is the key the embedded server accepts (default: random).")
    model: str = Field(DEFAULT_MODEL, min_length=1,
                       description="Model rules use when they do not name one.")
    timeout_seconds: Duration = Field(
        30.0, gt=0, description="Deadline of one chat completion request; stream calls "
        "(create 15 s, keepalive and reads 10 s) keep their shorter deadlines unless this "
        "is shorter still.")
    embedded: EmbeddedServerConfig = Field(
        default_factory=EmbeddedServerConfig,
        description="Options of the embedded server; ignored unless base_url is embedded.")
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict, description="Per model: {input_per_mtok, output_per_mtok, "
        "per_call}, for the cost estimates of `watcher backtest`.")
    budgets: dict[str, BudgetConfig] = Field(
        default_factory=dict, description="Per model: caps on calls or tokens per UTC hour "
        "and day ({calls_per_hour, calls_per_day, tokens_per_hour, tokens_per_day, notify}), "
        "shared by every rule asking it; once spent, rules that ask it first are skipped "
        "until the window rolls.")

    @field_validator("base_url")
    @classmethod
    def _embedded_or_http(cls, value: str) -> str:
        value = value.strip()
        return value if value == EMBEDDED else _check_http_url(value)

    @field_validator("api_key")
    @classmethod
    def _key_for_remote_api(cls, value: SecretStr | None, info: ValidationInfo) -> SecretStr | None:
        remote = info.data.get("base_url", EMBEDDED) != EMBEDDED
        if value is not None and not value.get_secret_value().strip():
            if remote:
                raise ValueError("is empty (is its environment variable set?)")
            return None
        if value is None and remote:
            raise ValueError("required when base_url is not `embedded`; "
                             "e.g. api_key: ${OVERSHOOT_API_KEY}")
        return value

    @property
    def is_embedded(self) -> bool:
        return self.base_url == EMBEDDED


class WatcherConfig(Section):
    """The whole config file."""

    overshoot: OvershootConfig = Field(
        default_factory=OvershootConfig,
        description="The Overshoot API (cloud, or the embedded server).")
    streams: list[StreamConfig] = Field(
        default_factory=list, description="Live video sources to keep published.")
    rules: list[_rules.RuleConfig] = Field(
        default_factory=list, description="Scheduled questions about the streams, and when "
        "an answer is an alert.")
    include: list[_rules.IncludeEntry] = Field(
        default_factory=list, description="Rule pack files or globs (rules/*.yaml), relative "
        "to this file, whose rules join `rules`; an entry {path, stream|streams, actions, "
        "name_prefix} binds the pack's rules.")
    actions: dict[str, ActionConfig] = Field(
        default_factory=dict, description="Named places alerts are sent (type: webhook, "
        "slack, email or mqtt, with its options), referred to by rules' `actions`.")
    state: _rules.StateConfig = Field(
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

        Runs after every section validated. :func:`load_config` reports each
        pair at the line of ``loc``; a model built in code raises them as one
        ``ValueError``. Later sections extend this (call ``super()`` in subclasses).
        """
        problems = duplicate_names(self.streams, ("streams",), "stream")
        problems += _duplicate_rules(self.rules)
        streams, actions = self.stream_names, list(self.actions)
        for index, entry in enumerate(self.include):
            problems += _binding_problems(("include", index), entry.stream, entry.streams,
                                          entry.actions, streams, actions)
        for index, rule in enumerate(self.rules):
            bound = rule.origin.bound if rule.origin is not None else frozenset()
            own_streams = not bound & {"stream", "streams"}  # else checked at the include
            problems += _binding_problems(
                ("rules", index), rule.stream if own_streams else None,
                rule.streams if own_streams else None,
                None if "actions" in bound else rule.actions, streams, actions)
            problems += self._window_problems(("rules", index), rule)
            problems += self._trigger_problems(("rules", index), rule)
            if rule.confirm is not None:
                problems += self._window_problems(("rules", index, "confirm"), rule.confirm)
            if rule.budget is not None:
                problems += _notify_problems(("rules", index, "budget"), rule.budget, actions)
        for model, budget in self.overshoot.budgets.items():
            problems += _notify_problems(("overshoot", "budgets", model), budget, actions)
        if self.cluster is not None and parse_location(
                self.state.location).get_backend_name() != "postgresql":
            problems.append((("cluster",), "cluster mode needs a database every instance "
                             "shares: set state.url: postgresql://user:password@host:5432/db"))
        return problems

    def _trigger_problems(self, loc: Loc, rule: _rules.RuleConfig) -> list[Problem]:
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

    def _window_problems(self, loc: Loc, question: _rules.RuleConfig | _rules.ConfirmConfig,
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


# --- cross-reference helpers ---------------------------------------------------------------

def duplicate_names(items: Iterable[Any], loc: Loc, what: str, attr: str = "name") -> list[Problem]:
    """A problem at ``(*loc, i, attr)`` for every item whose name an earlier item took."""
    first: dict[str, int] = {}
    problems: list[Problem] = []
    for index, item in enumerate(items):
        name = getattr(item, attr)
        if name in first:
            other = format_loc((*loc, first[name]))
            problems.append(((*loc, index, attr), f"duplicate {what} name {name!r} (also {other})"))
        else:
            first[name] = index
    return problems


def reference_problems(loc: Loc, name: str, known: Iterable[str], what: str = "stream",
                       ) -> list[Problem]:
    """``[]`` if ``name`` is among ``known``, else one "unknown stream 'x'" problem at ``loc``."""
    known = list(known)
    if name in known:
        return []
    return [(loc, f"unknown {what} {name!r}" + did_you_mean(name, known))]


def _notify_problems(loc: Loc, budget: BudgetConfig, known_actions: list[str],
                     ) -> list[Problem]:
    """Unknown actions in a budget's ``notify``."""
    return [problem for index, name in enumerate(budget.notify)
            for problem in reference_problems((*loc, "notify", index), name, known_actions,
                                              "action")]


def _binding_problems(loc: Loc, stream: str | None, streams: list[str] | None,
                      actions: list[str] | None, known_streams: list[str],
                      known_actions: list[str]) -> list[Problem]:
    """Unknown streams and actions named at ``loc`` (a rule, or an include entry)."""
    problems: list[Problem] = []
    if stream is not None:
        problems += reference_problems((*loc, "stream"), stream, known_streams)
    for index, name in enumerate(streams or []):
        problems += reference_problems((*loc, "streams", index), name, known_streams)
    for index, name in enumerate(actions or []):
        if not known_actions:
            problems.append(((*loc, "actions", index), f"unknown action {name!r} (no actions "
                             "are configured: define them under `actions:`)"))
        else:
            problems += reference_problems((*loc, "actions", index), name, known_actions,
                                           "action")
    return problems


def _duplicate_rules(rules: list[_rules.RuleConfig]) -> list[Problem]:
    """Rule names given twice, wherever written: the message names the other place."""
    first: dict[str, int] = {}
    problems: list[Problem] = []
    for index, rule in enumerate(rules):
        if rule.name not in first:
            first[rule.name] = index
            continue
        other = rules[first[rule.name]]
        where = (other.origin.where if other.origin is not None
                 else format_loc(("rules", first[rule.name])))
        problems.append((("rules", index, "name"),
                         f"duplicate rule name {rule.name!r} (also {where})"))
    return problems


# --- loading -------------------------------------------------------------------------------

def load_config(
    path: str | os.PathLike[str],
    *,
    environ: Mapping[str, str] | None = None,
    model: type[WatcherConfig] = WatcherConfig,
    served_models: ServedModels | None = None,
) -> WatcherConfig:
    """Read, substitute, validate and cross-check the config file at ``path``.

    Raises :class:`~watcher.errors.ConfigError` (and nothing else) whose
    every message starts with ``path:line:``. ``environ`` defaults to
    ``os.environ``; ``model`` lets tests and tools validate with a subclass;
    ``served_models`` (a remote API's model ids, and how to name that API)
    checks the rules' model names against them (see :mod:`watcher.engine.modelcheck`).
    """
    name = os.fspath(path)
    text = _read_text(Path(name), name)
    base_dir = Path(os.path.abspath(name)).parent
    return parse_config(text, name=name, base_dir=base_dir, environ=environ, model=model,
                        served_models=served_models)


def parse_config(
    text: str,
    *,
    name: str = "<config>",
    base_dir: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    model: type[WatcherConfig] = WatcherConfig,
    served_models: ServedModels | None = None,
) -> WatcherConfig:
    """:func:`load_config` for text already read; ``name`` is what messages call it.

    Rule packs named by ``include:`` are read relative to ``base_dir`` (default:
    the working directory).
    """
    environ = os.environ if environ is None else environ
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    doc = read_yaml(text, name, environ)
    context = {BASE_DIR: base, DEFER_CHECKS: True}
    try:
        config = model.model_validate(doc.data, context=context)
    except ValidationError as exc:
        raise ConfigError(validation_messages(exc, doc, model)) from None
    for index, rule in enumerate(config.rules):
        rule.set_origin(_rules.RuleOrigin(name, doc.line_of(("rules", index)), ("rules", index)))
    loader = _PackLoader(config, doc, base, environ, context)
    for index, entry in enumerate(config.include):
        loader.include(index, entry)
    for loc, message in config.check_references():
        loader.report(loc, message)
    if not loader.found:  # model checks only make sense on an otherwise sound config
        available, source = served_models or (None, "the embedded server")
        for loc, message in model_problems(config, available, source=source):
            loader.report(loc, message)
    if loader.found:
        raise ConfigError(loader.messages())
    config.register_secrets()
    return config


# --- rule packs ----------------------------------------------------------------------------

MAX_PACK_FILES = 500
_GLOB_CHARS = re.compile(r"[*?\[]")
_PACK_SUFFIXES = (".yaml", ".yml")
_MAIN_FILE_WORDS = "a mapping of sections such as `overshoot:` and `streams:`"
_PACK_WORDS = "a rule pack: a mapping with a `rules:` list"


def included_files(config: WatcherConfig, config_path: Path) -> list[Path]:
    """The files the ``include:`` entries of ``config`` name right now (globs expanded).

    For noticing change on disk: a new file that a glob starts to match counts too.
    """
    base = config_path.parent
    files: list[Path] = []
    for entry in config.include:
        expanded = os.path.expanduser(entry.path)
        full = Path(os.path.normpath(base / expanded))
        files += _glob_packs(full, config_path) if _GLOB_CHARS.search(expanded) else [full]
    return files


def _glob_packs(pattern: Path, main: Path) -> list[Path]:
    """Rule pack files matching ``pattern``, sorted, never the main config file itself."""
    main_file = os.path.normpath(main)
    try:
        return sorted(
            Path(match) for match in glob(str(pattern), recursive=True)
            if match.endswith(_PACK_SUFFIXES) and os.path.isfile(match)
            and os.path.normpath(match) != main_file)
    except (OSError, ValueError):
        return []


class _PackLoader:
    """Reads the rule packs of one config, merging their rules and keeping every problem
    with the file (by order of first mention) and line it belongs to."""

    def __init__(self, config: WatcherConfig, doc: YamlDocument, base: Path,
                 environ: Mapping[str, str], context: dict[str, object]) -> None:
        self.config = config
        self.main = doc
        self.base = base
        self.environ = environ
        self.context = {**context, _rules.IN_PACK: True}
        self.docs: dict[str, YamlDocument | None] = {doc.name: doc}
        self.found: list[tuple[int, int, str]] = [(0, line, text) for line, text in doc.problems]

    def include(self, index: int, entry: _rules.IncludeConfig) -> None:
        loc: Loc = ("include", index, "path")
        try:
            files = self._files(entry.path)
        except ValueError as exc:
            self._add(self.main, loc, str(exc))
            return
        for path, shown in files:
            self._pack(index, entry, path, shown)

    def report(self, loc: Loc, message: str) -> None:
        """A :meth:`WatcherConfig.check_references` problem, placed in its rule's file."""
        rules = self.config.rules
        index = loc[1] if len(loc) >= 2 and loc[0] == "rules" else None
        origin = rules[index].origin if isinstance(index, int) and index < len(rules) else None
        if origin is not None:
            rest = loc[2:]
            if origin.include is not None and rest and rest[0] in origin.bound:
                self._add(self.main, ("include", origin.include, *rest), message)
                return
            doc = self.docs.get(origin.file)
            if doc is not None:
                self._add(doc, (*origin.loc, *rest), message)
                return
        self._add(self.main, loc, message)

    def messages(self) -> list[str]:
        ordered = [text for _, _, text in sorted(self.found, key=lambda item: item[:2])]
        return list(dict.fromkeys(ordered))

    # --- internals ---

    def _files(self, pattern: str) -> list[tuple[Path, str]]:
        expanded = os.path.expanduser(pattern)
        full = Path(os.path.normpath(self.base / expanded))
        hint = ("" if os.path.isabs(expanded)
                else " (relative paths are resolved against the config file's directory)")
        if _GLOB_CHARS.search(expanded):
            matches = _glob_packs(full, self.base / Path(self.main.name).name)
            if not matches:
                raise ValueError(f"matches no .yaml or .yml file: {_show_path(full)}{hint}")
            if len(matches) > MAX_PACK_FILES:
                raise ValueError(f"matches {len(matches)} files (at most {MAX_PACK_FILES})")
        else:
            try:
                is_dir, exists = full.is_dir(), full.exists()
            except (OSError, ValueError):
                raise ValueError(f"cannot use {_show_path(full)} as a file path") from None
            if not exists:
                raise ValueError(f"file not found: {_show_path(full)}{hint}")
            if is_dir:
                raise ValueError(f"{_show_path(full)} is a directory: name a file, or a glob "
                                 "such as rules/*.yaml")
            matches = [full]
        return [(path, self._shown(path, expanded)) for path in matches]

    def _shown(self, path: Path, pattern: str) -> str:
        """How messages name a pack: as the user would reach it from where they ran us."""
        if os.path.isabs(pattern):
            return str(path)
        relative = os.path.relpath(path, self.base)
        return os.path.normpath(os.path.join(os.path.dirname(self.main.name), relative))

    def _pack(self, index: int, entry: _rules.IncludeConfig, path: Path, shown: str) -> None:
        if shown not in self.docs:
            self.docs[shown] = self._read(path, shown)
        doc = self.docs[shown]
        if doc is None:  # unreadable: reported when first read
            return
        data = doc.data
        if isinstance(data, dict) and isinstance(data.get("rules"), list):
            data = {**data, "rules": [entry.bind(rule) for rule in data["rules"]]}
        try:
            pack = _rules.RulePack.model_validate(data, context=self.context)
        except ValidationError as exc:
            order = self._order(shown)
            self.found += [(order, _line(text, shown), text)
                           for text in validation_messages(exc, doc, _rules.RulePack)]
            return
        bound = frozenset(entry.bindings())
        for number, rule in enumerate(pack.rules):
            loc = ("rules", number)
            rule.set_origin(_rules.RuleOrigin(shown, doc.line_of(loc), loc, index, bound))
            self.config.rules.append(rule)

    def _read(self, path: Path, shown: str) -> YamlDocument | None:
        order = len(self.docs)
        try:
            doc = read_yaml(_read_text(path, shown), shown, self.environ)
        except ConfigError as exc:
            self.found += [(order, _line(text, shown), text.replace(_MAIN_FILE_WORDS, _PACK_WORDS))
                           for text in exc.problems]
            return None
        self.found += [(order, line, text) for line, text in doc.problems]
        return doc

    def _add(self, doc: YamlDocument, loc: Loc, message: str) -> None:
        self.found.append((self._order(doc.name), doc.line_of(loc), doc.message(loc, message)))

    def _order(self, name: str) -> int:
        return list(self.docs).index(name) if name in self.docs else len(self.docs)


def _line(message: str, name: str) -> int:
    """The line a ``name:line: ...`` message is at (0 if it names none)."""
    rest = message[len(name) + 1:] if message.startswith(name + ":") else ""
    digits = rest.split(":", 1)[0]
    return int(digits) if digits.isdigit() else 0


def _read_text(path: Path, name: str) -> str:
    """The text of the file at ``path`` (called ``name`` in messages), or a ConfigError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such file") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"{name}: cannot read: {reason}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{name}:{line}: not UTF-8 text") from None
