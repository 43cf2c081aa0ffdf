"""``local/vision``: a CPU "model" that measures frames with classic OpenCV detectors.

Nothing is downloaded: HOG people detection uses the SVM that ships inside
OpenCV and face detection the Haar cascade in the opencv wheel's data folder.
Over every frame of every image/video part of the request it measures

* ``motion``: the largest fraction of changed pixels between consecutive
  frames of one part (not measured when no part has two frames: a single
  image cannot show motion, the description then says so, and a schema that
  requires a motion property is a 400);
* ``motion_detected``: ``motion`` above :data:`MOTION_DETECTED_THRESHOLD`;
* ``people`` / ``faces``: the most people / faces seen in one frame (at most
  :data:`MAX_DETECTION_FRAMES` of them; when only the ``description`` asks for
  them, the newest frame: the detectors cost most of an answer);
* ``brightness``: mean luma of the newest frame (the last frame of the last
  media part), 0..1;
* ``description``: a sentence built from those; ``frames``: frames analysed.

It answers the description as text, the whole measurement object for
``{"type": "json_object"}``, and for a ``json_schema`` only the properties it
knows (by name or synonym, see :data:`SYNONYMS`), coerced to their JSON type.
A required property it cannot measure is a 400 ``unsupported_property``: it
never invents a value.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import overload

import cv2
import numpy as np

from watcher.server.backends.base import (
    ChatInput,
    Completion,
    ExternalImage,
    ExternalVideo,
    ModelBackend,
    ModelStatus,
    estimate_usage,
)
from watcher.server.backends.visionanswer import (  # noqa: F401  (re-exported)
    _NEEDS_FACES,
    _NEEDS_PEOPLE,
    MOTION_DETECTED_THRESHOLD,
    MOTION_MEASUREMENTS,
    SYNONYMS,
    Measurements,
    describe,
    fill_schema,
    wanted_measurements,
)
from watcher.server.problems import ChatProblem

# -- thresholds --------------------------------------------------------------
ANALYSIS_MAX_SIDE = 960
"""Frames are downscaled so their longest side is at most this many pixels.

HOG costs ~25 ms on 640x360 and ~70 ms on 960x540 on a 2-core test machine; above
that it grows fast. A person must then be about 128 px tall after scaling
(HOG's window), i.e. roughly a quarter of a 16:9 frame's height."""

MOTION_WIDTH = 320
"""Motion is compared on grayscale copies this wide (averaging pixels also averages noise)."""

MOTION_BLUR_KSIZE = 5
"""Gaussian blur kernel applied before differencing, to suppress sensor noise and JPEG artefacts."""

MOTION_PIXEL_THRESHOLD = 25
"""A pixel has changed when its blurred gray level differs by more than this (of 255).

Measured on JPEG frames of a static scene with Gaussian sensor noise up to
sigma 25 per channel: no pixel crosses it after the downscale and blur, while
a moving object changes its whole outline by far more than 25 levels."""


HOG_WIN_STRIDE = (8, 8)
HOG_SCALE = 1.05
"""HOG pyramid parameters: the values of OpenCV's peopledetect sample (accurate, still fast)."""

HOG_PADDING = (16, 16)
"""Windows may reach this far past the frame edge: with the sample's (8, 8) a person
whose feet or head come close to the edge was missed about one time in ten in testing."""

PEOPLE_MIN_SCORE = 0.5
"""SVM margin a grouped HOG detection needs to count as a person (drops weak background hits)."""

FACE_SCALE_FACTOR = 1.1
FACE_MIN_NEIGHBORS = 5
FACE_MIN_SIZE = (24, 24)
"""Haar cascade parameters: the cascade's own 24x24 window and the usual 5 neighbours."""

NMS_OVERLAP = 0.5
"""Non-max suppression: a box overlapping a stronger one by more than this fraction
of the smaller box's area is the same object (this also removes nested boxes)."""

MAX_DETECTION_FRAMES = 8
"""People and faces are counted on at most this many frames, evenly spaced and
always including the newest, so a long video_url stays fast (motion uses every frame)."""
DESCRIPTION_DETECTION_FRAMES = 1
"""Frames the detectors look at when only the ``description`` mentions people and
faces (no property asks for them): the newest, which the sentence describes."""


_COUNTS = frozenset({"people", "people_present", "faces", "faces_present"})
"""Measurements that answer with a count (or its presence): every sampled frame counts."""

FACE_CASCADE = "haarcascade_frontalface_default.xml"



def measure(frames: Sequence[np.ndarray]) -> Measurements:
    """Measure one sequence of frames (BGR or gray arrays, oldest first)."""
    return measure_parts([frames])


def measure_parts(parts: Sequence[Sequence[np.ndarray]], *, people: bool = True,
                  faces: bool = True, detection_frames: int = MAX_DETECTION_FRAMES,
                  ) -> Measurements:
    """Measure the frames of several media parts, each oldest first.

    Motion is compared only between consecutive frames of the same part. The
    inner sequences are read once in order plus a few indexed reads, so they
    may decode lazily. ``people``/``faces`` False skip those (costly)
    detectors; their counts are then 0 and must not be reported. They look at
    ``detection_frames`` frames at most, evenly spaced, the newest included.
    """
    parts = [p for p in parts if len(p)]
    if not parts:
        raise ValueError("no frames to measure")
    total = sum(len(p) for p in parts)
    motion = max(motion_score(p) for p in parts)
    positions = [(i, j) for i, p in enumerate(parts) for j in range(len(p))]
    people_seen = faces_seen = 0
    if people or faces:
        for i, j in (positions[k] for k in _sample_indices(total, detection_frames)):
            image = _analysis_size(parts[i][j])
            if people:
                people_seen = max(people_seen, count_people(image))
            if faces:
                faces_seen = max(faces_seen, count_faces(image))
    return Measurements(frames=total, motion=motion, people=people_seen, faces=faces_seen,
                        brightness=mean_brightness(parts[-1][-1]),
                        pairs=sum(len(p) - 1 for p in parts))


def motion_score(frames: Iterable[np.ndarray]) -> float:
    """The largest fraction (0..1) of changed pixels between consecutive frames."""
    best = 0.0
    previous: np.ndarray | None = None
    for frame in frames:
        current = _motion_gray(frame)
        if previous is not None:
            if current.shape != previous.shape:
                current = cv2.resize(current, previous.shape[::-1], interpolation=cv2.INTER_AREA)
            changed = cv2.absdiff(current, previous) > MOTION_PIXEL_THRESHOLD
            best = max(best, float(np.count_nonzero(changed)) / changed.size)
        previous = current
    return best


def count_people(image: np.ndarray) -> int:
    """Pedestrians found by OpenCV's default HOG+SVM people detector."""
    image = _to_bgr(image)
    if image.shape[0] < 128 or image.shape[1] < 64:
        return 0
    boxes, weights = _detectors().hog.detectMultiScale(
        image, winStride=HOG_WIN_STRIDE, padding=HOG_PADDING, scale=HOG_SCALE)
    scores = np.asarray(weights, dtype=float).reshape(-1)
    keep = scores >= PEOPLE_MIN_SCORE
    return len(suppress(np.asarray(boxes).reshape(-1, 4)[keep], scores[keep]))


def count_faces(image: np.ndarray) -> int:
    """Frontal faces found by the Haar cascade shipped with OpenCV.

    No histogram equalisation: the cascade already normalises each window by
    its contrast, and equalising a plain wall stretches its faint texture into
    face-like blobs (false faces in testing).
    """
    boxes, neighbours = _detectors().faces.detectMultiScale2(
        _to_gray(image), scaleFactor=FACE_SCALE_FACTOR, minNeighbors=FACE_MIN_NEIGHBORS,
        minSize=FACE_MIN_SIZE)
    scores = np.asarray(neighbours, dtype=float).reshape(-1)
    return len(suppress(np.asarray(boxes).reshape(-1, 4), scores))


def mean_brightness(image: np.ndarray) -> float:
    """Mean luma (Rec. 601) of the image, 0..1."""
    return float(np.mean(_to_gray(image))) / 255.0


def suppress(boxes: np.ndarray, scores: np.ndarray, overlap: float = NMS_OVERLAP) -> list[int]:
    """Greedy non-max suppression over ``(x, y, w, h)`` boxes; the indices kept.

    Overlap is measured against the smaller box, so a box nested in a
    stronger one is dropped even though their IoU is low.
    """
    kept: list[int] = []
    for i in np.argsort(-scores, kind="stable"):
        x, y, w, h = boxes[i]
        for k in kept:
            kx, ky, kw, kh = boxes[k]
            iw = min(x + w, kx + kw) - max(x, kx)
            ih = min(y + h, ky + kh) - max(y, ky)
            if iw > 0 and ih > 0 and iw * ih > overlap * min(w * h, kw * kh):
                break
        else:
            kept.append(int(i))
    return kept


def _sample_indices(total: int, limit: int) -> list[int]:
    """At most ``limit`` of ``range(total)``, evenly spaced, the newest (last) included."""
    if total <= limit:
        return list(range(total))
    if limit <= 1:
        return [total - 1]
    return sorted({round(x) for x in np.linspace(0, total - 1, limit)})


def _to_bgr(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def _to_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    return cv2.cvtColor(image, code)


def _analysis_size(image: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    if max(height, width) <= ANALYSIS_MAX_SIDE:
        return image
    scale = ANALYSIS_MAX_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def _motion_gray(image: np.ndarray) -> np.ndarray:
    gray = _to_gray(image)
    height, width = gray.shape
    if width > MOTION_WIDTH:
        size = (MOTION_WIDTH, max(1, round(height * MOTION_WIDTH / width)))
        gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(gray, (MOTION_BLUR_KSIZE, MOTION_BLUR_KSIZE), 0)


# -- detectors, one set per thread -------------------------------------------
@dataclass(slots=True)
class _Detectors:
    hog: cv2.HOGDescriptor
    faces: cv2.CascadeClassifier


_local = threading.local()


def _cascade_path() -> Path:
    return Path(cv2.data.haarcascades) / FACE_CASCADE


def _detectors() -> _Detectors:
    """This thread's HOG descriptor and cascade, loaded on first use.

    OpenCV does not promise that one detector object may run in two threads
    at once, and to_thread may analyse two requests concurrently, so each
    worker thread keeps its own (loading costs a few ms, once per thread).
    """
    found: _Detectors | None = getattr(_local, "detectors", None)
    if found is None:
        hog = cv2.HOGDescriptor()
        hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        cascade = cv2.CascadeClassifier(str(_cascade_path()))
        if cascade.empty():
            raise RuntimeError(f"cannot load the face cascade {_cascade_path()}")
        found = _local.detectors = _Detectors(hog, cascade)
    return found



# -- decoding ----------------------------------------------------------------
_DATA_URL = re.compile(r"data:image/[\w.+-]+(?:;[\w.+-]+=[^;,]*)*;base64,(.*)", re.S | re.I)


class _LazyFrames(Sequence[np.ndarray]):
    """Encoded images decoded on access, so a long video never sits decoded in memory."""

    def __init__(self, encoded: Sequence[bytes], what: str) -> None:
        self._encoded = encoded
        self._what = what

    def __len__(self) -> int:
        return len(self._encoded)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[np.ndarray]: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | Sequence[np.ndarray]:
        if isinstance(index, slice):
            return _LazyFrames(self._encoded[index], self._what)
        return _decode(self._encoded[index], self._what)

    def __iter__(self) -> Iterator[np.ndarray]:
        for data in self._encoded:
            yield _decode(data, self._what)


def _decode(data: bytes, what: str) -> np.ndarray:
    image = None
    if data:
        image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise ChatProblem(422, f"{what} is not a decodable image", type="validation_error",
                          code="image_invalid")
    return _analysis_size(image)


def _external_bytes(url: str) -> bytes:
    match = _DATA_URL.fullmatch(url.strip())
    if match is None:
        raise ChatProblem(
            400, "local/vision reads only ovs:// references and data:image/...;base64, URLs; "
            "it does not fetch image URLs (an upstream model can be sent them)",
            type="validation_error", code="image_url_unsupported")
    try:
        return base64.b64decode(re.sub(r"\s+", "", match.group(1)), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ChatProblem(422, "the data: URL of an image_url is not valid base64",
                          type="validation_error", code="image_invalid") from exc


def _media_parts(request: ChatInput) -> list[_LazyFrames]:
    """Every image/video part of the request, in request order, frames oldest first."""
    parts: list[_LazyFrames] = []
    for message in request.messages:
        for part in message.parts:
            if isinstance(part, ExternalVideo):
                raise ChatProblem(
                    400, "local/vision reads video only from ovs:// references; it does not "
                    "fetch or decode video URLs (an upstream model can be sent them)",
                    type="validation_error", code="video_url_unsupported")
            if isinstance(part, ExternalImage):
                parts.append(_LazyFrames([_external_bytes(part.url)], "an image_url data: URL"))
            elif not isinstance(part, str) and part.frames:
                frames = sorted(part.frames, key=lambda f: (f.timestamp_ms, f.index))
                parts.append(_LazyFrames([f.jpeg for f in frames], f"a frame of {part.url}"))
    return parts


# -- the backend ---------------------------------------------------------------
class VisionModel(ModelBackend):
    """Motion, people, faces and brightness of the frames, measured on the CPU."""

    id = "local/vision"

    async def status(self) -> ModelStatus:
        return "ready" if _cascade_path().is_file() else "unavailable"

    async def complete(self, request: ChatInput) -> Completion:
        parts = _media_parts(request)
        if not any(len(p) for p in parts):
            raise ChatProblem(
                422, "local/vision needs image_url or video_url parts with frames to look at",
                type="validation_error", code="no_frames")
        wanted = wanted_measurements(request)
        counted = wanted is None or bool(wanted & _COUNTS)
        measurements = await asyncio.to_thread(
            measure_parts, parts,
            people=wanted is None or bool(wanted & _NEEDS_PEOPLE),
            faces=wanted is None or bool(wanted & _NEEDS_FACES),
            detection_frames=MAX_DETECTION_FRAMES if counted else DESCRIPTION_DETECTION_FRAMES)
        content = self.answer(measurements, request)
        return Completion(content=content, usage=estimate_usage(request, content))

    @staticmethod
    def answer(measurements: Measurements, request: ChatInput) -> str:
        """The assistant content for the request's response_format."""
        schema = request.json_schema()
        if schema is not None:
            return json.dumps(fill_schema(measurements, schema), separators=(",", ":"))
        if (request.response_format or {}).get("type") == "json_object":
            return json.dumps(measurements.as_dict(), separators=(",", ":"))
        return measurements.description
