"""The ``watcher`` command line: one entry point, one subcommand per job.

Each subcommand's parser and handler live in :mod:`watcher.commands` (``backtest``
in :mod:`watcher.backtest.command`); this module puts them together.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from watcher import __version__
from watcher.backtest.command import add_parser as add_backtest_parser
from watcher.commands import alerts, check, db, models, run, serve, silence, status, testing
from watcher.commands.common import add_config_option
from watcher.logs import configure_logging


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    configure_logging(args.log_level, args.log_format)
    return int(args.handler(args) or 0)


LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]
DESCRIPTION = ("Keep live video streams published to an Overshoot-compatible API, ask "
               "vision-language models scheduled questions about them, and deliver the "
               "alerts their answers raise. One subcommand per job; `watcher COMMAND -h` "
               "tells more.")


def _env_choice(name: str, choices: list[str]) -> str:
    """The environment's value for an option if it is a valid one, else the default."""
    value = os.environ.get(name, "").upper()
    if value and value not in choices:
        print(f"watcher: ignoring {name}={value!r} (expected one of {', '.join(choices)})",
              file=sys.stderr)
    return value if value in choices else "INFO"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="watcher", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"watcher {__version__}")
    parser.add_argument("--log-level", default=_env_choice("WATCHER_LOG_LEVEL", LOG_LEVELS),
                        choices=LOG_LEVELS, type=str.upper,
                        help="least severe messages logged (default %(default)s; also "
                        "$WATCHER_LOG_LEVEL)")
    parser.add_argument("--log-format", default=os.environ.get("WATCHER_LOG_FORMAT", "text"),
                        choices=["text", "json"], type=str.lower,
                        help="text for people, json for log pipelines: one object per line "
                        "(default %(default)s; also $WATCHER_LOG_FORMAT)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve.add_parser(sub)
    check.add_parser(sub)
    run.add_parser(sub)
    models.add_parser(sub)
    testing.add_parsers(sub)
    alerts.add_parser(sub)
    silence.add_parser(sub)
    status.add_parser(sub)
    db.add_parser(sub)
    add_backtest_parser(sub, add_config_option)
    return parser
