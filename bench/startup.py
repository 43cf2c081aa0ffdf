"""Time from starting `watcher run` to the first frame being queryable (embedded mode).

Starts `watcher run` on a config with one synthetic 640x480 stream at 5 fps,
watches its log for the line saying the stream is live (the keeper only says
so after `GET /streams/{id}` shows a frame), and reports the wall time from
process start. Repeats N times.

    .venv/bin/python bench/startup.py --runs 5
    .venv/bin/python bench/startup.py --smoke     # one run
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _verdict

GOAL_S = 2.0

CONFIG = """\
overshoot:
  base_url: embedded
streams:
  - name: bench
    source: testsrc:events=box,period=20,duration=6
    fps: 5
    width: 640
    height: 480
"""


def one_run(config: Path) -> tuple[float, float]:
    """Seconds to the log line 'is live', and to the process' first log line."""
    watcher = Path(sys.executable).with_name("watcher")
    start = time.perf_counter()
    proc = subprocess.Popen([str(watcher), "run", "-c", str(config)], stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "WATCHER_LOG_LEVEL": "INFO"})
    first_line = live = None
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            now = time.perf_counter() - start
            if first_line is None:
                first_line = now
            if " is live " in line:
                live = now
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    if live is None or first_line is None:
        raise RuntimeError("watcher run never reported a live stream")
    return live, first_line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    _verdict.add_smoke(parser)
    args = _verdict.apply_smoke(parser.parse_args(), runs=1)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp, "watcher.yaml")
        config.write_text(CONFIG)
        results = [one_run(config) for _ in range(args.runs)]
    live = [r[0] for r in results]
    boot = [r[1] for r in results]
    summary = {
        "runs": args.runs,
        "live_median_s": round(statistics.median(live), 3),
        "live_max_s": round(max(live), 3),
        "first_log_line_median_s": round(statistics.median(boot), 3),
    }
    if args.json:
        print(json.dumps(summary))
        return 0
    print("| runs | to first queryable frame, median | max | of which start-up to first log line |")
    print("|---|---|---|---|")
    print(f"| {summary['runs']} | {summary['live_median_s']} s | {summary['live_max_s']} s "
          f"| {summary['first_log_line_median_s']} s |")
    check = _verdict.Verdict("startup")
    check.require(len(live) == args.runs, f"{len(live)} of {args.runs} runs went live")
    return check.finish(summary["live_max_s"] < GOAL_S,
                        f"median {summary['live_median_s']} s, max {summary['live_max_s']} s "
                        f"to the first queryable frame (goal < {GOAL_S:g} s)")


if __name__ == "__main__":
    _verdict.run_main(main)
