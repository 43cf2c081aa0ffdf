"""The status listener: health checks, Prometheus metrics and status, served in-process.

::

    GET /healthz   200 {"status": "ok"} while the daemon's event loop runs (liveness)
    GET /readyz    200 when the state store takes writes and every stream is ready (leased,
                   receiving frames now, its model answering), else 503 naming each stream
                   (or the store) that is not and why; JSON, or text with ``?format=text``
                   (or ``Accept: text/plain``). See :mod:`watcher.observe.readiness`. In
                   cluster mode the streams are those of the camera groups this instance owns
    GET /metrics   Prometheus text format (OpenMetrics when the scraper asks for it)
    GET /status    the JSON document of :mod:`watcher.observe.snapshot` (``watcher status``)
    GET /openapi.json  the OpenAPI document of these routes (:mod:`watcher.observe.openapi`)

Like the embedded API server (:mod:`watcher.server.embedded`), it is a
Starlette app served by uvicorn on the daemon's own event loop, leaving
signal handling to the daemon. The socket is bound before uvicorn starts, so
a port in use is a clear :class:`StatusError` at start-up rather than an exit.
Every JSON body has the registered secrets redacted.

With a :class:`~watcher.console.api.ConsoleSource` the listener also serves the
web console and its JSON API (:mod:`watcher.console`), and ``/`` is the alerts
timeline. ``status.token`` then guards every route but ``/healthz``; without a
token the listener binds to loopback only (see :class:`StatusConfig`).

The daemon enters :func:`status_listener` on its exit stack once its parts exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from watcher.console.api import ConsoleSource
from watcher.console.app import ConsoleGuard, console_routes
from watcher.console.auth import ConsoleAuth
from watcher.errors import WatcherError
from watcher.logs import redact, redact_data
from watcher.observe.config import DEFAULT_PORT, StatusConfig
from watcher.observe.metrics import build_registry
from watcher.observe.openapi import OPENAPI_PATH, status_openapi
from watcher.observe.snapshot import status_document
from watcher.observe.source import StatusSource

log = logging.getLogger(__name__)

ENDPOINTS = ("/healthz", "/readyz", "/metrics", "/status", OPENAPI_PATH)
SHUTDOWN_GRACE_S = 2


class StatusError(WatcherError):
    """The status listener could not start."""


@dataclass(frozen=True, slots=True)
class StatusEndpoint:
    host: str
    port: int

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"


def create_status_app(source: StatusSource, registry: CollectorRegistry | None = None, *,
                      console: ConsoleSource | None = None, token: str | None = None,
                      ) -> Starlette:
    """The listener's ASGI app; ``registry`` defaults to :func:`build_registry` of ``source``.

    ``console`` adds the web console and ``/api/`` (guarded by ``token`` when set)."""
    registry = registry if registry is not None else build_registry(source)

    async def index(request: Request) -> Response:
        return _json({"service": "watcher", "endpoints": list(ENDPOINTS)})

    async def healthz(request: Request) -> Response:
        return _json({"status": "ok", "uptime_s": round(source.uptime_s, 3)})

    async def readyz(request: Request) -> Response:
        report = await source.readiness_report()
        code = 200 if report.ready else 503
        if _wants_text(request):
            return Response(redact(report.as_text()), status_code=code, media_type="text/plain")
        doc = report.as_json()
        cluster = source.cluster_snapshot()
        if cluster is not None:  # this instance's streams are those of the groups it owns
            doc["cluster"] = {"instance_id": cluster["instance_id"], "owned": cluster["owned"]}
        return _json(doc, code)

    async def metrics(request: Request) -> Response:
        await source.refresh()
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encoder(registry), media_type=content_type)

    async def status(request: Request) -> Response:
        return _json(await status_document(source))

    document = status_openapi(console=console is not None, token=token is not None)

    async def openapi(request: Request) -> Response:
        return _json(document)

    routes: list[BaseRoute] = [Route("/healthz", healthz), Route("/readyz", readyz),
                               Route("/metrics", metrics), Route("/status", status),
                               Route(OPENAPI_PATH, openapi)]
    middleware = []
    if console is not None:
        auth = ConsoleAuth(token)
        routes += console_routes(console, auth)
        middleware.append(Middleware(ConsoleGuard, auth=auth, src=console))
    else:
        routes.append(Route("/", index))
    app = Starlette(routes=routes, middleware=middleware)
    app.state.registry = registry
    return app


def _wants_text(request: Request) -> bool:
    """``?format=text``, or an Accept header that prefers plain text to JSON."""
    fmt = request.query_params.get("format")
    if fmt is not None:
        return fmt == "text"
    accept = request.headers.get("accept", "")
    return "text/plain" in accept and "json" not in accept


def _json(doc: Any, status_code: int = 200) -> Response:
    body = redact(json.dumps(redact_data(doc), ensure_ascii=False))
    return Response(body, status_code=status_code, media_type="application/json")


class _Server(uvicorn.Server):
    """A uvicorn server that leaves signal handling to the daemon."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@contextlib.asynccontextmanager
async def serve_status(source: StatusSource, *, host: str = "127.0.0.1",
                       port: int = DEFAULT_PORT, console: ConsoleSource | None = None,
                       token: str | None = None) -> AsyncIterator[StatusEndpoint]:
    """Serve the status app on ``host:port`` until the block exits (port 0: a free one)."""
    sock = _bind(host, port)
    bound = StatusEndpoint(host, sock.getsockname()[1])
    app = create_status_app(source, console=console, token=token)
    config = uvicorn.Config(app, host=host, port=bound.port,
                            log_config=None, access_log=False, lifespan="off",
                            server_header=False, timeout_graceful_shutdown=SHUTDOWN_GRACE_S)
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]), name="status-server")
    try:
        while not server.started:
            if task.done():
                task.result()
                raise StatusError(f"the status listener at {bound.url} stopped while starting")
            await asyncio.sleep(0.02)
        log.info("status listening at %s (%s%s)", bound.url, ", ".join(ENDPOINTS),
                 ", the console at /" if console is not None else "")
        yield bound
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


@contextlib.asynccontextmanager
async def status_listener(config: StatusConfig, source: StatusSource,
                          console: ConsoleSource | None = None,
                          ) -> AsyncIterator[StatusEndpoint | None]:
    """:func:`serve_status` as ``config`` says; when disabled, log how to enable it, yield None."""
    if not config.enabled:
        log.info("status listener off: set `status: {enabled: true}` in the config to serve "
                 "/healthz, /readyz, /metrics and /status on %s (for `watcher status` and "
                 "Prometheus)", config.url)
        yield None
        return
    host = config.bind_host
    if host != config.host:
        log.warning("status.host is %s but status.token is not set: listening on %s only "
                    "(set a token to open the console and API to the network)", config.host,
                    host)
    token = config.token.get_secret_value() if config.token is not None else None
    async with serve_status(source, host=host, port=config.port, console=console,
                            token=token) as endpoint:
        yield endpoint


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StatusError(f"status listener: cannot resolve status.host {host!r} "
                          f"({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise StatusError(f"status listener cannot listen on {host}:{port}: "
                          f"{exc.strerror or exc} (change status.port or stop what uses it)"
                          ) from None
    return sock
