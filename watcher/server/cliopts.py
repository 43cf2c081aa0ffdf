"""``watcher serve`` options for the server's limits and the origins it trusts.

Kept apart from ``cli.py`` so that every limit is declared once, next to how it
becomes a :class:`~watcher.server.settings.ServerSettings` field.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    """Add the limit and trust options to the ``serve`` parser."""
    group = parser.add_argument_group("limits and trust")
    group.add_argument(
        "--forward-media-urls", action="store_true",
        help="send http(s) image_url/video_url parts to upstream models as given (default: "
        "refused with a 400, since the upstream would fetch any address, private ones too)")


def limit_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``ServerSettings`` fields the options above set."""
    return {
        "forward_media_urls": args.forward_media_urls,
    }
