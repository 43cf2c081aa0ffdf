"""Ask one question about live streams and get a validated, structured answer.

One evaluation is one chat completion: the prompt, one frame reference per
stream (``image_url`` with ``frame_index=-1``, or a ``video_url`` window of
the last N seconds sampled at ``max_fps``), and ``response_format`` asking for
JSON matching the rule's schema, strictly. The answer is checked with
jsonschema; an invalid one gets a single repair round (the model sees its
answer and what was wrong), after which it is recorded as invalid.

Model errors follow the client's retry budget; when a model is still
unavailable, the next of ``fallback_models`` is asked. Errors that say the
*stream* is the problem (404, 422 frame errors) are not the model's fault and
are raised as :class:`StreamNotReady`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from jsonschema import Draft202012Validator

from watcher.errors import (
    APIError,
    NotFoundError,
    OvershootError,
    PermissionDeniedError,
    UnprocessableError,
)
from watcher.overshoot.client import OvershootClient
from watcher.overshoot.models import ChatMessage, ChatRequest, ImageUrlPart, VideoUrlPart
from watcher.overshoot.refs import frame_url, window_url

log = logging.getLogger(__name__)

RAW_LOG_LIMIT = 300
SYSTEM_PROMPT = (
    "You watch live security and operations cameras. Look only at the frames given. "
    "Answer with one JSON object that matches the requested schema, and nothing else. "
    "Do not guess: describe only what is visible."
)
_STREAM_CODES = {"stream_not_found", "stream_unauthorized", "frame_not_yet_produced",
                 "frame_evicted", "segment_empty", "segment_invalid", "frame_not_found"}
_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Question:
    prompt: str
    schema: dict[str, Any]
    model: str
    fallback_models: tuple[str, ...] = ()
    window_ms: int | None = None
    max_fps: float = 1.0
    max_tokens: int = 300
    schema_name: str = "answer"


@dataclass(slots=True)
class Answer:
    data: dict[str, Any] | None
    """The validated answer, or None when the model never produced a valid one."""
    raw: str
    model: str
    urls: list[str]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    error: str | None = None
    repaired: bool = False
    fallbacks_used: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return self.data is not None


class StreamNotReady(OvershootError):
    """The API could not resolve the stream's frames (gone, or none yet)."""


class ModelsExhausted(OvershootError):
    """Every model (the rule's and its fallbacks) failed."""


def frame_refs(question: Question, stream_ids: list[str], end_back_ms: int = 0) -> list[str]:
    """The ovs:// URL asked for each stream.

    ``end_back_ms`` > 0 ends a window that long before now (a change-triggered ask
    whose change is older than the ask: its window ends at the change)."""
    if question.window_ms is None:
        return [frame_url(sid, frame_index=-1) for sid in stream_ids]
    # Negative: back from now (a start offset of 0 would mean the oldest retained frame).
    back_ms = max(1, question.window_ms)
    if end_back_ms > 0:
        return [window_url(sid, start_offset_ms=-(back_ms + end_back_ms),
                           end_offset_ms=-end_back_ms, max_fps=question.max_fps)
                for sid in stream_ids]
    return [window_url(sid, start_offset_ms=-back_ms, max_fps=question.max_fps)
            for sid in stream_ids]


def build_request(question: Question, stream_ids: list[str], stream_names: list[str],
                  model: str, *, end_back_ms: int = 0, prompt: str | None = None,
                  ) -> ChatRequest:
    """``prompt`` replaces the question's (a rendered prompt template)."""
    parts: list[Any] = [question.prompt if prompt is None else prompt]
    part_type = ImageUrlPart if question.window_ms is None else VideoUrlPart
    for name, url in zip(stream_names, frame_refs(question, stream_ids, end_back_ms),
                         strict=True):
        if len(stream_ids) > 1:
            parts.append(f"Camera {name}:")
        parts.append(part_type.of(url))
    return ChatRequest(
        model=model,
        messages=[ChatMessage.system(SYSTEM_PROMPT), ChatMessage.user(*parts)],
        response_format={"type": "json_schema", "json_schema": {
            "name": question.schema_name, "schema": question.schema, "strict": True}},
        max_tokens=question.max_tokens,
        temperature=0,
    )


async def ask(client: OvershootClient, question: Question, stream_ids: list[str],
              stream_names: list[str], *, end_back_ms: int = 0,
              prompt: str | None = None) -> Answer:
    """Ask ``question`` about the streams; model failures fall back, stream failures raise."""
    models = [question.model, *question.fallback_models]
    failures: list[str] = []
    for model in models:
        request = build_request(question, stream_ids, stream_names, model,
                                end_back_ms=end_back_ms, prompt=prompt)
        try:
            answer = await _ask_model(client, question, request)
        except OvershootError as exc:
            if _is_stream_problem(exc):
                raise StreamNotReady(str(exc)) from exc
            failures.append(f"{model}: {exc}")
            log.warning("model %s failed (%s)%s", model, exc,
                        "; trying the next" if model != models[-1] else "")
            continue
        answer.fallbacks_used = [f.split(":", 1)[0] for f in failures]
        return answer
    raise ModelsExhausted("; ".join(failures))


async def _ask_model(client: OvershootClient, question: Question,
                     request: ChatRequest) -> Answer:
    started = time.perf_counter()
    urls = [p.image_url.url if isinstance(p, ImageUrlPart) else p.video_url.url
            for p in request.messages[-1].content  # type: ignore[union-attr]
            if isinstance(p, ImageUrlPart | VideoUrlPart)]
    completion = await client.chat(request)
    answer = Answer(None, completion.text, request.model, urls)
    _add_usage(answer, completion)
    data, error = parse_answer(completion.text, question.schema)
    if error is not None:
        repair = request.model_copy(update={"messages": [
            *request.messages,
            ChatMessage(role="assistant", content=completion.text),
            ChatMessage.user(f"That answer is not valid: {error}. Reply again with only "
                             "a JSON object that matches the schema."),
        ]})
        completion = await client.chat(repair)
        _add_usage(answer, completion)
        answer.raw, answer.repaired = completion.text, True
        data, error = parse_answer(completion.text, question.schema)
    answer.data, answer.error = data, error
    answer.latency_s = time.perf_counter() - started
    if error is not None:
        log.warning("model %s gave an invalid answer (%s): %r", request.model, error,
                    answer.raw[:RAW_LOG_LIMIT])
    return answer


def parse_answer(text: str, schema: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """The answer as a dict if it is JSON matching ``schema``; else None and why not."""
    fenced = _FENCE.match(text)
    body = fenced.group(1) if fenced else text.strip()
    try:
        data = json.loads(body)
    except ValueError as exc:
        return None, f"not JSON ({exc.msg} at position {exc.pos})"
    if not isinstance(data, dict):
        return None, f"expected a JSON object, got {type(data).__name__}"
    errors = sorted(Draft202012Validator(schema).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.path) or "answer"
        return None, f"{where}: {first.message[:200]}"
    return data, None


def _add_usage(answer: Answer, completion: Any) -> None:
    if completion.usage is not None:
        answer.prompt_tokens += completion.usage.prompt_tokens
        answer.completion_tokens += completion.usage.completion_tokens


def _is_stream_problem(exc: OvershootError) -> bool:
    if isinstance(exc, NotFoundError | PermissionDeniedError):
        return exc.code != "model_unavailable"
    if isinstance(exc, UnprocessableError | APIError):
        return getattr(exc, "code", None) in _STREAM_CODES
    return False
