"""``watcher alerts``: alert events from the state store, or the feedback marks as labels."""

from __future__ import annotations

import argparse
import sys

from watcher.argtypes import positive_int
from watcher.commands.common import add_config_option, load_or_report
from watcher.errors import WatcherError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("alerts", help="list alert events from the state file",
                       description="List alert events (newest first) from state.path, each "
                       "with its delivery status per action.")
    add_config_option(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--limit", type=positive_int, default=50, metavar="N",
                   help="how many events, newest first (default %(default)s)")
    p.add_argument("--rule", help="only this rule's events")
    p.add_argument("--dead", action="store_true",
                   help="only events with a dead-lettered delivery")
    p.add_argument("--feedback", action="store_true",
                   help="export the real / false-alarm marks as ground-truth labels, one "
                   "JSON object per line (with --json)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from watcher.tools import list_alerts

    config = load_or_report(args.config)
    if config is None:
        return 2
    if args.feedback:
        from watcher.console.commands import export_feedback

        if not args.json:
            print("watcher alerts: --feedback exports JSON lines: add --json", file=sys.stderr)
            return 2
        try:
            return asyncio.run(export_feedback(config))
        except WatcherError as exc:
            print(f"watcher alerts: {exc}", file=sys.stderr)
            return 1
    try:
        return asyncio.run(list_alerts(config, limit=args.limit, rule=args.rule,
                                       as_json=args.json, dead=args.dead))
    except WatcherError as exc:
        print(f"watcher alerts: {exc}", file=sys.stderr)
        return 1
