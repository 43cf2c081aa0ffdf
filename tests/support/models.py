"""Model backends for tests: plugged into the real embedded server like any other backend."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from watcher.server.backends.base import ChatInput, Completion, ModelBackend, estimate_usage
from watcher.server.problems import ChatProblem

Reply = str | ChatProblem | Callable[[ChatInput], str]


class ScriptedModel(ModelBackend):
    """Answers from a script, one reply per request (the last one repeats).

    A reply is the answer text, a ChatProblem to raise, or a function of the
    request. Every request is kept in ``requests``.
    """

    def __init__(self, id: str, *replies: Reply, delay: float = 0.0) -> None:
        self.id = id
        self.replies = list(replies)
        self.delay = delay
        self.requests: list[ChatInput] = []

    async def complete(self, request: ChatInput) -> Completion:
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        reply = self.replies[min(len(self.requests), len(self.replies)) - 1]
        if isinstance(reply, ChatProblem):
            raise reply
        text = reply(request) if callable(reply) else reply
        return Completion(content=text, usage=estimate_usage(request, text))
