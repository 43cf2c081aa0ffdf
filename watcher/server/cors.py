"""CORS, so that a web page on another origin can call the API and publish over WHIP.

Off unless origins are configured (``serve --cors-origin``). Preflight requests
are answered for every path, the WHIP endpoint included; ``Location`` (where a
WHIP session is deleted) and ``ETag`` are exposed to the page. Credentials are
Bearer tokens in ``Authorization``, never cookies, so ``*`` is safe to allow.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

ALLOWED_METHODS = ["GET", "POST", "DELETE", "PATCH", "OPTIONS"]
ALLOWED_HEADERS = ["authorization", "content-type", "if-match"]
EXPOSED_HEADERS = ["location", "etag", "retry-after"]
PREFLIGHT_MAX_AGE = 600


def normalize_origin(value: str) -> str:
    """``*`` or ``scheme://host[:port]`` as browsers send it; ValueError otherwise."""
    text = value.strip()
    if text == "*":
        return text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise ValueError(f"{value!r} is not an origin (scheme://host[:port])") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"{value!r} is not an origin: it needs http:// or https:// and a host")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{value!r} is not an origin: drop the path, query and credentials")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port is not None else "")


def install_cors(app: FastAPI, origins: list[str]) -> None:
    """Answer CORS preflights and tag responses for ``origins`` (nothing when empty)."""
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware, allow_origins=origins, allow_methods=ALLOWED_METHODS,
        allow_headers=ALLOWED_HEADERS, expose_headers=EXPOSED_HEADERS,
        allow_credentials=False, max_age=PREFLIGHT_MAX_AGE)
