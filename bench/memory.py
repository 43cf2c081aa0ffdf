"""Does a long-running daemon's memory stay flat? RSS of `watcher run` over time.

Runs `watcher run` (embedded server, so the frame store is in the same process) with
3 synthetic 640x480 cameras at 5 fps and 3 rules on `local/vision`, whose alerts go to
a webhook whose receiver is down (every delivery fails and is retried: the outbox
keeps growing). It samples the daemon's RSS from /proc every few seconds, waits for
retention to fill (``--fill``, default the 10 min retention), then measures for
``--minutes`` more and reports RSS over time and the least-squares slope over the
last 15 minutes of the run (MB per minute, and MB per hour).

    .venv/bin/python bench/memory.py --fill 10 --minutes 30
    .venv/bin/python bench/memory.py --smoke     # a few seconds, 60 s retention

Verdict: "met" when the run worked (the daemon ran to the end, every stream went
live, alerts were recorded, no error in its log) and the slope over the last 15
minutes is at most ``--max-slope`` MB/h; FAILED (exit 1) when the run did not work.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import _verdict
from _common import describe_machine, machine_info, print_table

WATCHER = str(Path(sys.executable).with_name("watcher"))
CAMERAS = 3
SLOPE_WINDOW_S = 15 * 60
LIVE_LINE = re.compile(r"watcher\.daemon: stream (\S+) is live \(")


def config_text(tmp: Path, hook_port: int, retention_s: float, status_port: int) -> str:
    streams, rules = [], []
    for i in range(CAMERAS):
        name = f"cam{i}"
        streams.append(f"""\
  - name: {name}
    source: testsrc:events=box,period=20,duration=6,start={3 + 6 * i}
    fps: 5
    width: 640
    height: 480
""")
        rules.append(f"""\
  - name: motion-{name}
    stream: {name}
    every: 2s
    window: 2s
    max_fps: 3
    prompt: Is anything moving? Ignore the timestamp overlay and camera noise.
    schema: {{motion_detected: boolean, motion: number}}
    when: motion_detected
    for: 2
    keep_firing_for: 3s
    cooldown: 10s
    actions: [hook]
""")
    return f"""\
overshoot:
  base_url: embedded
  model: local/vision
  embedded:
    retention_seconds: {retention_s:g}s
state:
  path: {tmp / "state.sqlite3"}
status:
  enabled: true
  port: {status_port}
actions:
  hook:
    type: webhook
    url: http://127.0.0.1:{hook_port}/hook
    timeout: 2s
    send_resolved: true
rules:
{"".join(rules)}streams:
{"".join(streams)}"""


def closed_port() -> int:
    """A port nothing listens on (the webhook receiver is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return None


def slope_mb_per_min(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB per minute."""
    n = len(samples)
    if n < 2:
        return float("nan")
    mean_t = sum(t for t, _ in samples) / n
    mean_m = sum(m for _, m in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    if var == 0:
        return float("nan")
    cov = sum((t - mean_t) * (m - mean_m) for t, m in samples)
    return cov / var * 60


def stored_counts(db: Path) -> dict[str, int]:
    with contextlib.suppress(sqlite3.Error), contextlib.closing(
            sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        events = conn.execute("SELECT COUNT(*) FROM alert_events").fetchone()[0]
        rows = dict(conn.execute("SELECT status, COUNT(*) FROM deliveries GROUP BY status"))
        return {"events": events, **{f"deliveries_{k}": v for k, v in rows.items()}}
    return {"events": 0}


def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="watcher-memory-"))
    config = tmp / "watcher.yaml"
    config.write_text(config_text(tmp, closed_port(), args.retention, closed_port()))
    env = {**os.environ, "WATCHER_LOG_LEVEL": "INFO"}
    log_path = tmp / "watcher.log"
    total_s = (args.fill + args.minutes) * 60
    samples: list[tuple[float, float]] = []
    lives: set[str] = set()
    errors: list[str] = []
    with log_path.open("w") as log_file:
        proc = subprocess.Popen([WATCHER, "run", "-c", str(config)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, env=env)
        assert proc.stderr is not None

        def read_log() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                log_file.write(line)
                if match := LIVE_LINE.search(line):
                    lives.add(match.group(1))
                if "Traceback" in line or " ERROR " in line:
                    errors.append(line.strip())

        reader = threading.Thread(target=read_log, daemon=True)
        reader.start()
        start = time.monotonic()
        try:
            while (elapsed := time.monotonic() - start) < total_s:
                if proc.poll() is not None:
                    raise RuntimeError(f"watcher run exited early with code {proc.returncode}")
                value = rss_mb(proc.pid)
                if value is not None and value > 5:  # not the exec'ing stub
                    samples.append((elapsed, value))
                time.sleep(min(args.sample_every, max(0.05, total_s - elapsed)))
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            reader.join(timeout=10)
    (tmp / "rss.json").write_text(json.dumps(samples))
    counts = stored_counts(tmp / "state.sqlite3")
    fill_s = args.fill * 60
    measured = [(t, m) for t, m in samples if t >= fill_s]
    tail_start = max(fill_s, total_s - SLOPE_WINDOW_S)
    tail = [(t, m) for t, m in samples if t >= tail_start]
    per_min = slope_mb_per_min(tail)
    minute_rows = []
    for minute in range(0, int(total_s // 60) + 1, max(1, args.table_every)):
        near = [m for t, m in samples if minute * 60 <= t < minute * 60 + args.sample_every * 2]
        if near:
            minute_rows.append((minute, near[0]))
    return {
        "work_dir": str(tmp), "fill_min": args.fill, "minutes": args.minutes,
        "retention_s": args.retention, "cameras": CAMERAS, "samples": len(samples),
        "streams_live": sorted(lives), "errors": errors[:20], "stored": counts,
        "rss_start_mb": samples[0][1] if samples else None,
        "rss_at_fill_mb": measured[0][1] if measured else None,
        "rss_end_mb": samples[-1][1] if samples else None,
        "rss_max_mb": max((m for _, m in samples), default=None),
        "slope_window_s": round(total_s - tail_start),
        "slope_mb_per_min": per_min, "slope_mb_per_hour": per_min * 60,
        "rss_by_minute": minute_rows, "machine": machine_info(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fill", type=float, default=10.0,
                        help="minutes before measuring (retention filling)")
    parser.add_argument("--minutes", type=float, default=30.0, help="minutes measured")
    parser.add_argument("--retention", type=float, default=600.0, help="retention, s")
    parser.add_argument("--sample-every", type=float, default=5.0, help="RSS sampling, s")
    parser.add_argument("--table-every", type=int, default=5, help="table rows, minutes")
    parser.add_argument("--max-slope", type=float, default=5.0,
                        help="flat means at most this many MB per hour")
    parser.add_argument("--json", action="store_true")
    _verdict.add_smoke(parser)
    args = _verdict.apply_smoke(parser.parse_args(), fill=0.1, minutes=0.5, retention=60.0,
                                sample_every=1.0, table_every=1)
    result = run(args)
    if args.json:
        print(json.dumps(result, indent=2, default=str))
    else:
        print(describe_machine(result["machine"]))
        print(f"work dir {result['work_dir']}; stored {result['stored']}")
        print_table(f"RSS of `watcher run` ({CAMERAS} cameras 640x480 @ 5 fps, 3 rules, "
                    f"webhook down, retention {args.retention:g} s)", ["minute", "RSS MB"],
                    result["rss_by_minute"])
        print_table("Summary", ["start MB", "at fill MB", "end MB", "max MB",
                                "slope window", "slope MB/min", "slope MB/h"],
                    [(result["rss_start_mb"], result["rss_at_fill_mb"], result["rss_end_mb"],
                      result["rss_max_mb"], f"{result['slope_window_s'] / 60:.1f} min",
                      result["slope_mb_per_min"], result["slope_mb_per_hour"])])
        for line in result["errors"]:
            print("error line:", line)
    check = _verdict.Verdict("memory")
    check.require(len(result["streams_live"]) == CAMERAS,
                  f"{len(result['streams_live'])}/{CAMERAS} streams went live")
    check.require_work(result["samples"], "RSS samples")
    check.require_work(result["stored"].get("events", 0), "alert events recorded")
    check.require_no_errors(len(result["errors"]), "error lines in the log")
    slope = result["slope_mb_per_hour"]
    check.require(slope == slope, "too few samples for a slope")  # not NaN
    return check.finish(slope <= args.max_slope,
                        f"RSS slope {slope:+.1f} MB/h over the last "
                        f"{result['slope_window_s'] / 60:.1f} min (goal <= {args.max_slope:g} "
                        f"MB/h); RSS {result['rss_at_fill_mb']} MB at fill, "
                        f"{result['rss_end_mb']} MB at the end")


if __name__ == "__main__":
    _verdict.run_main(main)
