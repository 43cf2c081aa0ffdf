"""The ``slack`` action: a Block Kit message per alert event, with the snapshot.

::

    actions:
      ops-slack:
        type: slack
        webhook_url: ${SLACK_WEBHOOK_URL}   # an incoming webhook (a secret)
        bot_token: ${SLACK_BOT_TOKEN}       # optional, with channel: upload the snapshot
        channel: C0123456789                #   (needs the files:write scope)
        mention: "<!here>"                  # on firing events of `mention_on` severities
        mention_on: [critical]

The message goes to the incoming webhook or, without one, through
``chat.postMessage`` with the bot token. With ``bot_token`` and ``channel``
the snapshot is then uploaded by Slack's current flow
(``files.getUploadURLExternal``, POST the bytes to the URL it gives,
``files.completeUploadExternal``), in the message's thread when its ``ts``
is known. The upload is best effort: once the message is out, a failed
upload is logged, not retried (a retry would post the message again; Slack
has no idempotency key).

Message: a header (severity emoji and the ``title`` template), the ``body``
template, fields (stream, status, severity, time), the answer's fields as a
compact list, and a context line (event, episode, model). Resolved events
get a check mark, no answer list and no mention. Values printed by templates
are escaped for Slack (``&<>``), so an answer cannot mention ``<!channel>``.

Errors: HTTP 429 is retried after its Retry-After, 5xx retried, other 4xx
permanent (``invalid_payload``, ``channel_not_found``, ``no_service``...); a
Web API ``ok: false`` is permanent unless its error is a transient one.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from watcher.actions.base import DeliveryError, register
from watcher.actions.http import USER_AGENT, HttpAction, post
from watcher.actions.options import ActionOptionsBase, secret_value
from watcher.actions.templates import (
    check_template,
    event_context,
    render,
    summary_context,
)
from watcher.actions.webhook import check_http_url, url_secrets
from watcher.duration import Duration
from watcher.engine.store import AlertEventRecord

log = logging.getLogger(__name__)

Severity = Literal["info", "warning", "critical"]
SLACK_API = "https://slack.com/api"
SLACK_TITLE = "{{ rule }}{% if status == 'resolved' %} resolved{% endif %}"
SLACK_BODY = ("{% if description %}{{ description }}{% else %}{{ rule }} is {{ status }} on "
              "{{ stream }}{% endif %}")
EMOJI = {"critical": ":rotating_light:", "warning": ":warning:",
         "info": ":information_source:", "resolved": ":white_check_mark:",
         "summary": ":bell:"}
RETRY_ERRORS = frozenset({"ratelimited", "rate_limited", "internal_error", "fatal_error",
                          "service_unavailable", "request_timeout"})
"""Web API errors worth retrying; any other ``ok: false`` is permanent."""
MAX_HEADER = 150
MAX_TEXT = 3000
MAX_FIELD = 2000
SNAPSHOT_NAME = "snapshot.jpg"


class SlackOptions(ActionOptionsBase):
    """Post alert events to Slack (incoming webhook or bot token)."""

    type: Literal["slack"] = Field("slack", description="slack")
    webhook_url: SecretStr | None = Field(
        None, description="Incoming webhook URL (https://hooks.slack.com/services/...); a "
        "secret. Without it, messages go through chat.postMessage with bot_token.")
    bot_token: SecretStr | None = Field(
        None, description="Bot token (xoxb-...) to upload the snapshot to `channel` (scope "
        "files:write), or to post messages when there is no webhook_url (chat:write).")
    channel: str | None = Field(
        None, min_length=1, description="Channel ID (C0123456789) the bot posts or uploads to.")
    upload_snapshot: bool = Field(
        True, description="Upload the event's snapshot (needs bot_token and channel).")
    mention: str | None = Field(
        None, description="Text put before firing messages, e.g. <!here>, <!channel> or "
        "<@U0123456789>.")
    mention_on: list[Severity] = Field(
        default_factory=lambda: ["info", "warning", "critical"],
        description="Severities whose firing events get `mention` (default: all).")
    title: str = Field(SLACK_TITLE, description="Template of the header (after the severity "
                       "emoji); plain text, at most 150 characters.")
    body: str = Field(SLACK_BODY, description="Template of the message text (Slack mrkdwn).")
    timeout: Duration = Field(10.0, gt=0, description="Deadline of one request.")
    api_base: str = Field(SLACK_API, description="Slack Web API base URL (for tests and "
                          "proxies).")

    @field_validator("webhook_url")
    @classmethod
    def _url_is_http(cls, value: SecretStr | None) -> SecretStr | None:
        return None if value is None else check_http_url(value)

    @field_validator("api_base")
    @classmethod
    def _api_base_is_http(cls, value: str) -> str:
        return check_http_url(SecretStr(value)).get_secret_value().rstrip("/")

    @field_validator("bot_token")
    @classmethod
    def _token_not_blank(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is empty (is its environment variable set?)")
        return value

    @field_validator("title", "body")
    @classmethod
    def _templates_compile(cls, value: str) -> str:
        check_template(value)
        return value

    @model_validator(mode="after")
    def _has_a_way_to_post(self) -> SlackOptions:
        if self.bot_token is not None and self.channel is None:
            raise ValueError("bot_token needs `channel` (the channel ID to post to)")
        if self.webhook_url is None and self.bot_token is None:
            raise ValueError("needs `webhook_url` (an incoming webhook), or `bot_token` and "
                             "`channel`")
        return self

    def secrets(self) -> list[str]:
        return [*url_secrets(self.webhook_url), *filter(None, [secret_value(self.bot_token)])]


@register
class SlackAction(HttpAction):
    """Delivers events to a Slack channel."""

    type = "slack"
    options: SlackOptions
    body_flavor = "slack"

    async def send(self, event: AlertEventRecord, idempotency_key: str) -> None:
        context = event_context(event, self.name)
        title = render(self._title, context, action=self.name, what="title")
        text = render(self._body, context, action=self.name, what="body")
        mention = self._mention(context)
        message = event_message(context, title, text, mention)
        ts = await self._post_message(message)
        if event.snapshot is not None and self._can_upload:
            try:
                await self._upload(event.snapshot, title, ts)
            except DeliveryError as exc:
                log.warning("%s: the message was sent, the snapshot upload failed: %s",
                            self.label, exc)

    async def send_summary(self, events: list[AlertEventRecord], idempotency_key: str) -> None:
        context = summary_context(events, self.name)
        title = render(self._summary_title, context, action=self.name, what="title")
        text = render(self._summary_body, context, action=self.name, what="body")
        await self._post_message(summary_message(title, text))

    @property
    def _can_upload(self) -> bool:
        o = self.options
        return o.upload_snapshot and o.bot_token is not None and o.channel is not None

    def _mention(self, context: dict[str, Any]) -> str | None:
        o = self.options
        if o.mention and context["status"] == "firing" and context["severity"] in o.mention_on:
            return o.mention
        return None

    async def _post_message(self, message: dict[str, Any]) -> str | None:
        """Post ``message``; the ``ts`` of the posted message when Slack says (bot only)."""
        body = json.dumps(message, ensure_ascii=False).encode()
        if self.options.webhook_url is not None:
            await post(self.http, self.label, self.options.webhook_url.get_secret_value(),
                       content=body, timeout=self.options.timeout,
                       headers={"Content-Type": "application/json", "User-Agent": USER_AGENT})
            return None
        message = {"channel": self.options.channel, "unfurl_links": False, **message}
        reply = await self._api("chat.postMessage", json_body=message)
        ts = reply.get("ts")
        return ts if isinstance(ts, str) else None

    async def _upload(self, jpeg: bytes, title: str, thread_ts: str | None) -> None:
        ticket = await self._api("files.getUploadURLExternal",
                                 form={"filename": SNAPSHOT_NAME, "length": str(len(jpeg))})
        upload_url, file_id = ticket.get("upload_url"), ticket.get("file_id")
        if not isinstance(upload_url, str) or not isinstance(file_id, str):
            raise DeliveryError(f"{self.label}: Slack gave no upload_url/file_id")
        await post(self.http, self.label, upload_url, content=jpeg, timeout=self.options.timeout,
                   headers={"Content-Type": "image/jpeg", "User-Agent": USER_AGENT})
        form = {"files": json.dumps([{"id": file_id, "title": title[:250]}]),
                "channel_id": str(self.options.channel)}
        if thread_ts is not None:
            form["thread_ts"] = thread_ts
        await self._api("files.completeUploadExternal", form=form)

    async def _api(self, method: str, *, json_body: dict[str, Any] | None = None,
                   form: dict[str, str] | None = None) -> dict[str, Any]:
        """Call a Web API method with the bot token; its reply if ``ok``."""
        assert self.options.bot_token is not None
        headers = {"Authorization": f"Bearer {self.options.bot_token.get_secret_value()}",
                   "User-Agent": USER_AGENT}
        content = None
        if json_body is not None:
            headers["Content-Type"] = "application/json; charset=utf-8"
            content = json.dumps(json_body, ensure_ascii=False).encode()
        response = await post(self.http, f"{self.label} {method}",
                              f"{self.options.api_base}/{method}", content=content, data=form,
                              headers=headers, timeout=self.options.timeout)
        try:
            reply = response.json()
        except ValueError:
            raise DeliveryError(f"{self.label} {method}: the reply is not JSON") from None
        if not isinstance(reply, dict):
            raise DeliveryError(f"{self.label} {method}: the reply is not a JSON object")
        if reply.get("ok") is not True:
            error = str(reply.get("error") or "unknown error")[:100]
            raise DeliveryError(f"{self.label} {method}: {error}",
                                permanent=error not in RETRY_ERRORS)
        return reply


# --- Block Kit ---------------------------------------------------------------------------

def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def escape(value: Any) -> str:
    """``value`` as Slack mrkdwn text that cannot mention or link (``&<>`` escaped)."""
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _header(text: str) -> dict[str, Any]:
    return {"type": "header",
            "text": {"type": "plain_text", "text": _cut(text, MAX_HEADER), "emoji": True}}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": _cut(text, MAX_TEXT)}}


def answer_lines(answer: dict[str, Any]) -> str:
    """``• *key*: value`` per answer field (description left to the text)."""
    lines = []
    for key, value in answer.items():
        if key == "description":
            continue
        shown = json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else value
        lines.append(f"• *{escape(key)}*: {escape(_cut(shown, 300))}")
    return "\n".join(lines)


def event_message(context: dict[str, Any], title: str, text: str,
                  mention: str | None = None) -> dict[str, Any]:
    """The ``{text, blocks}`` of one event."""
    resolved = context["status"] == "resolved"
    emoji = EMOJI["resolved"] if resolved else EMOJI.get(context["severity"], EMOJI["warning"])
    lead = f"{mention} " if mention else ""
    fields = [("Stream", context["stream"]), ("Status", context["status"]),
              ("Severity", context["severity"]), ("Time", context["time"])]
    blocks: list[dict[str, Any]] = [_header(f"{emoji} {title}")]
    if text.strip() or lead:
        blocks.append(_section(lead + text.strip()))
    blocks.append({"type": "section", "fields": [
        {"type": "mrkdwn", "text": _cut(f"*{name}*\n{escape(value)}", MAX_FIELD)}
        for name, value in fields]})
    lines = answer_lines(context["answer"]) if not resolved else ""
    if lines:
        blocks.append(_section(lines))
    event = context["event_id"] if context["event_id"] is not None else context["event_key"]
    facts = [f"event {event}", f"episode {context['episode']}"]
    if context["model"]:
        facts.append(f"model {context['model']}")
    facts_text = escape(" · ".join(facts))
    if context.get("event_url"):
        facts_text += f" · <{escape(context['event_url'])}|evidence>"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": facts_text}]})
    return {"text": _cut(lead + f"{emoji} {title}", MAX_TEXT), "blocks": blocks}


def summary_message(title: str, text: str) -> dict[str, Any]:
    """The ``{text, blocks}`` of a rate-limit summary."""
    return {"text": _cut(f"{EMOJI['summary']} {title}", MAX_TEXT),
            "blocks": [_header(f"{EMOJI['summary']} {title}"), _section(text.strip() or title)]}
