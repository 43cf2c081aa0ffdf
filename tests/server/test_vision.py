"""local/vision on synthetic video drawn here: motion, HOG people, Haar faces, schema answers."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from typing import Any

import cv2
import numpy as np
import pytest

from watcher.server.backends import vision
from watcher.server.backends.base import ChatInput, ExternalImage, Message, Usage, estimate_usage
from watcher.server.backends.vision import (
    MOTION_DETECTED_THRESHOLD,
    Measurements,
    VisionModel,
    count_faces,
    count_people,
    describe,
    fill_schema,
    measure,
    measure_parts,
    motion_score,
    suppress,
)
from watcher.server.frames import StoredFrame
from watcher.server.problems import ChatProblem
from watcher.server.resolve import ResolvedMedia

# -- synthetic imagery -------------------------------------------------------


def background(seed: int = 0, h: int = 480, w: int = 640) -> np.ndarray:
    """A textured warm-grey wall with a darker floor (BGR)."""
    rng = np.random.default_rng(seed)
    low = cv2.resize(rng.normal(0, 1, (h // 40 + 2, w // 40 + 2, 3)), (w, h),
                     interpolation=cv2.INTER_CUBIC)
    img = np.array([150, 160, 170], float) + 12 * low
    img[int(h * 0.8):] -= 40
    return np.clip(img, 0, 255).astype(np.uint8)


def noisy(img: np.ndarray, rng: np.random.Generator, sigma: float = 6.0) -> np.ndarray:
    """Gaussian sensor noise, independent per frame."""
    return np.clip(img + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def draw_face(img: np.ndarray, center: tuple[int, int], height: int) -> np.ndarray:
    """A shaded frontal face: skin oval, hair, eye sockets, brows, lit nose, mouth."""
    cx, cy = center
    s = height / 210

    def ellipse(dx: float, dy: float, ax: float, ay: float, color: tuple[int, int, int],
                start: int = 0, end: int = 360) -> None:
        cv2.ellipse(img, (int(cx + dx * s), int(cy + dy * s)),
                    (max(1, int(ax * s)), max(1, int(ay * s))), 0, start, end, color, -1,
                    cv2.LINE_AA)

    ellipse(0, 0, 80, 105, (150, 180, 215))  # skin
    ellipse(0, -40, 85, 75, (30, 35, 45), 180, 360)  # hair
    for dx in (-32, 32):
        ellipse(dx, -18, 24, 12, (110, 130, 160))  # eye socket shadow
        ellipse(dx, -18, 12, 7, (40, 30, 30))  # iris
        ellipse(dx, -40, 24, 5, (40, 45, 60))  # brow
    ellipse(0, 10, 8, 22, (175, 205, 235))  # lit nose bridge
    ellipse(0, 32, 14, 6, (100, 125, 160))  # nostril shadow
    ellipse(0, 58, 28, 8, (80, 80, 150))  # mouth
    y0, y1 = max(0, int(cy - 120 * s)), int(cy + 120 * s)
    x0, x1 = max(0, int(cx - 100 * s)), int(cx + 100 * s)
    img[y0:y1, x0:x1] = cv2.GaussianBlur(img[y0:y1, x0:x1], (0, 0), max(0.5, 4 * s))
    return img


def draw_person(img: np.ndarray, x: int, top: int, height: int,
                color: tuple[int, int, int] = (60, 50, 45)) -> np.ndarray:
    """A standing pedestrian silhouette (head, neck, torso, arms, legs) centred on x."""
    s = height / 200

    def p(px: float, py: float) -> tuple[int, int]:
        return int(x + px * s), int(top + py * s)

    def poly(*points: tuple[int, int]) -> None:
        cv2.fillPoly(img, [np.array(points, np.int32)], color, cv2.LINE_AA)

    cv2.ellipse(img, p(0, 14), (int(11 * s), int(14 * s)), 0, 0, 360, color, -1, cv2.LINE_AA)
    cv2.rectangle(img, p(-4, 26), p(4, 34), color, -1)
    poly(p(-22, 34), p(22, 34), p(18, 105), p(-18, 105))
    for side in (-1, 1):
        poly(p(side * 20, 36), p(side * 27, 38), p(side * 32, 100), p(side * 24, 100))
        poly(p(side * 2, 100), p(side * 18, 100), p(side * 20, 196), p(side * 8, 196))
    y0, y1 = max(0, int(top - 10 * s)), int(top + 210 * s)
    x0, x1 = max(0, int(x - 50 * s)), int(x + 50 * s)
    img[y0:y1, x0:x1] = cv2.GaussianBlur(img[y0:y1, x0:x1], (0, 0), 1.5 * s)
    return img


def jpeg(img: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return data.tobytes()


def roundtrip(img: np.ndarray) -> np.ndarray:
    """What the backend sees after the frame store's JPEG encoding."""
    return cv2.imdecode(np.frombuffer(jpeg(img), np.uint8), cv2.IMREAD_COLOR)


def static_video(n: int = 6, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    scene = background(seed)
    return [roundtrip(noisy(scene, rng)) for _ in range(n)]


def walking_video(n: int = 4, seed: int = 2) -> list[np.ndarray]:
    """A person crossing the room, 110 px a frame."""
    rng = np.random.default_rng(seed)
    scene = background(seed)
    return [roundtrip(noisy(draw_person(scene.copy(), 150 + 110 * i, 110, 200), rng))
            for i in range(n)]


def media(frames: list[np.ndarray], stream_id: str = "s1", kind: str = "video_url",
          ) -> ResolvedMedia:
    stored = tuple(StoredFrame(i, i * 500, jpeg(f)) for i, f in enumerate(frames))
    return ResolvedMedia(kind, stream_id, f"ovs://streams/{stream_id}", stored)  # type: ignore[arg-type]


def chat(*parts: Any, response_format: dict[str, Any] | None = None) -> ChatInput:
    return ChatInput(model="local/vision",
                     messages=[Message("user", ["What is happening?", *parts])],
                     response_format=response_format)


def schema_format(properties: dict[str, Any], required: list[str] | None = None,
                  ) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "required": required or []}
    return {"type": "json_schema", "json_schema": {"name": "scene", "schema": schema}}


# -- motion ------------------------------------------------------------------


def test_static_noisy_scene_has_no_motion() -> None:
    frames = static_video()
    # The noise is real: a naive per-pixel difference (no blur, 10 levels) would call it motion.
    raw = cv2.absdiff(cv2.cvtColor(frames[0], cv2.COLOR_BGR2GRAY),
                      cv2.cvtColor(frames[1], cv2.COLOR_BGR2GRAY))
    assert np.count_nonzero(raw > 10) / raw.size > MOTION_DETECTED_THRESHOLD
    score = motion_score(frames)
    assert score < MOTION_DETECTED_THRESHOLD / 10
    assert not measure(frames).motion_detected


def test_moving_object_is_motion() -> None:
    rng = np.random.default_rng(3)
    scene = background(3)
    frames = []
    for i in range(5):
        img = scene.copy()
        cv2.circle(img, (120 + 40 * i, 240), 40, (40, 40, 200), -1, cv2.LINE_AA)
        frames.append(roundtrip(noisy(img, rng)))
    m = measure(frames)
    assert m.motion > MOTION_DETECTED_THRESHOLD
    assert m.motion_detected
    assert m.frames == 5


def test_motion_is_largest_change_of_consecutive_frames() -> None:
    still = static_video(3)
    black = np.zeros_like(still[0])
    assert motion_score([*still, black]) > 0.9  # the last pair changes almost everything
    assert motion_score(still) < MOTION_DETECTED_THRESHOLD


def test_single_frame_and_separate_parts_have_no_motion() -> None:
    white = np.full((240, 320, 3), 255, np.uint8)
    black = np.zeros_like(white)
    assert measure([white]).motion == 0.0
    # Motion is compared within a part: two single-image parts never differ.
    separate = measure_parts([[white], [black]])
    assert separate.motion == 0.0
    assert separate.description.startswith("Motion not measured (no consecutive frames);")
    assert measure_parts([[white, black]]).motion == 1.0


def test_motion_tolerates_a_resolution_change() -> None:
    frames = static_video(2)
    assert motion_score([frames[0], cv2.resize(frames[1], (320, 240))]) < 0.01


# -- people and faces ----------------------------------------------------------


@pytest.mark.parametrize(("x", "height"), [(160, 140), (320, 200), (470, 300)])
def test_hog_counts_a_person(x: int, height: int) -> None:
    rng = np.random.default_rng(height)
    frame = roundtrip(noisy(draw_person(background(4), x, 480 - height - 30, height), rng))
    assert count_people(frame) == 1
    assert count_faces(frame) == 0


def test_hog_counts_two_people_and_none_in_an_empty_room() -> None:
    rng = np.random.default_rng(5)
    scene = background(5)
    two = draw_person(draw_person(scene.copy(), 180, 120, 200), 460, 120, 200)
    assert count_people(roundtrip(noisy(two, rng))) == 2
    assert count_people(roundtrip(noisy(scene, rng))) == 0
    assert count_people(np.zeros((60, 40, 3), np.uint8)) == 0  # smaller than the HOG window


@pytest.mark.parametrize("height", [80, 160, 260])
def test_haar_counts_a_face(height: int) -> None:
    rng = np.random.default_rng(height)
    frame = roundtrip(noisy(draw_face(background(6), (320, 240), height), rng))
    assert count_faces(frame) == 1
    assert count_people(frame) == 0


def test_no_face_in_an_empty_room_or_noise() -> None:
    rng = np.random.default_rng(7)
    assert count_faces(roundtrip(noisy(background(7), rng))) == 0
    assert count_faces(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) == 0


def test_large_frames_are_downscaled_and_still_detected() -> None:
    rng = np.random.default_rng(8)
    scene = background(8, 1080, 1920)
    frame = draw_person(scene, 600, 250, 600)
    draw_face(frame, (1400, 500), 330)
    m = measure([roundtrip(noisy(frame, rng))])
    assert (m.people, m.faces) == (1, 1)


def test_suppress_drops_overlapping_and_nested_boxes() -> None:
    boxes = np.array([[0, 0, 100, 200], [10, 10, 100, 200], [30, 50, 40, 80],
                      [300, 0, 100, 200]])
    scores = np.array([1.0, 2.0, 0.5, 0.7])
    assert suppress(boxes, scores) == [1, 3]
    assert suppress(np.zeros((0, 4)), np.zeros(0)) == []


def test_detectors_are_per_thread() -> None:
    mine = vision._detectors()
    assert vision._detectors() is mine
    other: list[Any] = []
    worker = threading.Thread(target=lambda: other.append(vision._detectors()))
    worker.start()
    worker.join()
    assert other[0] is not mine


# -- brightness and description ------------------------------------------------


def test_brightness_is_mean_luma_of_the_newest_frame() -> None:
    dark = np.full((120, 160, 3), 20, np.uint8)
    mid = np.full((120, 160, 3), 128, np.uint8)
    assert measure([mid, dark]).brightness == pytest.approx(20 / 255)
    assert measure_parts([[dark], [mid]]).brightness == pytest.approx(128 / 255)
    assert measure([np.full((120, 160), 255, np.uint8)]).brightness == 1.0  # gray input


def test_description_wording() -> None:
    m = Measurements(frames=4, motion=0.2, people=1, faces=0, brightness=0.3)
    assert describe(m) == "Motion detected; 1 person and no faces visible; scene is dim."
    m = Measurements(frames=4, motion=0.0, people=3, faces=2, brightness=0.9)
    assert describe(m) == "No motion; 3 people and 2 faces visible; scene is bright."
    m = Measurements(frames=1, motion=0.0, people=0, faces=0, brightness=0.05)
    assert describe(m) == ("Motion not measured (no consecutive frames); "
                           "no people or faces visible; scene is dark.")
    m = Measurements(frames=2, motion=0.001, people=0, faces=1, brightness=0.5)
    assert m.description == "No motion; no people and 1 face visible; scene is well lit."


# -- schema filling ------------------------------------------------------------

M = Measurements(frames=6, motion=0.123456, people=2, faces=1, brightness=0.4)


def test_fill_schema_known_names_and_synonyms() -> None:
    schema = {"type": "object", "properties": {
        "people": {"type": "integer"},
        "person_count": {"type": "integer"},
        "Person Present": {"type": "boolean"},
        "anyone_present": {"type": "boolean"},
        "face_count": {"type": "integer"},
        "face-detected": {"type": "boolean"},
        "moving": {"type": "boolean"},
        "motion_score": {"type": "number"},
        "summary": {"type": "string"},
        "light_level": {"type": "number"},
        "frames_analysed": {"type": "integer"},
    }}
    assert fill_schema(M, schema) == {
        "people": 2, "person_count": 2, "Person Present": True, "anyone_present": True,
        "face_count": 1, "face-detected": True, "moving": True, "motion_score": 0.1235,
        "summary": M.description, "light_level": 0.4, "frames_analysed": 6,
    }


def test_fill_schema_coerces_types() -> None:
    schema = {"properties": {
        "people": {"type": "boolean"},  # a count asked as yes/no
        "motion": {"type": "boolean"},  # a score asked as yes/no uses the threshold
        "faces": {"type": "string"},
        "motion_detected": {"type": "integer"},
        "person_present": {"type": "string", "enum": ["yes", "no"]},
        "brightness": {"type": ["null", "number"]},
        "face_count": {"anyOf": [{"type": "null"}, {"type": "integer"}]},
        "frames": {"type": "number"},
        "description": {},
    }}
    quiet = Measurements(frames=3, motion=0.001, people=0, faces=0, brightness=0.5)
    assert fill_schema(quiet, schema) == {
        "people": False, "motion": False, "faces": "0", "motion_detected": 0,
        "person_present": "no", "brightness": 0.5, "face_count": 0, "frames": 3,
        "description": quiet.description,
    }


def test_fill_schema_omits_unknown_and_unsuitable_optional_properties() -> None:
    schema = {"properties": {
        "people": {"type": "integer"},
        "vehicle_count": {"type": "integer"},
        "weather": {"type": "string"},
        "motion": {"type": "integer"},  # a 0..1 score is no integer
        "faces": {"type": "string", "enum": ["many", "few"]},
    }, "required": ["people"]}
    assert fill_schema(M, schema) == {"people": 2}


def test_fill_schema_rejects_an_unknown_required_property() -> None:
    schema = {"properties": {"people": {"type": "integer"}, "vehicle_count": {"type": "integer"},
                             "weather": {"type": "string"}},
              "required": ["people", "vehicle_count", "weather"]}
    with pytest.raises(ChatProblem) as caught:
        fill_schema(M, schema)
    problem = caught.value
    assert (problem.status, problem.type, problem.code) == (
        400, "validation_error", "unsupported_property")
    assert "vehicle_count" in problem.message and "weather" in problem.message
    with pytest.raises(ChatProblem, match="'motion'"):
        fill_schema(M, {"properties": {"motion": {"type": "integer"}}, "required": ["motion"]})
    # A required name with no property entry must be answered too.
    with pytest.raises(ChatProblem, match="'colour'"):
        fill_schema(M, {"properties": {"people": {}}, "required": ["people", "colour"]})
    assert fill_schema(M, {"properties": {"people": {}}, "required": ["faces"]}) == {
        "people": 2, "faces": 1}


def test_fill_schema_without_properties_answers_everything() -> None:
    assert fill_schema(M, {}) == M.as_dict()
    assert set(M.as_dict()) == {"motion", "motion_detected", "people", "faces", "brightness",
                                "description", "frames"}


# -- the backend -----------------------------------------------------------------


async def test_complete_fills_a_json_schema_from_a_video() -> None:
    request = chat(media(walking_video()), response_format=schema_format({
        "person_present": {"type": "boolean"},
        "people_count": {"type": "integer"},
        "movement": {"type": "boolean"},
        "motion_level": {"type": "number"},
        "faces": {"type": "integer"},
        "caption": {"type": "string"},
        "mood": {"type": "string"},
    }, required=["person_present", "movement"]))
    completion = await VisionModel().complete(request)
    answer = json.loads(completion.content)
    assert answer["person_present"] is True
    assert answer["people_count"] == 1
    assert answer["movement"] is True
    assert answer["motion_level"] > MOTION_DETECTED_THRESHOLD
    assert answer["faces"] == 0
    assert answer["caption"].startswith("Motion detected; 1 person and no faces visible")
    assert "mood" not in answer
    assert completion.usage == estimate_usage(request, completion.content)
    assert completion.usage.prompt_tokens >= 4 * 200


async def test_complete_json_object_and_text() -> None:
    part = media(static_video(3))
    as_object = await VisionModel().complete(chat(part, response_format={"type": "json_object"}))
    answer = json.loads(as_object.content)
    assert answer["frames"] == 3
    assert answer["motion_detected"] is False
    assert (answer["people"], answer["faces"]) == (0, 0)
    text = await VisionModel().complete(chat(part))
    assert text.content == answer["description"]
    assert text.content == "No motion; no people or faces visible; scene is well lit."


async def test_complete_counts_over_all_parts() -> None:
    rng = np.random.default_rng(9)
    face = roundtrip(noisy(draw_face(background(9), (320, 240), 180), rng))
    data_url = "data:image/jpeg;base64," + base64.b64encode(jpeg(face)).decode()
    request = chat(media(static_video(2), "a", "image_url"), ExternalImage(data_url),
                   media(walking_video(2), "b"), response_format={"type": "json_object"})
    answer = json.loads((await VisionModel().complete(request)).content)
    assert (answer["frames"], answer["people"], answer["faces"]) == (5, 1, 1)
    assert answer["motion_detected"] is True


async def test_complete_rejects_requests_without_frames() -> None:
    with pytest.raises(ChatProblem) as caught:
        await VisionModel().complete(chat())
    assert (caught.value.status, caught.value.type, caught.value.code) == (
        422, "validation_error", "no_frames")
    assert "image_url" in caught.value.message and "video_url" in caught.value.message


async def test_complete_rejects_remote_and_broken_images() -> None:
    with pytest.raises(ChatProblem) as caught:
        await VisionModel().complete(chat(ExternalImage("https://example.com/cat.jpg")))
    assert (caught.value.status, caught.value.code) == (400, "image_url_unsupported")
    with pytest.raises(ChatProblem) as caught:
        await VisionModel().complete(chat(ExternalImage("data:image/png;base64,@@@")))
    assert (caught.value.status, caught.value.code) == (422, "image_invalid")
    not_an_image = "data:image/png;base64," + base64.b64encode(b"hello").decode()
    with pytest.raises(ChatProblem) as caught:
        await VisionModel().complete(chat(ExternalImage(not_an_image)))
    assert (caught.value.status, caught.value.code) == (422, "image_invalid")


async def test_complete_rejects_unknown_required_property() -> None:
    request = chat(media(static_video(2)), response_format=schema_format(
        {"licence_plate": {"type": "string"}}, required=["licence_plate"]))
    with pytest.raises(ChatProblem) as caught:
        await VisionModel().complete(request)
    assert (caught.value.status, caught.value.code) == (400, "unsupported_property")
    assert "licence_plate" in caught.value.message


async def test_analysis_runs_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    threads: list[threading.Thread] = []

    def spy(parts: Any, **detectors: bool) -> Measurements:
        threads.append(threading.current_thread())
        return measure_parts(parts, **detectors)

    monkeypatch.setattr(vision, "measure_parts", spy)
    loop_thread = threading.current_thread()
    ticks = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    try:
        await VisionModel().complete(chat(media(walking_video(3))))
    finally:
        ticker.cancel()
    assert threads and threads[0] is not loop_thread
    assert ticks > 1


async def test_status_and_stream() -> None:
    model = VisionModel()
    assert model.id == "local/vision"
    assert await model.status() == "ready"
    pieces = [p async for p in model.stream(chat(media(static_video(2))))]
    assert pieces[0] == "No motion; no people or faces visible; scene is well lit."
    assert len(pieces) == 2 and isinstance(pieces[1], Usage)  # then the usage (SSE)


async def test_detectors_run_only_for_what_the_schema_asks(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(vision, "count_people", lambda image: calls.append("people") or 0)
    monkeypatch.setattr(vision, "count_faces", lambda image: calls.append("faces") or 0)

    def ask(properties: dict[str, Any]) -> ChatInput:
        return chat(media(walking_video(3)),
                    response_format=schema_format(properties, list(properties)))

    await VisionModel().complete(ask({"motion_detected": {"type": "boolean"}}))
    assert calls == []
    await VisionModel().complete(ask({"person_count": {"type": "integer"}}))
    assert calls == ["people"] * 3  # a count looks at every frame (up to 8)
    calls.clear()
    await VisionModel().complete(ask({"summary": {"type": "string"}}))
    assert calls == ["people", "faces"]  # the description: the newest frame only
    calls.clear()
    await VisionModel().complete(ask({"summary": {"type": "string"},
                                      "faces": {"type": "integer"}}))
    assert calls == ["people", "faces"] * 3


async def test_the_description_tells_the_people_of_the_newest_frame() -> None:
    """A person who left during the window: the sentence describes the scene now, and
    a property that asks for a count still finds them."""
    left = media([*walking_video(2), *static_video(1, seed=2)])
    request = chat(left, response_format=schema_format({"summary": {"type": "string"}}))
    answer = json.loads((await VisionModel().complete(request)).content)
    assert answer["summary"].startswith("Motion detected; no people or faces visible")
    request = chat(left, response_format=schema_format({"summary": {"type": "string"},
                                                        "people": {"type": "integer"}}))
    answer = json.loads((await VisionModel().complete(request)).content)
    assert answer["people"] == 1
    assert answer["summary"].startswith("Motion detected; 1 person and no faces visible")


# -- honesty: nothing it cannot measure is answered ----------------------------------------

@pytest.mark.parametrize("name", ["motion", "motion_detected", "moving"])
async def test_a_single_image_cannot_answer_a_required_motion_property(name: str) -> None:
    request = chat(media(walking_video(1), kind="image_url"), response_format=schema_format(
        {name: {"type": "boolean"}, "people": {"type": "integer"}}, required=[name]))
    with pytest.raises(ChatProblem) as caught:
        await VisionModel().complete(request)
    assert (caught.value.status, caught.value.code) == (400, "unsupported_property")
    assert repr(name) in caught.value.message and "video_url" in caught.value.message


async def test_a_single_image_leaves_optional_motion_out_and_answers_the_rest() -> None:
    request = chat(media(walking_video(1), kind="image_url"), response_format=schema_format(
        {"motion": {"type": "number"}, "people": {"type": "integer"}}, required=["people"]))
    answer = json.loads((await VisionModel().complete(request)).content)
    assert answer == {"people": 1}
    as_object = json.loads((await VisionModel().complete(
        chat(media(static_video(1), kind="image_url"),
             response_format={"type": "json_object"}))).content)
    assert "motion" not in as_object and "motion_detected" not in as_object
    assert as_object["frames"] == 1


def test_schema_problem_tells_what_a_question_shape_cannot_answer() -> None:
    from watcher.server.backends.visionanswer import schema_problem

    yes_no = {"type": "object", "properties": {"answer": {"type": "boolean"}},
              "required": ["answer"]}
    motion = {"type": "object", "properties": {"motion_detected": {"type": "boolean"}},
              "required": ["motion_detected"]}
    assert "'answer'" in (schema_problem(yes_no, window=True) or "")
    assert "'motion_detected'" in (schema_problem(motion, window=False) or "")
    assert schema_problem(motion, window=True) is None
