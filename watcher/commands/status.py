"""``watcher status``: a running daemon's streams, rules and recent alerts."""

from __future__ import annotations

import argparse
import os

from watcher.commands.common import add_config_option, load_or_report


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status", help="show a running daemon's streams, rules and recent alerts",
        description="Read /status from a running `watcher run` (it needs status.enabled: "
        "true) and print its streams, rules, actions and recent alerts. The address is the "
        "config's status.host and status.port, or --url; the config's status.token (or "
        "$WATCHER_STATUS_TOKEN) is sent as a bearer token.")
    add_config_option(p)
    p.add_argument("--url", metavar="URL", help="the status listener, e.g. "
                   "http://127.0.0.1:9464 (default: from the config)")
    p.add_argument("--json", action="store_true", help="print the raw /status JSON")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from watcher.observe.report import print_status

    token = os.environ.get("WATCHER_STATUS_TOKEN") or None
    if args.url is not None:
        return print_status(args.url, as_json=args.json, token=token)
    config = load_or_report(args.config)
    if config is None:
        return 2
    hint = None if config.status.enabled else f"{args.config} has status.enabled: false"
    if token is None and config.status.token is not None:
        token = config.status.token.get_secret_value()
    return print_status(config.status.url, as_json=args.json, hint=hint, token=token)
