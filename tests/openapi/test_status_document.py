"""The status listener's document covers the console's JSON API as it behaves.

schemathesis (``test_conformance.py``) runs against a daemon with no alerts yet; these
tests hold the document to answers with real events, silences and feedback in the
store, and to the listener's routes and authentication.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import pytest
from starlette.routing import Route

from watcher.clock import ManualClock
from watcher.console.api import ConsoleSource
from watcher.engine.state import AlertState, Kind, Status, Transition
from watcher.engine.store import AlertEventRecord, AlertStore
from watcher.observe.server import create_status_app
from watcher.observe.source import StatusSource

T0 = 1_800_000_000_000
TOKEN = "status-document-token"


def firing(n: int) -> AlertEventRecord:
    return AlertEventRecord.from_transition(
        "motion", "lobby", Transition(Kind.FIRING, True, T0 + n * 1000, n), severity="high",
        answer={"motion": True}, snapshot=b"\xff\xd8jpeg", stream_time_ms=60_000,
        extra={"first_match_ms": T0 + n * 1000 - 2000, "window_ms": 3000})


@pytest.fixture
async def src(tmp_path: Path) -> AsyncIterator[ConsoleSource]:
    async with AlertStore(tmp_path / "s.sqlite3") as store:
        for n in (1, 2):
            await store.record("motion", "lobby",
                               AlertState(Status.FIRING, firing_since_ms=T0, episode=n),
                               [firing(n)])
        yield ConsoleSource(status=StatusSource(keepers={}, store=store), store=store,
                            clock=ManualClock(T0 + 100_000))


def client(src: ConsoleSource, token: str | None = None) -> httpx.AsyncClient:
    app = create_status_app(src.status, console=src, token=token)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                             base_url="http://127.0.0.1", headers=headers)


def conforms(doc: dict[str, Any], path: str, method: str, response: httpx.Response) -> None:
    """``response`` has a documented status and its body matches that status's schema."""
    answers = doc["paths"][path][method]["responses"]
    assert str(response.status_code) in answers, (path, method, response.status_code)
    schema = answers[str(response.status_code)]["content"]["application/json"]["schema"]
    jsonschema.validate(response.json(), {**schema, "components": doc["components"]},
                        cls=jsonschema.Draft202012Validator)


async def test_every_api_route_and_method_is_documented(src: ConsoleSource) -> None:
    app = create_status_app(src.status, console=src)
    served = {(method.lower(), route.path) for route in app.routes
              if isinstance(route, Route) and route.path.startswith("/api/")
              for method in (route.methods or ()) if method != "HEAD"}
    async with client(src) as http:
        doc = (await http.get("/openapi.json")).json()
    documented = {(method, path) for path, item in doc["paths"].items()
                  if path.startswith("/api/") for method in item}
    assert served == documented
    assert "securitySchemes" not in doc["components"]  # no token: no authentication


async def test_with_a_token_every_route_but_healthz_needs_it(src: ConsoleSource) -> None:
    async with client(src, TOKEN) as http:
        doc = (await http.get("/openapi.json")).json()
    assert set(doc["components"]["securitySchemes"]) == {"StatusToken", "SessionCookie"}
    assert doc["components"]["securitySchemes"]["SessionCookie"]["name"] == "watcher_session"
    for path, item in doc["paths"].items():
        for method, operation in item.items():
            if path == "/healthz":
                assert "security" not in operation
                continue
            assert operation["security"] == [{"StatusToken": []}, {"SessionCookie": []}], path
            assert "401" in operation["responses"], (path, method)
    silences = doc["paths"]["/api/silences"]["post"]
    assert "X-CSRF-Token" in silences["description"].replace("x-csrf-token", "X-CSRF-Token")
    assert TOKEN not in str(doc)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(
            app=create_status_app(src.status, console=src, token=TOKEN)),
            base_url="http://127.0.0.1") as anonymous:
        refused = await anonymous.get("/api/events")
    conforms(doc, "/api/events", "get", refused)
    assert refused.status_code == 401


async def test_answers_with_real_data_match_their_schemas(src: ConsoleSource) -> None:
    async with client(src) as http:
        doc = (await http.get("/openapi.json")).json()
        page = await http.get("/api/events?limit=1")
        conforms(doc, "/api/events", "get", page)
        assert len(page.json()["events"]) == 1 and page.json()["next_before"]
        event_id = page.json()["events"][0]["id"]
        conforms(doc, "/api/events/{event_id}", "get", await http.get(f"/api/events/{event_id}"))
        conforms(doc, "/api/events/{event_id}/ack", "post", await http.post(
            f"/api/events/{event_id}/ack", json={"by": "ann", "comment": "on it"}))
        conforms(doc, "/api/events/{event_id}/feedback", "post", await http.post(
            f"/api/events/{event_id}/feedback", json={"label": "real", "note": None}))
        detail = await http.get(f"/api/events/{event_id}")
        conforms(doc, "/api/events/{event_id}", "get", detail)
        assert detail.json()["feedback"]["label"] == "real"
        assert detail.json()["acknowledged"]["by"] == "ann"
        created = await http.post("/api/silences", json={
            "matchers": [{"name": "rule", "value": "motion"}], "duration": "2h",
            "created_by": "ops"})
        assert created.status_code == 201
        conforms(doc, "/api/silences", "post", created)
        conforms(doc, "/api/silences", "get", await http.get("/api/silences"))
        conforms(doc, "/api/silences/{silence_id}", "delete",
                 await http.delete(f"/api/silences/{created.json()['id']}"))
        conforms(doc, "/api/silences/{silence_id}", "delete",
                 await http.delete(f"/api/silences/{created.json()['id']}"))
        conforms(doc, "/api/cameras", "get", await http.get("/api/cameras"))
        conforms(doc, "/api/rules", "get", await http.get("/api/rules"))


async def test_bad_input_is_a_documented_client_error(src: ConsoleSource) -> None:
    silence = {"matchers": [{"name": "rule", "value": "motion"}], "duration": "2h",
               "created_by": "ops"}
    async with client(src) as http:
        doc = (await http.get("/openapi.json")).json()
        # Times past year 9999 are clamped, not a database overflow.
        far = await http.get("/api/events?until=6502259484201763353368&before=99999999999"
                             "999999999:99999999999999999999999")
        conforms(doc, "/api/events", "get", far)
        assert far.status_code == 200
        for body in ({**silence, "created_by": [None]},
                     {**silence, "matchers": [{"name": "rule", "value": "x", "isEqual": {}}]},
                     {**silence, "duration": 10**400}, {**silence, "duration": True},
                     {**silence, "duration": ["2h"]}, {**silence, "ends_at": "AAA"},
                     {**silence, "comment": 5}):
            refused = await http.post("/api/silences", json=body)
            assert refused.status_code == 400, body
            conforms(doc, "/api/silences", "post", refused)
        assert (await http.post("/api/events/1/ack", json={"by": 7})).status_code == 400
        assert (await http.get("/api/events/\u00b2")).status_code == 404
        # A method no route takes is 405 (with Allow), not a CSRF refusal.
        trace = await http.request("TRACE", "/api/rules")
        assert trace.status_code == 405
        assert "GET" in trace.headers["allow"]
