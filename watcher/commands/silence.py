"""``watcher silence add|list|expire``: silences in the state store (see
:mod:`watcher.console.commands`)."""

from __future__ import annotations

import argparse
import sys

from watcher.commands.common import add_config_option, load_or_report


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "silence", help="add, list or expire silences",
        description="Silences keep matching alerts from notifying (their events are still "
        "recorded, marked silenced). They live in state.path; a running daemon picks up "
        "changes within a few seconds.")
    ops = p.add_subparsers(dest="silence_command", metavar="add|list|expire", required=True)
    add = ops.add_parser("add", help="add a silence and print its id")
    add_config_option(add)
    add.add_argument("--rule", help="match this rule")
    add.add_argument("--stream", help="match this stream")
    add.add_argument("--label", action="append", default=[], metavar="K=V",
                     help="match this label (repeat for several)")
    add.add_argument("--severity", choices=["info", "warning", "critical"],
                     help="match this severity")
    add.add_argument("--for", dest="duration", required=True, metavar="DURATION",
                     help="how long it lasts: 30m, 2h, 1d")
    add.add_argument("--comment", default="", help="why")
    add.add_argument("--by", help="who (default: the user name)")
    add.set_defaults(handler=_run_add)
    show = ops.add_parser("list", help="list silences, newest first")
    add_config_option(show)
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_run_list)
    end = ops.add_parser("expire", help="end a silence now")
    add_config_option(end)
    end.add_argument("id", help="the silence's id")
    end.set_defaults(handler=_run_expire)


def _run_add(args: argparse.Namespace) -> int:
    import asyncio

    from watcher.console.commands import silence_add
    from watcher.duration import parse_duration

    try:
        seconds = parse_duration(args.duration)
    except (ValueError, TypeError) as exc:
        print(f"watcher silence add: --for {args.duration!r}: {exc}", file=sys.stderr)
        return 2
    config = load_or_report(args.config)
    if config is None:
        return 2
    return asyncio.run(silence_add(config, rule=args.rule, stream=args.stream,
                                   labels=args.label, severity=args.severity,
                                   duration_s=seconds, comment=args.comment,
                                   created_by=args.by))


def _run_list(args: argparse.Namespace) -> int:
    import asyncio

    from watcher.console.commands import silence_list

    config = load_or_report(args.config)
    if config is None:
        return 2
    return asyncio.run(silence_list(config, as_json=args.json))


def _run_expire(args: argparse.Namespace) -> int:
    import asyncio

    from watcher.console.commands import silence_expire

    config = load_or_report(args.config)
    if config is None:
        return 2
    return asyncio.run(silence_expire(config, args.id))
