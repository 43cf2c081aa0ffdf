"""`watcher run` keeping its state in PostgreSQL: alerts recorded, delivered and listed;
the database password never shows.

A real daemon (embedded server, a synthetic camera with a box crossing every
few seconds, a motion rule) with ``state.url`` pointing at this test's
PostgreSQL database, the password given through ``${VAR}``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from sqlalchemy.engine import make_url
from support.poll import eventually
from support.receivers import HttpReceiver

from watcher.store import AlertStore

WATCHER = str(Path(sys.executable).with_name("watcher"))
PASSWORD = "pg-canary-password-Dm47"


async def test_daemon_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    url = make_url(postgres_url)
    # a password is given (trust auth ignores it): it must never be shown
    templated = url.set(password="PLACEHOLDER").render_as_string(hide_password=False)
    templated = templated.replace("PLACEHOLDER", "${PG_TEST_PASSWORD}")
    env = {**os.environ, "PG_TEST_PASSWORD": PASSWORD}
    log = tmp_path / "daemon.log"
    with HttpReceiver() as hook:
        config = tmp_path / "watcher.yaml"
        config.write_text(f"""\
overshoot:
  base_url: embedded
state:
  url: {templated}
actions:
  hook:
    type: webhook
    url: {hook.url()}
rules:
  - name: motion
    stream: cam
    every: 1s
    window: 1s
    max_fps: 4
    prompt: Is anything moving?
    schema: {{motion_detected: boolean}}
    keep_firing_for: 1s
    actions: [hook]
streams:
  - name: cam
    source: testsrc:events=box,period=5,duration=2,start=1,size=320x240
    fps: 8
    width: 320
    height: 240
""")
        daemon = await asyncio.create_subprocess_exec(
            WATCHER, "--log-level", "DEBUG", "run", "-c", str(config),
            stdout=asyncio.subprocess.DEVNULL, stderr=log.open("ab"), env=env)
        try:
            await eventually(lambda: len(hook.requests) >= 2, timeout=90)
            daemon.send_signal(signal.SIGTERM)
            async with asyncio.timeout(60):
                assert await daemon.wait() == 0, log.read_text()
        finally:
            if daemon.returncode is None:
                daemon.kill()
                await daemon.wait()
        keys = [r.headers["idempotency-key"] for r in hook.requests]
    async with AlertStore(postgres_url, upgrade=False) as store:
        events = await store.events(snapshots=True)
        sent = {d.idempotency_key for ds in (await store.deliveries_for_events(
            e.id for e in events if e.id is not None)).values() for d in ds
            if d.status == "sent"}
    assert {e.kind for e in events} >= {"firing"}
    assert any(e.snapshot and e.snapshot[:2] == b"\xff\xd8" for e in events)  # the evidence
    assert set(keys) == sent  # every key received was recorded as sent, and only those
    listing = await asyncio.create_subprocess_exec(
        WATCHER, "alerts", "-c", str(config), "--json", stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=env)
    out = (await listing.communicate())[0].decode()
    assert listing.returncode == 0, out
    assert {e["event_key"] for e in json.loads(out)} == {e.event_key for e in events}
    everything = log.read_text() + out
    assert PASSWORD not in everything
    assert "alert state in postgresql://" in everything and ":***@" in everything
