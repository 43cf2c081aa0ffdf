"""``watcher run``: the daemon, until SIGINT or SIGTERM (SIGHUP reloads)."""

from __future__ import annotations

import argparse
import sys

from watcher.commands.common import add_config_option, load_or_report
from watcher.errors import WatcherError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="run the daemon: keep every configured stream published and leased",
        description="Run until SIGINT or SIGTERM: start the embedded server when "
        "overshoot.base_url is `embedded`, keep each configured stream created, published "
        "and leased, and delete the streams it created on the way out.")
    add_config_option(p)
    p.add_argument("--watch", action="store_true",
                   help="reload when the config file or an included rule pack changes "
                   "(SIGHUP always reloads)")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from watcher.memory import cap_malloc_arenas

    cap_malloc_arenas()  # before the daemon's threads exist (see watcher.memory)
    from watcher.daemon import Daemon

    config = load_or_report(args.config)
    if config is None:
        return 2
    daemon = Daemon(config, args.config)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, daemon.request_stop)
        loop.add_signal_handler(signal.SIGHUP,
                                lambda: loop.create_task(daemon.reload()))
        await daemon.run(watch=args.watch)

    try:
        asyncio.run(main())
    except WatcherError as exc:
        print(f"watcher run: {exc}", file=sys.stderr)
        return 1
    return 0
