"""The webhook action against a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime

import httpx
import pytest
from support.receivers import HttpReceiver, event, free_port, reply

from watcher import __version__
from watcher.actions.base import DeliveryError
from watcher.actions.http import retry_after
from watcher.actions.webhook import WebhookAction, WebhookOptions, fingerprint

SECRET = "whsec-canary-5f2a9c"
TOKEN = "tok-canary-77e1d0"
BEARER = "bearer-canary-31c4"
CANARIES = (SECRET, TOKEN, BEARER)


@pytest.fixture
def receiver() -> Iterator[HttpReceiver]:
    with HttpReceiver(secret=SECRET) as r:
        yield r


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def hook(receiver: HttpReceiver, http: httpx.AsyncClient, name: str = "ops-hook",
         **options: object) -> WebhookAction:
    url = receiver.url(f"/hook/{TOKEN}") + f"?token={TOKEN}"
    opts = WebhookOptions.model_validate({"type": "webhook", "url": url, "secret": SECRET,
                                          **options})
    return WebhookAction(name, opts, http=http)


async def test_default_payload(receiver: HttpReceiver, http: httpx.AsyncClient) -> None:
    await hook(receiver, http).send(event(), "dock-occupied:dock:3:firing:1:ops-hook")
    [request] = receiver.requests
    assert request.method == "POST" and request.path == f"/hook/{TOKEN}"
    assert request.signature_ok is True
    assert request.headers["idempotency-key"] == "dock-occupied:dock:3:firing:1:ops-hook"
    assert request.headers["user-agent"] == f"watcher/{__version__}"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "version": "1", "status": "firing", "kind": "firing", "rule": "dock-occupied",
        "stream": "dock", "severity": "critical",
        "title": "[CRITICAL] dock-occupied on dock: firing",
        "text": "dock-occupied is firing on dock: Two people at the dock door\n"
                "Firing since 2024-05-01T12:00:00.000Z.\npeople: 2\nperson_present: yes\n",
        "description": "Two people at the dock door",
        "answer": {"people": 2, "person_present": True,
                   "description": "Two people at the dock door"},
        "labels": {"site": "north"}, "started_at": "2024-05-01T12:00:00.000Z",
        "resolved_at": None, "created_at": "2024-05-01T12:00:00.000Z", "episode": 3,
        "event_id": 42, "event_key": "dock-occupied:dock:3:firing:1714564800000",
        "urls": ["ovs://streams/s-1?frame_index=41"], "stream_ids": ["s-1"],
        "stream_time_ms": 41_000, "model": "local/vision",
        "usage": {"prompt_tokens": 800, "completion_tokens": 20},
        "prompt": "Is anyone at the loading dock?", "action": "ops-hook", "has_snapshot": True,
        "persisted": True,
    }


async def test_an_event_not_persisted_yet_says_so(receiver: HttpReceiver,
                                                  http: httpx.AsyncClient) -> None:
    """Delivered best effort while the state store is unavailable: no id, persisted false."""
    unstored = event(id=None)
    await hook(receiver, http).send(unstored, f"{unstored.event_key}:ops-hook")
    await hook(receiver, http, format="alertmanager").send(unstored, "k")
    watcher_format, alertmanager = (r.json() for r in receiver.requests)
    assert watcher_format["persisted"] is False and watcher_format["event_id"] is None
    assert watcher_format["event_key"] == unstored.event_key
    assert "Not recorded yet: the alert state store is unavailable." in watcher_format["text"]
    assert alertmanager["alerts"][0]["annotations"]["persisted"] == "false"


async def test_signature_covers_the_exact_body_bytes(receiver: HttpReceiver,
                                                     http: httpx.AsyncClient) -> None:
    await hook(receiver, http).send(event(answer={"note": "café ✓ \"quoted\""}), "k")
    [request] = receiver.requests
    expected = hmac.new(SECRET.encode(), request.body, hashlib.sha256).hexdigest()
    assert request.headers["x-watcher-signature"] == f"sha256={expected}"
    assert "café ✓" in request.body.decode()  # UTF-8, not re-encoded after signing
    tampered = request.body.replace(b"caf", b"CAF")
    assert hmac.new(SECRET.encode(), tampered, hashlib.sha256).hexdigest() != expected


async def test_no_secret_no_signature(receiver: HttpReceiver, http: httpx.AsyncClient) -> None:
    action = WebhookAction("h", WebhookOptions(url=receiver.url()), http=http)
    await action.send(event(), "k")
    assert "x-watcher-signature" not in receiver.requests[0].headers


async def test_resolved_payload_and_snapshot(receiver: HttpReceiver,
                                             http: httpx.AsyncClient) -> None:
    action = hook(receiver, http, include_snapshot=True)
    await action.send(event("resolved"), "k1")
    await action.send(event(), "k2")
    resolved, firing = (r.json() for r in receiver.requests)
    assert (resolved["status"], resolved["resolved_at"]) == ("resolved",
                                                            "2024-05-01T12:02:00.000Z")
    assert resolved["snapshot"] is None and resolved["has_snapshot"] is False
    assert firing["snapshot"]["content_type"] == "image/jpeg"
    assert base64.b64decode(firing["snapshot"]["data"]) == event().snapshot


async def test_custom_headers_and_template_body(receiver: HttpReceiver,
                                                http: httpx.AsyncClient) -> None:
    action = hook(receiver, http, headers={"Authorization": f"Bearer {BEARER}"},
                  content_type="text/plain; charset=utf-8",
                  template="{{ rule }}/{{ stream }}: {{ status }}{% if status == 'summary' %}"
                           " x{{ count }}{% endif %}")
    await action.send(event(), "k1")
    await action.send_summary([event(), event("resolved")], "k2")
    one, summary = receiver.requests
    assert one.body == b"dock-occupied/dock: firing" and one.signature_ok
    assert one.headers["content-type"] == "text/plain; charset=utf-8"
    assert one.headers["authorization"] == f"Bearer {BEARER}"
    assert summary.body == b"dock-occupied/dock: summary x2"


async def test_summary_payload(receiver: HttpReceiver, http: httpx.AsyncClient) -> None:
    events = [event(), event("repeat", id=43), event("resolved", id=44)]
    await hook(receiver, http).send_summary(events, "summary-key")
    [request] = receiver.requests
    body = request.json()
    assert request.headers["idempotency-key"] == "summary-key" and request.signature_ok
    assert {k: body[k] for k in ("version", "status", "action", "count", "rule", "stream",
                                 "severity")} == {
        "version": "1", "status": "summary", "action": "ops-hook", "count": 3,
        "rule": "dock-occupied", "stream": "dock", "severity": "critical"}
    assert body["title"] == "[CRITICAL] 3 alert events of dock-occupied held back by the rate limit"
    assert [e["event_id"] for e in body["events"]] == [42, 43, 44]
    assert body["events"][2] == {
        "event_id": 44, "event_key": "dock-occupied:dock:3:resolved:1714564920000",
        "rule": "dock-occupied", "stream": "dock", "status": "resolved", "kind": "resolved",
        "severity": "critical", "created_at": "2024-05-01T12:02:00.000Z",
        "description": "Two people at the dock door"}
    assert (body["first_at"], body["last_at"]) == ("2024-05-01T12:00:00.000Z",
                                                   "2024-05-01T12:02:00.000Z")


async def test_alertmanager_format(receiver: HttpReceiver, http: httpx.AsyncClient) -> None:
    action = hook(receiver, http, format="alertmanager", external_url="https://dash.example/")
    await action.send(event(), "k1")
    await action.send(event("resolved"), "k2")
    firing, resolved = (r.json() for r in receiver.requests)
    assert set(firing) == {"version", "groupKey", "truncatedAlerts", "status", "receiver",
                           "groupLabels", "commonLabels", "commonAnnotations", "externalURL",
                           "alerts"}
    assert firing["version"] == "4" and firing["truncatedAlerts"] == 0
    assert firing["status"] == "firing" and firing["receiver"] == "ops-hook"
    assert firing["groupLabels"] == {"alertname": "dock-occupied", "stream": "dock"}
    assert firing["groupKey"] == '{}:{alertname="dock-occupied", stream="dock"}'
    assert firing["externalURL"] == "https://dash.example/"
    [alert] = firing["alerts"]
    labels = {"alertname": "dock-occupied", "stream": "dock", "severity": "critical",
              "site": "north"}
    assert alert == {
        "status": "firing", "labels": labels,
        "annotations": {
            "summary": "[CRITICAL] dock-occupied on dock: firing",
            "description": "Two people at the dock door",
            "answer": '{"people":2,"person_present":true,'
                      '"description":"Two people at the dock door"}',
            "event_key": "dock-occupied:dock:3:firing:1714564800000"},
        "startsAt": "2024-05-01T12:00:00.000Z", "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "https://dash.example/", "fingerprint": fingerprint(labels),
    }
    assert firing["commonLabels"] == labels
    assert firing["commonAnnotations"] == alert["annotations"]
    [done] = resolved["alerts"]
    assert resolved["status"] == done["status"] == "resolved"
    assert (done["startsAt"], done["endsAt"]) == ("2024-05-01T12:00:00.000Z",
                                                  "2024-05-01T12:02:00.000Z")
    assert done["fingerprint"] == alert["fingerprint"]  # the same alert, now resolved
    assert all(r.signature_ok for r in receiver.requests)


async def test_alertmanager_summary_is_one_payload(receiver: HttpReceiver,
                                                   http: httpx.AsyncClient) -> None:
    action = hook(receiver, http, format="alertmanager")
    events = [event(), event("resolved"), event(rule="yard-busy", labels={"site": "north"})]
    await action.send_summary(events, "k")
    [request] = receiver.requests
    body = request.json()
    assert [a["status"] for a in body["alerts"]] == ["firing", "resolved", "firing"]
    assert body["status"] == "firing"
    assert body["groupLabels"] == {"stream": "dock"}
    assert body["commonLabels"] == {"stream": "dock", "severity": "critical", "site": "north"}
    assert len({a["fingerprint"] for a in body["alerts"]}) == 2


async def test_retries_keep_the_idempotency_key(receiver: HttpReceiver,
                                                http: httpx.AsyncClient) -> None:
    receiver.fail(reply(500, "boom"), reply(429, "slow down", {"Retry-After": "7"}),
                  reply(503, "", {"Retry-After": "1.5"}))
    action = hook(receiver, http)
    errors = []
    for _ in range(4):  # what the outbox does: try, and again after the error's delay
        try:
            await action.send(event(), "dock-occupied:dock:3:firing:1714564800000:ops-hook")
            break
        except DeliveryError as exc:
            errors.append(exc)
    assert [(e.permanent, e.retry_after) for e in errors] == [
        (False, None), (False, 7.0), (False, 1.5)]
    assert str(errors[0]) == "action 'ops-hook' (webhook): HTTP 500 (boom)"
    assert len(receiver.requests) == 4
    assert {r.headers["idempotency-key"] for r in receiver.requests} == {
        "dock-occupied:dock:3:firing:1714564800000:ops-hook"}
    assert len({r.body for r in receiver.requests}) == 1
    assert all(r.signature_ok for r in receiver.requests)


@pytest.mark.parametrize(("status", "permanent"), [
    (408, False), (429, False), (500, False), (502, False), (503, False), (504, False),
    (400, True), (401, True), (403, True), (404, True), (410, True), (413, True), (422, True),
    (301, True), (302, True), (307, True),
])
async def test_status_mapping(receiver: HttpReceiver, http: httpx.AsyncClient, status: int,
                              permanent: bool) -> None:
    headers = {"Location": "https://elsewhere.example/"} if 300 <= status < 400 else {}
    receiver.fail(reply(status, "no", headers))
    with pytest.raises(DeliveryError) as info:
        await hook(receiver, http).send(event(), "k")
    assert info.value.permanent is permanent
    assert f"HTTP {status}" in str(info.value)
    assert len(receiver.requests) == 1  # redirects are not followed


async def test_retry_after_as_http_date(receiver: HttpReceiver, http: httpx.AsyncClient) -> None:
    receiver.fail(reply(503, "", {"Retry-After": "Wed, 21 Oct 2099 07:28:00 GMT"}))
    with pytest.raises(DeliveryError) as info:
        await hook(receiver, http).send(event(), "k")
    assert info.value.retry_after is not None and info.value.retry_after > 86_400


def test_retry_after_parsing() -> None:
    now = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert retry_after("120", now) == 120.0
    assert retry_after(" 2.5 ", now) == 2.5
    assert retry_after("Wed, 01 May 2024 12:01:30 GMT", now) == 90.0
    assert retry_after("Wed, 01 May 2024 11:00:00 GMT", now) == 0.0  # in the past
    for bad in (None, "", "soon", "-5", "1e99x"):
        assert retry_after(bad, now) is None


async def test_network_failures_are_retryable(http: httpx.AsyncClient) -> None:
    closed = WebhookAction("h", WebhookOptions(url=f"http://127.0.0.1:{free_port()}/x"),
                           http=http)
    with pytest.raises(DeliveryError, match="ConnectError") as info:
        await closed.send(event(), "k")
    assert not info.value.permanent

    with HttpReceiver() as slow:
        slow.delay = 1.0
        action = WebhookAction("h", WebhookOptions(url=slow.url(), timeout="200ms"), http=http)
        with pytest.raises(DeliveryError, match=r"timed out after 0\.2 s") as info:
            await action.send(event(), "k")
        assert not info.value.permanent


async def test_no_secret_reaches_logs_or_errors(
    receiver: HttpReceiver, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.WARNING, logger="httpx")  # as configure_logging sets them
    caplog.set_level(logging.WARNING, logger="httpcore")

    def echo(request) -> tuple[int, dict, bytes]:  # a receiver that echoes what it got
        text = f"{request.path}?{request.query} {request.headers}"
        return reply(400, text)

    receiver.routes[f"/hook/{TOKEN}"] = echo
    action = hook(receiver, http, headers={"Authorization": f"Bearer {BEARER}"})
    errors: list[str] = []
    for _ in range(2):
        try:
            await action.send(event(), "k")
        except DeliveryError as exc:
            errors += [str(exc), repr(exc)]
            logging.getLogger("watcher.actions.outbox").warning("delivery failed: %s", exc,
                                                                exc_info=True)
    receiver.routes.clear()
    receiver.fail(reply(500, "x"))
    with pytest.raises(DeliveryError) as info:
        await action.send(event(), "k")
    errors.append(str(info.value))
    assert "***" in errors[0]  # the echoed token was redacted
    seen = "\n".join([*errors, caplog.text, repr(action.options), str(action.options),
                      repr(action)])
    for canary in CANARIES:
        assert canary not in seen


def test_options_defaults_and_repr() -> None:
    opts = WebhookOptions(url=f"https://h.example/{TOKEN}", secret=SECRET,
                          headers={"Authorization": BEARER})
    assert (opts.format, opts.timeout, opts.send_resolved, opts.max_age, opts.rate_limit) == (
        "watcher", 10.0, True, 86_400.0, None)
    assert not opts.include_snapshot and opts.template is None
    for canary in CANARIES:
        assert canary not in repr(opts) and canary not in str(opts)
    assert set(opts.secrets()) >= {f"https://h.example/{TOKEN}", SECRET, BEARER}


def test_payload_is_plain_json() -> None:
    # Non-JSON values in an answer (should not happen) are sent as strings, not crashes.
    from watcher.actions.webhook import to_json

    assert json.loads(to_json({"when": datetime(2024, 1, 1, tzinfo=UTC)})) == {
        "when": "2024-01-01 00:00:00+00:00"}
