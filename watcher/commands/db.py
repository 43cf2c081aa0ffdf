"""``watcher db upgrade|status``: the state database's schema."""

from __future__ import annotations

import argparse
import sys

from watcher.commands.common import add_config_option, load_or_report
from watcher.errors import WatcherError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "db", help="the state database's schema: upgrade, status",
        description="Manage the schema of the state database (state.path or state.url). "
        "`watcher run` upgrades it by itself at start, under a lock; `watcher db upgrade` "
        "does it ahead of time (before a rolling restart of several instances).")
    actions = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    upgrade = actions.add_parser("upgrade", help="migrate the schema to this version's",
                                 description="Migrate the state database's schema to the "
                                 "newest revision this watcher knows, in one transaction, "
                                 "under a lock (safe while other instances start).")
    add_config_option(upgrade)
    upgrade.set_defaults(handler=_run)
    status = actions.add_parser("status", help="show the schema revision",
                                description="Print the schema revision; exit 1 if the "
                                "database needs `watcher db upgrade`.")
    add_config_option(status)
    status.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from watcher.store import admin

    config = load_or_report(args.config)
    if config is None:
        return 2
    run = admin.upgrade if args.db_command == "upgrade" else admin.status
    try:
        return asyncio.run(run(config.state))
    except WatcherError as exc:
        print(f"watcher db {args.db_command}: {exc}", file=sys.stderr)
        return 1
