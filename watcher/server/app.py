"""The embedded Overshoot-compatible server as an ASGI app.

``create_app(settings)`` builds a FastAPI app serving the API under
``/v1beta``. Everything the app holds lives in one :class:`EmbeddedServer`
(``app.state.server``), so tests can drive the same object the routes use.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from watcher import __version__
from watcher.clock import Clock, SystemClock
from watcher.overshoot.refs import parse_ref
from watcher.server.backends.base import (
    ChatInput,
    Message,
    ModelBackend,
    Part,
)
from watcher.server.cors import install_cors
from watcher.server.external import external_part
from watcher.server.faults import FaultInjector, FaultMiddleware
from watcher.server.handlers import install_error_handlers
from watcher.server.limits import check_pull_limit, check_stream_limit
from watcher.server.openapi import install_openapi
from watcher.server.problems import ChatProblem, StreamProblem
from watcher.server.resolve import resolve
from watcher.server.schemas import ChatBody, CreateStreamBody
from watcher.server.settings import ServerSettings
from watcher.server.sourceguard import check_source_host
from watcher.server.sse import sse_chunks
from watcher.server.streams import PullSource, Stream, StreamRegistry, key_id

log = logging.getLogger(__name__)

API_PREFIX = "/v1beta"
SWEEP_INTERVAL_SECONDS = 1.0
LISTED_STATUSES = ("ready", "loading")
"""Statuses ``GET /models`` shows; a model in any other state is left out."""


class EmbeddedServer:
    """State of one server: keys, streams, ingest and model backends."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        clock: Clock | None = None,
        backends: list[ModelBackend] | None = None,
    ) -> None:
        from watcher.server.backends.registry import build_backends
        from watcher.server.ingest import WhipIngest
        from watcher.server.pull import PullIngest

        self.settings = settings
        self.clock = clock or SystemClock()
        self._key_ids = {key_id(k.get_secret_value()) for k in settings.api_keys}
        self.registry = StreamRegistry(self.clock, settings.stream_settings())
        self.backends: dict[str, ModelBackend] = {
            b.id: b for b in (backends if backends is not None else build_backends(settings))
        }
        self.ingest = WhipIngest(self.registry, settings)
        self.registry.on_end(self.ingest.stream_ended)
        self.puller = PullIngest(self.registry, settings)
        self.registry.on_end(self.puller.stream_ended)
        self.faults = FaultInjector()

    def owner_of(self, authorization: str | None) -> str | None:
        """The owner id of a ``Bearer`` API key, or None when missing or unknown."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        candidate = key_id(token.strip())
        for known in self._key_ids:
            if hmac.compare_digest(candidate, known):
                return known
        return None

    async def open_stream(self, owner: str, source: PullSource | None) -> Stream:
        """Create a stream; with a pull ``source``, only once the camera gave a frame.

        Every refusal (bad or private source url, a limit reached, a camera that
        cannot be opened in time) comes before the caller holds a stream.
        """
        settings = self.settings
        if source is not None:
            self.puller.check(source)
            await check_source_host(source.url, allow_private=settings.allow_private_sources)
        check_stream_limit(self.registry.active_count(owner), settings.max_streams_per_key)
        if source is None:
            return self.registry.create(owner)
        check_pull_limit(self.puller.active_pulls, settings.max_pulls)
        stream = self.registry.create(owner, source)
        self.puller.start(stream)
        timeout = settings.pull_connect_timeout_seconds
        try:
            failure = await self.puller.wait_connected(stream, timeout)
        except BaseException:  # the caller went away: nobody will ever know this stream
            self.registry.discard(stream.id)
            raise
        if failure is not None:
            self.registry.discard(stream.id)
            log.info("stream %s: its %s source did not connect within %g s: %s", stream.id,
                     source.type, timeout, failure)
            raise StreamProblem(
                422, f"Could not connect to source url within {timeout:g} s ({failure})")
        return stream

    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_SECONDS)
            self.registry.sweep()

    async def aclose(self) -> None:
        self.registry.shutdown()
        await self.ingest.aclose()
        await self.puller.aclose()
        for backend in self.backends.values():
            await backend.aclose()


def create_app(
    settings: ServerSettings,
    *,
    clock: Clock | None = None,
    backends: list[ModelBackend] | None = None,
) -> FastAPI:
    server = EmbeddedServer(settings, clock=clock, backends=backends)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(server.sweep_forever(), name="stream-sweeper")
        try:
            yield
        finally:
            sweeper.cancel()
            await server.aclose()

    app = FastAPI(title="watcher embedded Overshoot-compatible server", version=__version__,
                  lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = server
    app.include_router(_router(), prefix=API_PREFIX)
    app.add_middleware(FaultMiddleware, injector=server.faults)
    install_cors(app, settings.cors_origins)  # outermost: preflights skip the faults
    install_error_handlers(app)
    install_openapi(app)
    return app


def _server(request: Request) -> EmbeddedServer:
    return request.app.state.server


def _stream_owner(request: Request) -> str:
    owner = _server(request).owner_of(request.headers.get("authorization"))
    if owner is None:
        raise StreamProblem(401, "missing or unknown API key",
                            headers={"www-authenticate": "Bearer"})
    return owner


def _chat_owner(request: Request) -> str:
    owner = _server(request).owner_of(request.headers.get("authorization"))
    if owner is None:
        raise ChatProblem(401, "missing or unknown API key", type="authentication_error",
                          code="unauthorized", headers={"www-authenticate": "Bearer"})
    return owner


def _publish_info(request: Request, stream: Stream) -> dict[str, Any] | None:
    if stream.source is not None:
        return None
    settings = _server(request).settings
    base = (settings.public_url or str(request.base_url)).rstrip("/")
    return {
        "type": "whip",
        "url": f"{base}{API_PREFIX}/streams/{stream.id}/whip",
        "token": stream.publish_token,
    }


def _router() -> APIRouter:
    router = APIRouter()

    @router.get("/models")
    async def list_models(request: Request) -> dict[str, Any]:
        server = _server(request)
        created = int(time.time())
        data = []
        for backend in server.backends.values():
            status = await backend.status()
            if status in LISTED_STATUSES:  # an unhealthy model is left out, as the cloud does
                data.append({"id": backend.id, "object": "model", "created": created,
                             "owned_by": backend.owned_by, "status": status})
        return {"object": "list", "data": data}

    @router.post("/streams", status_code=201)
    async def create_stream(request: Request, body: CreateStreamBody | None = None,
                            owner: str = Depends(_stream_owner)) -> dict[str, Any]:
        server = _server(request)
        source = PullSource(body.source.type, body.source.url) if body and body.source else None
        stream = await server.open_stream(owner, source)
        created: dict[str, Any] = {
            "id": stream.id,
            "state": stream.state,
            "publish": _publish_info(request, stream),
            "expires_at_ms": stream.expires_at_ms,
            "ttl_seconds": stream.ttl_seconds,
        }
        if source is not None:
            created["source"] = {"type": source.type}  # never the url: it carries credentials
        return created

    @router.get("/streams")
    async def list_streams(request: Request) -> dict[str, Any]:
        owner = _stream_owner(request)
        server = _server(request)
        now = server.clock.now_ms()
        return {"object": "list",
                "data": [s.status(now) for s in server.registry.list(owner)]}

    @router.get("/streams/{stream_id}")
    async def get_stream(request: Request, stream_id: str) -> dict[str, Any]:
        server = _server(request)
        stream = server.registry.get(stream_id, _stream_owner(request))
        return stream.status(server.clock.now_ms())

    @router.post("/streams/{stream_id}/keepalive")
    async def keepalive(request: Request, stream_id: str) -> dict[str, Any]:
        server = _server(request)
        stream = server.registry.keepalive(stream_id, _stream_owner(request))
        return {
            "id": stream.id,
            "expires_at_ms": stream.expires_at_ms,
            "ttl_seconds": stream.ttl_seconds,
            "stream_time_ms": stream.stream_time_ms(server.clock.now_ms()),
            "publish": _publish_info(request, stream),
        }

    @router.delete("/streams/{stream_id}")
    async def delete_stream(request: Request, stream_id: str) -> dict[str, Any]:
        stream = _server(request).registry.delete(stream_id, _stream_owner(request))
        return {"id": stream.id, "deleted": True}

    @router.post("/streams/{stream_id}/whip", status_code=201)
    async def whip_offer(request: Request, stream_id: str) -> Response:
        server = _server(request)
        stream = server.registry.get_active(stream_id)
        token = (request.headers.get("authorization") or "").partition(" ")[2].strip()
        if stream is None or stream.source is not None:
            raise StreamProblem(404, "no active stream to publish to")
        if not token or not hmac.compare_digest(token.encode(), stream.publish_token.encode()):
            raise StreamProblem(401, "wrong or stale publish token",
                                headers={"www-authenticate": "Bearer"})
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/sdp":
            raise StreamProblem(415, "the offer must be sent as application/sdp")
        offer = (await request.body()).decode("utf-8", errors="replace")
        session_id, answer = await server.ingest.publish(stream, offer)
        location = f"{API_PREFIX}/streams/{stream.id}/whip/{session_id}"
        return Response(answer, status_code=201, media_type="application/sdp",
                        headers={"location": location, "etag": f'"{session_id}"'})

    @router.options("/streams/{stream_id}/whip", status_code=204)
    async def whip_options(stream_id: str) -> Response:
        # A plain OPTIONS (not a CORS preflight, which the CORS middleware answers).
        return Response(status_code=204, headers={"allow": "POST, OPTIONS"})

    @router.delete("/streams/{stream_id}/whip/{session_id}")
    async def whip_delete(request: Request, stream_id: str, session_id: str) -> Response:
        closed = await _server(request).ingest.unpublish(stream_id, session_id)
        if not closed:
            raise StreamProblem(404, "no such WHIP session")
        return Response(status_code=200)

    @router.patch("/streams/{stream_id}/whip/{session_id}")
    async def whip_patch(stream_id: str, session_id: str) -> Response:
        # Trickle ICE is not supported: the answer carries every candidate.
        return Response(status_code=405, headers={"allow": "DELETE"})

    @router.post("/chat/completions", response_model=None)
    async def chat_completions(request: Request, body: ChatBody,
                               owner: str = Depends(_chat_owner),
                               ) -> JSONResponse | StreamingResponse:
        server = _server(request)
        backend = await _ready_backend(server, body.model)
        chat = _resolve_chat(server, owner, body, backend)
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(server.clock.now_ms() // 1000)
        if body.stream:
            include_usage = bool((body.stream_options or {}).get("include_usage"))
            events = sse_chunks(backend, chat, completion_id, created, body.model,
                          include_usage=include_usage)
            return StreamingResponse(events, media_type="text/event-stream")
        completion = await backend.complete(chat)
        return JSONResponse({
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": completion.content},
                "finish_reason": completion.finish_reason,
            }],
            "usage": {
                "prompt_tokens": completion.usage.prompt_tokens,
                "completion_tokens": completion.usage.completion_tokens,
                "total_tokens": completion.usage.total_tokens,
            },
        })

    return router


async def _ready_backend(server: EmbeddedServer, model: str) -> ModelBackend:
    backend = server.backends.get(model)
    if backend is None:
        known = ", ".join(sorted(server.backends)) or "none"
        raise ChatProblem(400, f"unknown model {model[:80]!r}; available: {known}",
                          type="validation_error", code="model_unavailable")
    status = await backend.status()
    if status != "ready":
        raise ChatProblem(503 if status == "loading" else 400,
                          f"model {model!r} is {status}", type="provider_error",
                          code="model_unavailable")
    return backend


def _resolve_chat(server: EmbeddedServer, owner: str, body: ChatBody,
                  backend: ModelBackend) -> ChatInput:
    """Turn the body into a ChatInput, resolving every ovs:// part at one instant."""
    now = server.clock.now_ms()
    messages: list[Message] = []
    for message in body.messages:
        parts: list[Part] = []
        content = message.content
        if isinstance(content, str):
            parts.append(content)
        elif content is not None:
            for part in content:
                if part.type == "text":
                    parts.append(part.text)
                    continue
                url = part.image_url.url if part.type == "image_url" else part.video_url.url
                if url.startswith("ovs:"):
                    if part.type == "video_url" and not backend.supports_video:
                        raise ChatProblem(400, f"model {backend.id} does not accept video_url",
                                          type="validation_error", code="model_video_unsupported")
                    parts.append(_resolve_part(server, owner, url, part.type, now))
                else:
                    parts.append(external_part(
                        url, part.type, backend,
                        forward_media_urls=server.settings.forward_media_urls))
        messages.append(Message(role=message.role, parts=parts))
    max_tokens = body.max_completion_tokens or body.max_tokens
    return ChatInput(model=body.model, messages=messages, response_format=body.response_format,
                     max_tokens=max_tokens, raw=body.model_dump(exclude_none=True))


def _resolve_part(server: EmbeddedServer, owner: str, url: str, part_type: str,
                  now: int) -> Any:
    ref = parse_ref(url, part_type)  # type: ignore[arg-type]
    try:
        stream = server.registry.get(ref.stream_id, owner)
    except StreamProblem as exc:
        if exc.status == 403:
            raise ChatProblem(403, "the stream belongs to another API key",
                              type="stream_error", code="stream_unauthorized") from exc
        raise ChatProblem(404, f"stream {ref.stream_id} not found", type="stream_error",
                          code="stream_not_found") from exc
    if not stream.active:
        raise ChatProblem(404, f"stream {ref.stream_id} has ended ({stream.end_reason})",
                          type="stream_error", code="stream_not_found")
    return resolve(ref, stream, now)
