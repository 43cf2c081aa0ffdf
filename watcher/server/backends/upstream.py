"""Models served by an OpenAI-compatible upstream (Ollama, vLLM, a hosted API).

Resolved ovs:// parts are sent upstream as base64 JPEG data URLs: an image
part is one image, a video part is its sampled frames in order, each preceded
(with ``frame_labels``) by a text label carrying its stream time, because
upstream chat APIs take frames as separate images and would otherwise lose the
timing. Upstream failures become the Overshoot chat error envelope
(``upstream_http_<status>``, ``upstream_timeout``, ``upstream_request_failed``,
``upstream_invalid_response``).

The request and answer bodies are built and read in :mod:`.upstream_body`, the
settings live in :mod:`.upstream_settings` (re-exported here).

One :class:`Upstream` owns the HTTP client; each name in ``models`` is one
:class:`UpstreamModel` sharing it. The API key never leaves the Authorization
header: it is a ``SecretStr`` and is scrubbed from anything echoed back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from watcher.server.backends.base import (
    ChatInput,
    Completion,
    ModelBackend,
    ModelStatus,
    Usage,
    estimate_usage,
)
from watcher.server.backends.upstream_body import (
    content_text,
    message_body,
    reencode_all,
    usage_of,
)
from watcher.server.backends.upstream_settings import UpstreamSettings
from watcher.server.problems import ChatProblem

log = logging.getLogger(__name__)

PASSTHROUGH_OPTIONS = (
    "response_format",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "frequency_penalty",
    "presence_penalty",
)
"""Request fields copied unchanged from the client's body to the upstream request."""

REDACTED = "[redacted]"

__all__ = ["Upstream", "UpstreamModel", "UpstreamSettings"]


class Upstream:
    """One upstream server: the shared HTTP client and the models listed from it."""

    def __init__(
        self, settings: UpstreamSettings, *, transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self._client = httpx.AsyncClient(
            transport=transport, timeout=httpx.Timeout(settings.timeout_seconds),
        )
        self._models = [
            UpstreamModel(self, name, target) for name, target in settings.models.items()
        ]
        self._closed = False
        self._probe_lock = asyncio.Lock()
        self._probe_at: float | None = None
        self._probe_status: ModelStatus = "ready"

    def __repr__(self) -> str:
        names = list(self.settings.models)
        return f"Upstream(base_url={self.settings.base_url!r}, models={names!r})"

    def models(self) -> list[UpstreamModel]:
        return list(self._models)

    @property
    def closed(self) -> bool:
        return self._closed

    async def aclose(self) -> None:
        """Close the shared client; later calls do nothing."""
        if self._closed:
            return
        self._closed = True
        await self._client.aclose()

    # -- HTTP ------------------------------------------------------------------
    def _headers(self) -> dict[str, str]:
        headers = {"accept": "application/json"}
        key = self.settings.api_key
        if key is not None and key.get_secret_value():
            headers["authorization"] = f"Bearer {key.get_secret_value()}"
        return headers

    def redact(self, text: str) -> str:
        """``text`` with the API key replaced, for anything echoed from upstream."""
        key = self.settings.api_key
        secret = key.get_secret_value() if key is not None else ""
        return text.replace(secret, REDACTED) if secret else text

    async def probe(self) -> ModelStatus:
        """Reachability of ``GET {base_url}/models``, cached for ``probe_ttl_seconds``."""
        async with self._probe_lock:
            age = None if self._probe_at is None else time.monotonic() - self._probe_at
            if age is not None and age < self.settings.probe_ttl_seconds:
                return self._probe_status
            status: ModelStatus
            try:
                response = await self._client.get(
                    f"{self.settings.base_url}/models", headers=self._headers(),
                    timeout=self.settings.probe_timeout_seconds,
                )
            except httpx.HTTPError as exc:
                log.info("upstream %s unreachable: %s", self.settings.provider, type(exc).__name__)
                status = "unavailable"
            else:
                if response.is_success:
                    status = "ready"
                elif response.status_code == 503:
                    status = "loading"
                else:
                    status = "unavailable"
            self._probe_at, self._probe_status = time.monotonic(), status
            return status

    async def post_chat(self, body: dict[str, Any]) -> dict[str, Any]:
        """POST a chat completion; the JSON answer, or raise ChatProblem."""
        url = f"{self.settings.base_url}/chat/completions"
        try:
            async with asyncio.timeout(self.settings.timeout_seconds):
                async with self._client.stream(
                    "POST", url, json=body, headers=self._headers(),
                ) as response:
                    if not response.is_success:
                        raise await self._http_problem(response)
                    raw = await response.aread()
        except ChatProblem:
            raise
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise self._timeout_problem() from exc
        except httpx.HTTPError as exc:
            raise self._transport_problem(exc) from exc
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise self.invalid_response("the upstream answer is not JSON", raw) from exc
        if not isinstance(data, dict):
            raise self.invalid_response("the upstream answer is not a JSON object", raw)
        return data

    async def stream_chat(self, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POST a streaming chat completion; yield each SSE ``data:`` JSON event.

        Only httpx's per-read timeout applies here: a long answer that keeps
        producing tokens is fine, a stalled one is an ``upstream_timeout``.
        """
        url = f"{self.settings.base_url}/chat/completions"
        headers = self._headers() | {"accept": "text/event-stream"}
        try:
            async with self._client.stream("POST", url, json=body, headers=headers) as response:
                if not response.is_success:
                    raise await self._http_problem(response)
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        return
                    try:
                        event = json.loads(payload)
                    except ValueError as exc:
                        raise self.invalid_response(
                            "an upstream stream event is not JSON", payload.encode(),
                        ) from exc
                    if isinstance(event, dict):
                        yield event
        except ChatProblem:
            raise
        except httpx.TimeoutException as exc:
            raise self._timeout_problem() from exc
        except httpx.HTTPError as exc:
            raise self._transport_problem(exc) from exc

    # -- errors ----------------------------------------------------------------
    async def _read_bounded(self, response: httpx.Response) -> str:
        """At most ``max_body_bytes`` of the body, decoded and scrubbed of the key."""
        limit = self.settings.max_body_bytes
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in response.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size >= limit:
                    break
        except httpx.HTTPError:
            pass  # the status is what matters; keep whatever body arrived
        return self._bounded_text(b"".join(chunks))

    def _bounded_text(self, raw: bytes) -> str:
        text = raw[: self.settings.max_body_bytes].decode("utf-8", errors="ignore")
        return self.redact(text)

    async def _http_problem(self, response: httpx.Response) -> ChatProblem:
        status = response.status_code
        provider = self.settings.provider
        body = await self._read_bounded(response)
        upstream = {"provider": provider, "status": status, "body": body}
        retry_after = response.headers.get("retry-after")
        headers = {"retry-after": retry_after} if retry_after else None
        log.warning("upstream %s answered HTTP %d", provider, status)
        if status == 429:
            return ChatProblem(
                429, f"upstream {provider} is rate limiting requests (HTTP 429)",
                type="rate_limit_error", code="upstream_http_429", upstream=upstream,
                headers=headers,
            )
        if status == 503:
            return ChatProblem(
                503, f"upstream {provider} is unavailable (HTTP 503); retry later",
                type="upstream_error", code="upstream_http_503", upstream=upstream,
                headers=headers,
            )
        return ChatProblem(
            502, f"upstream {provider} answered HTTP {status}",
            type="upstream_error", code=f"upstream_http_{status}", upstream=upstream,
        )

    def _timeout_problem(self) -> ChatProblem:
        provider = self.settings.provider
        log.warning("upstream %s timed out after %ss", provider, self.settings.timeout_seconds)
        return ChatProblem(
            504, f"upstream {provider} did not answer within {self.settings.timeout_seconds} s",
            type="upstream_error", code="upstream_timeout",
        )

    def _transport_problem(self, exc: httpx.HTTPError) -> ChatProblem:
        provider = self.settings.provider
        detail = self.redact(str(exc)) or type(exc).__name__
        log.warning("upstream %s request failed: %s", provider, type(exc).__name__)
        return ChatProblem(
            502, f"request to upstream {provider} failed: {detail}",
            type="upstream_error", code="upstream_request_failed",
        )

    def invalid_response(self, message: str, raw: bytes) -> ChatProblem:
        provider = self.settings.provider
        log.warning("upstream %s: %s", provider, message)
        return ChatProblem(
            502, f"{message} ({provider})", type="upstream_error",
            code="upstream_invalid_response",
            upstream={"provider": provider, "status": 200, "body": self._bounded_text(raw)},
        )


class UpstreamModel(ModelBackend):
    """One listed model answered by the upstream under ``upstream_name``."""

    supports_video = True
    fetches_urls = True

    def __init__(self, upstream: Upstream, id: str, upstream_name: str) -> None:
        self.upstream = upstream
        self.id = id
        self.upstream_name = upstream_name
        self.owned_by = upstream.settings.owned_by

    def __repr__(self) -> str:
        return f"UpstreamModel(id={self.id!r}, upstream_name={self.upstream_name!r})"

    async def status(self) -> ModelStatus:
        if self.upstream.closed:
            return "unavailable"
        if not self.upstream.settings.probe:
            return "ready"
        return await self.upstream.probe()

    async def complete(self, request: ChatInput) -> Completion:
        body = await self.build_request(request)
        log.debug("upstream chat: model=%s messages=%d", self.upstream_name, len(body["messages"]))
        data = await self.upstream.post_chat(body)
        choices = data.get("choices")
        choice = choices[0] if isinstance(choices, list) and choices else None
        message = choice.get("message") if isinstance(choice, dict) else None
        content = content_text(message.get("content")) if isinstance(message, dict) else None
        if content is None:
            raw = json.dumps(data).encode()
            raise self.upstream.invalid_response("the upstream answer has no message content", raw)
        finish_reason = choice.get("finish_reason") if isinstance(choice, dict) else None
        return Completion(
            content=content,
            usage=usage_of(data.get("usage")) or estimate_usage(request, content),
            finish_reason=finish_reason if isinstance(finish_reason, str) else "stop",
        )

    async def stream(self, request: ChatInput) -> AsyncIterator[str | Usage]:
        """Pass the upstream SSE through, yielding content deltas, then the usage.

        The usage is asked for with ``stream_options.include_usage`` when the
        client asked for it; an upstream that does not send it gets an estimate
        from the server.
        """
        body = await self.build_request(request)
        body["stream"] = True
        options = (request.raw or {}).get("stream_options")
        if isinstance(options, dict) and options.get("include_usage"):
            body["stream_options"] = {"include_usage": True}
        async for event in self.upstream.stream_chat(body):
            usage = usage_of(event.get("usage"))
            if usage is not None:
                yield usage
            choices = event.get("choices")
            if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
                continue
            delta = choices[0].get("delta")
            text = content_text(delta.get("content")) if isinstance(delta, dict) else None
            if text:
                yield text

    async def aclose(self) -> None:
        await self.upstream.aclose()

    # -- request building ------------------------------------------------------
    async def build_request(self, request: ChatInput) -> dict[str, Any]:
        """The OpenAI chat body sent upstream for ``request``."""
        settings = self.upstream.settings
        jpegs: dict[tuple[str, int], bytes] = {}
        if not settings.jpeg_passthrough:
            frames = {(m.stream_id, f.index): f for m in request.media for f in m.frames}
            encoded = await asyncio.to_thread(
                reencode_all, list(frames.values()),
                settings.max_frame_side, settings.jpeg_quality,
            )
            jpegs = dict(zip(frames, encoded, strict=True))
        body: dict[str, Any] = {
            "model": self.upstream_name,
            "messages": [message_body(m, settings.frame_labels, jpegs) for m in request.messages],
        }
        raw = request.raw or {}
        for key in PASSTHROUGH_OPTIONS:
            if key in raw and raw[key] is not None:
                body[key] = raw[key]
        if "response_format" not in body and request.response_format is not None:
            body["response_format"] = request.response_format
        if (
            "max_tokens" not in body and "max_completion_tokens" not in body
            and request.max_tokens is not None
        ):
            body["max_tokens"] = request.max_tokens
        return body
