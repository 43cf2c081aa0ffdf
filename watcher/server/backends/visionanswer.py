"""What ``local/vision`` answers, given its measurements: the schema filling.

Kept apart from the OpenCV measuring (:mod:`watcher.server.backends.vision`)
so that ``watcher check`` can tell, without loading OpenCV, whether a rule's
schema is one local/vision can answer (:func:`schema_problem`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from watcher.server.backends.base import ChatInput
from watcher.server.problems import ChatProblem

# -- thresholds --------------------------------------------------------------
MOTION_DETECTED_THRESHOLD = 0.005
"""``motion_detected`` when more than 0.5 % of the frame changed between two frames.

The noise floor measured above is 0.0, so this is about what counts as motion,
not about noise: 0.5 % is a 60 px object moving 15 px in a 640x480 frame (a
person walking a step is several times that), while a 20 px object crawling
5 px (0.05 %) does not count. Global lighting flicker of 3 % does not trigger it."""

DARK_BELOW = 0.15
DIM_BELOW = 0.35
BRIGHT_ABOVE = 0.75
"""Brightness words of the description: dark / dim / well lit / bright."""

# -- schema synonyms ---------------------------------------------------------
SYNONYMS: dict[str, str] = {
    "motion": "motion",
    "motion_score": "motion",
    "motion_level": "motion",
    "motion_amount": "motion",
    "motion_fraction": "motion",
    "motion_detected": "motion_detected",
    "moving": "motion_detected",
    "movement": "motion_detected",
    "motion_present": "motion_detected",
    "movement_detected": "motion_detected",
    "has_motion": "motion_detected",
    "people": "people",
    "person": "people",
    "persons": "people",
    "person_count": "people",
    "people_count": "people",
    "num_people": "people",
    "number_of_people": "people",
    "people_present": "people_present",
    "person_present": "people_present",
    "person_detected": "people_present",
    "people_detected": "people_present",
    "person_visible": "people_present",
    "anyone_present": "people_present",
    "faces": "faces",
    "face_count": "faces",
    "num_faces": "faces",
    "number_of_faces": "faces",
    "face_present": "faces_present",
    "face_detected": "faces_present",
    "faces_present": "faces_present",
    "face_visible": "faces_present",
    "brightness": "brightness",
    "light_level": "brightness",
    "luminance": "brightness",
    "description": "description",
    "summary": "description",
    "caption": "description",
    "frames": "frames",
    "frame_count": "frames",
    "frames_analyzed": "frames",
    "frames_analysed": "frames",
}
"""Schema property names (lower-cased, ``-``/space as ``_``) and the measurement they mean."""

MOTION_MEASUREMENTS = frozenset({"motion", "motion_detected"})
"""Measurements that need two consecutive frames of one part (a video_url window)."""

_BOOLEAN_TWIN = {"people": "people_present", "faces": "faces_present",
                 "motion": "motion_detected"}
"""A count or score asked for as a boolean answers its yes/no measurement."""


# -- measurements ------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Measurements:
    frames: int
    motion: float
    people: int
    faces: int
    brightness: float
    pairs: int | None = None
    """Consecutive frame pairs compared for motion; None means ``frames - 1``."""

    @property
    def motion_measured(self) -> bool:
        return (self.frames - 1 if self.pairs is None else self.pairs) > 0

    @property
    def motion_detected(self) -> bool:
        return self.motion > MOTION_DETECTED_THRESHOLD

    @property
    def people_present(self) -> bool:
        return self.people > 0

    @property
    def faces_present(self) -> bool:
        return self.faces > 0

    @property
    def description(self) -> str:
        return describe(self)

    def value(self, name: str) -> Any:
        """A measurement by canonical name (a key of :data:`SYNONYMS`' values)."""
        if name in ("motion", "brightness"):
            return round(getattr(self, name), 4)
        return getattr(self, name)

    def as_dict(self) -> dict[str, Any]:
        """The ``json_object`` answer (without motion when it was not measured)."""
        names = ("motion", "motion_detected", "people", "faces", "brightness", "description",
                 "frames")
        return {name: self.value(name) for name in names
                if self.motion_measured or name not in MOTION_MEASUREMENTS}


def describe(m: Measurements) -> str:
    """``"Motion detected; 1 person and no faces visible; scene is dim."``"""
    if m.motion_detected:
        motion = "Motion detected"
    elif not m.motion_measured:
        motion = "Motion not measured (no consecutive frames)"
    else:
        motion = "No motion"
    if m.people or m.faces:
        people, faces = _count(m.people, "person", "people"), _count(m.faces, "face", "faces")
        seen = f"{people} and {faces} visible"
    else:
        seen = "no people or faces visible"
    if m.brightness < DARK_BELOW:
        light = "dark"
    elif m.brightness < DIM_BELOW:
        light = "dim"
    elif m.brightness > BRIGHT_ABOVE:
        light = "bright"
    else:
        light = "well lit"
    return f"{motion}; {seen}; scene is {light}."


def _count(n: int, one: str, many: str) -> str:
    return f"no {many}" if n == 0 else f"1 {one}" if n == 1 else f"{n} {many}"

# -- schema filling ----------------------------------------------------------
class _Unsuitable(Exception):
    """The measurement cannot be expressed in the property's type."""


_NEEDS_PEOPLE = frozenset({"people", "people_present", "description"})
_NEEDS_FACES = frozenset({"faces", "faces_present", "description"})


def wanted_measurements(request: ChatInput) -> set[str] | None:
    """The measurements a json_schema answer names (None: all of them are answered)."""
    schema = request.json_schema()
    properties = schema.get("properties") if schema is not None else None
    if not isinstance(properties, dict) or not properties:
        return None
    required = schema.get("required") if isinstance(schema.get("required"), list) else []
    names = [*properties, *(n for n in required if isinstance(n, str))]
    return {SYNONYMS[key] for key in map(_normalise, names) if key in SYNONYMS}


def fill_schema(measurements: Measurements, schema: dict[str, Any]) -> dict[str, Any]:
    """Answer the schema's ``properties`` that name a measurement, in schema order.

    Unknown optional properties are left out; an unknown (or unexpressible)
    required property raises ChatProblem 400 ``unsupported_property``. A
    schema without properties answers every measurement.
    """
    properties = schema.get("properties")
    if not isinstance(properties, dict) or not properties:
        return measurements.as_dict()
    required = schema.get("required")
    required_names = {n for n in required if isinstance(n, str)} if isinstance(
        required, list) else set()
    # A required name without a property entry still has to be answered.
    wanted = {**properties, **{n: {} for n in sorted(required_names - set(properties))}}
    answer: dict[str, Any] = {}
    missing: list[str] = []
    unmeasured: list[str] = []
    for name, spec in wanted.items():
        canonical = SYNONYMS.get(_normalise(name))
        try:
            if canonical is None:
                raise _Unsuitable
            if canonical in MOTION_MEASUREMENTS and not measurements.motion_measured:
                if name in required_names:
                    unmeasured.append(name)
                continue
            answer[name] = _coerce(measurements, canonical, spec if isinstance(spec, dict) else {})
        except _Unsuitable:
            if name in required_names:
                missing.append(name)
    if unmeasured:
        names = ", ".join(repr(n) for n in unmeasured)
        raise ChatProblem(
            400,
            f"local/vision cannot measure required propert{'y' if len(unmeasured) == 1 else 'ies'}"
            f" {names} without two consecutive frames: motion is measured over a video_url "
            "window (e.g. start_offset_ms=-5000), not a single image",
            type="validation_error", code="unsupported_property")
    if missing:
        names = ", ".join(repr(n) for n in missing)
        raise ChatProblem(
            400,
            f"local/vision cannot measure required propert{'y' if len(missing) == 1 else 'ies'} "
            f"{names}; it knows {', '.join(sorted(set(SYNONYMS.values())))}",
            type="validation_error", code="unsupported_property")
    return answer


def _normalise(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def _json_types(spec: dict[str, Any]) -> list[str]:
    """The types a property allows: ``type`` (a name or a list), else its anyOf/oneOf types."""
    types = spec.get("type")
    if isinstance(types, str):
        return [types]
    if isinstance(types, list):
        return [t for t in types if isinstance(t, str)]
    found: list[str] = []
    for key in ("anyOf", "oneOf"):
        options = spec.get(key)
        if isinstance(options, list):
            for option in options:
                if isinstance(option, dict):
                    found.extend(_json_types(option))
    return found


def _coerce(m: Measurements, canonical: str, spec: dict[str, Any]) -> Any:
    types = _json_types(spec)
    if not types:
        return _enum_checked(m.value(canonical), spec)
    for json_type in types:
        if json_type == "null":
            continue
        try:
            return _enum_checked(_as_type(m, canonical, json_type), spec)
        except _Unsuitable:
            continue
    raise _Unsuitable


def _as_type(m: Measurements, canonical: str, json_type: str) -> Any:
    if json_type == "boolean" and canonical in _BOOLEAN_TWIN:
        canonical = _BOOLEAN_TWIN[canonical]
    value = m.value(canonical)
    if json_type == "boolean":
        if isinstance(value, bool):
            return value
    elif json_type == "integer":
        if isinstance(value, bool | int):
            return int(value)
    elif json_type == "number":
        if isinstance(value, bool):
            return 1.0 if value else 0.0
        if isinstance(value, int | float):
            return value
    elif json_type == "string":
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)
    raise _Unsuitable


def _enum_checked(value: Any, spec: dict[str, Any]) -> Any:
    """Keep the value if the property's ``enum`` allows it (yes/no words for booleans)."""
    enum = spec.get("enum")
    if not isinstance(enum, list) or (value in enum and type(value) in {type(e) for e in enum}):
        return value
    if isinstance(value, bool):
        words = {"true", "yes"} if value else {"false", "no"}
        for option in enum:
            if isinstance(option, str) and option.strip().lower() in words:
                return option
    if isinstance(value, str):
        if value in ("true", "false"):  # a boolean asked as a string
            return _enum_checked(value == "true", spec)
        for option in enum:
            if isinstance(option, str) and option.lower() == value.lower():
                return option
    raise _Unsuitable


def schema_problem(schema: dict[str, Any], *, window: bool) -> str | None:
    """Why local/vision cannot answer ``schema`` (None: it can), before anything is asked.

    ``window`` says whether the question shows a video window (consecutive
    frames, so motion can be measured) or only the newest frame. The schema
    is filled from sample measurements exactly as a real answer would be.
    """
    sample = Measurements(frames=2 if window else 1, motion=0.0, people=0, faces=0,
                          brightness=0.5)
    try:
        fill_schema(sample, schema)
    except ChatProblem as problem:
        return problem.message
    return None
