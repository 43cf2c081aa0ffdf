"""What the subcommands share: the ``-c FILE`` option, loading the config it names, and
argument types."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from watcher.config import WatcherConfig

CONFIG_ENV = "WATCHER_CONFIG"
DEFAULT_CONFIG = "watcher.yaml"


def add_config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", metavar="FILE",
                   default=os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG,
                   help=f"config file (default ${CONFIG_ENV}, else ./{DEFAULT_CONFIG})")


def load_or_report(path: str) -> WatcherConfig | None:
    """The config at ``path``, or None after printing its problems."""
    from watcher.config import load_config
    from watcher.errors import ConfigError
    from watcher.logs import redact

    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(redact(problem), file=sys.stderr)
        return None

