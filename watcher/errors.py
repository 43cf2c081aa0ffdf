"""One exception tree for the whole project.

::

    WatcherError
    ├── ConfigError                  a config file is invalid (names file:line and field)
    ├── RefError                     an ovs:// URL is malformed or cannot be resolved
    ├── LeaseLostError               this instance no longer owns the camera group it wrote for
    └── OvershootError               talking to an Overshoot-compatible API failed
        ├── TransportError           network failure or timeout; the outcome may be unknown
        └── APIError                 the server answered with an error envelope
            ├── AuthenticationError      401
            ├── BillingError             402
            ├── PermissionDeniedError    403
            ├── NotFoundError            404 (a stream that is gone or never existed)
            ├── UnprocessableError       400 / 422 (bad URL, bad request, segment errors)
            ├── RateLimitError           429 (carries ``retry_after``)
            ├── ServiceUnavailableError  503 (ingest draining, model loading)
            └── ServerError              any other 5xx

Both the server (to build error envelopes) and the client (to map them back)
use the ``code``/``type`` vocabulary of the Overshoot API.
"""

from __future__ import annotations


class WatcherError(Exception):
    """Base of every error watcher raises on purpose."""


class ConfigError(WatcherError):
    """A configuration file is invalid. ``problems`` holds one line per finding."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


class RefError(WatcherError):
    """An ovs:// reference is malformed or cannot be resolved.

    ``status`` and ``code`` are what the server answers with (422 unless the
    stream itself is missing or foreign).
    """

    def __init__(
        self, message: str, *, code: str = "query_param_invalid", status: int = 422,
        type: str = "validation_error",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status
        self.type = type


class LeaseLostError(WatcherError):
    """Cluster mode: the write's fencing token (group, owner, epoch) is stale.

    Another instance owns the camera group now (this one was paused or cut off
    past its lease); nothing was written, and this instance drops the group.
    """

    def __init__(self, message: str, *, group_id: str) -> None:
        super().__init__(message)
        self.group_id = group_id


class OvershootError(WatcherError):
    """Talking to an Overshoot-compatible API failed."""


class TransportError(OvershootError):
    """The request did not get an HTTP answer (connect error, reset, timeout)."""


class APIError(OvershootError):
    """The server answered with an HTTP error status."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        code: str | None = None,
        type: str | None = None,
        body: object = None,
    ) -> None:
        super().__init__(f"{status}: {message}" + (f" [{code}]" if code else ""))
        self.message = message
        self.status = status
        self.code = code
        self.type = type
        self.body = body


class AuthenticationError(APIError):
    """401: the API key is missing or unknown."""


class BillingError(APIError):
    """402: the account has no credit."""


class PermissionDeniedError(APIError):
    """403: the resource belongs to another key."""


class NotFoundError(APIError):
    """404: the stream (or route) does not exist, or has ended and been forgotten."""


class UnprocessableError(APIError):
    """400/422: the request or an ovs:// reference in it is invalid."""


class RateLimitError(APIError):
    """429: too many requests; ``retry_after`` is in seconds when the server said."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after = retry_after


class ServiceUnavailableError(APIError):
    """503: try again later (ingest draining, model loading)."""


class ServerError(APIError):
    """Any other 5xx."""
