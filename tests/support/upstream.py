"""A fake OpenAI-compatible VLM server on loopback whose replies a test scripts."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from support.asgi import serve_asgi


@dataclass
class Reply:
    """What the fake answers next: ``kind`` is ok, status, sleep, malformed or sse."""

    kind: str = "ok"
    content: str | None = "a person is at the door"
    usage: dict[str, int] | None = field(
        default_factory=lambda: {"prompt_tokens": 321, "completion_tokens": 7},
    )
    status: int = 200
    body: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    chunks: tuple[str, ...] = ()


@dataclass
class FakeUpstream:
    base_url: str = ""
    requests: list[dict[str, Any]] = field(default_factory=list)
    script: deque[Reply] = field(default_factory=deque)
    model_gets: int = 0
    models_status: int = 200
    """What ``GET /models`` answers (503: the upstream is still loading its model)."""

    def then(self, *replies: Reply) -> None:
        self.script.extend(replies)

    @property
    def last(self) -> dict[str, Any]:
        return self.requests[-1]

    async def chat(self, request: Request) -> Response:
        self.requests.append({"headers": dict(request.headers), "json": await request.json()})
        reply = self.script.popleft() if self.script else Reply()
        if reply.kind == "status":
            return Response(reply.body, status_code=reply.status, headers=reply.headers)
        if reply.kind == "sleep":
            await asyncio.sleep(reply.seconds)
        if reply.kind == "malformed":
            return Response('{"choices": [', media_type="application/json")
        if reply.kind == "sse":
            body = self.requests[-1]["json"]
            with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            usage = reply.usage if with_usage else None
            return StreamingResponse(_sse(reply.chunks, usage), media_type="text/event-stream")
        answer: dict[str, Any] = {
            "id": "chatcmpl-1", "object": "chat.completion", "model": "x",
            "choices": [{
                "index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": reply.content},
            }],
        }
        if reply.usage is not None:
            answer["usage"] = reply.usage
        return JSONResponse(answer)

    async def list_models(self, request: Request) -> Response:
        self.model_gets += 1
        if self.models_status != 200:
            return JSONResponse({"error": "busy"}, status_code=self.models_status)
        return JSONResponse({"object": "list", "data": [{"id": "vlm-upstream"}]})


async def _sse(chunks: tuple[str, ...], usage: dict[str, int] | None) -> AsyncIterator[bytes]:
    for text in chunks:
        event = {"choices": [{"index": 0, "delta": {"content": text}}]}
        yield f"data: {json.dumps(event)}\n\n".encode()
    if usage is not None:
        yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode()
    yield b"data: [DONE]\n\n"


@contextlib.asynccontextmanager
async def serve_fake_upstream() -> AsyncIterator[FakeUpstream]:
    """A :class:`FakeUpstream` on loopback; its ``base_url`` ends in ``/v1``."""
    state = FakeUpstream()
    app = Starlette(routes=[
        Route("/v1/chat/completions", state.chat, methods=["POST"]),
        Route("/v1/models", state.list_models, methods=["GET"]),
    ])
    async with serve_asgi(app, lifespan="off") as root:
        state.base_url = f"{root}/v1"
        yield state
