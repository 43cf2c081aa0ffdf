"""The ``streams:`` section: one live source each, and what kind of source a string names.

A source is a video file (relative to the config file), an rtsp(s):// or
http(s):// URL, a camera (``/dev/video0``, ``device:0``) or ``testsrc[:SPEC]``
(synthetic video). Validation checks what can be checked without opening it:
a file exists, a URL has a host, a testsrc spec parses.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationInfo, field_validator

from watcher.config.files import RELATIVE_HINT, show_path
from watcher.configbase import _SCHEME, BASE_DIR, Section, redact_source
from watcher.media.testsrc import parse_spec

SourceKind = Literal["file", "rtsp", "http", "device", "testsrc"]
NETWORK_KINDS: frozenset[str] = frozenset({"rtsp", "http"})
CODECS = {"vp8": "video/VP8", "h264": "video/H264"}

_SLUG = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_SCHEME_KINDS: dict[str, SourceKind] = {
    "rtsp": "rtsp", "rtsps": "rtsp", "http": "http", "https": "http",
}


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
    hint = RELATIVE_HINT if relative else ""
    shown = show_path(path)
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


def _base_dir(info: ValidationInfo) -> Path:
    context = info.context if isinstance(info.context, Mapping) else {}
    base = context.get(BASE_DIR)
    return Path(base) if base is not None else Path.cwd()


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

