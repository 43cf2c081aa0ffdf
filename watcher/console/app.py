"""The console's routes, guard and error pages, added to the status listener's app.

:func:`console_routes` returns the routes (API, pages, login, static files);
:class:`ConsoleGuard` is the middleware in front of the whole listener:
authentication (:mod:`watcher.console.auth`), CSRF on the JSON API, and the
security headers of every answer. Errors map at one place: a missing thing is
404, bad input 400, a refused request 403, never 500 for bad input.
"""

from __future__ import annotations

from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp

from watcher.console.api import BadRequest, ConsoleSource
from watcher.console.auth import SAFE_METHODS, ConsoleAuth
from watcher.console.pages import HERE, login_page, login_routes, page_routes, render
from watcher.console.routes import api_routes, error

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data: blob:; "
    "media-src 'self' blob:; script-src 'self'; style-src 'self'; object-src 'none'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def console_routes(src: ConsoleSource, auth: ConsoleAuth) -> list[BaseRoute]:
    return [*api_routes(src), *page_routes(src, auth), *login_routes(src, auth),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static")]


class ConsoleGuard(BaseHTTPMiddleware):
    """Authentication, CSRF on the API, errors and security headers for every request."""

    def __init__(self, app: ASGIApp, auth: ConsoleAuth, src: ConsoleSource) -> None:
        super().__init__(app)
        self.auth = auth
        self.src = src

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        response = await self._guarded(request, call_next)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    async def _guarded(self, request: Request, call_next: RequestResponseEndpoint,
                       ) -> Response:
        auth, path = self.auth, request.url.path
        if not auth.host_ok(request):
            return error(403, "without status.token the console answers only to loopback "
                         "names (127.0.0.1, localhost, ::1)")
        if not auth.is_open(path) and not auth.authenticated(request):
            if request.method == "GET" and _wants_html(request):
                return login_page(request, auth, self.src)
            response = error(401, "authentication required: send Authorization: Bearer "
                             "<status.token>")
            response.headers["WWW-Authenticate"] = 'Bearer realm="watcher"'
            return response
        if (path.startswith("/api/") and request.method not in SAFE_METHODS
                and _routed(request) and not _api_csrf_ok(request, auth)):
            return error(403, "refused: a state-changing API request needs the bearer "
                         "token, a JSON body, or the X-CSRF-Token header, from this origin")
        try:
            return await call_next(request)
        except LookupError as exc:
            return self._error(request, 404, _message(exc, "not found"))
        except BadRequest as exc:
            return self._error(request, 400, str(exc))
        except PermissionError as exc:
            return self._error(request, 403, str(exc))

    def _error(self, request: Request, status_code: int, message: str) -> Response:
        if request.url.path.startswith("/api/") or not _wants_html(request):
            return error(status_code, message)
        return render(request, self.auth, self.src, "error.html", status_code,
                      status=status_code, message=message)


def _routed(request: Request) -> bool:
    """Whether a route takes this method here (else routing answers 404 or 405 itself)."""
    app = request.scope.get("app")
    routes = getattr(app, "routes", [])
    return any(route.matches(request.scope)[0] is Match.FULL for route in routes)


def _api_csrf_ok(request: Request, auth: ConsoleAuth) -> bool:
    """Bearer, the CSRF header, a JSON body or DELETE, from this origin (or none).

    A cross-site page can send neither a JSON body nor DELETE without a CORS
    preflight, which this listener never grants.
    """
    if auth.csrf_ok(request):
        return True
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    return auth.origin_ok(request) and (content_type == "application/json"
                                        or request.method == "DELETE")


def _wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


def _message(exc: Exception, default: str) -> str:
    text = exc.args[0] if exc.args and isinstance(exc.args[0], str) else default
    return text
