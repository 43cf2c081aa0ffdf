"""The ``actions:`` section: option models, load-time errors, secrets, ``watcher test-action``."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from pydantic import BaseModel
from support.mqtt import shared_broker, subscribed, unique_prefix
from support.receivers import HttpReceiver, SmtpReceiver, reply

from watcher.actions.base import ACTION_TYPES
from watcher.actions.config import build_action
from watcher.actions.email import EmailAction, EmailOptions
from watcher.actions.mqtt import MqttAction
from watcher.actions.mqtt_options import MqttOptions
from watcher.actions.options import RateLimit
from watcher.actions.slack import SlackAction, SlackOptions
from watcher.actions.webhook import WebhookAction, WebhookOptions
from watcher.cli import main
from watcher.config import WatcherConfig, parse_config
from watcher.errors import ConfigError
from watcher.logs import redact

HOOK_SECRET = "hmac-canary-a81f3c"
HOOK_TOKEN = "urltok-canary-5e0b2d"
SLACK_TOKEN = "xoxb-canary-c4d7e9"
SLACK_PATH = "T0/B0/slackpath-canary-0f3a"
SMTP_PASSWORD = "smtp-canary-19d6b2"
MQTT_PASSWORD = "mqtt-canary-7b3e91"
CANARIES = (HOOK_SECRET, HOOK_TOKEN, SLACK_TOKEN, "slackpath-canary-0f3a", SMTP_PASSWORD,
            MQTT_PASSWORD)

HEAD = (
    "streams:\n"                                                   # 1
    "  - {name: dock, source: testsrc}\n"                          # 2
    "actions:\n"                                                   # 3
)


def _models(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    seen.add(model)
    for info in model.model_fields.values():
        for arg in (info.annotation, *getattr(info.annotation, "__args__", ())):
            if isinstance(arg, type) and issubclass(arg, BaseModel) and arg not in seen:
                _models(arg, seen)
    return seen


def test_every_action_option_is_described_and_typos_fail() -> None:
    models = set()
    for root in (WebhookOptions, SlackOptions, EmailOptions, MqttOptions):
        models |= _models(root, set())
    assert RateLimit in models
    for model in models:
        assert model.model_config.get("extra") == "forbid", model
        for name, info in model.model_fields.items():
            assert info.description, f"{model.__name__}.{name} has no description"
    assert {name: cls for name, cls in ACTION_TYPES.items()} == {
        "webhook": WebhookAction, "slack": SlackAction, "email": EmailAction,
        "mqtt": MqttAction}


def test_each_type_loads_with_its_defaults() -> None:
    config = parse_config(HEAD + (
        "  hook: {type: webhook, url: 'https://h.example/in'}\n"
        "  chat: {type: slack, webhook_url: 'https://hooks.slack.com/services/T/B/x'}\n"
        "  mail: {type: email, host: smtp.example.com, from: a@example.com, to: b@example.com,"
        " rate_limit: 10/1m, max_age: 2h, send_resolved: false}\n"
        "  limited: {type: webhook, url: 'http://h', rate_limit: {count: 3, per: 30s}}\n"))
    hook, chat, mail, limited = (config.actions[n] for n in ("hook", "chat", "mail", "limited"))
    assert isinstance(hook, WebhookOptions) and isinstance(chat, SlackOptions)
    assert isinstance(mail, EmailOptions)
    assert (hook.format, hook.timeout, hook.send_resolved, hook.max_age, hook.rate_limit) == (
        "watcher", 10.0, True, 86_400.0, None)
    assert (mail.rate_limit, mail.max_age, mail.send_resolved) == (
        RateLimit(count=10, per=60), 7200.0, False)
    assert (mail.security, mail.smtp_port, mail.to) == ("starttls", 587, ["b@example.com"])
    assert limited.rate_limit == RateLimit(count=3, per=30)
    assert config.summary() == "1 stream, 4 actions, embedded server"


ERRORS = {
    "typo in a webhook option": (
        "  hook: {type: webhook, urll: 'https://h.example/x'}\n",
        ["watcher.yaml:4: actions.hook.urll: unknown key (did you mean url?)"]),
    "typo in a slack option (suggests a slack option)": (
        "  chat:\n    type: slack\n    webhok_url: 'https://hooks.slack.com/services/T/B/x'\n",
        ["watcher.yaml:6: actions.chat.webhok_url: unknown key (did you mean webhook_url?)"]),
    "typo in an email option": (
        "  mail: {type: email, host: h, form: a@b.c, to: [c@d.e]}\n",
        ["watcher.yaml:4: actions.mail.form: unknown key (did you mean from?)"]),
    "unknown type": (
        "  pager: {type: pagerduty, key: x}\n",
        ["watcher.yaml:4: actions.pager.type: Input should be 'webhook', 'slack', 'email' or "
         "'mqtt'"]),
    "no type": (
        "  pager: {url: 'https://h'}\n",
        ["watcher.yaml:4: actions.pager.type: required, but not given"]),
    "bad body template": (
        "  hook:\n    type: webhook\n    url: https://h.example/x\n    body: 'Alert {{ rule '\n",
        ["watcher.yaml:7: actions.hook.body: template syntax error on line 1 of the template: "
         "unexpected end of template, expected 'end of print statement'."]),
    "bad html template": (
        "  mail:\n    type: email\n    host: h\n    from: a@b.c\n    to: c@d.e\n"
        "    html: |\n      <p>{{ rule }}</p>\n      {% if x %}\n",
        ["watcher.yaml:9: actions.mail.html: template syntax error on line 2 of the template: "
         "Unexpected end of template. Jinja was looking for the following tags: 'elif' or "
         "'else' or 'endif'. The innermost block that needs to be closed is 'if'."]),
    "bad URL": (
        "  hook: {type: webhook, url: 'ftp://h.example/x'}\n",
        ["watcher.yaml:4: actions.hook.url: must be an http:// or https:// URL with a host"]),
    "bad rate limit and max_age": (
        "  hook:\n    type: webhook\n    url: https://h\n    rate_limit: ten a minute\n"
        "    max_age: -1\n",
        ["watcher.yaml:7: actions.hook.rate_limit: give {count: 10, per: 1m}, or 10/1m",
         "watcher.yaml:8: actions.hook.max_age: bad duration -1: must not be negative"]),
    "username without password": (
        "  mail: {type: email, host: h, from: a@b.c, to: c@d.e, username: u}\n",
        ["watcher.yaml:4: actions.mail: give both `username` and `password`, or neither"]),
    "template with alertmanager": (
        "  hook: {type: webhook, url: 'https://h', format: alertmanager, template: x}\n",
        ["watcher.yaml:4: actions.hook: `template` and `include_snapshot` are for format: "
         "watcher"]),
    "mqtt: unknown topic placeholder": (
        "  bus: {type: mqtt, host: h, topic: 'site/{camera}/event'}\n",
        ["watcher.yaml:4: actions.bus.topic: has an unknown placeholder {camera}; use {rule}, "
         "{stream}, {severity}, {status}, {kind}"]),
    "mqtt: wildcard in the topic": (
        "  bus: {type: mqtt, host: h, topic: 'site/#'}\n",
        ["watcher.yaml:4: actions.bus.topic: may not contain the wildcards + or # (they are "
         "for subscriptions)"]),
    "mqtt: bad qos": (
        "  bus:\n    type: mqtt\n    host: h\n    qos: 3\n",
        ["watcher.yaml:7: actions.bus.qos: Input should be 0, 1 or 2"]),
    "mqtt: password without username": (
        "  bus: {type: mqtt, host: h, password: p}\n",
        ["watcher.yaml:4: actions.bus: password needs a username"]),
    "mqtt: typo": (
        "  bus: {type: mqtt, host: h, discovery_prefx: ha}\n",
        ["watcher.yaml:4: actions.bus.discovery_prefx: unknown key (did you mean "
         "discovery_prefix?)"]),
    "a rule names an unknown action": (
        "  hook: {type: webhook, url: 'https://h'}\n"
        "rules:\n  - {name: r, stream: dock, every: 5s, prompt: q, actions: [hok]}\n",
        ["watcher.yaml:6: rules[0].actions[0]: unknown action 'hok' (did you mean hook?)"]),
}


@pytest.mark.parametrize("case", ERRORS, ids=list(ERRORS))
def test_config_errors_name_file_line_and_field(case: str) -> None:
    text, expected = ERRORS[case]
    with pytest.raises(ConfigError) as info:
        parse_config(HEAD + text, name="watcher.yaml")
    assert info.value.problems == expected


def secret_config(hook_url: str = "https://h.example/in", smtp_port: int = 25,
                  mqtt_host: str = "127.0.0.1", mqtt_port: int = 1883) -> str:
    return HEAD + (
        f"  hook: {{type: webhook, url: '{hook_url}/{HOOK_TOKEN}?token={HOOK_TOKEN}', "
        f"secret: {HOOK_SECRET}, include_snapshot: true}}\n"
        f"  chat: {{type: slack, webhook_url: 'https://hooks.slack.com/services/{SLACK_PATH}',"
        f" bot_token: {SLACK_TOKEN}, channel: C1}}\n"
        f"  mail: {{type: email, host: 127.0.0.1, port: {smtp_port}, security: none, "
        f"username: u, password: {SMTP_PASSWORD}, from: a@example.com, to: b@example.com}}\n"
        f"  bus: {{type: mqtt, host: {mqtt_host}, port: {mqtt_port}, username: u, "
        f"password: {MQTT_PASSWORD}}}\n"
        "rules:\n"
        "  - {name: dock-busy, stream: dock, every: 5s, prompt: 'Anyone at the dock?', "
        "schema: {people: integer}, when: people > 0, "
        "severity: critical, labels: {site: north}, actions: [hook, chat, mail, bus]}\n")


def test_secrets_are_hidden_and_registered() -> None:
    config = parse_config(secret_config())
    shown = repr(config) + str(config) + repr(config.actions)
    for canary in CANARIES:
        assert canary not in shown
        assert redact(f"oops: {canary}!") == "oops: ***!"  # load_config registered it


def test_check_never_prints_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    bad = secret_config().replace("channel: C1}", "channel: C1, mentoin: x}")
    bad = bad.replace(f"password: {SMTP_PASSWORD},", f"password: {SMTP_PASSWORD}, porrt: 1,")
    Path("watcher.yaml").write_text(bad)
    assert main(["check", "-c", "watcher.yaml"]) == 2
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "watcher.yaml:5: actions.chat.mentoin: unknown key (did you mean mention?)",
        "watcher.yaml:6: actions.mail.porrt: unknown key (did you mean port?)",
        "watcher.yaml: 2 problems"]
    Path("watcher.yaml").write_text(secret_config())
    assert main(["check", "-c", "watcher.yaml"]) == 0
    out2, err2 = capsys.readouterr()
    first, state = out2.splitlines()
    assert first == "watcher.yaml: OK (1 stream, 1 rule, 4 actions, embedded server)"
    assert state.startswith("state store ") and "evidence budget 500 MB" in state
    for canary in CANARIES:
        assert canary not in out + err + out2 + err2


async def test_build_action() -> None:
    config = parse_config(secret_config())
    async with httpx.AsyncClient() as http:
        actions = {n: build_action(n, o, http=http) for n, o in config.actions.items()}
    assert [type(a) for a in actions.values()] == [WebhookAction, SlackAction, EmailAction,
                                                   MqttAction]
    assert actions["hook"].name == "hook" and actions["hook"].send_resolved
    assert repr(actions["chat"]) == "SlackAction(name='chat')"


def test_actions_can_be_built_in_code() -> None:
    config = WatcherConfig(actions={"h": {"type": "webhook", "url": "https://h"}})
    assert isinstance(config.actions["h"], WebhookOptions)
    with pytest.raises(ValueError, match="unknown key"):
        WatcherConfig(actions={"h": {"type": "webhook", "url": "https://h", "nope": 1}})


# --- watcher test-action --------------------------------------------------------------------

def test_test_action_sends_a_sample_alert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    with HttpReceiver(secret=HOOK_SECRET) as receiver:
        Path("watcher.yaml").write_text(secret_config(receiver.url("/in")))
        assert main(["test-action", "-c", "watcher.yaml", "hook"]) == 0
        assert main(["test-action", "-c", "watcher.yaml", "hook", "--resolved"]) == 0
    out, err = capsys.readouterr()
    firing, resolved = receiver.requests
    assert firing.signature_ok and resolved.signature_ok
    assert firing.path == f"/in/{HOOK_TOKEN}"
    assert firing.headers["idempotency-key"].startswith("test-action:hook:")
    body = firing.json()
    assert (body["rule"], body["stream"], body["status"], body["severity"]) == (
        "dock-busy", "dock", "firing", "critical")
    assert body["labels"] == {"site": "north", "test": "true"}
    assert body["prompt"] == "Anyone at the dock?" and body["answer"]["people"] == 2
    jpeg = base64.b64decode(body["snapshot"]["data"])
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (360, 640, 3)
    assert resolved.json()["status"] == "resolved" and resolved.json()["snapshot"] is None
    assert out.count("hook: sent a sample") == 2 and "sent a sample resolved alert" in out
    for canary in CANARIES:
        assert canary not in out + err


def test_test_action_reports_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    with HttpReceiver() as receiver:
        Path("watcher.yaml").write_text(secret_config(receiver.url("/in")))
        receiver.fail(reply(503, "maintenance"), reply(404, "no such hook"))
        assert main(["test-action", "-c", "watcher.yaml", "hook"]) == 1
        assert main(["test-action", "-c", "watcher.yaml", "hook"]) == 1
        assert main(["test-action", "-c", "watcher.yaml", "hok"]) == 2
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        "hook: delivery failed (temporary, the outbox would retry): action 'hook' (webhook): "
        "HTTP 503 (maintenance)",
        "hook: delivery failed (permanent): action 'hook' (webhook): HTTP 404 (no such hook)",
        "no action named 'hok' (did you mean hook?)"]
    assert out == ""
    for canary in CANARIES:
        assert canary not in err


def test_test_action_over_mqtt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    broker = shared_broker()
    monkeypatch.chdir(tmp_path)
    topic = f"{unique_prefix()}/{{rule}}/{{stream}}"
    Path("watcher.yaml").write_text(
        secret_config(mqtt_host=broker.host, mqtt_port=broker.port).replace(
            "password: " + MQTT_PASSWORD, f"password: {MQTT_PASSWORD}, topic: '{topic}'"))

    async def run() -> list:
        async with subscribed(broker, topic.split("/")[0] + "/#") as sub:
            code = await asyncio.to_thread(main, ["test-action", "-c", "watcher.yaml", "bus"])
            assert code == 0
            await sub.wait_for(lambda: sub.messages)
            return sub.messages

    (message,) = asyncio.run(run())
    body = json.loads(message.payload)
    assert message.topic.endswith("/dock-busy/dock")
    assert (body["rule"], body["status"]) == ("dock-busy", "firing")
    assert body["idempotency_key"].startswith("test-action:bus:")
    out, err = capsys.readouterr()
    assert "bus: sent a sample" in out
    for canary in CANARIES:
        assert canary not in out + err


def test_test_action_by_email(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    with SmtpReceiver(username="u", password=SMTP_PASSWORD) as smtp:
        Path("watcher.yaml").write_text(secret_config(smtp_port=smtp.port))
        assert main(["test-action", "-c", "watcher.yaml", "mail"]) == 0
    [mail] = smtp.mails
    message = mail.message
    assert message["Subject"] == "[CRITICAL] dock-busy on dock: firing"
    assert [p.get_content_type() for p in message.walk()] == [
        "multipart/alternative", "text/plain", "multipart/related", "text/html", "image/jpeg"]
    out, err = capsys.readouterr()
    assert "mail: sent a sample firing alert (email" in out
    assert SMTP_PASSWORD not in out + err


def test_test_action_with_a_bad_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    Path("watcher.yaml").write_text(HEAD + "  hook: {type: webhook}\n")
    assert main(["test-action", "-c", "watcher.yaml", "hook"]) == 2
    assert capsys.readouterr().err == "watcher.yaml:4: actions.hook.url: required, but not given\n"
