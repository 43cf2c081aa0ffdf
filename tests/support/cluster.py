"""Several `watcher run` processes sharing one PostgreSQL database: a real cluster.

Cameras are synthetic (``testsrc`` with ``wall=1``): every instance that
publishes camera ``i`` shows the same picture at the same moment, and the
scripted events (a box crossing the room) happen at known Unix times, so a
test knows what should have been notified whichever instance published it.
Each camera has a motion rule on ``local/vision`` notifying a webhook
receiver, which records every Idempotency-Key.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from support.receivers import HttpReceiver, free_port

WATCHER = str(Path(sys.executable).with_name("watcher"))
KEY = "ovs_cluster_test_key_5b1f0c"
FRESH_FRAME_MS = 3000
ADVANCING_FRAMES = 2
"""A stream is being published when it gained at least this many frames since the
previous sample (a frame or two still arriving from before a freeze does not count)."""
SAMPLE_GAP_S = 6.0
"""Two samples of a stream further apart than this say nothing about publishing."""


@dataclass(frozen=True)
class Script:
    """When camera ``i``'s box is on screen: Unix times ``k*period + offset(i)`` for
    ``duration`` seconds."""

    period: float = 30.0
    duration: float = 14.0
    """Longer than a handover leaves a camera unwatched (stop, release, acquire, start,
    a full window, two matches): see BENCHMARKS.md."""
    stagger: float = 5.0

    def offset(self, camera: int) -> float:
        return (camera * self.stagger) % self.period

    def events(self, camera: int, since: float, until: float) -> list[tuple[float, float]]:
        """The events of ``camera`` that start and end within [since, until] (Unix s)."""
        out = []
        k = int((since - self.offset(camera)) // self.period)
        while True:
            start = k * self.period + self.offset(camera)
            if start > until:
                return out
            if start >= since and start + self.duration <= until:
                out.append((start, start + self.duration))
            k += 1

    def spec(self, camera: int) -> str:
        return (f"testsrc:events=box,period={self.period:g},duration={self.duration:g},"
                f"start={self.offset(camera):g},size=160x120,fps=5,noise=1,clock=0,wall=1,"
                f"seed={camera}")


def config_text(*, db_url: str, hook_url: str, cameras: int, script: Script,
                heartbeat: float, lease: float) -> str:
    streams = "".join(
        f"  - name: cam{i}\n    source: \"{script.spec(i)}\"\n    fps: 5\n"
        f"    width: 160\n    height: 120\n" for i in range(cameras))
    rules = "".join(
        f"  - name: motion-cam{i}\n    stream: cam{i}\n    every: 1s\n    window: 2s\n"
        f"    max_fps: 3\n    prompt: Is anything moving?\n"
        f"    schema: {{motion_detected: boolean}}\n    when: motion_detected\n"
        f"    for: 2\n    keep_firing_for: 2s\n    actions: [hook]\n" for i in range(cameras))
    return (
        "overshoot:\n  base_url: embedded\n  api_key: ${CLUSTER_TEST_KEY}\n"
        "  model: local/vision\n  embedded:\n    retention_seconds: 60\n"
        f"streams:\n{streams}rules:\n{rules}"
        f"actions:\n  hook:\n    type: webhook\n    url: {hook_url}\n    timeout: 5s\n"
        "state:\n  url: ${CLUSTER_TEST_DB}\n"
        f"cluster:\n  instance_id: ${{WATCHER_INSTANCE}}\n  heartbeat: {heartbeat:g}s\n"
        f"  lease: {lease:g}s\n"
        "status:\n  enabled: true\n  port: ${WATCHER_STATUS_PORT}\n")


@dataclass
class Instance:
    name: str
    config: Path
    log: Path
    env: dict[str, str]
    status_port: int = field(default_factory=free_port)
    proc: asyncio.subprocess.Process | None = None
    frozen: bool = False

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                WATCHER, "run", "-c", str(self.config), stdout=asyncio.subprocess.DEVNULL,
                stderr=log, env={**self.env, "WATCHER_INSTANCE": self.name,
                                 "WATCHER_STATUS_PORT": str(self.status_port)})
        self.frozen = False

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)
        if sig == signal.SIGSTOP:
            self.frozen = True
        elif sig == signal.SIGCONT:
            self.frozen = False

    async def kill(self) -> None:
        if self.running:
            self.signal(signal.SIGKILL)
            assert self.proc is not None
            await self.proc.wait()

    async def stop(self, timeout: float = 60) -> int:
        """SIGTERM and wait; the exit code."""
        assert self.proc is not None
        if self.frozen:
            self.signal(signal.SIGCONT)
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout):
                    await self.proc.wait()
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode or 0

    async def status(self, http: httpx.AsyncClient) -> dict[str, Any] | None:
        """The /status document, or None when it does not answer (dead, frozen, starting)."""
        if not self.running or self.frozen:
            return None
        try:
            response = await http.get(f"http://127.0.0.1:{self.status_port}/status",
                                      timeout=5)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class Cluster:
    def __init__(self, tmp: Path, *, db_url: str, hook: HttpReceiver, instances: int = 3,
                 cameras: int = 6, script: Script | None = None, heartbeat: float = 1.0,
                 lease: float = 5.0) -> None:
        self.script = script or Script()
        self.cameras = cameras
        self.lease = lease
        self.hook = hook
        self.config = tmp / "cluster.yaml"
        self.config.write_text(config_text(db_url=db_url, hook_url=hook.url(),
                                           cameras=cameras, script=self.script,
                                           heartbeat=heartbeat, lease=lease))
        env = {**os.environ, "CLUSTER_TEST_KEY": KEY, "CLUSTER_TEST_DB": db_url,
               "WATCHER_LOG_LEVEL": "INFO"}
        self.nodes = [Instance(f"node-{i}", self.config, tmp / f"node-{i}.log", env)
                      for i in range(instances)]
        self.http = httpx.AsyncClient()
        self.samples = 0
        self.seen: dict[str, tuple[float, int]] = {}
        """Stream id -> (monotonic time, last_frame_index) when last sampled."""
        self.doubled: list[str] = []
        """Every sample at which two instances were both publishing one camera."""

    @property
    def camera_names(self) -> list[str]:
        return [f"cam{i}" for i in range(self.cameras)]

    async def start(self) -> None:
        for node in self.nodes:
            await node.start()

    async def close(self) -> None:
        await asyncio.gather(*(n.stop() for n in self.nodes if n.proc is not None),
                             return_exceptions=True)
        await self.http.aclose()

    def logs(self) -> str:
        return "\n".join(f"===== {n.name}\n{n.log_text()[-6000:]}" for n in self.nodes)

    async def publishers(self) -> dict[str, list[str]]:
        """Camera -> the instances publishing it now, read from each instance's embedded
        server's stream list (an active stream with a fresh frame) joined with the keeper
        that owns that stream id. Frozen and dead instances publish nothing.

        A camera is counted twice (:attr:`doubled`) when two instances' streams for it
        both gained frames since their previous samples (ADVANCING_FRAMES)."""
        out: dict[str, list[str]] = defaultdict(list)
        advancing: dict[str, list[str]] = defaultdict(list)
        for node in self.nodes:
            status = await node.status(self.http)
            if status is None or "cluster" not in status:
                continue
            me = next((m for m in status["cluster"]["members"]
                       if m["instance_id"] == node.name), None)
            if me is None or not me.get("api_url"):
                continue
            try:
                listed = (await self.http.get(f"{me['api_url']}/streams", timeout=5,
                                              headers={"Authorization": f"Bearer {KEY}"})
                          ).json()["data"]
            except (httpx.HTTPError, KeyError, ValueError):
                continue
            now_ms, now = time.time() * 1000, time.monotonic()
            active = {s["id"]: s for s in listed if s["state"] == "active"
                      and s.get("last_frame_at_ms") and now_ms - s["last_frame_at_ms"]
                      < FRESH_FRAME_MS}
            for stream in status["streams"]:
                found = active.get(stream.get("stream_id") or "")
                if found is None:
                    continue
                out[stream["name"]].append(node.name)
                index = found.get("last_frame_index") or 0
                before = self.seen.get(found["id"])
                self.seen[found["id"]] = (now, index)
                if (before is not None and now - before[0] <= SAMPLE_GAP_S
                        and index - before[1] >= ADVANCING_FRAMES):
                    advancing[stream["name"]].append(node.name)
        for camera, nodes in advancing.items():
            if len(set(nodes)) > 1:
                self.doubled.append(f"{camera}: {sorted(set(nodes))}")
        self.samples += 1
        return dict(out)

    async def wait_all_published_once(self, timeout: float, *, exclude: set[str] = frozenset()
                                      ) -> float:
        """Until every camera is published by exactly one instance (none in ``exclude``);
        the seconds it took. No camera may ever have had two publishers at once
        (:attr:`doubled`)."""
        started = time.monotonic()
        while True:
            pubs = await self.publishers()
            assert not self.doubled, f"cameras published twice: {self.doubled}\n{self.logs()}"
            if all(len(pubs.get(c, [])) == 1 and pubs[c][0] not in exclude
                   for c in self.camera_names):
                return time.monotonic() - started
            if time.monotonic() - started > timeout:
                raise AssertionError(f"not every camera published once after {timeout:g} s: "
                                     f"{pubs}\n{self.logs()}")
            await asyncio.sleep(0.5)


    async def wait_balanced(self, timeout: float) -> None:
        """Until every camera is published once and every instance publishes its share
        (within one camera), twice in a row: the rebalancing after a join is over."""
        started, settled = time.monotonic(), 0
        while settled < 2:
            await self.wait_all_published_once(timeout=timeout)
            counts = Counter(p[0] for p in (await self.publishers()).values())
            shares = [counts.get(n.name, 0) for n in self.nodes]
            settled = settled + 1 if max(shares) - min(shares) <= 1 else 0
            if time.monotonic() - started > timeout:
                raise AssertionError(f"not balanced after {timeout:g} s: {counts}")
            await asyncio.sleep(1.0)


@contextlib.asynccontextmanager
async def running_cluster(tmp: Path, db_url: str, **options: Any) -> AsyncIterator[Cluster]:
    with HttpReceiver() as hook:
        cluster = Cluster(tmp, db_url=db_url, hook=hook, **options)
        try:
            await cluster.start()
            yield cluster
        finally:
            await cluster.close()


@dataclass(frozen=True)
class Notice:
    key: str
    rule: str
    stream: str
    episode: int
    kind: str
    at_ms: int


def notices(hook: HttpReceiver) -> list[Notice]:
    """Every webhook request, parsed from its Idempotency-Key
    (``rule:stream:episode:kind:at_ms:action``)."""
    out = []
    for request in list(hook.requests):
        key = request.headers.get("idempotency-key", "")
        rule, stream, episode, kind, at_ms, _action = key.split(":")
        out.append(Notice(key, rule, stream, int(episode), kind, int(at_ms)))
    return out


def duplicated_keys(hook: HttpReceiver) -> dict[str, int]:
    counts = Counter(r.headers.get("idempotency-key") for r in list(hook.requests))
    return {k: n for k, n in counts.items() if n > 1}


def episodes(hook: HttpReceiver, stream: str) -> list[tuple[int, str]]:
    """(episode, kind) of one camera's notifications, in episode order, firing first."""
    order = {"firing": 0, "repeat": 1, "resolved": 2}
    return sorted(((n.episode, n.kind) for n in notices(hook) if n.stream == stream),
                  key=lambda e: (e[0], order[e[1]]))


def well_formed(seq: list[tuple[int, str]]) -> bool:
    """Each episode notified once firing, then at most one resolve, episodes in a row."""
    by_episode: dict[int, list[str]] = defaultdict(list)
    for episode, kind in seq:
        by_episode[episode].append(kind)
    numbers = sorted(by_episode)
    if numbers and numbers != list(range(numbers[0], numbers[0] + len(numbers))):
        return False
    last = numbers[-1] if numbers else None
    for episode, kinds in by_episode.items():
        if kinds.count("firing") != 1 or kinds.count("resolved") > 1:
            return False
        if episode != last and kinds.count("resolved") != 1:
            return False
    return True


def log_lines_since(text: str, since: float) -> list[str]:
    """The log lines stamped at or after Unix time ``since`` (the log's local time)."""
    out = []
    for line in text.splitlines():
        try:
            stamp = time.mktime(time.strptime(line[:19], "%Y-%m-%d %H:%M:%S"))
        except ValueError:
            continue
        if stamp + int(line[20:23] or 0) / 1000 + 1 >= since:
            out.append(line)
    return out


def scripted_events_notified(hook: HttpReceiver, script: Script, cameras: int, since: float,
                             until: float, slack_s: float = 6.0) -> dict[str, list[float]]:
    """Camera -> the start times of its scripted events in [since, until] that got no
    firing notification (one stamped between the event's start and its end + slack)."""
    firing = [n for n in notices(hook) if n.kind == "firing"]
    missed: dict[str, list[float]] = {}
    for camera in range(cameras):
        name = f"cam{camera}"
        for start, end in script.events(camera, since, until):
            if not any(n.stream == name and start * 1000 <= n.at_ms <= (end + slack_s) * 1000
                       for n in firing):
                missed.setdefault(name, []).append(start)
    return missed
