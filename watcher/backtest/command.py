"""``watcher backtest``: replay a recording through the configured rules and score them.

::

    watcher backtest -c FILE --video PATH [--stream NAME] [--labels FILE]
                     [--rules a,b] [--model M ...] [--speed max|N]
                     [--report out.html] [--json] [--actions a,b] [--concurrency N]

Exit status: 0 when the replay ran, 1 when it could not (an unreadable video,
a model that never answered), 2 for a bad config, labels file or option.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path
from typing import Any

import httpx

from watcher.actions.config import build_action
from watcher.backtest.labels import LabelsError, load_labels
from watcher.backtest.replay import Replay, select_rules
from watcher.backtest.report import report_json, result_rows, write_html
from watcher.backtest.video import probe_duration, video_files


def add_parser(sub: argparse._SubParsersAction, add_config_option: Any) -> None:
    p = sub.add_parser(
        "backtest", help="replay a recording through the rules and score them",
        description="Replay a recording (a video file, or a folder of them in name order) "
        "through the configured rules exactly as `watcher run` would, on a simulated clock, "
        "as fast as the models answer. With --labels, score each rule: precision, recall, "
        "onset delay, false-alarm minutes per hour; always: calls, tokens and cost. No "
        "action is sent unless --actions names some.")
    add_config_option(p)
    p.add_argument("--video", required=True, metavar="PATH",
                   help="a video file av can open, or a folder of them (played in order)")
    p.add_argument("--stream", metavar="NAME", default=None,
                   help="the stream the recording stands for (default: the config's only "
                   "stream, or the first stream a rule asks about)")
    p.add_argument("--labels", metavar="FILE", default=None,
                   help="ground truth, JSON lines: {stream, start, end, label, rule?, note?}")
    p.add_argument("--rules", metavar="A,B", default=None,
                   help="only these rules (default: every enabled rule on the stream)")
    p.add_argument("--model", action="append", default=[], metavar="M",
                   help="replay with this model instead of each rule's own; repeat to "
                   "compare models side by side (default: the rules' own models)")
    p.add_argument("--speed", default="max", metavar="max|N",
                   help="max: as fast as the models answer (default); N: at most N times "
                   "real time (for rate-limited upstream models)")
    p.add_argument("--concurrency", type=int, default=4, metavar="N",
                   help="asks run at once at one moment of the video (default %(default)s)")
    p.add_argument("--report", metavar="OUT.html", default=None,
                   help="write a self-contained HTML report (and its figures as PNG)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    p.add_argument("--actions", metavar="A,B", default=None,
                   help="send the replay's notifications through these actions (default: "
                   "none)")
    p.set_defaults(handler=run_backtest_command)


def run_backtest_command(args: argparse.Namespace) -> int:
    from watcher.commands.common import load_or_report as _load

    config = _load(args.config)
    if config is None:
        return 2
    try:
        speed = None if args.speed == "max" else float(args.speed)
        if speed is not None and speed <= 0:
            raise ValueError
    except ValueError:
        print(f"--speed: give max or a positive number, not {args.speed!r}", file=sys.stderr)
        return 2
    if args.concurrency < 1:
        print("--concurrency: give a count of at least 1", file=sys.stderr)
        return 2
    try:
        files = video_files(args.video)
    except FileNotFoundError as exc:
        print(f"--video: {exc}", file=sys.stderr)
        return 2
    try:
        labels = load_labels(args.labels) if args.labels else []
    except LabelsError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    stream = args.stream or _default_stream(config)
    if stream is None:
        print("--stream: name the stream the recording stands for", file=sys.stderr)
        return 2
    names = [n.strip() for n in args.rules.split(",")] if args.rules else None
    rules, skipped = select_rules(config, stream, names)
    for reason in skipped:
        print(f"skipping rule {reason}", file=sys.stderr)
    if not rules:
        print(f"no rule to replay on stream {stream!r}", file=sys.stderr)
        return 2
    action_names = [n.strip() for n in args.actions.split(",")] if args.actions else []
    unknown = [n for n in action_names if n not in config.actions]
    if unknown:
        print(f"--actions: no action named {unknown[0]!r}", file=sys.stderr)
        return 2
    for name in ("watcher.engine", "watcher.server", "watcher.overshoot"):
        # Every firing and stream step of the replay would be logged: results say it all.
        logger = logging.getLogger(name)
        logger.setLevel(max(logging.WARNING, logger.getEffectiveLevel()))
    return asyncio.run(_run(config, files, stream, rules, labels, args, speed, action_names))


async def _run(config: Any, files: list[Path], stream: str, rules: list[Any], labels: list,
               args: argparse.Namespace, speed: float | None, action_names: list[str]) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    total = probe_duration(files) or None
    async with httpx.AsyncClient() as http:
        actions = {n: build_action(n, config.actions[n], http=http) for n in action_names}
        progress = Progress(TextColumn("replaying {task.fields[stream]}"), BarColumn(),
                            TextColumn("{task.completed:.0f}/{task.total:.0f} s of video"),
                            TimeElapsedColumn(), console=_stderr_console(),
                            disable=not sys.stderr.isatty())
        with progress:
            task = progress.add_task("replay", total=total, stream=stream)
            replay = Replay(config, stream, rules, args.model or [None],
                            concurrency=args.concurrency, speed=speed, actions=actions,
                            on_progress=lambda t: progress.update(task, completed=t))
            try:
                result = await replay.run(files)
            except Exception as exc:  # av errors, unreadable files
                print(f"backtest failed: {exc}", file=sys.stderr)
                return 1
            finally:
                for action in actions.values():
                    await action.aclose()
    rows = result_rows(result, labels, config.overshoot.prices)
    if args.report:
        pngs = write_html(Path(args.report), result, rows, labels)
        print(f"report: {args.report} ({len(pngs)} figure(s) beside it)", file=sys.stderr)
    if args.json:
        print(json.dumps(report_json(result, rows), indent=2))
    else:
        _print_table(result, rows)
    return 0


def _default_stream(config: Any) -> str | None:
    if len(config.streams) == 1:
        return config.streams[0].name
    for rule in config.rules:
        if rule.enabled and len(rule.stream_names) == 1:
            return rule.stream_names[0]
    return None


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(file=sys.stderr)


def _print_table(result: Any, rows: list[dict[str, Any]]) -> None:
    print(f"{result.stream}: {result.duration_s:.1f} s of video, {result.frames} frames, "
          f"replayed in {result.wall_s:.1f} s")
    header = ("rule", "model", "prec", "recall", "f1", "onset p50", "false min/h", "calls",
              "tokens", "cost")
    print("  ".join(header))
    for r in rows:
        cost = "-" if r["cost"] is None else f"{r['cost']:.4f}"
        onset = "-" if r["onset_delay_p50_s"] is None else f"{r['onset_delay_p50_s']:.1f}s"
        print(f"{r['rule']}  {r['model']}  {r['precision']:.2f}  {r['recall']:.2f}  "
              f"{r['f1']:.2f}  {onset}  {r['false_alarm_minutes_per_hour']:.1f}  "
              f"{r['calls']}  {r['tokens']}  {cost}")
