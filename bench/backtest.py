"""Backtest speed: video seconds replayed per wall second.

1. ``local/vision``: a generated recording (320x240, 5 fps, a box crossing for 6 s
   every 50 s: 12 events in 10 minutes) replayed through the example motion rule;
   the goal is under 60 s of wall time, with precision and recall 1.0.
2. An upstream model answering in 300 ms (a fake OpenAI-compatible server on
   loopback): 8 rules asking every 2 s over a 60 s recording, at concurrency 1, 4
   and 16.

    .venv/bin/python bench/backtest.py
    .venv/bin/python bench/backtest.py --smoke     # 30 s of video, 2 rules upstream
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
import threading
import time
from pathlib import Path

import _common
import _verdict
from support.receivers import HttpReceiver, reply
from support.recording import LOBBY_MOTION_RULE, LOBBY_STREAM, write_labels, write_recording

from watcher.cli import main as watcher_main

GOAL_S = 60.0
UPSTREAM_LATENCY_S = 0.3

MOTION = ("overshoot: {base_url: embedded, model: local/vision}\nrules:\n"
          + LOBBY_MOTION_RULE + LOBBY_STREAM)


def upstream_config(url: str, rules: int) -> str:
    body = "".join(f"""\
  - name: question-{n}
    stream: lobby
    every: 2s
    prompt: Question {n}?
    schema: {{object: boolean}}
""" for n in range(rules))
    return f"""\
overshoot:
  base_url: embedded
  model: vlm
  embedded:
    upstreams: [{{base_url: '{url}', models: {{vlm: slow}}}}]
rules:
{body}streams:
  - {{name: lobby, source: testsrc, fps: 5, width: 320, height: 240}}
"""


class SlowModel:
    """Answers ``{"object": false}`` after UPSTREAM_LATENCY_S; counts calls."""

    def __init__(self) -> None:
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self, request) -> tuple:
        time.sleep(UPSTREAM_LATENCY_S)
        with self._lock:
            self.calls += 1
        return reply(200, {"id": "c", "object": "chat.completion", "created": 0, "model": "slow",
                           "choices": [{"index": 0, "finish_reason": "stop", "message": {
                               "role": "assistant", "content": '{"object": false}'}}],
                           "usage": {"prompt_tokens": 100, "completion_tokens": 5}})


def backtest(folder: Path, config: str, video: Path, *extra: str) -> tuple[dict, float]:
    path = folder / "watcher.yaml"
    path.write_text(config)
    began = time.perf_counter()
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = watcher_main(["--log-level", "WARNING", "backtest", "-c", str(path), "--video",
                             str(video), "--json", *extra])
    wall = time.perf_counter() - began
    if code != 0:
        raise SystemExit(f"watcher backtest exited {code}")
    return json.loads(buffer.getvalue()), wall


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--upstream-seconds", type=float, default=60.0)
    parser.add_argument("--upstream-rules", type=int, default=8)
    parser.add_argument("--concurrency", default="1,4,16")
    _verdict.add_smoke(parser)
    args = _verdict.apply_smoke(parser.parse_args(), minutes=0.5, upstream_seconds=20.0,
                                upstream_rules=2, concurrency="1,4")
    verdict = _verdict.Verdict("backtest")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        video = folder / "lobby.mp4"
        seconds = args.minutes * 60
        labels = write_recording(video, seconds=seconds, start=5, period=50, duration=6)
        write_labels(folder / "labels.jsonl", labels)
        doc, wall = backtest(folder, MOTION, video, "--labels", str(folder / "labels.jsonl"))
        (result,) = doc["results"]
        verdict.require(result["calls"] > 0, "no model calls")
        verdict.require((result["precision"], result["recall"]) == (1.0, 1.0),
                        f"precision {result['precision']}, recall {result['recall']} on "
                        f"{len(labels)} events")
        local_wall = wall
        rows.append(["local/vision, 1 rule", f"{seconds:.0f}", f"{wall:.1f}",
                     f"{seconds / wall:.1f}", result["calls"], len(labels),
                     f"{result['precision']:.2f}/{result['recall']:.2f}"])
        short = folder / "short.mp4"
        write_recording(short, seconds=args.upstream_seconds, start=5, period=50, duration=6)
        model = SlowModel()
        with HttpReceiver() as receiver:
            receiver.routes["/v1/chat/completions"] = model
            config = upstream_config(receiver.url("/v1"), args.upstream_rules)
            for concurrency in [int(c) for c in args.concurrency.split(",")]:
                before = model.calls
                doc, wall = backtest(folder, config, short, "--concurrency", str(concurrency))
                calls = sum(r["calls"] for r in doc["results"])
                verdict.require(calls > 0 and model.calls - before >= calls,
                                f"concurrency {concurrency}: {calls} calls")
                rows.append([f"upstream 300 ms, {args.upstream_rules} rules, concurrency "
                             f"{concurrency}", f"{args.upstream_seconds:.0f}", f"{wall:.1f}",
                             f"{args.upstream_seconds / wall:.2f}", calls, "-", "-"])
    _common.print_table("backtest speed", ["replay", "video s", "wall s", "video s / wall s",
                                           "calls", "events", "precision/recall"], rows)
    goal = local_wall < GOAL_S * args.minutes / 10
    return verdict.finish(goal, f"{args.minutes:g} min of video with local/vision in "
                          f"{local_wall:.1f} s (goal < {GOAL_S * args.minutes / 10:.0f} s)")


if __name__ == "__main__":
    _verdict.run_main(main)
