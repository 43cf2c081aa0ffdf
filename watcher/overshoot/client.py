"""The async client of an Overshoot-compatible API (the cloud or the embedded server).

One shared :class:`httpx.AsyncClient` carries every call. Failures are mapped
to :mod:`watcher.errors` at one boundary: :func:`error_from_response` for
HTTP error statuses and :meth:`OvershootClient._send` for network failures.
Each kind of call has a :class:`RetryPolicy` holding the retry budget
Overshoot recommends; a create whose outcome is unknown is never retried,
since a second create could leave a leased, billed stream behind.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ValidationError

from watcher import __version__
from watcher.errors import (
    APIError,
    AuthenticationError,
    BillingError,
    NotFoundError,
    OvershootError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
    ServiceUnavailableError,
    TransportError,
    UnprocessableError,
)
from watcher.logs import redact, register_secret
from watcher.overshoot.models import (
    ChatCompletion,
    ChatRequest,
    CreateStreamRequest,
    Deleted,
    Keepalive,
    ModelList,
    StreamCreated,
    StreamList,
    StreamSource,
    StreamStatus,
)

log = logging.getLogger(__name__)

MAX_ERROR_BODY = 8192
"""Bytes of an error body kept on :class:`APIError` (and characters of its message: 500)."""
_MAX_MESSAGE = 500

Sleep = Callable[[float], Awaitable[object]]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How one kind of call is timed out and retried.

    ``attempts`` counts the first try; retry *n* (1-based) waits
    ``delays[n-1]`` (the last delay repeats). A 429's ``retry-after`` is
    honoured when longer than the backoff; one longer than
    ``max_retry_after`` is not waited out: the error is raised so the caller
    can fall back (to another model, say).
    """

    attempts: int = 1
    delays: tuple[float, ...] = ()
    retry_on: frozenset[int] = frozenset()
    network: bool = False
    timeout: float = 10.0
    max_retry_after: float = 10.0

    def delay(self, retry: int) -> float:
        if not self.delays:
            return 0.0
        return self.delays[min(retry, len(self.delays)) - 1]


CREATE_POLICY = RetryPolicy(attempts=3, delays=(1.0, 2.0, 4.0), retry_on=frozenset({503}),
                            network=False, timeout=15.0)
PULL_CREATE_TIMEOUT = 45.0
"""Deadline of a create with a pull source: the server first waits for the camera (~15 s)."""
KEEPALIVE_POLICY = RetryPolicy(attempts=3, delays=(1.0,), retry_on=frozenset({503}),
                               network=True, timeout=10.0)
READ_POLICY = RetryPolicy(attempts=3, delays=(1.0,), retry_on=frozenset({503}),
                          network=True, timeout=10.0)
CHAT_POLICY = RetryPolicy(attempts=3, delays=(0.5, 1.0, 2.0), retry_on=frozenset({429, 503}),
                          network=True, timeout=60.0)


@dataclass(frozen=True, slots=True)
class Policies:
    """The policy of each call kind; GET and DELETE calls use ``read``."""

    create: RetryPolicy = CREATE_POLICY
    keepalive: RetryPolicy = KEEPALIVE_POLICY
    read: RetryPolicy = READ_POLICY
    chat: RetryPolicy = CHAT_POLICY


class FirstFrameTimeoutError(OvershootError, TimeoutError):
    """A stream did not receive its first frame in time (is the publisher connected?)."""


class StreamEndedError(OvershootError):
    """A stream ended while waiting for it; create a new one."""


# -- the error boundary --------------------------------------------------------
_STATUS_ERRORS: dict[int, type[APIError]] = {
    400: UnprocessableError,
    401: AuthenticationError,
    402: BillingError,
    403: PermissionDeniedError,
    404: NotFoundError,
    422: UnprocessableError,
    429: RateLimitError,
    503: ServiceUnavailableError,
}


def error_from_response(response: httpx.Response) -> APIError:
    """Map an HTTP error response to the matching :class:`APIError` subclass.

    Understands the three envelopes of the API (stream ``{"detail": msg}``,
    chat ``{"detail": {"error": {...}}}``, validation ``{"error":
    "validation_error", ...}``) and OpenAI's ``{"error": {...}}``.
    """
    status = response.status_code
    body = _bounded_body(response)
    message, code, type_ = _parse_envelope(body)
    message = redact((message or response.reason_phrase or f"HTTP {status}")[:_MAX_MESSAGE])
    cls = _STATUS_ERRORS.get(status, ServerError if status >= 500 else APIError)
    if cls is RateLimitError:
        return RateLimitError(message, status=status, code=code, type=type_, body=body,
                              retry_after=parse_retry_after(response.headers.get("retry-after")))
    return cls(message, status=status, code=code, type=type_, body=body)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``retry-after`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


def _bounded_body(response: httpx.Response) -> object:
    content = response.content
    if len(content) <= MAX_ERROR_BODY:
        try:
            return response.json()
        except ValueError:
            pass
    return redact(content[:MAX_ERROR_BODY].decode("utf-8", errors="replace"))


def _parse_envelope(body: object) -> tuple[str | None, str | None, str | None]:
    """(message, code, type) of an error body; None where the body does not say."""
    if isinstance(body, str):
        return body.strip() or None, None, None
    if not isinstance(body, dict):
        return None, None, None
    detail = body.get("detail")
    error = body.get("error")
    if isinstance(detail, dict) and isinstance(detail.get("error"), dict):
        error = detail["error"]
    if isinstance(error, dict):  # chat envelope, or OpenAI's own
        return _text(error.get("message")), _text(error.get("code")), _text(error.get("type"))
    if isinstance(error, str):  # request validation
        return _text(body.get("message")) or error, None, error
    if isinstance(detail, str):  # stream endpoints
        return detail, None, None
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):  # FastAPI default
        return _text(detail[0].get("msg")), None, "validation_error"
    return None, None, None


def _text(value: object) -> str | None:
    return None if value is None else str(value)


# -- the client ----------------------------------------------------------------
class OvershootClient:
    """Async client of one Overshoot-compatible API.

    ``base_url`` includes the version prefix (``https://api.overshoot.ai/v1beta``
    or ``http://127.0.0.1:8420/v1beta``). Pass ``http=`` to share an
    :class:`httpx.AsyncClient` (which the caller then closes) or
    ``transport=`` to run against an ASGI app or a mock. ``sleep`` is what
    waits between retries; ``jitter`` adds up to that fraction to each wait.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        http: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        policies: Policies | None = None,
        sleep: Sleep = asyncio.sleep,
        jitter: float = 0.1,
    ) -> None:
        if http is not None and transport is not None:
            raise ValueError("pass http= or transport=, not both")
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        register_secret(api_key)
        self._owns_http = http is None
        self._http = http or httpx.AsyncClient(transport=transport)
        self.policies = policies or Policies()
        self._sleep = sleep
        self._jitter = jitter

    def __repr__(self) -> str:
        return f"OvershootClient(base_url={self.base_url!r})"

    async def __aenter__(self) -> OvershootClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._owns_http:
            await self._http.aclose()

    # -- API calls -------------------------------------------------------------
    async def list_models(self) -> ModelList:
        return await self._call(ModelList, "GET", "/models", self.policies.read)

    async def create_stream(self, source: StreamSource | None = None) -> StreamCreated:
        """Create a stream; with ``source`` the server pulls that camera itself."""
        body = CreateStreamRequest(source=source).model_dump(exclude_none=True)
        policy = self.policies.create
        if source is not None and policy.timeout < PULL_CREATE_TIMEOUT:
            policy = replace(policy, timeout=PULL_CREATE_TIMEOUT)
        return await self._call(StreamCreated, "POST", "/streams", policy, json=body)

    async def get_stream(self, stream_id: str, *, timeout: float | None = None,
                         ) -> StreamStatus:
        """The stream's status. ``timeout``: one attempt, no retry, within that many seconds
        (a readiness probe wants the truth now, not after the retries)."""
        policy = self.policies.read if timeout is None else RetryPolicy(timeout=timeout)
        return await self._call(StreamStatus, "GET", _stream_path(stream_id), policy)

    async def list_streams(self) -> list[StreamStatus]:
        """Every stream of this key (the embedded server's ``GET /streams`` extension)."""
        listed = await self._call(StreamList, "GET", "/streams", self.policies.read)
        return listed.data

    async def keepalive(self, stream_id: str) -> Keepalive:
        return await self._call(Keepalive, "POST", _stream_path(stream_id, "keepalive"),
                                self.policies.keepalive)

    async def delete_stream(self, stream_id: str) -> Deleted:
        return await self._call(Deleted, "DELETE", _stream_path(stream_id), self.policies.read)

    async def chat(self, request: ChatRequest) -> ChatCompletion:
        """One chat completion; raises the last error once the retry budget is spent."""
        body = request.model_dump(mode="json", exclude_none=True)
        if body.get("stream"):
            raise ValueError("streamed (SSE) chat completions are not supported by chat()")
        return await self._call(ChatCompletion, "POST", "/chat/completions",
                                self.policies.chat, json=body)

    async def wait_for_first_frame(
        self, stream_id: str, timeout: float = 30.0,
        poll_interval: float = 0.5,
    ) -> StreamStatus:
        """Poll the stream until it has a frame (querying before that fails with a 422).

        Raises :class:`FirstFrameTimeoutError` after ``timeout`` seconds and
        :class:`StreamEndedError` if the stream ends meanwhile.
        """
        started = time.monotonic()
        waited = 0.0
        while True:
            status = await self.get_stream(stream_id)
            if status.has_frames:
                return status
            if not status.active:
                raise StreamEndedError(
                    f"stream {stream_id} ended ({status.end_reason}) before its first frame")
            # Count both real time and slept time, so an injected sleep still ends the wait.
            elapsed = max(time.monotonic() - started, waited)
            if elapsed >= timeout:
                raise FirstFrameTimeoutError(
                    f"stream {stream_id} has no frame after {timeout:g} s; "
                    "is a publisher connected?")
            pause = min(poll_interval, timeout - elapsed)
            await self._sleep(pause)
            waited += pause

    # -- plumbing --------------------------------------------------------------
    async def _call(self, model: type[M], method: str, path: str, policy: RetryPolicy,
                    json: Any = None) -> M:
        response = await self._request(method, path, policy, json)
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise OvershootError(
                f"{method} {path}: unexpected {response.status_code} response: "
                f"{exc.error_count()} validation error(s), first: {exc.errors()[0]['msg']}"
            ) from exc

    async def _request(self, method: str, path: str, policy: RetryPolicy,
                       json: Any) -> httpx.Response:
        """Send with ``policy``'s retry budget; return a < 400 response or raise."""
        attempt = 1
        while True:
            error: OvershootError
            try:
                response = await self._send(method, path, policy, json)
            except TransportError as exc:
                if not policy.network or attempt >= policy.attempts:
                    raise
                error, delay = exc, policy.delay(attempt)
            else:
                if response.status_code < 400:
                    return response
                error = error_from_response(response)
                if response.status_code not in policy.retry_on or attempt >= policy.attempts:
                    raise error
                delay = policy.delay(attempt)
                if isinstance(error, RateLimitError) and error.retry_after is not None:
                    if error.retry_after > policy.max_retry_after:
                        raise error
                    delay = max(delay, error.retry_after)
            delay = self._jittered(delay)
            log.warning("%s %s failed (%s); retry %d/%d in %.1f s", method, path, error,
                        attempt, policy.attempts - 1, delay)
            await self._sleep(delay)
            attempt += 1

    async def _send(self, method: str, path: str, policy: RetryPolicy,
                    json: Any) -> httpx.Response:
        """One HTTP exchange; network failures become :class:`TransportError`."""
        headers = {"accept": "application/json", "user-agent": f"watcher/{__version__}"}
        if self._api_key:
            headers["authorization"] = f"Bearer {self._api_key}"
        started = time.perf_counter()
        try:
            response = await self._http.request(method, self.base_url + path, json=json,
                                                headers=headers,
                                                timeout=httpx.Timeout(policy.timeout))
        except httpx.RequestError as exc:
            elapsed_ms = (time.perf_counter() - started) * 1000
            log.debug("%s %s -> %s after %.0f ms", method, path, type(exc).__name__, elapsed_ms)
            detail = redact(str(exc))[:_MAX_MESSAGE]
            raise TransportError(f"{method} {path}: {type(exc).__name__}"
                                 + (f": {detail}" if detail else "")) from exc
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.debug("%s %s -> %d in %.0f ms", method, path, response.status_code, elapsed_ms)
        return response

    def _jittered(self, delay: float) -> float:
        if self._jitter <= 0 or delay <= 0:
            return delay
        return delay * (1 + random.uniform(0, self._jitter))


def _stream_path(stream_id: str, action: str | None = None) -> str:
    if not stream_id or stream_id in {".", ".."}:
        raise ValueError(f"malformed stream id {stream_id!r}")
    return f"/streams/{quote(stream_id, safe='')}" + (f"/{action}" if action else "")
