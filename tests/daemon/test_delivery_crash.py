"""At-least-once delivery across `kill -9`, and no secret in any output.

A real `watcher run` process (embedded server, synthetic video with a box
crossing every few seconds, a motion rule) sends its alerts to a webhook, a
fake Slack and an SMTP server on loopback. The webhook answers slowly, so the
first daemon is killed with SIGKILL while a delivery is in flight. A second
daemon on the same state file must deliver every event, and the webhook must
never accept one idempotency key twice. Every secret in the config is a
canary that must not appear in either daemon's log or in `watcher alerts`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import sys
from pathlib import Path

from support.poll import eventually
from support.receivers import SLACK_HOOK, FakeSlack, HttpReceiver, SmtpReceiver

WATCHER = str(Path(sys.executable).with_name("watcher"))
CANARIES = {
    "API_KEY": "ovs_canary_api_key_7Hq2",
    "HOOK_SECRET": "canary-hook-secret-Zx81",
    "SMTP_PASSWORD": "canary-smtp-password-Pw55",
    "SLACK_TOKEN": "xoxb-canary-slack-token-Tk90",
}


def config(tmp: Path, hook: str, slack: FakeSlack, smtp_port: int) -> Path:
    path = tmp / "watcher.yaml"
    path.write_text(f"""\
overshoot:
  base_url: embedded
  api_key: ${{API_KEY}}
state:
  path: {tmp / "state.sqlite3"}
actions:
  hook:
    type: webhook
    url: {hook}
    secret: ${{HOOK_SECRET}}
    timeout: 10s
  chat:
    type: slack
    webhook_url: {slack.hook_url}
    bot_token: ${{SLACK_TOKEN}}
    channel: C0TEST
    api_base: {slack.api_base}
  mail:
    type: email
    host: 127.0.0.1
    port: {smtp_port}
    security: none
    username: watcher
    password: ${{SMTP_PASSWORD}}
    from: watcher@example.test
    to: ops@example.test
rules:
  - name: motion
    stream: cam
    every: 1s
    window: 1s
    max_fps: 4
    prompt: Is anything moving?
    schema: {{motion_detected: boolean}}
    keep_firing_for: 1s
    actions: [hook, chat, mail]
streams:
  - name: cam
    source: testsrc:events=box,period=5,duration=2,start=1,size=320x240
    fps: 8
    width: 320
    height: 240
""")
    return path


async def start(path: Path, log: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        WATCHER, "--log-level", "DEBUG", "run", "-c", str(path),
        stdout=asyncio.subprocess.DEVNULL, stderr=log.open("ab"),
        env={**os.environ, **CANARIES})


def deliveries(state: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(state) as db:
        return db.execute("SELECT action, status FROM deliveries").fetchall()


def hook_keys(state: Path, *statuses: str) -> set[str]:
    """The webhook's idempotency keys whose delivery has one of ``statuses``."""
    with sqlite3.connect(state) as db:
        return {key for (key,) in db.execute(
            "SELECT idempotency_key FROM deliveries WHERE action = 'hook' AND status IN "
            f"({', '.join('?' for _ in statuses)})", statuses)}


async def test_kill_9_during_delivery_then_restart_delivers_everything(tmp_path: Path) -> None:
    state, log = tmp_path / "state.sqlite3", tmp_path / "daemon.log"
    with HttpReceiver(secret=CANARIES["HOOK_SECRET"]) as hook, \
            FakeSlack(CANARIES["SLACK_TOKEN"]) as slack, \
            SmtpReceiver(username="watcher", password=CANARIES["SMTP_PASSWORD"]) as smtp:
        hook.delay = 1.5
        path = config(tmp_path, hook.url(), slack, smtp.port)
        first = await start(path, log)
        try:
            await eventually(lambda: len(hook.requests) >= 1, timeout=60)
            first.send_signal(signal.SIGKILL)  # mid-delivery: the webhook has not answered
            await first.wait()
        finally:
            if first.returncode is None:
                first.kill()
        in_flight = [s for _, s in deliveries(state) if s in ("delivering", "pending")]
        assert in_flight, "the kill should leave undelivered work behind"
        cut_short = hook_keys(state, "delivering")  # received, but never answered
        assert cut_short, "the kill should interrupt a webhook delivery"
        acknowledged = hook_keys(state, "sent")
        before_restart = len(hook.requests)
        hook.delay = 0.0
        second = await start(path, log)
        try:
            def all_sent() -> bool:
                rows = deliveries(state)
                return len(rows) >= 3 and all(s == "sent" for _, s in rows)

            await eventually(all_sent, timeout=60, interval=0.2)
            second.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(second.wait(), 30) == 0
        finally:
            if second.returncode is None:
                second.kill()
        with sqlite3.connect(state) as db:
            keys = {k for (k,) in db.execute(
                "SELECT idempotency_key FROM deliveries WHERE action = 'hook'")}
        received = [r.headers["idempotency-key"] for r in hook.requests]
        assert set(received) == keys  # every event reached the webhook
        assert all(r.signature_ok for r in hook.requests)
        bodies: dict[str, bytes] = {}
        for r in hook.requests:  # a retried key carries the very same event
            assert bodies.setdefault(r.headers["idempotency-key"], r.body) == r.body
        first_run, second_run = received[:before_restart], received[before_restart:]
        # The delivery the kill cut short was sent again, under the same key ...
        resent = set(first_run) & set(second_run)
        assert cut_short <= resent, (cut_short, first_run, second_run)
        # ... and nothing else was: a key the receiver had answered is never sent again,
        # and after the restart every key goes out once (the receiver answers at once).
        assert resent <= hook_keys(state, "sent") - acknowledged
        assert not acknowledged & set(second_run)
        assert len(second_run) == len(set(second_run)), second_run
        assert len(slack.calls(SLACK_HOOK)) >= len(keys)
        assert len(smtp.mails) >= len(keys)

    alerts = await asyncio.create_subprocess_exec(
        WATCHER, "alerts", "-c", str(path), "--json", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env={**os.environ, **CANARIES})
    listing = (await alerts.communicate())[0].decode()
    assert json.loads(listing)
    everything = log.read_text() + listing
    assert "alert motion on cam: firing" in everything
    for name, canary in CANARIES.items():
        assert canary not in everything, f"{name} leaked"
    assert slack.hook_url not in everything and SLACK_HOOK not in everything
