"""Receivers and the fault-injecting model of ``bench/soak.py`` (not a benchmark itself).

* :class:`WebhookReceiver`: HTTP on 127.0.0.1 (own thread). Verifies the HMAC
  signature over the raw body, records every request with its Idempotency-Key and
  answers 503 while a 5xx window is open.
* :class:`SmtpSink`: aiosmtpd on 127.0.0.1 that can be stopped and started again
  on the same port (an SMTP outage).
* :class:`SoakModel`: a model backend (``soak/vision``) that delegates to
  ``local/vision`` but, when told to, answers 503, 429 + retry-after, sleeps past the
  rule's timeout, or returns malformed JSON for the next N calls.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from typing import Any

import _common  # noqa: F401  (puts tests/ on sys.path, for support.*)
from aiosmtpd.controller import Controller
from support.receivers import HttpReceiver, Reply, Request, free_port, reply

from watcher.server.backends.base import ChatInput, Completion, ModelBackend, Usage
from watcher.server.problems import ChatProblem


# -- webhook ---------------------------------------------------------------------------------------
@dataclass
class HookRequest:
    at: float
    """time.time() when the request arrived."""
    key: str
    signature_ok: bool
    answered: int
    body: dict[str, Any] | None


class WebhookReceiver(HttpReceiver):
    """The test suite's receiver on ``/hook``, checking signatures, with 5xx windows."""

    def __init__(self, secret: str) -> None:
        super().__init__(secret)
        self.hooks: list[HookRequest] = []
        self.down_until = 0.0
        self.routes["/hook"] = self._answer

    def start(self) -> None:
        self.__enter__()

    def stop(self) -> None:
        self.__exit__()

    def outage(self, seconds: float) -> None:
        self.down_until = time.time() + seconds

    def _answer(self, request: Request) -> Reply:
        now = time.time()
        status = 503 if now < self.down_until else (200 if request.signature_ok else 401)
        try:
            body = request.json()
        except ValueError:
            body = None
        self.hooks.append(HookRequest(now, request.headers.get("idempotency-key", ""),
                                      bool(request.signature_ok), status, body))
        return reply(status, "down" if status == 503 else "ok")


# -- SMTP ------------------------------------------------------------------------------------------
@dataclass
class Mail:
    at: float
    key: str
    status: str


@dataclass
class _SmtpHandler:
    mails: list[Mail] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope):
        message = message_from_bytes(envelope.original_content or envelope.content,
                                     policy=policy.default)
        self.mails.append(Mail(time.time(), str(message.get("X-Watcher-Idempotency-Key", "")),
                               str(message.get("X-Watcher-Status", ""))))
        return "250 OK queued"


class SmtpSink:
    def __init__(self) -> None:
        self.handler = _SmtpHandler()
        self.port = free_port()
        self.controller: Controller | None = None

    @property
    def mails(self) -> list[Mail]:
        return self.handler.mails

    @property
    def up(self) -> bool:
        return self.controller is not None

    def start(self) -> None:
        if self.controller is None:
            controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
            controller.start()
            self.controller = controller

    def stop(self) -> None:
        if self.controller is not None:
            controller, self.controller = self.controller, None
            controller.stop()


# -- model -----------------------------------------------------------------------------------------
MODEL_FAULTS = ("model_503", "model_429", "model_timeout", "model_malformed")


class SoakModel(ModelBackend):
    """``soak/vision``: local/vision, except for the next ``n`` calls of an armed fault."""

    id = "soak/vision"
    owned_by = "soak"

    def __init__(self, inner: ModelBackend, timeout_sleep: float) -> None:
        self.inner = inner
        self.supports_video = inner.supports_video
        self.timeout_sleep = timeout_sleep
        self._armed: list[str] = []
        self.calls = 0
        self.injected: dict[str, int] = {k: 0 for k in MODEL_FAULTS}

    def arm(self, kind: str, n: int) -> None:
        self._armed.extend([kind] * n)

    async def status(self):  # type: ignore[override]
        return await self.inner.status()

    async def complete(self, request: ChatInput) -> Completion:
        self.calls += 1
        kind = self._armed.pop(0) if self._armed else None
        if kind is not None:
            self.injected[kind] += 1
        if kind == "model_503":
            raise ChatProblem(503, "injected: model overloaded", type="provider_error",
                              code="injected_503", headers={"retry-after": "1"})
        if kind == "model_429":
            raise ChatProblem(429, "injected: rate limited", type="rate_limit_error",
                              code="rate_limited", headers={"retry-after": "1"})
        if kind == "model_timeout":
            await asyncio.sleep(self.timeout_sleep)
        if kind == "model_malformed":
            return Completion(content='{"motion_detected": tru', usage=Usage(1, 1))
        return await self.inner.complete(request)

    async def aclose(self) -> None:
        pass  # the inner backend is closed by the server
