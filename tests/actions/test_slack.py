"""The slack action against a fake Slack (incoming webhook + files API) on 127.0.0.1."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from support.receivers import SLACK_HOOK, UPLOAD_PATH, FakeSlack, event, reply

from watcher.actions.base import DeliveryError
from watcher.actions.slack import SlackAction, SlackOptions

BOT_TOKEN = "xoxb-canary-8d1f0e"
HOOK_CANARY = "Zk3hookcanary9Qw8Lm2"  # the secret part of SLACK_HOOK


@pytest.fixture
def slack() -> Iterator[FakeSlack]:
    with FakeSlack(BOT_TOKEN) as fake:
        yield fake


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


def action(slack: FakeSlack, http: httpx.AsyncClient, *, hook: bool = True, bot: bool = False,
           **options: object) -> SlackAction:
    data: dict[str, object] = {"type": "slack", "api_base": slack.api_base, **options}
    if hook:
        data["webhook_url"] = slack.hook_url
    if bot:
        data.update(bot_token=BOT_TOKEN, channel="C0ALERTS")
    return SlackAction("ops-slack", SlackOptions.model_validate(data), http=http)


async def test_block_kit_message(slack: FakeSlack, http: httpx.AsyncClient) -> None:
    await action(slack, http, mention="<!here>", mention_on=["critical"]).send(event(), "k")
    [request] = slack.calls(SLACK_HOOK)
    message = request.json()
    assert message["text"] == "<!here> :rotating_light: dock-occupied"
    header, text, fields, answer, context = message["blocks"]
    assert header == {"type": "header", "text": {
        "type": "plain_text", "text": ":rotating_light: dock-occupied", "emoji": True}}
    assert text["text"] == {"type": "mrkdwn", "text": "<!here> Two people at the dock door"}
    assert [f["text"] for f in fields["fields"]] == [
        "*Stream*\ndock", "*Status*\nfiring", "*Severity*\ncritical",
        "*Time*\n2024-05-01 12:00:00 UTC"]
    assert answer["text"]["text"] == "• *people*: 2\n• *person_present*: true"
    assert context == {"type": "context", "elements": [
        {"type": "mrkdwn", "text": "event 42 · episode 3 · model local/vision"}]}
    assert slack.uploads == []  # no bot token: no upload


async def test_resolved_is_calm_and_never_mentions(slack: FakeSlack,
                                                   http: httpx.AsyncClient) -> None:
    await action(slack, http, mention="<!channel>").send(event("resolved"), "k")
    message = slack.calls(SLACK_HOOK)[0].json()
    assert message["text"] == ":white_check_mark: dock-occupied resolved"
    assert "<!channel>" not in str(message)
    types = [b["type"] for b in message["blocks"]]
    assert types == ["header", "section", "section", "context"]  # no answer list


async def test_mention_only_for_listed_severities(slack: FakeSlack,
                                                  http: httpx.AsyncClient) -> None:
    a = action(slack, http, mention="<!here>", mention_on=["critical"])
    await a.send(event(severity="warning"), "k")
    message = slack.calls(SLACK_HOOK)[0].json()
    assert message["text"] == ":warning: dock-occupied" and "<!here>" not in str(message)


async def test_answers_cannot_mention_or_link(slack: FakeSlack, http: httpx.AsyncClient) -> None:
    answer = {"description": "<!channel> see <https://evil.example|here>", "<b>": "<!here>"}
    await action(slack, http).send(event(answer=answer), "k")
    message = str(slack.calls(SLACK_HOOK)[0].json())
    assert "<!channel>" not in message and "<!here>" not in message
    assert "&lt;!channel&gt; see &lt;https://evil.example|here&gt;" in message


async def test_bot_posts_and_uploads_the_snapshot_in_thread(slack: FakeSlack,
                                                            http: httpx.AsyncClient) -> None:
    await action(slack, http, hook=False, bot=True).send(event(), "k")
    [post] = slack.calls("/api/chat.postMessage")
    assert post.headers["authorization"] == f"Bearer {BOT_TOKEN}"
    assert post.json()["channel"] == "C0ALERTS" and post.json()["blocks"]
    [ticket] = slack.calls("/api/files.getUploadURLExternal")
    assert ticket.form() == {"filename": "snapshot.jpg", "length": str(len(event().snapshot))}
    assert slack.uploads == [event().snapshot]
    [complete] = slack.calls("/api/files.completeUploadExternal")
    form = complete.form()
    assert form["channel_id"] == "C0ALERTS" and form["thread_ts"] == "1700000000.000100"
    assert '"id": "F0TEST"' in form["files"]
    assert [r.path for r in slack.requests] == [
        "/api/chat.postMessage", "/api/files.getUploadURLExternal", UPLOAD_PATH,
        "/api/files.completeUploadExternal"]


async def test_webhook_message_then_upload_to_channel(slack: FakeSlack,
                                                      http: httpx.AsyncClient) -> None:
    await action(slack, http, bot=True).send(event(), "k")
    assert [r.path for r in slack.requests] == [
        SLACK_HOOK, "/api/files.getUploadURLExternal", UPLOAD_PATH,
        "/api/files.completeUploadExternal"]
    assert "thread_ts" not in slack.calls("/api/files.completeUploadExternal")[0].form()
    slack.requests.clear()
    await action(slack, http, bot=True, upload_snapshot=False).send(event(), "k")
    await action(slack, http, bot=True).send(event("resolved"), "k")  # no snapshot
    assert [r.path for r in slack.requests] == [SLACK_HOOK, SLACK_HOOK]


async def test_failed_upload_is_logged_not_raised(
    slack: FakeSlack, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture,
) -> None:
    slack.routes[UPLOAD_PATH] = lambda r: reply(500, "storage down")
    await action(slack, http, bot=True).send(event(), "k")  # the message went out
    assert len(slack.calls(SLACK_HOOK)) == 1
    assert "the snapshot upload failed" in caplog.text and "HTTP 500" in caplog.text


async def test_summary(slack: FakeSlack, http: httpx.AsyncClient) -> None:
    await action(slack, http).send_summary([event(), event("resolved")], "k")
    message = slack.calls(SLACK_HOOK)[0].json()
    assert message["text"] == (":bell: [CRITICAL] 2 alert events of dock-occupied held back "
                               "by the rate limit")
    assert "- [CRITICAL] dock-occupied on dock: resolved at" in message["blocks"][1]["text"][
        "text"]


@pytest.mark.parametrize(("status", "body", "headers", "permanent", "retry_after"), [
    (429, "rate_limited", {"Retry-After": "30"}, False, 30.0),
    (500, "rollup_error", {}, False, None),
    (503, "", {}, False, None),
    (400, "invalid_payload", {}, True, None),
    (403, "action_prohibited", {}, True, None),
    (404, "channel_not_found", {}, True, None),
    (410, "channel_is_archived", {}, True, None),
])
async def test_webhook_errors(slack: FakeSlack, http: httpx.AsyncClient, status: int, body: str,
                              headers: dict, permanent: bool, retry_after: float | None) -> None:
    slack.fail(reply(status, body, headers))
    with pytest.raises(DeliveryError) as info:
        await action(slack, http).send(event(), "k")
    assert (info.value.permanent, info.value.retry_after) == (permanent, retry_after)
    assert str(info.value).startswith(f"action 'ops-slack' (slack): HTTP {status}")
    assert body in str(info.value)


@pytest.mark.parametrize(("error", "permanent"), [
    ("invalid_auth", True), ("channel_not_found", True), ("not_in_channel", True),
    ("ratelimited", False), ("internal_error", False), ("service_unavailable", False)])
async def test_web_api_errors(slack: FakeSlack, http: httpx.AsyncClient, error: str,
                              permanent: bool) -> None:
    slack.fail(reply(200, {"ok": False, "error": error}))
    with pytest.raises(DeliveryError) as info:
        await action(slack, http, hook=False, bot=True).send(event(), "k")
    assert info.value.permanent is permanent
    assert str(info.value) == f"action 'ops-slack' (slack) chat.postMessage: {error}"


async def test_wrong_token_is_permanent(slack: FakeSlack, http: httpx.AsyncClient) -> None:
    options = SlackOptions(bot_token="xoxb-wrong-token", channel="C1", api_base=slack.api_base)
    with pytest.raises(DeliveryError, match="invalid_auth") as info:
        await SlackAction("s", options, http=http).send(event(), "k")
    assert info.value.permanent


async def test_no_secret_reaches_logs_or_errors(
    slack: FakeSlack, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.WARNING, logger="httpx")  # as configure_logging sets them
    caplog.set_level(logging.WARNING, logger="httpcore")
    a = action(slack, http, bot=True)
    slack.routes[SLACK_HOOK] = lambda r: reply(404, f"no_service {r.path}")  # echoes the URL
    slack.routes[UPLOAD_PATH] = lambda r: reply(500, f"bad token {r.headers}")
    errors = []
    with pytest.raises(DeliveryError) as info:
        await a.send(event(), "k")
    errors.append(str(info.value))
    slack.routes[SLACK_HOOK] = lambda r: reply(200, "ok")
    await a.send(event(), "k")  # upload fails, logged
    assert "snapshot upload failed" in caplog.text
    seen = "\n".join([*errors, caplog.text, repr(a.options), str(a.options)])
    assert HOOK_CANARY not in seen and BOT_TOKEN not in seen
    assert slack.hook_url not in seen


def test_options() -> None:
    opts = SlackOptions(webhook_url="https://hooks.slack.com/services/T/B/" + HOOK_CANARY)
    assert (opts.api_base, opts.timeout, opts.upload_snapshot, opts.mention) == (
        "https://slack.com/api", 10.0, True, None)
    assert opts.mention_on == ["info", "warning", "critical"] and opts.send_resolved
    assert HOOK_CANARY not in repr(opts)
    with pytest.raises(ValueError, match="bot_token needs `channel`"):
        SlackOptions(bot_token=BOT_TOKEN)
    with pytest.raises(ValueError, match="needs `webhook_url`"):
        SlackOptions()
    with pytest.raises(ValueError, match="http:// or https://"):
        SlackOptions(webhook_url="hooks.slack.com/x")
