"""One HTTP POST of a delivery, and what its outcome means for the outbox.

Classification (:func:`check_response`)::

    2xx                       delivered
    3xx                       permanent (configure the final URL: a POST is not re-sent)
    408, 429, 5xx             retryable, with retry_after from Retry-After (seconds or a date)
    other 4xx                 permanent
    timeout, connect/read/... retryable (the receiver may have it: the Idempotency-Key
                              lets it drop the repeat)
    bad URL, bad scheme       permanent

Messages name the action, never the URL, headers or body sent (a URL may
carry a token); a short, redacted piece of the response body is kept.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from watcher import __version__
from watcher.actions.base import Action, DeliveryError
from watcher.actions.templates import DEFAULT_BODY, SUMMARY_TITLE, Flavor, compile_template
from watcher.logs import redact

USER_AGENT = f"watcher/{__version__}"
RETRYABLE_STATUS = frozenset({408, 429})
MAX_DETAIL = 200


class HttpAction(Action):
    """An action that POSTs over the daemon's shared HTTP client, with a title and a body."""

    body_flavor: Flavor = "text"
    """How the body template escapes its output (``compile_template``'s flavour)."""

    def __init__(self, name: str, options: Any, *,
                 http: httpx.AsyncClient | None = None) -> None:
        super().__init__(name, options)
        if http is None:
            raise ValueError(f"the {self.type} action needs an httpx.AsyncClient (http=...)")
        options.register_secrets()
        self.http = http
        self.label = f"action {name!r} ({self.type})"
        self._title = compile_template(options.title)
        self._body = compile_template(options.body, self.body_flavor)
        self._summary_title = compile_template(SUMMARY_TITLE)
        self._summary_body = compile_template(DEFAULT_BODY, self.body_flavor)


async def post(http: httpx.AsyncClient, label: str, url: str, *, timeout: float,
               content: bytes | None = None, data: dict[str, str] | None = None,
               headers: dict[str, str] | None = None) -> httpx.Response:
    """POST to ``url``; the response if 2xx, else the :class:`DeliveryError` it means."""
    try:
        response = await http.post(url, content=content, data=data, headers=headers,
                                   timeout=timeout, follow_redirects=False)
    except (httpx.InvalidURL, httpx.UnsupportedProtocol):
        raise DeliveryError(f"{label}: the configured URL is not usable",
                            permanent=True) from None
    except httpx.TimeoutException:
        raise DeliveryError(f"{label}: timed out after {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{label}: {type(exc).__name__}{_reason(exc)}") from None
    check_response(label, response)
    return response


def check_response(label: str, response: httpx.Response) -> None:
    """Raise the :class:`DeliveryError` a non-2xx ``response`` means."""
    status = response.status_code
    if 200 <= status < 300:
        return
    message = f"{label}: HTTP {status}{detail(response)}"
    if status in RETRYABLE_STATUS or status >= 500:
        raise DeliveryError(message, retry_after=retry_after(response.headers.get("retry-after")))
    if 300 <= status < 400:
        message += " (redirects are not followed: configure the final URL)"
    raise DeliveryError(message, permanent=True)


def detail(response: httpx.Response) -> str:
    """`` (first words of the body)``, redacted, on one line; or nothing."""
    try:
        text = " ".join(response.text.split())
    except Exception:  # undecodable body
        return ""
    if not text:
        return ""
    text = redact(text)
    return f" ({text[:MAX_DETAIL]}{'...' if len(text) > MAX_DETAIL else ''})"


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value)) if value.replace(".", "", 1).isdigit() else max(
            0.0, (parsedate_to_datetime(value) - (now or datetime.now(UTC))).total_seconds())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _reason(exc: Exception) -> str:
    text = redact(" ".join(str(exc).split()))
    return f" ({text[:MAX_DETAIL]})" if text else ""
