"""Fault injection for the embedded server: scripted errors and delays per route.

Tests and soak runs use it to make the server misbehave the way a real one
does (503 while draining, 429, slow answers) without touching its logic::

    server.faults.add(r"/keepalive$", status=503, times=3)
    server.faults.add(r"/chat/completions$", delay=2.0, status=None)  # slow, then normal
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Receive, Scope, Send


@dataclass(slots=True)
class Fault:
    path: re.Pattern[str]
    method: str | None = None
    status: int | None = 503
    """Answer this status instead of routing; None lets the request through after ``delay``."""
    delay: float = 0.0
    times: int | None = 1
    """How many requests to affect; None for every one until removed."""
    headers: dict[str, str] = field(default_factory=dict)
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return (self.method is None or self.method == method) and bool(self.path.search(path))

    @property
    def spent(self) -> bool:
        return self.times is not None and self.hits >= self.times


class FaultInjector:
    def __init__(self) -> None:
        self._faults: list[Fault] = []

    def add(self, path: str, *, method: str | None = None, status: int | None = 503,
            delay: float = 0.0, times: int | None = 1,
            headers: dict[str, str] | None = None) -> Fault:
        fault = Fault(re.compile(path), method.upper() if method else None, status, delay, times,
                      dict(headers or {}))
        self._faults.append(fault)
        return fault

    def clear(self) -> None:
        self._faults.clear()

    def take(self, method: str, path: str) -> Fault | None:
        """The first live fault for this request, counted as hit."""
        for fault in self._faults:
            if not fault.spent and fault.matches(method, path):
                fault.hits += 1
                return fault
        return None


class FaultMiddleware:
    def __init__(self, app: ASGIApp, injector: FaultInjector) -> None:
        self.app = app
        self.injector = injector

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fault = self.injector.take(scope["method"], scope["path"]) if (
            scope["type"] == "http") else None
        if fault is None:
            await self.app(scope, receive, send)
            return
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.status is None:
            await self.app(scope, receive, send)
            return
        message = f"injected fault ({fault.status})"
        if scope["path"].endswith("/chat/completions"):
            body: object = {"detail": {"error": {"message": message, "type": "provider_error",
                                                 "code": "injected_fault"}}}
        else:
            body = {"detail": message}
        payload = json.dumps(body).encode()
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(payload)).encode())]
        headers += [(k.lower().encode(), v.encode()) for k, v in fault.headers.items()]
        await send({"type": "http.response.start", "status": fault.status, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
