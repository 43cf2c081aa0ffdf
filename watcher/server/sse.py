"""A chat completion as OpenAI server-sent events (``stream: true``)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from watcher.server.backends.base import ChatInput, ModelBackend, Usage, estimate_usage
from watcher.server.problems import ChatProblem


async def sse_chunks(backend: ModelBackend, chat: ChatInput, completion_id: str, created: int,
               model: str, *, include_usage: bool = False) -> AsyncIterator[bytes]:
    """The answer as OpenAI chat-completion chunks, ending in ``data: [DONE]``.

    With ``include_usage`` (``stream_options``) every chunk carries ``usage: null``
    and one more chunk with no choices and the token counts comes before ``[DONE]``.
    """
    def event(body: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(body, separators=(',', ':'))}\n\n".encode()

    def chunk(choices: list[dict[str, Any]], usage: Usage | None = None) -> bytes:
        body: dict[str, Any] = {"id": completion_id, "object": "chat.completion.chunk",
                                "created": created, "model": model, "choices": choices}
        if include_usage:
            body["usage"] = None if usage is None else {
                "prompt_tokens": usage.prompt_tokens,
                "completion_tokens": usage.completion_tokens,
                "total_tokens": usage.total_tokens,
            }
        return event(body)

    def delta(content: dict[str, Any], finish: str | None = None) -> bytes:
        return chunk([{"index": 0, "delta": content, "finish_reason": finish}])

    yield delta({"role": "assistant", "content": ""})
    text: list[str] = []
    usage: Usage | None = None
    try:
        async for piece in backend.stream(chat):
            if isinstance(piece, Usage):
                usage = piece
                continue
            text.append(piece)
            yield delta({"content": piece})
    except ChatProblem as exc:
        yield event({"error": exc.body()["error"]})
    else:
        yield delta({}, "stop")
        if include_usage:
            yield chunk([], usage or estimate_usage(chat, "".join(text)))
    yield b"data: [DONE]\n\n"
