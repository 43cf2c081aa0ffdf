"""CORS: preflights on the API and the WHIP endpoint, exposed Location, origins checked."""

from __future__ import annotations

import httpx
import pytest
from pydantic import ValidationError

from watcher.server.app import create_app
from watcher.server.backends.frames import FramesModel
from watcher.server.settings import ServerSettings

KEY = "ovs-cors-key"
PAGE = "http://127.0.0.1:3000"


def client(*origins: str) -> httpx.AsyncClient:
    app = create_app(ServerSettings(api_keys=[KEY], cors_origins=list(origins)),
                     backends=[FramesModel()])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                             base_url="http://testserver/v1beta")


def preflight(method: str, headers: str = "authorization,content-type",
              origin: str = PAGE) -> dict[str, str]:
    return {"origin": origin, "access-control-request-method": method,
            "access-control-request-headers": headers}


@pytest.mark.parametrize(("path", "method"), [
    ("/streams", "POST"),
    ("/streams/abc", "GET"),
    ("/streams/abc/keepalive", "POST"),
    ("/chat/completions", "POST"),
    ("/streams/abc/whip", "POST"),
    ("/streams/abc/whip/session-1", "DELETE"),
])
async def test_preflights_are_answered_for_the_allowed_origin(path: str, method: str) -> None:
    async with client(PAGE) as c:
        response = await c.options(path, headers=preflight(method))
    assert response.status_code == 200, response.text
    assert response.headers["access-control-allow-origin"] == PAGE
    assert method in response.headers["access-control-allow-methods"]
    allowed = response.headers["access-control-allow-headers"].lower()
    assert "authorization" in allowed and "content-type" in allowed


async def test_responses_expose_location_to_the_page() -> None:
    async with client(PAGE) as c:
        created = await c.post("/streams", headers={"origin": PAGE,
                                                    "authorization": f"Bearer {KEY}"})
        assert created.status_code == 201
        assert created.headers["access-control-allow-origin"] == PAGE
        exposed = created.headers["access-control-expose-headers"].lower()
        assert "location" in exposed and "etag" in exposed
        denied = await c.get("/streams", headers={"origin": PAGE})
        assert denied.status_code == 401  # errors carry CORS headers too, so pages can read them
        assert denied.headers["access-control-allow-origin"] == PAGE


async def test_other_origins_get_no_cors_headers() -> None:
    async with client(PAGE) as c:
        response = await c.options("/streams", headers=preflight(
            "POST", origin="http://127.0.0.1:3001"))
        assert response.status_code == 400
        assert "access-control-allow-origin" not in response.headers
        plain = await c.post("/streams", headers={"origin": "http://evil.example",
                                                  "authorization": f"Bearer {KEY}"})
        assert "access-control-allow-origin" not in plain.headers


async def test_star_allows_any_origin() -> None:
    async with client("*") as c:
        response = await c.options("/streams/x/whip", headers=preflight(
            "POST", origin="https://cams.example.com"))
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "*"


async def test_without_origins_there_is_no_cors() -> None:
    async with client() as c:
        response = await c.options("/streams", headers=preflight("POST"))
        assert "access-control-allow-origin" not in response.headers
        plain = await c.options("/streams/x/whip")  # not a preflight: the WHIP OPTIONS
        assert plain.status_code == 204 and plain.headers["allow"] == "POST, OPTIONS"


def test_origins_are_checked_and_normalized() -> None:
    settings = ServerSettings(cors_origins=["http://LOCALHOST:3000/", "*", "https://a.example",
                                            "https://a.example"])
    assert settings.cors_origins == ["http://localhost:3000", "*", "https://a.example"]
    for bad in ("localhost:3000", "http://a.example/page", "ftp://a.example", "http://"):
        with pytest.raises(ValidationError, match="is not an origin"):
            ServerSettings(cors_origins=[bad])
