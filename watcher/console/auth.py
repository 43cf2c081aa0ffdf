"""Who may use the console and API, and protection of state-changing requests.

* With ``status.token``: every route but ``/healthz``, ``/login`` and ``/static/``
  needs ``Authorization: Bearer <token>`` (scripts, the CLI) or the session
  cookie that the login form sets (browsers): ``HttpOnly``, ``SameSite=Strict``,
  ``Secure`` behind https. The cookie holds an HMAC of the token, never the
  token, so changing the token logs every browser out. A request without
  either gets 401 (pages show the login form with it).
* Without a token the listener binds to loopback only (see
  :class:`~watcher.observe.config.StatusConfig`), and requests must name a
  loopback ``Host`` (a page on another site cannot reach it by DNS rebinding).
* CSRF: a state-changing request (POST, DELETE) is accepted when it carries the
  bearer token (a browser never adds it by itself), or the CSRF token (an HMAC
  of the session key) in the ``X-CSRF-Token`` header or a ``csrf_token`` form
  field; its ``Origin``, when sent, must be this listener.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request

SESSION_COOKIE = "watcher_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
OPEN_PATHS = ("/healthz", "/login", "/static/")
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class ConsoleAuth:
    def __init__(self, token: str | None) -> None:
        self.token = token
        key = (token or secrets.token_hex(32)).encode()
        self._session = _mac(key, "session")
        self.csrf_token = _mac(key, "csrf")

    @property
    def required(self) -> bool:
        return self.token is not None

    def is_open(self, path: str) -> bool:
        return any(path == p or (p.endswith("/") and path.startswith(p)) for p in OPEN_PATHS)

    def bearer_ok(self, request: Request) -> bool:
        if self.token is None:
            return False
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(
            value.strip().encode(), self.token.encode())

    def authenticated(self, request: Request) -> bool:
        if self.token is None:
            return True
        if self.bearer_ok(request):
            return True
        cookie = request.cookies.get(SESSION_COOKIE, "")
        return hmac.compare_digest(cookie.encode(), self._session.encode())

    def login(self, token: str) -> str | None:
        """The session cookie's value for a correct ``token``, else None."""
        if self.token is None or not hmac.compare_digest(token.encode(), self.token.encode()):
            return None
        return self._session

    def host_ok(self, request: Request) -> bool:
        """Without a token, only loopback names may be used to reach the listener."""
        if self.token is not None:
            return True
        host = request.headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name in LOOPBACK_HOSTS

    def csrf_ok(self, request: Request, form_token: str | None = None) -> bool:
        """Whether a state-changing request may proceed (see the module docstring)."""
        if request.method in SAFE_METHODS:
            return True
        if not self.origin_ok(request):
            return False
        if self.bearer_ok(request):
            return True
        given = request.headers.get(CSRF_HEADER) or form_token or ""
        return hmac.compare_digest(given.encode(), self.csrf_token.encode())

    def origin_ok(self, request: Request) -> bool:
        """An ``Origin`` header, when sent, names this listener."""
        origin = request.headers.get("origin")
        if origin is None:
            return True
        return origin != "null" and urlsplit(origin).netloc == request.headers.get("host", "")


def _mac(key: bytes, purpose: str) -> str:
    return hmac.new(key, f"watcher-console:{purpose}".encode(), hashlib.sha256).hexdigest()
