"""The retained availability reads ``offline`` once a daemon dies without a goodbye."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

from support.mqtt import shared_broker, subscribed, unique_prefix

WATCHER = str(Path(sys.executable).with_name("watcher"))
KEEPALIVE_S = 2


async def test_kill_9_leaves_the_availability_offline(tmp_path: Path) -> None:
    broker = shared_broker()
    root = unique_prefix()
    config = tmp_path / "watcher.yaml"
    config.write_text(f"""\
overshoot: {{base_url: embedded}}
state: {{path: {tmp_path / 'state.sqlite3'}}}
actions:
  home:
    type: mqtt
    host: {broker.host}
    port: {broker.port}
    keepalive: {KEEPALIVE_S}s
    discovery: true
    discovery_prefix: {unique_prefix()}
    base_topic: {root}
rules:
  - name: hall-motion
    stream: hall
    every: 1s
    window: 1s
    prompt: Is anything moving?
    schema: {{motion_detected: boolean, motion: number}}
    when: motion_detected
    actions: [home]
streams:
  - name: hall
    source: testsrc:size=160x120
    fps: 5
    width: 160
    height: 120
""")
    availability = f"{root}/availability"
    async with subscribed(broker, availability) as sub:
        proc = await asyncio.create_subprocess_exec(
            WATCHER, "run", "-c", str(config), stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL, env=dict(os.environ))
        try:
            await sub.wait_for(lambda: (m := sub.last(availability)) and m.text == "online")
            killed_at = time.monotonic()
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
            await sub.wait_for(lambda: sub.last(availability).text == "offline")
            waited = time.monotonic() - killed_at
        finally:
            if proc.returncode is None:
                proc.kill()
    # The broker publishes the will after 1.5 x keepalive of silence; allow for its
    # once-a-second keepalive check.
    assert waited <= KEEPALIVE_S * 1.5 + 1.5, waited
    async with subscribed(broker, availability) as late:
        await late.wait_for(lambda: late.last(availability) is not None)
        assert (late.last(availability).text, late.last(availability).retain) == ("offline", True)
