"""Time-compressed soak of a real `watcher run` daemon under injected faults.

This process runs the embedded server (short lease TTL), a webhook receiver that
checks signatures and records idempotency keys, an aiosmtpd receiver, and a
fault-injecting model backend ``soak/vision`` (local/vision underneath). The daemon
is a subprocess (``watcher --log-format json run -c soak.yaml``) publishing synthetic
streams whose box events have a known schedule (ground truth). On a seeded random
schedule it injects keepalive 503 bursts and timeouts, server-side reaps, dropped
publisher sessions, camera outages (an HTTP MJPEG camera served by this process is
switched off and on), model 503/429/timeouts/malformed answers, webhook 5xx windows,
SMTP outages and `kill -9` of the daemon (restarted on the same state file).

Compression: the API's real lease is 45 s; with ``--ttl T`` every lease-driven
cadence runs 45/T times faster, so the run stands for ``wall * 45/T`` of lease time.

    .venv/bin/python bench/soak.py --minutes 34 --ttl 1 --streams 2 --cameras 1 --seed 3
    .venv/bin/python bench/soak.py --smoke   # 30 s, a few faults, no kill
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import random
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _common import (
    BENCH_DIR,
    describe_machine,
    machine_info,
    percentiles,
    print_table,
    process_cpu_seconds,
)
from _soak_receivers import MODEL_FAULTS, SmtpSink, SoakModel, WebhookReceiver
from _verdict import Verdict, add_smoke, apply_smoke, run_main
from support.camera import MjpegCamera  # shared with the test suite

from watcher.media.testsrc import SyntheticScene

WATCHER = str(Path(sys.executable).with_name("watcher"))
REAL_TTL_S = 45.0
HOOK_SECRET = "soak-hook-secret-4f9a"
PERIOD_S, DURATION_S = 20.0, 6.0
WINDOW_S = 1.5
RULE_TIMEOUT_S = 3.0
KEEPALIVE_CLIENT_TIMEOUT_S = 10.0  # watcher.overshoot.client.KEEPALIVE_POLICY.timeout
STREAM_FAULTS = ("keepalive_503", "keepalive_timeout", "reap", "unpublish")
SOURCE_FAULTS = ("source_down",)
OTHER_FAULTS = (*MODEL_FAULTS, "webhook_5xx", "smtp_down")
ALL_FAULTS = (*STREAM_FAULTS, *SOURCE_FAULTS, *OTHER_FAULTS)


def stamp(t: float | None = None) -> str:
    return dt.datetime.fromtimestamp(t if t is not None else time.time(), dt.UTC).strftime(
        "%H:%M:%S.%f")[:-3]


def say(message: str) -> None:
    print(f"[{stamp()}] {message}", flush=True)


def parse_ts(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


# -- config ----------------------------------------------------------------------------------------
def stream_start_s(index: int) -> float:
    return 3.0 + (index * 10.0) % PERIOD_S  # streams staggered by 10 s


def scene_spec(index: int) -> str:
    return (f"testsrc:events=box,period={PERIOD_S:g},duration={DURATION_S:g},"
            f"start={stream_start_s(index):g},size=320x240,seed={index}")


def camera_names(args: argparse.Namespace) -> list[str]:
    return [f"ipcam{i + 1}" for i in range(args.cameras)]


def all_names(args: argparse.Namespace) -> list[str]:
    return [f"cam{i + 1}" for i in range(args.streams)] + camera_names(args)


def write_config(tmp: Path, base_url: str, hook_url: str, smtp_port: int,
                 names: list[str], cameras: dict[str, MjpegCamera]) -> Path:
    rules, cams = [], []
    for i, name in enumerate(names):
        source = cameras[name].url if name in cameras else scene_spec(i)
        cams.append(f"""\
  - name: {name}
    source: {source}
    fps: 5
    width: 320
    height: 240
""")
        rules.append(f"""\
  - name: motion-{name}
    stream: {name}
    every: 1s
    window: {WINDOW_S:g}s
    max_fps: 4
    model: soak/vision
    timeout: {RULE_TIMEOUT_S:g}s
    prompt: Is anything moving? Ignore the timestamp overlay and sensor noise.
    schema: {{motion_detected: boolean}}
    when: motion_detected
    for: 2
    keep_firing_for: 2s
    cooldown: 10s
    actions: [hook, mail]
""")
    path = tmp / "soak.yaml"
    path.write_text(f"""\
overshoot:
  base_url: {base_url}
  api_key: ${{SOAK_API_KEY}}
  model: soak/vision
  timeout_seconds: 10s
state:
  path: {tmp / "state.sqlite3"}
actions:
  hook:
    type: webhook
    url: {hook_url}
    secret: ${{SOAK_HOOK_SECRET}}
    timeout: 5s
    send_resolved: true
  mail:
    type: email
    host: 127.0.0.1
    port: {smtp_port}
    security: none
    from: watcher@example.test
    to: ops@example.test
    timeout: 5s
    send_resolved: true
rules:
{"".join(rules)}streams:
{"".join(cams)}""")
    return path


# -- the daemon ------------------------------------------------------------------------------------
@dataclass
class Instance:
    n: int
    proc: asyncio.subprocess.Process
    started: float
    ended: float | None = None
    end_kind: str | None = None  # killed | crashed | stopped
    exit_code: int | None = None
    source_live: dict[str, float] = field(default_factory=dict)
    """When each source first delivered frames (t0 of a testsrc schedule)."""
    source_lives: list[tuple[float, str]] = field(default_factory=list)
    """Every "source X is live" line: the first one and each return after a drop."""
    lives: list[tuple[float, str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cpu_s: float = 0.0
    hwm_mb: float = 0.0


class Daemon:
    def __init__(self, config: Path, logdir: Path, env: dict[str, str]) -> None:
        self.config, self.logdir, self.env = config, logdir, env
        self.instances: list[Instance] = []
        self.current: dict[str, str] = {}
        self.live_since: dict[str, float] = {}
        self.stopping = False
        self.killing = False
        self.crashes: list[dict[str, Any]] = []
        self._tasks: list[asyncio.Task] = []

    @property
    def inst(self) -> Instance | None:
        return self.instances[-1] if self.instances else None

    async def start(self) -> Instance:
        n = len(self.instances) + 1
        proc = await asyncio.create_subprocess_exec(
            WATCHER, "--log-format", "json", "run", "-c", str(self.config),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE, env=self.env, start_new_session=True)
        inst = Instance(n, proc, time.time())
        self.instances.append(inst)
        self.current.clear()
        say(f"daemon #{n} started (pid {proc.pid})")
        self._tasks.append(asyncio.create_task(self._read(inst)))
        self._tasks.append(asyncio.create_task(self._watch(inst)))
        return inst

    async def _read(self, inst: Instance) -> None:
        assert inst.proc.stderr is not None
        with (self.logdir / f"daemon-{inst.n}.log").open("wb") as out:
            while True:
                line = await inst.proc.stderr.readline()
                if not line:
                    return
                out.write(line)
                try:
                    doc = json.loads(line)
                except ValueError:
                    inst.errors.append(line.decode(errors="replace")[:300])
                    continue
                msg, ts = str(doc.get("message", "")), parse_ts(doc["timestamp"])
                if msg.startswith("source ") and " is live" in msg:
                    inst.source_live.setdefault(msg.split()[1], ts)
                    inst.source_lives.append((ts, msg.split()[1]))
                elif msg.startswith("stream ") and ": live as " in msg:
                    name, sid = msg.split()[1].rstrip(":"), msg.rsplit(" ", 1)[1]
                    inst.lives.append((ts, name, sid))
                    if inst is self.inst:
                        self.current[name] = sid
                        self.live_since[name] = ts
                elif msg.startswith("stream ") and ("stream lost" in msg or "Error" in msg):
                    name = msg.split()[1].rstrip(":")
                    if inst is self.inst:
                        self.current.pop(name, None)
                if doc.get("level") in ("ERROR", "CRITICAL") or "exception" in doc:
                    inst.errors.append(f"{doc.get('timestamp')} {doc.get('logger')}: {msg[:300]}")

    async def _watch(self, inst: Instance) -> None:
        code = await inst.proc.wait()
        inst.ended, inst.exit_code = time.time(), code
        if self.killing and inst is self.inst:
            inst.end_kind = "killed"
        elif self.stopping:
            inst.end_kind = "stopped"
        else:
            inst.end_kind = "crashed"
            self.crashes.append({"at": stamp(inst.ended), "instance": inst.n, "code": code,
                                 "last_errors": inst.errors[-5:]})
            say(f"!! daemon #{inst.n} CRASHED with code {code}; restarting")
            await asyncio.sleep(1.0)
            if not self.stopping:
                await self.start()

    def sample(self) -> dict[str, Any] | None:
        inst = self.inst
        if inst is None or inst.proc.returncode is not None:
            return None
        pid = inst.proc.pid
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            cpu = process_cpu_seconds(pid)
        except (OSError, IndexError, ValueError):
            return None
        fields = {line.split(":")[0]: line.split()[1] for line in status.splitlines()
                  if line.startswith(("VmRSS", "VmHWM"))}
        rss, hwm = int(fields.get("VmRSS", 0)) / 1024, int(fields.get("VmHWM", 0)) / 1024
        inst.cpu_s, inst.hwm_mb = cpu, max(inst.hwm_mb, hwm)
        return {"t": time.time(), "instance": inst.n, "rss_mb": rss, "cpu_s": cpu}

    async def kill9(self) -> Instance | None:
        inst = self.inst
        if inst is None or inst.proc.returncode is not None:
            return None
        self.sample()
        self.killing = True
        with contextlib.suppress(ProcessLookupError):
            os.kill(inst.proc.pid, signal.SIGKILL)
        await inst.proc.wait()
        await asyncio.sleep(0.2)
        self.killing = False
        return inst

    async def stop(self) -> None:
        self.stopping = True
        inst = self.inst
        if inst is not None and inst.proc.returncode is None:
            self.sample()
            inst.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(inst.proc.wait(), 30)
            except TimeoutError:
                say("daemon did not stop within 30 s of SIGTERM; killing it")
                with contextlib.suppress(ProcessLookupError):
                    inst.proc.kill()
                await inst.proc.wait()
        await asyncio.sleep(0.3)
        for task in self._tasks:
            task.cancel()


# -- faults ----------------------------------------------------------------------------------------
@dataclass
class FaultRecord:
    t: float
    kind: str
    stream: str | None = None
    sid: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    end: float | None = None
    outcome: str = ""

    def row(self) -> dict[str, Any]:
        return {"at": stamp(self.t), "t": self.t, "kind": self.kind, "stream": self.stream,
                "sid": self.sid, "params": self.params, "end": self.end,
                "recovery_s": None if self.end is None else round(self.end - self.t, 2),
                "outcome": self.outcome}


class Faults:
    def __init__(self, server: Any, model: SoakModel, hook: WebhookReceiver, smtp: SmtpSink,
                 daemon: Daemon, rng: random.Random, ttl: int, names: list[str],
                 cameras: dict[str, MjpegCamera]) -> None:
        self.server, self.model, self.hook, self.smtp = server, model, hook, smtp
        self.daemon, self.rng, self.ttl, self.names = daemon, rng, ttl, names
        self.cameras = cameras
        self.kinds = [k for k in ALL_FAULTS if cameras or k not in SOURCE_FAULTS]
        self.log: list[FaultRecord] = []
        self.tasks: list[asyncio.Task] = []

    def _record(self, rec: FaultRecord) -> FaultRecord:
        self.log.append(rec)
        extra = f" {rec.stream}/{rec.sid}" if rec.stream else ""
        say(f"FAULT {rec.kind}{extra} {rec.params}")
        return rec

    async def inject(self, kind: str) -> None:
        rng = self.rng
        if kind in STREAM_FAULTS:
            name = rng.choice(self.names)
            for _ in range(40):  # wait (up to 10 s) for the stream to be live
                sid = self.daemon.current.get(name)
                if sid and self.server.registry.get_active(sid) is not None:
                    break
                await asyncio.sleep(0.25)
            else:
                say(f"fault {kind} skipped: {name} not live")
                return
            await self._stream_fault(kind, name, sid)
        elif kind == "source_down":
            name = rng.choice(sorted(self.cameras))
            seconds = round(rng.uniform(5, 20), 1)
            rec = self._record(FaultRecord(time.time(), kind, name,
                                           params={"seconds": seconds}))
            await asyncio.to_thread(self.cameras[name].stop)
            self.tasks.append(asyncio.create_task(self._camera_back(rec, seconds)))
        elif kind in MODEL_FAULTS:
            n = rng.randint(1, 2) if kind == "model_timeout" else rng.randint(1, 3)
            self.model.arm(kind, n)
            self._record(FaultRecord(time.time(), kind, params={"calls": n}))
        elif kind == "webhook_5xx":
            seconds = round(rng.uniform(5, 20), 1)
            self.hook.outage(seconds)
            self._record(FaultRecord(time.time(), kind, params={"seconds": seconds},
                                     end=time.time() + seconds))
        elif kind == "smtp_down":
            seconds = round(rng.uniform(5, 20), 1)
            rec = self._record(FaultRecord(time.time(), kind, params={"seconds": seconds}))
            await asyncio.to_thread(self.smtp.stop)
            self.tasks.append(asyncio.create_task(self._smtp_back(rec, seconds)))

    async def _smtp_back(self, rec: FaultRecord, seconds: float) -> None:
        await asyncio.sleep(seconds)
        for _ in range(20):
            try:
                await asyncio.to_thread(self.smtp.start)
                break
            except Exception as exc:  # the port may linger briefly
                say(f"smtp restart failed ({exc}); retrying")
                await asyncio.sleep(0.5)
        rec.end = time.time()

    async def _camera_back(self, rec: FaultRecord, seconds: float) -> None:
        """Switch the camera on again, then wait for the daemon's source to be live again."""
        await asyncio.sleep(seconds)
        camera, name = self.cameras[rec.stream or ""], rec.stream or ""
        for _ in range(20):
            try:
                await asyncio.to_thread(camera.start)
                break
            except OSError as exc:  # the port may linger briefly
                say(f"camera restart failed ({exc}); retrying")
                await asyncio.sleep(0.5)
        back = time.time()
        rec.params["back_at"], rec.params["back_t"] = stamp(back), back
        inst = self.daemon.inst
        while time.time() < back + 90:
            await asyncio.sleep(0.25)
            if self.daemon.inst is not inst:
                rec.end, rec.outcome = time.time(), "daemon restarted meanwhile"
                return
            lives = [t for t, n in inst.source_lives if n == name and t > rec.t] if inst else []
            if lives:
                rec.end, rec.outcome = lives[0], "source reconnected"
                return
        rec.end, rec.outcome = time.time(), "NOT RECOVERED within 90 s"

    async def _stream_fault(self, kind: str, name: str, sid: str) -> None:
        server, rng = self.server, self.rng
        rec = FaultRecord(time.time(), kind, name, sid)
        spent: Any = None
        old_session = None
        if kind == "keepalive_503":
            n = rng.randint(1, 3)
            rec.params = {"times": n}
            spent = server.faults.add(rf"/streams/{sid}/keepalive$", method="POST", status=503,
                                      times=n)
        elif kind == "keepalive_timeout":
            delay = KEEPALIVE_CLIENT_TIMEOUT_S + 1.0
            rec.params = {"delay_s": delay}
            spent = server.faults.add(rf"/streams/{sid}/keepalive$", method="POST", status=None,
                                      delay=delay, times=1)
        elif kind == "reap":
            server.registry.reap(sid)
        elif kind == "unpublish":
            stats = server.ingest.session_stats(sid)
            if stats is None:
                say(f"fault unpublish skipped: {sid} has no session")
                return
            old_session = stats.session_id
            rec.params = {"session": old_session}
            await server.ingest.unpublish(sid, old_session)
        self._record(rec)
        self.tasks.append(asyncio.create_task(self._monitor(rec, spent, old_session)))

    async def _monitor(self, rec: FaultRecord, fault: Any, old_session: str | None) -> None:
        """When the stream is usable again: a new stream live, a new session with frames,
        or (keepalive faults) the fault spent and the same stream still active."""
        daemon, server = self.daemon, self.server
        inst = daemon.inst
        deadline = rec.t + 90
        while time.time() < deadline:
            await asyncio.sleep(0.25)
            now = time.time()
            if daemon.inst is not inst:
                rec.end, rec.outcome = now, "daemon restarted meanwhile"
                return
            current = daemon.current.get(rec.stream or "")
            if current and current != rec.sid:
                rec.end = daemon.live_since.get(rec.stream or "", now)
                rec.outcome = "new stream"
                return
            active = server.registry.get_active(rec.sid) is not None
            if rec.kind == "unpublish" and active:
                stats = server.ingest.session_stats(rec.sid)
                if stats is not None and stats.session_id != old_session and (
                        stats.frames_stored > 0):
                    rec.end, rec.outcome = now, "publisher reconnected"
                    return
            if fault is not None and fault.spent and active and current == rec.sid:
                if now > rec.t + fault.delay + self.ttl + 1.5:
                    rec.end, rec.outcome = now, "absorbed (lease kept)"
                    return
        rec.end, rec.outcome = time.time(), "NOT RECOVERED within 90 s"

    async def schedule(self, until: float, gap: tuple[float, float]) -> None:
        while True:
            order = list(self.kinds)
            self.rng.shuffle(order)
            for kind in order:
                await asyncio.sleep(self.rng.uniform(*gap))
                if time.time() >= until:
                    return
                try:
                    await self.inject(kind)
                except Exception as exc:
                    say(f"fault {kind} failed to inject: {type(exc).__name__}: {exc}")

    async def kills(self, times: list[float]) -> None:
        for at in times:
            await asyncio.sleep(max(0.0, at - time.time()))
            rec = FaultRecord(time.time(), "kill_9")
            inst = await self.daemon.kill9()
            if inst is None:
                continue
            rec.params = {"instance": inst.n, "live": dict(self.daemon.current)}
            self._record(rec)
            await asyncio.sleep(self.rng.uniform(1.0, 3.0))
            new = await self.daemon.start()
            names = set(self.names)
            for _ in range(240):  # up to 60 s
                if {n for _, n, _ in new.lives} == names or new.proc.returncode is not None:
                    break
                await asyncio.sleep(0.25)
            rec.end, rec.outcome = time.time(), f"restarted as #{new.n}, all streams live"


# -- analysis --------------------------------------------------------------------------------------
def read_db(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row
    try:
        events = [dict(r) for r in db.execute(
            "SELECT id, event_key, rule, stream_key, kind, notify, created_ms FROM alert_events")]
        deliveries = [dict(r) for r in db.execute(
            "SELECT event_id, action, idempotency_key, status, attempts, created_ms, sent_ms, "
            "last_error FROM deliveries")]
    finally:
        db.close()
    return events, deliveries


def outage_windows(faults: list[FaultRecord], daemon: Daemon, names: list[str]
                   ) -> dict[str, list[tuple[float, float, str]]]:
    """Per stream: deliberate outages (stream-level faults until usable again, kills until the
    new instance has the stream live), widened by the question window."""
    out: dict[str, list[tuple[float, float, str]]] = {n: [] for n in names}
    for rec in faults:
        end = (rec.end or time.time()) + WINDOW_S + 1.0
        if rec.kind in (*STREAM_FAULTS, *SOURCE_FAULTS) and rec.stream and (
                rec.outcome != "absorbed (lease kept)"):
            out[rec.stream].append((rec.t, end, rec.kind))
    for i, inst in enumerate(daemon.instances):
        if inst.end_kind in ("killed", "crashed") and i + 1 < len(daemon.instances):
            nxt = daemon.instances[i + 1]
            for name in names:
                first = min((t for t, n, _ in nxt.lives if n == name), default=time.time())
                out[name].append((inst.ended or 0, first + WINDOW_S + 1.0,
                                  "kill_9" if inst.end_kind == "killed" else "crash"))
    return out


def camera_slots(name: str, idx: int, t0: float, daemon: Daemon,
                 windows: list[tuple[float, float, str]], t_start: float, t_stop: float,
                 ) -> list[dict[str, Any]]:
    """The events of a camera served by the harness; its schedule runs from ``t0``
    whatever the daemon does (kills restart the daemon, not the camera)."""
    first_live = min((t for i in daemon.instances for t, n, _ in i.lives if n == name),
                     default=None)
    slots = []
    for k in range(10**6):
        s = t0 + stream_start_s(idx) + k * PERIOD_S
        e = s + DURATION_S
        if s >= t_stop:
            break
        inst = next((i for i in daemon.instances
                     if i.started <= s < (i.ended if i.ended is not None else t_stop)), None)
        why = [w for a, b, w in windows if a < e and s - WINDOW_S < b]
        if first_live is None or s - WINDOW_S < first_live:
            cls = "startup"
        elif e + 10.0 > t_stop:
            cls = "tail"
        elif inst is None or why:
            cls = "outage"
            why = why or ["daemon down"]
        else:
            cls = "expected"
        slots.append({"instance": inst.n if inst else None, "stream": name, "k": k,
                      "start": s, "end": e, "class": cls, "why": sorted(set(why)),
                      "firings": []})
    return slots


def analyse(args: argparse.Namespace, daemon: Daemon, faults: Faults, hook: WebhookReceiver,
            smtp: SmtpSink, model: SoakModel, ends: list[tuple[float, str, str]],
            samples: list[dict[str, Any]], state: Path, t_start: float, t_stop: float,
            camera_t0: dict[str, float]) -> dict[str, Any]:
    names = all_names(args)
    events_db, deliveries = read_db(state)
    windows = outage_windows(faults.log, daemon, names)

    # firings delivered to the webhook (2xx, first delivery of each key)
    ok_requests = [r for r in hook.hooks if r.answered == 200]
    by_key: dict[str, list[Any]] = {}
    for r in ok_requests:
        by_key.setdefault(r.key, []).append(r)
    all_by_key: dict[str, int] = {}
    for r in hook.hooks:
        all_by_key[r.key] = all_by_key.get(r.key, 0) + 1
    firings = []
    for key, reqs in by_key.items():
        body = reqs[0].body or {}
        if body.get("kind") == "firing":
            firings.append({"key": key, "event_key": body.get("event_key"),
                            "stream": body.get("stream"),
                            "created": parse_ts(body["created_at"]), "received": reqs[0].at,
                            "attempts": all_by_key[key]})

    # ground truth: the scripted events of every instance's testsrc sources, and of the
    # cameras served here (one schedule for the whole run)
    slots: list[dict[str, Any]] = []
    for idx, name in enumerate(names):
        if name in camera_t0:
            slots.extend(camera_slots(name, idx, camera_t0[name], daemon, windows[name],
                                      t_start, t_stop))
    for inst in daemon.instances:
        inst_end = inst.ended if inst.ended is not None else t_stop
        for idx, name in enumerate(names):
            t0 = None if name in camera_t0 else inst.source_live.get(name)
            if t0 is None:
                continue
            first_live = min((t for t, n, _ in inst.lives if n == name), default=None)
            k = 0
            while True:
                s = t0 + stream_start_s(idx) + k * PERIOD_S
                e = s + DURATION_S
                k += 1
                if e + 1.0 > inst_end:
                    if s < inst_end and inst.end_kind in ("killed", "crashed"):
                        cls = "outage"
                    else:
                        break
                elif first_live is None or s - WINDOW_S < first_live:
                    cls = "startup"
                elif e + 10.0 > t_stop:
                    cls = "tail"  # too close to the end to judge (matched, not counted)
                elif any(a < e and s - WINDOW_S < b for a, b, _ in windows[name]):
                    cls = "outage"
                else:
                    cls = "expected"
                why = [w for a, b, w in windows[name] if a < e and s - WINDOW_S < b]
                if cls == "outage" and e + 1.0 > inst_end:
                    why.append("kill_9" if inst.end_kind == "killed" else "crash")
                slots.append({"instance": inst.n, "stream": name, "k": k - 1, "start": s,
                              "end": e, "class": cls, "why": sorted(set(why)), "firings": []})
    unmatched = []
    for f in firings:
        match = [sl for sl in slots if sl["stream"] == f["stream"]
                 and sl["start"] - 1.0 <= f["created"] <= sl["end"] + 6.0]
        if match:
            match[0]["firings"].append(f["key"])
        else:
            unmatched.append(f)

    def count(cls: str, delivered: bool | None = None) -> int:
        return sum(1 for sl in slots if sl["class"] == cls and (
            delivered is None or bool(sl["firings"]) == delivered))

    # An alert episode still open (fired, not yet resolved) when an event starts covers it:
    # the user has an open alert, though no new notification came.
    opened: dict[tuple[str, int], float] = {}
    closed: dict[tuple[str, int], float] = {}
    for reqs in by_key.values():
        body = reqs[0].body or {}
        episode = (str(body.get("stream")), int(body.get("episode") or 0))
        if body.get("kind") == "firing":
            opened[episode] = parse_ts(body["created_at"])
        elif body.get("kind") == "resolved":
            closed[episode] = parse_ts(body["created_at"])
    open_episodes = [(ep[0], t, closed.get(ep, t_stop)) for ep, t in opened.items()]
    unnotified = [sl for sl in slots if sl["class"] == "expected" and not sl["firings"]]
    covered = [sl for sl in unnotified if any(
        name == sl["stream"] and a <= sl["start"] < b for name, a, b in open_episodes)]
    missed = [sl for sl in unnotified if sl not in covered]
    extra = sum(max(0, len(sl["firings"]) - 1) for sl in slots)

    # delivery integrity vs the state file
    hook_db = [d for d in deliveries if d["action"] == "hook"]
    mail_db = [d for d in deliveries if d["action"] == "mail"]
    db_keys = {d["idempotency_key"] for d in hook_db}
    recorded_not_delivered = [d for d in hook_db if d["idempotency_key"] not in by_key]
    raw_dups = sum(len(v) - 1 for v in by_key.values())
    event_to_keys: dict[str, set[str]] = {}
    for key, reqs in by_key.items():
        body = reqs[0].body or {}
        event_to_keys.setdefault(str(body.get("event_key")), set()).add(key)
    dup_accepted = sum(1 for v in event_to_keys.values() if len(v) > 1)
    body_mismatch = sum(1 for reqs in by_key.values()
                        if len({json.dumps(r.body, sort_keys=True) for r in reqs}) > 1)
    mails_by_key: dict[str, int] = {}
    for m in smtp.mails:
        mails_by_key[m.key] = mails_by_key.get(m.key, 0) + 1
    mail_keys = {d["idempotency_key"] for d in mail_db}
    notified_firings_db = [e for e in events_db if e["kind"] == "firing" and e["notify"]]

    # lease lapses
    sid_owner: dict[str, Instance] = {}
    for inst in daemon.instances:
        for _, _, sid in inst.lives:
            sid_owner[sid] = inst
    ka_faults = {}
    for rec in faults.log:
        if rec.kind in ("keepalive_503", "keepalive_timeout") and rec.sid:
            ka_faults.setdefault(rec.sid, rec)
    unpublished = {rec.sid: rec for rec in faults.log if rec.kind == "unpublish" and rec.sid}
    lapses: dict[str, list[dict[str, Any]]] = {
        "keepalive fault": [], "orphaned by kill -9": [],
        "unpublish fault (reconnect backoff >= ttl)": [], "unintended": []}
    reasons: dict[str, int] = {}
    for t, sid, reason in ends:
        reasons[reason] = reasons.get(reason, 0) + 1
        if reason != "expired":
            continue
        owner = sid_owner.get(sid)
        row = {"at": stamp(t), "sid": sid, "instance": owner.n if owner else None}
        if sid in ka_faults and t >= ka_faults[sid].t - 1:
            row["fault"] = ka_faults[sid].kind
            lapses["keepalive fault"].append(row)
        elif owner is not None and owner.end_kind in ("killed", "crashed") and (
                t >= (owner.ended or 0) - 1):
            lapses["orphaned by kill -9"].append(row)
        elif sid in unpublished and unpublished[sid].t - 1 <= t <= unpublished[sid].t + 15:
            lapses["unpublish fault (reconnect backoff >= ttl)"].append(row)
        else:
            lapses["unintended"].append(row)

    # resources
    rss_by_inst: dict[int, list[dict[str, Any]]] = {}
    for s in samples:
        rss_by_inst.setdefault(s["instance"], []).append(s)
    longest = max(rss_by_inst.items(), key=lambda kv: kv[1][-1]["t"] - kv[1][0]["t"],
                  default=(0, []))
    inst_samples = [s for s in longest[1] if s["t"] - longest[1][0]["t"] >= 30] or longest[1]
    q = max(1, len(inst_samples) // 4)
    first_q = statistics.median(s["rss_mb"] for s in inst_samples[:q]) if inst_samples else 0
    last_q = statistics.median(s["rss_mb"] for s in inst_samples[-q:]) if inst_samples else 0
    quarters = [statistics.median(x["rss_mb"] for x in inst_samples[i * q:(i + 1) * q])
                for i in range(4) if inst_samples[i * q:(i + 1) * q]]
    half = inst_samples[len(inst_samples) // 2:]
    slope = statistics.linear_regression([x["t"] for x in half],
                                         [x["rss_mb"] for x in half]).slope * 3600 if len(
        half) >= 3 else 0.0
    up_wall = sum(((i.ended or t_stop) - i.started) for i in daemon.instances)
    cpu_total = sum(i.cpu_s for i in daemon.instances)
    wall = t_stop - t_start

    lat_all = [f["received"] - f["created"] for f in firings]
    lat_first = [f["received"] - f["created"] for f in firings if f["attempts"] == 1]
    fault_counts: dict[str, int] = {k: 0 for k in (*ALL_FAULTS, "kill_9")}
    for rec in faults.log:
        fault_counts[rec.kind] += 1
    recovery: dict[str, list[float]] = {}
    outcomes: dict[str, dict[str, int]] = {}
    for rec in faults.log:
        if rec.end is not None and rec.kind in (*STREAM_FAULTS, *SOURCE_FAULTS, "kill_9"):
            recovery.setdefault(rec.kind, []).append(rec.end - rec.t)
        oc = outcomes.setdefault(rec.kind, {})
        oc[rec.outcome or "-"] = oc.get(rec.outcome or "-", 0) + 1

    factor = REAL_TTL_S / args.ttl
    return {
        "command": " ".join(sys.argv),
        "machine": machine_info(),
        "args": vars(args),
        "wall_s": wall,
        "compression_factor": factor,
        "simulated_hours": wall * factor / 3600,
        "daemon_instances": [{"n": i.n, "started": stamp(i.started),
                              "ended": stamp(i.ended) if i.ended else None,
                              "end_kind": i.end_kind, "exit_code": i.exit_code,
                              "cpu_s": i.cpu_s, "peak_rss_mb": i.hwm_mb,
                              "streams_created": len(i.lives), "errors": i.errors[-20:]}
                             for i in daemon.instances],
        "crashes": daemon.crashes,
        "fault_counts": fault_counts,
        "fault_outcomes": outcomes,
        "model_faults_served": model.injected,
        "model_calls": model.calls,
        "recovery_s": {k: percentiles(v) for k, v in recovery.items()},
        # camera switched on again -> the daemon's source live again (its reconnect backoff)
        "camera_back_to_source_live_s": percentiles([
            rec.end - rec.params["back_t"] for rec in faults.log
            if rec.kind == "source_down" and rec.end is not None and "back_t" in rec.params
            and rec.outcome == "source reconnected"]),
        "events": {
            "expected": count("expected"),
            "expected_delivered": count("expected", True),
            "cameras": camera_names(args),
            "expected_missed": len(missed),
            "expected_covered_by_open_alert": len(covered),
            "covered": [{"instance": sl["instance"], "stream": sl["stream"], "k": sl["k"],
                         "start": stamp(sl["start"])} for sl in covered],
            "missed": [{"instance": sl["instance"], "stream": sl["stream"], "k": sl["k"],
                        "start": stamp(sl["start"])} for sl in missed],
            "outage": count("outage"),
            "outage_delivered": count("outage", True),
            "outage_reasons": _reason_counts(slots),
            "startup": count("startup"),
            "startup_delivered": count("startup", True),
            "extra_firings_same_event": extra,
            "spurious_firings": [{"stream": f["stream"], "created": stamp(f["created"])}
                                 for f in unmatched],
        },
        "delivery": {
            "hook_requests": len(hook.hooks),
            "hook_503_answered": sum(1 for r in hook.hooks if r.answered == 503),
            "hook_bad_signature": sum(1 for r in hook.hooks if not r.signature_ok),
            "hook_keys_accepted": len(by_key),
            "hook_deliveries_in_state": len(hook_db),
            "hook_state_status": _status_counts(hook_db),
            "hook_recorded_not_received": len(recorded_not_delivered),
            "hook_received_not_in_state": len(set(by_key) - db_keys),
            "hook_raw_duplicates": raw_dups,
            "hook_duplicate_events_accepted": dup_accepted,
            "hook_retry_body_mismatch": body_mismatch,
            "notified_firings_in_state": len(notified_firings_db),
            "firings_delivered": len(firings),
            "mails_received": len(smtp.mails),
            "mail_keys_received": len(mails_by_key),
            "mail_raw_duplicates": sum(v - 1 for v in mails_by_key.values()),
            "mail_deliveries_in_state": len(mail_db),
            "mail_state_status": _status_counts(mail_db),
            "mail_recorded_not_received": len(mail_keys - set(mails_by_key)),
            "latency_all_s": percentiles(lat_all),
            "latency_first_attempt_s": percentiles(lat_first),
        },
        "streams_ended": reasons,
        "lapses": lapses,
        "resources": {
            "peak_rss_mb": max((i.hwm_mb for i in daemon.instances), default=0.0),
            "rss_instance": longest[0],
            "rss_instance_minutes": (inst_samples[-1]["t"] - inst_samples[0]["t"]) / 60
            if inst_samples else 0,
            "rss_first_quarter_median_mb": first_q,
            "rss_last_quarter_median_mb": last_q,
            "rss_growth_mb": last_q - first_q,
            "rss_quarter_medians_mb": quarters,
            "rss_slope_second_half_mb_per_h": slope,
            "daemon_cpu_s": cpu_total,
            "daemon_up_s": up_wall,
            "cpu_percent_per_stream": 100 * cpu_total / up_wall / args.streams if up_wall else 0,
            "samples": len(samples),
        },
        "faults": [r.row() for r in faults.log],
    }


def dump_raw(path: Path, daemon: Daemon, faults: Faults, hook: WebhookReceiver,
             smtp: SmtpSink, ends: list[tuple[float, str, str]], samples: list[dict[str, Any]],
             t_start: float, t_stop: float) -> None:
    """Everything the analysis reads, to re-check it offline."""
    path.write_text(json.dumps({
        "t_start": t_start, "t_stop": t_stop, "ends": ends, "samples": samples,
        "instances": [{"n": i.n, "started": i.started, "ended": i.ended, "end_kind": i.end_kind,
                       "source_live": i.source_live, "lives": i.lives, "cpu_s": i.cpu_s}
                      for i in daemon.instances],
        "faults": [r.row() for r in faults.log],
        "hook": [vars(r) for r in hook.hooks], "mails": [vars(m) for m in smtp.mails],
    }, default=str))


def _reason_counts(slots: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for sl in slots:
        if sl["class"] == "outage":
            for w in sl["why"] or ["?"]:
                out[w] = out.get(w, 0) + 1
    return out


def _status_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r["status"]] = out.get(r["status"], 0) + 1
    return out


def report(r: dict[str, Any]) -> None:
    ev, de, res = r["events"], r["delivery"], r["resources"]
    lat, lat1 = de["latency_all_s"], de["latency_first_attempt_s"]
    print(f"\nSoak: {r['wall_s'] / 60:.1f} min wall, ttl {r['args']['ttl']} s -> compression "
          f"{r['compression_factor']:g}x (45 s / ttl) -> {r['simulated_hours']:.1f} h simulated")
    print("machine:", describe_machine(r["machine"]))
    rows = [
        ("events expected (daemon up, stream live, no outage)", ev["expected"]),
        ("  firing delivered to webhook", ev["expected_delivered"]),
        ("  no new firing, but an alert on the stream was still open",
         ev["expected_covered_by_open_alert"]),
        ("  LOST (no alert open or delivered)", ev["expected_missed"]),
        ("events in deliberate outage windows", ev["outage"]),
        ("  of which still delivered", ev["outage_delivered"]),
        ("events before the stream was first live (startup)", ev["startup"]),
        ("extra firings for one event / spurious firings",
         f"{ev['extra_firings_same_event']} / {len(ev['spurious_firings'])}"),
        ("notified firings in state / delivered to webhook",
         f"{de['notified_firings_in_state']} / {de['firings_delivered']}"),
        ("webhook deliveries in state (all kinds) / keys accepted",
         f"{de['hook_deliveries_in_state']} / {de['hook_keys_accepted']}"),
        ("recorded but never received (webhook / email)",
         f"{de['hook_recorded_not_received']} / {de['mail_recorded_not_received']}"),
        ("raw duplicate deliveries by key (webhook / email)",
         f"{de['hook_raw_duplicates']} / {de['mail_raw_duplicates']}"),
        ("duplicate events accepted (same event, 2 keys)", de["hook_duplicate_events_accepted"]),
        ("bad signatures / 503s answered in 5xx windows",
         f"{de['hook_bad_signature']} / {de['hook_503_answered']}"),
        ("unintended lease lapses (expired)", len(r["lapses"]["unintended"])),
        ("fault-caused lapses (keepalive fault / kill -9 orphan / unpublish)",
         f"{len(r['lapses']['keepalive fault'])} / {len(r['lapses']['orphaned by kill -9'])}"
         f" / {len(r['lapses']['unpublish fault (reconnect backoff >= ttl)'])}"),
        ("streams ended by reason", r["streams_ended"]),
        ("crashes (exits other than kill -9)", len(r["crashes"])),
        ("daemon peak RSS (VmHWM)", f"{res['peak_rss_mb']:.0f} MB"),
        (f"RSS median 1st vs last quarter (instance #{res['rss_instance']}, "
         f"{res['rss_instance_minutes']:.0f} min)",
         f"{res['rss_first_quarter_median_mb']:.1f} -> {res['rss_last_quarter_median_mb']:.1f} MB"
         f" ({res['rss_growth_mb']:+.1f})"),
        ("RSS medians by quarter / slope over the second half",
         " / ".join(f"{m:.1f}" for m in res["rss_quarter_medians_mb"])
         + f" MB; {res['rss_slope_second_half_mb_per_h']:+.1f} MB/h"),
        ("daemon CPU per stream", f"{res['cpu_percent_per_stream']:.1f} % of one core"),
        ("firing latency p50/p95/max (all)",
         f"{lat.get('p50', 0):.2f} / {lat.get('p95', 0):.2f} / {lat.get('max', 0):.2f} s"),
        ("firing latency p50/p95/max (first attempt)",
         f"{lat1.get('p50', 0):.2f} / {lat1.get('p95', 0):.2f} / {lat1.get('max', 0):.2f} s"),
    ]
    print_table("Results", ["measure", "value"], rows)
    print_table("Faults injected", ["fault", "count", "outcomes", "recovery p50/max s"], [
        (k, v, ", ".join(f"{o}: {c}" for o, c in r["fault_outcomes"].get(k, {}).items()),
         (f"{r['recovery_s'][k]['p50']:.1f} / {r['recovery_s'][k]['max']:.1f}"
          if k in r["recovery_s"] else "-"))
        for k, v in r["fault_counts"].items()])
    print("model faults served:", r["model_faults_served"], "of", r["model_calls"], "calls")
    back = r["camera_back_to_source_live_s"]
    if back.get("n"):
        print(f"camera back -> source live again: p50 {back['p50']:.1f} s, max "
              f"{back['max']:.1f} s (n={back['n']})")
    if ev["missed"]:
        print("missed events:", ev["missed"])
    if ev["covered"]:
        print("events covered by an open alert:", ev["covered"])
    if ev["spurious_firings"]:
        print("spurious firings:", ev["spurious_firings"])
    if r["crashes"]:
        print("crashes:", r["crashes"])


# -- main ------------------------------------------------------------------------------------------
async def run(args: argparse.Namespace) -> dict[str, Any]:
    from watcher.server.embedded import run_embedded
    from watcher.server.settings import ServerSettings

    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="watcher-soak-"))
    say(f"work dir {tmp}")
    names = all_names(args)
    cameras = {name: MjpegCamera(SyntheticScene.from_spec(scene_spec(names.index(name))))
               for name in camera_names(args)}
    # MjpegCamera.t0 is monotonic; the analysis works in wall time.
    camera_t0 = {name: time.time() - (time.monotonic() - c.t0) for name, c in cameras.items()}
    settings = ServerSettings(ttl_seconds=args.ttl, retention_seconds=30,
                              tombstone_seconds=7 * 86400, max_mb_per_stream=5)
    hook, smtp = WebhookReceiver(HOOK_SECRET), SmtpSink()
    samples: list[dict[str, Any]] = []
    ends: list[tuple[float, str, str]] = []
    async with run_embedded(settings) as endpoint:
        server = endpoint.app.state.server
        server.registry.on_end(lambda s: ends.append((time.time(), s.id, str(s.end_reason))))
        model = SoakModel(server.backends["local/vision"], timeout_sleep=RULE_TIMEOUT_S + 1.5)
        server.backends[model.id] = model
        hook.start()
        await asyncio.to_thread(smtp.start)
        for camera in cameras.values():
            camera.start()
        config = write_config(tmp, endpoint.base_url, hook.url(), smtp.port, names, cameras)
        env = {**os.environ, "SOAK_API_KEY": endpoint.api_key, "SOAK_HOOK_SECRET": HOOK_SECRET}
        daemon = Daemon(config, tmp, env)
        faults = Faults(server, model, hook, smtp, daemon, rng, args.ttl, names, cameras)
        t_start = time.time()
        t_end = t_start + args.minutes * 60
        quiet_tail = (args.quiet_tail if args.quiet_tail is not None
                      else min(90.0, max(30.0, args.minutes * 60 * 0.06)))
        # Kills early, so that the last instance runs long enough to judge its memory.
        kill_times = [t_start + args.minutes * 60 * (0.1 + 0.1 * i / max(1, args.kills - 1))
                      for i in range(args.kills)] if args.kills > 1 else (
            [t_start + args.minutes * 60 * 0.2] if args.kills == 1 else [])
        say(f"ttl {args.ttl} s, compression {REAL_TTL_S / args.ttl:g}x, {args.minutes} min -> "
            f"{args.minutes * REAL_TTL_S / args.ttl / 60:.1f} h simulated; faults until "
            f"{stamp(t_end - quiet_tail)}, kills at {[stamp(t) for t in kill_times]}")
        background: list[asyncio.Task] = []
        t_stop = time.time()
        try:
            await daemon.start()

            async def sampler() -> None:
                while True:
                    s = daemon.sample()
                    if s is not None:
                        samples.append(s)
                    await asyncio.sleep(args.sample_every)

            background.append(asyncio.create_task(sampler()))
            await asyncio.sleep(args.first_fault_after)  # the first streams go live
            background.append(asyncio.create_task(
                faults.schedule(t_end - quiet_tail, (args.gap_min, args.gap_max))))
            background.append(asyncio.create_task(faults.kills(kill_times)))
            while time.time() < t_end:
                await asyncio.sleep(min(30.0, max(0.1, t_end - time.time())))
                inst = daemon.inst
                say(f"t+{(time.time() - t_start) / 60:.1f} min: daemon #{inst.n if inst else '-'}"
                    f", webhook keys {len({r.key for r in hook.hooks if r.answered == 200})}"
                    f", mails {len(smtp.mails)}, faults {len(faults.log)}"
                    f", crashes {len(daemon.crashes)}")
            # drain: every delivery in the state file sent (or give up after 90 s)
            say("run over; waiting for the outbox to drain")
            await asyncio.to_thread(smtp.start)
            hook.down_until = 0
            for camera in cameras.values():
                if not camera.running:
                    camera.start()
            drain_deadline = time.time() + 90
            while time.time() < drain_deadline:
                with contextlib.suppress(sqlite3.Error):
                    _, deliveries = read_db(tmp / "state.sqlite3")
                    if deliveries and all(d["status"] in ("sent", "dead", "summarized")
                                          for d in deliveries):
                        break
                await asyncio.sleep(1.0)
            t_stop = time.time()
        finally:
            for task in background:
                task.cancel()
            for task in faults.tasks:
                task.cancel()
            await daemon.stop()
            await asyncio.sleep(0.5)
            with contextlib.suppress(Exception):
                dump_raw(tmp / "raw.json", daemon, faults, hook, smtp, ends, samples,
                         t_start, t_stop)
            result = None
            with contextlib.suppress(Exception):
                result = analyse(args, daemon, faults, hook, smtp, model, ends, samples,
                                 tmp / "state.sqlite3", t_start, t_stop, camera_t0)
            hook.stop()
            await asyncio.to_thread(smtp.stop)
            for camera in cameras.values():
                camera.stop()
    if result is None:  # analysis failed: run it again to show the error
        result = analyse(args, daemon, faults, hook, smtp, model, ends, samples,
                         tmp / "state.sqlite3", t_start, t_stop, camera_t0)
    result["work_dir"] = str(tmp)
    result["rss_samples"] = [(round(s["t"] - t_start, 1), s["instance"], round(s["rss_mb"], 1))
                             for s in samples]
    return result


def verdict(r: dict[str, Any]) -> int:
    """Met: nothing lost or duplicated, no unintended lapse, no crash (memory is judged by
    reading the RSS table, not here). FAILED when the run did no work to judge."""
    ev, de = r["events"], r["delivery"]
    check = Verdict("soak")
    check.require_work(ev["expected"], "expected events (nothing to judge)")
    check.require_work(r["model_calls"], "model calls")
    check.require_work(de["hook_keys_accepted"], "webhook deliveries accepted")
    ok = (ev["expected_missed"] == 0 and de["hook_duplicate_events_accepted"] == 0
          and not r["lapses"]["unintended"] and not r["crashes"])
    return check.finish(ok, f"{ev['expected_delivered']}/{ev['expected']} expected events "
                            f"delivered, {ev['expected_missed']} lost, "
                            f"{de['hook_duplicate_events_accepted']} duplicate events accepted, "
                            f"{len(r['lapses']['unintended'])} unintended lapses, "
                            f"{len(r['crashes'])} crashes, {r['model_calls']} model calls")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=25.0, help="wall-clock length")
    parser.add_argument("--ttl", type=int, default=1, help="server lease TTL in seconds")
    parser.add_argument("--streams", type=int, default=2, help="testsrc streams")
    parser.add_argument("--cameras", type=int, default=1,
                        help="streams from HTTP MJPEG cameras served here (source outages)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kills", type=int, default=2, help="kill -9 + restarts")
    parser.add_argument("--gap-min", type=float, default=8.0, help="s between faults (min)")
    parser.add_argument("--gap-max", type=float, default=20.0, help="s between faults (max)")
    parser.add_argument("--sample-every", type=float, default=3.0, help="RSS/CPU sampling, s")
    parser.add_argument("--quiet-tail", type=float, default=None,
                        help="seconds without faults before the end (default: 6%% of the "
                        "run, 30-90 s)")
    parser.add_argument("--first-fault-after", type=float, default=10.0,
                        help="seconds after the daemon starts before the first fault")
    parser.add_argument("--json", action="store_true", help="print the raw JSON result")
    add_smoke(parser)
    args = apply_smoke(parser.parse_args(), minutes=0.5, kills=0, gap_min=3.0, gap_max=5.0,
                       quiet_tail=8.0, first_fault_after=6.0, sample_every=1.0)
    result = asyncio.run(run(args))
    out = BENCH_DIR / "results"
    out.mkdir(exist_ok=True)
    path = out / f"soak-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(result, indent=2, default=str))
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    report(result)
    code = verdict(result)
    if args.smoke and code == 0:  # CI runs this often: keep nothing of a good smoke run
        shutil.rmtree(result["work_dir"], ignore_errors=True)
        path.unlink(missing_ok=True)
    else:
        print(f"\nJSON: {path}\nlogs: {result['work_dir']}")
    return code


if __name__ == "__main__":
    run_main(main)
