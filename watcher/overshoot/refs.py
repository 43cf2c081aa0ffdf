"""Parse and build ``ovs://streams/{id}?...`` frame references.

The one place that knows the grammar: the embedded server parses with it and
the client builds with it, so both always agree.

* ``image_url`` (one frame): exactly one of ``frame_index``, ``timestamp_ms``,
  ``offset_ms``; optional ``tolerance_ms`` (> 0, default 100) and
  ``direction`` (``nearest``/``forward``/``backward``), both ignored (not
  even checked) with ``frame_index``, as the seed says.
* ``video_url`` (a window): exactly one of ``start_frame_index``,
  ``start_timestamp_ms``, ``start_offset_ms``; at most one of the ``end_*``
  counterparts (default: the live edge); optional ``max_fps`` (> 0, default 1).
  The end is exclusive: ``start_frame_index=0&end_frame_index=5`` is frames
  0-4.

Anything else (unknown or duplicate keys, two anchors of a kind, a missing
anchor, a malformed value) raises :class:`~watcher.errors.RefError`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote, urlencode, urlsplit

from watcher.errors import RefError

AnchorKind = Literal["frame_index", "timestamp_ms", "offset_ms"]
Direction = Literal["nearest", "forward", "backward"]
PartType = Literal["image_url", "video_url"]

ANCHOR_KINDS: tuple[AnchorKind, ...] = ("frame_index", "timestamp_ms", "offset_ms")
DIRECTIONS: tuple[Direction, ...] = ("nearest", "forward", "backward")
DEFAULT_TOLERANCE_MS = 100
DEFAULT_MAX_FPS = 1.0
SCHEME = "ovs"

_STREAM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.~-]{0,127}$")
_INT = re.compile(r"^[+-]?[0-9]{1,15}$")
_FLOAT = re.compile(r"^[+-]?(?:[0-9]{1,9}(?:\.[0-9]{0,9})?|\.[0-9]{1,9})$")
_IMAGE_KEYS = frozenset({*ANCHOR_KINDS, "tolerance_ms", "direction"})
_VIDEO_KEYS = frozenset(
    {*(f"start_{k}" for k in ANCHOR_KINDS), *(f"end_{k}" for k in ANCHOR_KINDS), "max_fps"}
)


@dataclass(frozen=True, slots=True)
class Anchor:
    """A point on a stream: a lifetime frame index, a stream-clock time, or an offset from now."""

    kind: AnchorKind
    value: int


@dataclass(frozen=True, slots=True)
class FrameRef:
    """What an ``image_url`` part points at: one frame."""

    stream_id: str
    anchor: Anchor
    tolerance_ms: int = DEFAULT_TOLERANCE_MS
    direction: Direction = "nearest"

    def url(self) -> str:
        params: dict[str, object] = {self.anchor.kind: self.anchor.value}
        if self.anchor.kind != "frame_index":
            if self.tolerance_ms != DEFAULT_TOLERANCE_MS:
                params["tolerance_ms"] = self.tolerance_ms
            if self.direction != "nearest":
                params["direction"] = self.direction
        return _build(self.stream_id, params)


@dataclass(frozen=True, slots=True)
class WindowRef:
    """What a ``video_url`` part points at: a segment of frames, sampled at ``max_fps``."""

    stream_id: str
    start: Anchor
    end: Anchor | None = None
    max_fps: float = DEFAULT_MAX_FPS

    def url(self) -> str:
        params: dict[str, object] = {f"start_{self.start.kind}": self.start.value}
        if self.end is not None:
            params[f"end_{self.end.kind}"] = self.end.value
        if self.max_fps != DEFAULT_MAX_FPS:
            params["max_fps"] = _format_float(self.max_fps)
        return _build(self.stream_id, params)


Ref = FrameRef | WindowRef


def frame_url(
    stream_id: str,
    *,
    frame_index: int | None = None,
    timestamp_ms: int | None = None,
    offset_ms: int | None = None,
    tolerance_ms: int = DEFAULT_TOLERANCE_MS,
    direction: Direction = "nearest",
) -> str:
    """Build an ``image_url`` reference; exactly one anchor must be given."""
    anchor = _one_anchor("", frame_index=frame_index, timestamp_ms=timestamp_ms,
                         offset_ms=offset_ms)
    if anchor is None:
        raise ValueError("frame_url needs one of frame_index, timestamp_ms, offset_ms")
    ref = FrameRef(_check_stream_id(stream_id), anchor, tolerance_ms, direction)
    _validate_frame_ref(ref)
    return ref.url()


def window_url(
    stream_id: str,
    *,
    start_frame_index: int | None = None,
    start_timestamp_ms: int | None = None,
    start_offset_ms: int | None = None,
    end_frame_index: int | None = None,
    end_timestamp_ms: int | None = None,
    end_offset_ms: int | None = None,
    max_fps: float = DEFAULT_MAX_FPS,
) -> str:
    """Build a ``video_url`` reference; exactly one start anchor, at most one end anchor."""
    start = _one_anchor("start_", frame_index=start_frame_index,
                        timestamp_ms=start_timestamp_ms, offset_ms=start_offset_ms)
    if start is None:
        raise ValueError("window_url needs one start anchor")
    end = _one_anchor("end_", frame_index=end_frame_index, timestamp_ms=end_timestamp_ms,
                      offset_ms=end_offset_ms)
    if not (max_fps > 0 and math.isfinite(max_fps)):
        raise ValueError("max_fps must be a positive number")
    return WindowRef(_check_stream_id(stream_id), start, end, float(max_fps)).url()


def parse_ref(url: str, part_type: PartType) -> Ref:
    """Parse the URL of an ``image_url`` or ``video_url`` content part.

    Raises :class:`RefError` with code ``stream_url_invalid`` when the URL is not
    an ovs:// stream reference at all, and ``query_param_invalid`` when its
    query breaks the grammar.
    """
    stream_id, params = parse_url(url)
    allowed = _IMAGE_KEYS if part_type == "image_url" else _VIDEO_KEYS
    unknown = sorted(set(params) - allowed)
    if unknown:
        hint = ""
        if part_type == "video_url" and set(unknown) & set(ANCHOR_KINDS):
            hint = " (a video_url takes start_*/end_* anchors)"
        elif part_type == "image_url" and set(unknown) & _VIDEO_KEYS:
            hint = " (an image_url takes frame_index, timestamp_ms or offset_ms)"
        raise _param_error(f"unknown query parameter(s) for {part_type}: "
                           f"{', '.join(unknown)}{hint}")
    if part_type == "image_url":
        anchor = _anchor_from(params, "")
        if anchor is None:
            raise _param_error("image_url needs one anchor: frame_index, timestamp_ms or offset_ms")
        if anchor.kind == "frame_index":  # an index names one frame: nothing to snap
            return FrameRef(stream_id, anchor)
        tolerance = DEFAULT_TOLERANCE_MS
        if "tolerance_ms" in params:
            tolerance = _parse_int("tolerance_ms", params["tolerance_ms"])
            if tolerance <= 0:
                raise _param_error("tolerance_ms must be a positive integer")
        direction = params.get("direction", "nearest")
        if direction not in DIRECTIONS:
            raise _param_error(f"direction must be one of {', '.join(DIRECTIONS)}")
        return FrameRef(stream_id, anchor, tolerance, direction)  # type: ignore[arg-type]
    start = _anchor_from(params, "start_")
    if start is None:
        raise _param_error("video_url needs one start anchor: start_frame_index, "
                           "start_timestamp_ms or start_offset_ms")
    end = _anchor_from(params, "end_")
    max_fps = DEFAULT_MAX_FPS
    if "max_fps" in params:
        max_fps = _parse_float("max_fps", params["max_fps"])
        if not max_fps > 0:
            raise _param_error("max_fps must be greater than 0")
    return WindowRef(stream_id, start, end, max_fps)


def parse_url(url: str) -> tuple[str, dict[str, str]]:
    """Split an ovs:// URL into its stream id and its query (duplicate keys rejected)."""
    if not isinstance(url, str) or len(url) > 4096:
        raise _url_error("the URL must be a string of at most 4096 characters")
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise _url_error(f"malformed URL: {exc}") from exc
    if parts.scheme != SCHEME or parts.netloc != "streams":
        raise _url_error("expected ovs://streams/{stream_id}?...")
    if parts.fragment:
        raise _url_error("an ovs:// URL takes no #fragment")
    segments = parts.path.split("/")
    if len(segments) != 2 or segments[0] != "":
        raise _url_error("expected ovs://streams/{stream_id}?... with one path segment")
    stream_id = unquote(segments[1])
    if not _STREAM_ID.match(stream_id):
        raise _url_error("missing or malformed stream id")
    params: dict[str, str] = {}
    for pair in parts.query.split("&") if parts.query else ():
        key, sep, value = pair.partition("=")
        key, value = unquote(key), unquote(value)
        if not key or not sep:
            raise _param_error(f"malformed query component {pair[:40]!r}: expected key=value")
        if key in params:
            raise _param_error(f"duplicate query parameter: {key[:40]}")
        params[key] = value
    return stream_id, params


def _anchor_from(params: dict[str, str], prefix: str) -> Anchor | None:
    found = [kind for kind in ANCHOR_KINDS if f"{prefix}{kind}" in params]
    if len(found) > 1:
        names = ", ".join(prefix + k for k in found)
        raise _param_error(f"only one {prefix or 'frame '}anchor is allowed, got {names}")
    if not found:
        return None
    kind = found[0]
    return Anchor(kind, _parse_int(prefix + kind, params[prefix + kind]))


def _one_anchor(prefix: str, **values: int | None) -> Anchor | None:
    given = [(k, v) for k, v in values.items() if v is not None]
    if len(given) > 1:
        raise ValueError(f"give at most one {prefix}anchor, got {[prefix + k for k, _ in given]}")
    if not given:
        return None
    kind, value = given[0]
    return Anchor(kind, int(value))  # type: ignore[arg-type]


def _validate_frame_ref(ref: FrameRef) -> None:
    if ref.tolerance_ms <= 0:
        raise ValueError("tolerance_ms must be positive")
    if ref.direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}")


def _check_stream_id(stream_id: str) -> str:
    if not _STREAM_ID.match(stream_id):
        raise ValueError(f"malformed stream id {stream_id!r}")
    return stream_id


def _parse_int(name: str, text: str) -> int:
    if not _INT.match(text):
        raise _param_error(f"{name} must be an integer, got {text[:40]!r}")
    return int(text)


def _parse_float(name: str, text: str) -> float:
    if not _FLOAT.match(text):
        raise _param_error(f"{name} must be a number, got {text[:40]!r}")
    return float(text)


def _format_float(value: float) -> str:
    return str(int(value)) if value == int(value) else repr(value)


def _build(stream_id: str, params: dict[str, object]) -> str:
    return f"{SCHEME}://streams/{quote(stream_id, safe='')}?{urlencode(params)}"


def _url_error(message: str) -> RefError:
    return RefError(message, code="stream_url_invalid")


def _param_error(message: str) -> RefError:
    return RefError(message, code="query_param_invalid")
