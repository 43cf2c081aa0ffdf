"""The ``webhook`` action: POST each alert event as JSON to a URL.

::

    actions:
      ops-hook:
        type: webhook
        url: https://hooks.example.com/watcher?token=${HOOK_TOKEN}
        secret: ${HOOK_SECRET}          # X-Watcher-Signature: sha256=<HMAC of the body>
        headers: {Authorization: "Bearer ${HOOK_BEARER}"}
        format: watcher                 # or alertmanager (Alertmanager's webhook v4 payload)
        timeout: 10s

Every request carries ``Idempotency-Key`` (the same on every attempt of one
delivery: receivers drop repeats by it), ``User-Agent: watcher/<version>``
and, with ``secret``, ``X-Watcher-Signature: sha256=<hex>``: the HMAC-SHA256,
keyed by the secret, of the exact body bytes sent. Verify it over the raw
body before parsing it.

Bodies (``format``):

* ``watcher`` (default): :func:`event_payload`, or :func:`summary_payload` for
  a rate-limit summary. ``include_snapshot: true`` adds the JPEG, base64.
* ``alertmanager``: :func:`alertmanager_payload`, so receivers written for
  Alertmanager work; a summary is one payload with all its alerts.
* ``template``: the body is that template, rendered (for a summary too, with
  ``status == 'summary'``), sent as ``content_type``.

Failures are classified by :mod:`watcher.actions.http`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

from watcher.actions.base import register
from watcher.actions.http import USER_AGENT, HttpAction, post
from watcher.actions.options import (
    ActionOptionsBase,
    check_headers,
    header_secrets,
    secret_value,
)
from watcher.actions.templates import (
    DEFAULT_BODY,
    DEFAULT_TITLE,
    check_template,
    compile_template,
    event_context,
    render,
    summary_context,
)
from watcher.configbase import source_secrets
from watcher.duration import Duration
from watcher.engine.store import AlertEventRecord

PAYLOAD_VERSION = "1"
SIGNATURE_HEADER = "X-Watcher-Signature"
_TOKEN_SEGMENT = re.compile(r"(?=.*[0-9])(?=.*[A-Za-z])[A-Za-z0-9_.~-]{16,}")
ZERO_TIME = "0001-01-01T00:00:00Z"
"""Alertmanager's ``endsAt`` of an alert still firing."""


def check_http_url(value: SecretStr) -> SecretStr:
    """An http(s) URL with a host; messages never quote it."""
    try:
        parts = urlsplit(value.get_secret_value().strip())
        _ = parts.port
    except ValueError:
        raise ValueError("is not a valid URL (check the host and port)") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("must be an http:// or https:// URL with a host")
    return SecretStr(value.get_secret_value().strip())


def url_secrets(url: SecretStr | None) -> list[str]:
    """The whole URL and its secret-looking parts: credentials, secret query values and
    token-like path segments (16+ characters mixing letters and digits, as Slack's)."""
    if url is None:
        return []
    text = url.get_secret_value()
    segments = [s for s in urlsplit(text).path.split("/") if _TOKEN_SEGMENT.fullmatch(s)]
    return list(dict.fromkeys([text, *source_secrets(text), *segments]))


class WebhookOptions(ActionOptionsBase):
    """POST alert events to an HTTP endpoint."""

    type: Literal["webhook"] = Field("webhook", description="webhook")
    url: SecretStr = Field(description="Where to POST (http:// or https://). Treated as a "
                           "secret: kept out of logs and error messages.")
    headers: dict[str, SecretStr] = Field(
        default_factory=dict, description="Extra request headers (Authorization: Bearer ...); "
        "values other than Content-Type/Accept are treated as secrets.")
    timeout: Duration = Field(10.0, gt=0, description="Deadline of one request.")
    secret: SecretStr | None = Field(
        None, description="Sign every body: X-Watcher-Signature: sha256=<hex HMAC-SHA256 of "
        "the body bytes, keyed by this>.")
    format: Literal["watcher", "alertmanager"] = Field(
        "watcher", description="watcher (watcher's JSON event) or alertmanager (Alertmanager's "
        "webhook payload, version 4).")
    include_snapshot: bool = Field(
        False, description="Add the snapshot JPEG to the watcher-format payload, base64 "
        "(bodies grow by ~50-200 KB).")
    title: str = Field(DEFAULT_TITLE, description="Template of the one-line `title` (watcher "
                       "format) or `summary` annotation (alertmanager).")
    body: str = Field(DEFAULT_BODY, description="Template of the `text` (watcher format) or the "
                      "`description` annotation when the answer has no description.")
    template: str | None = Field(
        None, description="Send this template, rendered, as the whole body instead of the "
        "JSON payload (e.g. for a chat service's own format; `tojson` quotes values).")
    content_type: str = Field("application/json", pattern=r"^[^\r\n]+$",
                              description="Content-Type of a `template` body.")
    external_url: str = Field(
        "", description="A link for alertmanager-format receivers (externalURL and "
        "generatorURL), e.g. a dashboard.")

    @field_validator("url")
    @classmethod
    def _url_is_http(cls, value: SecretStr) -> SecretStr:
        return check_http_url(value)

    @field_validator("headers")
    @classmethod
    def _headers_are_valid(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        return check_headers(value)

    @field_validator("title", "body", "template")
    @classmethod
    def _templates_compile(cls, value: str | None) -> str | None:
        return check_template(value)

    @field_validator("secret")
    @classmethod
    def _secret_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is empty (is its environment variable set?)")
        return value

    @model_validator(mode="after")
    def _template_is_for_watcher_format(self) -> WebhookOptions:
        if self.format == "alertmanager" and (self.template is not None
                                              or self.include_snapshot):
            raise ValueError("`template` and `include_snapshot` are for format: watcher")
        return self

    def secrets(self) -> list[str]:
        return [*url_secrets(self.url), *header_secrets(self.headers),
                *filter(None, [secret_value(self.secret)])]


@register
class WebhookAction(HttpAction):
    """Delivers events to :attr:`WebhookOptions.url`."""

    type = "webhook"
    options: WebhookOptions

    def __init__(self, name: str, options: WebhookOptions, *,
                 http: httpx.AsyncClient | None = None) -> None:
        super().__init__(name, options, http=http)
        self._template = None if options.template is None else compile_template(options.template)

    async def send(self, event: AlertEventRecord, idempotency_key: str) -> None:
        context = event_context(event, self.name)
        if self._template is not None:
            body = self._render(self._template, context, "template").encode()
            await self._post(body, self.options.content_type, idempotency_key)
            return
        title = self._render(self._title, context, "title")
        text = self._render(self._body, context, "body")
        if self.options.format == "alertmanager":
            payload = alertmanager_payload([context], [title], [text], receiver=self.name,
                                           external_url=self.options.external_url)
        else:
            payload = event_payload(context, title, text)
            if self.options.include_snapshot:
                payload["snapshot"] = snapshot_json(event)
        await self._post(to_json(payload), "application/json", idempotency_key)

    async def send_summary(self, events: list[AlertEventRecord], idempotency_key: str) -> None:
        context = summary_context(events, self.name)
        if self._template is not None:
            body = self._render(self._template, context, "template").encode()
            await self._post(body, self.options.content_type, idempotency_key)
            return
        if self.options.format == "alertmanager":
            contexts = [event_context(e, self.name) for e in events]
            titles = [self._render(self._title, c, "title") for c in contexts]
            texts = [self._render(self._body, c, "body") for c in contexts]
            payload = alertmanager_payload(contexts, titles, texts, receiver=self.name,
                                           external_url=self.options.external_url)
        else:
            payload = summary_payload(context, self._render(self._summary_title, context, "title"),
                                      self._render(self._summary_body, context, "body"))
        await self._post(to_json(payload), "application/json", idempotency_key)

    def _render(self, template: Any, context: dict[str, Any], what: str) -> str:
        return render(template, context, action=self.name, what=what)

    async def _post(self, body: bytes, content_type: str, idempotency_key: str) -> None:
        """Send ``body`` as is: the signature covers exactly these bytes."""
        headers = {"Content-Type": content_type, "User-Agent": USER_AGENT}
        headers.update({k: v.get_secret_value() for k, v in self.options.headers.items()})
        headers["Idempotency-Key"] = idempotency_key
        if self.options.secret is not None:
            headers[SIGNATURE_HEADER] = sign(self.options.secret.get_secret_value(), body)
        await post(self.http, self.label, self.options.url.get_secret_value(), content=body,
                   headers=headers, timeout=self.options.timeout)


def sign(secret: str, body: bytes) -> str:
    """``sha256=<hex HMAC-SHA256 of body keyed by secret>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def to_json(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=str).encode()


_EVENT_KEYS = ("status", "kind", "rule", "stream", "severity")
_DETAIL_KEYS = ("description", "answer", "labels", "started_at", "resolved_at", "created_at",
                "episode", "event_id", "event_key", "urls", "stream_ids", "stream_time_ms",
                "model", "usage", "prompt", "action", "has_snapshot", "persisted")


def event_payload(context: dict[str, Any], title: str, text: str) -> dict[str, Any]:
    """The ``format: watcher`` body of one event: ``version`` ("1"), the event's
    ``status kind rule stream severity``, the rendered ``title`` and ``text``, then the rest
    of the template context (:func:`~watcher.actions.templates.event_context`)."""
    payload = {"version": PAYLOAD_VERSION, **{k: context[k] for k in _EVENT_KEYS},
               "title": title, "text": text, **{k: context[k] for k in _DETAIL_KEYS}}
    if context.get("event_url"):
        payload["event_url"] = context["event_url"]
    return payload


def summary_payload(context: dict[str, Any], title: str, text: str) -> dict[str, Any]:
    """The ``format: watcher`` body of a rate-limit summary: short entries per event."""
    keys = ("event_id", "event_key", "rule", "stream", "status", "kind", "severity",
            "created_at", "description")
    return {
        "version": PAYLOAD_VERSION, "status": "summary", "action": context["action"],
        "count": context["count"], "rule": context["rule"], "stream": context["stream"],
        "rules": context["rules"], "streams": context["streams"],
        "severity": context["severity"], "title": title, "text": text,
        "first_at": context["first_at"], "last_at": context["last_at"],
        "events": [{k: e[k] for k in keys} for e in context["events"]],
    }


def snapshot_json(event: AlertEventRecord) -> dict[str, str] | None:
    if event.snapshot is None:
        return None
    return {"content_type": event.snapshot_type or "image/jpeg", "encoding": "base64",
            "data": base64.b64encode(event.snapshot).decode()}


# --- Alertmanager -----------------------------------------------------------------------

def alert_labels(context: dict[str, Any]) -> dict[str, str]:
    """``alertname`` (the rule), ``stream``, ``severity``, then the rule's labels."""
    own = {"alertname": context["rule"], "stream": context["stream"],
           "severity": context["severity"]}
    return {**own, **{str(k): str(v) for k, v in context["labels"].items() if k not in own}}


def fingerprint(labels: dict[str, str]) -> str:
    """A stable id of a label set (16 hex digits, like Alertmanager's)."""
    text = "\xff".join(f"{k}\xfe{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def am_alert(context: dict[str, Any], title: str, text: str, external_url: str,
             ) -> dict[str, Any]:
    labels = alert_labels(context)
    annotations = {"summary": title, "description": context["description"] or text.strip(),
                   "answer": json.dumps(context["answer"], separators=(",", ":"), default=str),
                   "event_key": context["event_key"]}
    if not context.get("persisted", True):
        annotations["persisted"] = "false"
    resolved = context["status"] == "resolved"
    return {
        "status": context["status"],
        "labels": labels,
        "annotations": annotations,
        "startsAt": context["started_at"] or context["created_at"],
        "endsAt": context["resolved_at"] if resolved else ZERO_TIME,
        "generatorURL": context.get("event_url") or external_url,
        "fingerprint": fingerprint(labels),
    }


def _common(maps: Sequence[dict[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def alertmanager_payload(contexts: Sequence[dict[str, Any]], titles: Sequence[str],
                         texts: Sequence[str], *, receiver: str, external_url: str = "",
                         ) -> dict[str, Any]:
    """Alertmanager's webhook payload (version 4) for ``contexts`` (one per alert)."""
    alerts = [am_alert(c, t, x, external_url)
              for c, t, x in zip(contexts, titles, texts, strict=True)]
    common_labels = _common([a["labels"] for a in alerts])
    group = {k: common_labels[k] for k in ("alertname", "stream") if k in common_labels}
    group_key = "{}:{" + ", ".join(f"{k}={json.dumps(v)}" for k, v in group.items()) + "}"
    return {
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": "firing" if any(a["status"] == "firing" for a in alerts) else "resolved",
        "receiver": receiver,
        "groupLabels": group,
        "commonLabels": common_labels,
        "commonAnnotations": _common([a["annotations"] for a in alerts]),
        "externalURL": external_url,
        "alerts": alerts,
    }
