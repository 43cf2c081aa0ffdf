"""``watcher serve`` options for the server's limits and the origins it trusts.

Kept apart from :mod:`watcher.commands.serve` so that every limit is declared once,
next to how it becomes a :class:`~watcher.server.settings.ServerSettings` field.
"""

from __future__ import annotations

import argparse
from typing import Any

from watcher.argtypes import non_negative_int, positive_int


def add_limit_options(parser: argparse.ArgumentParser) -> None:
    """Add the limit and trust options to the ``serve`` parser."""
    group = parser.add_argument_group("limits and trust")
    group.add_argument(
        "--forward-media-urls", action="store_true",
        help="send http(s) image_url/video_url parts to upstream models as given (default: "
        "refused with a 400, since the upstream would fetch any address, private ones too)")
    group.add_argument(
        "--allow-private-sources", action="store_true",
        help="let pull sources (POST /streams with a source) name loopback, private, "
        "link-local and metadata addresses (default: refused with a 422)")
    group.add_argument(
        "--pull-connect-timeout", type=_positive_float, default=15.0, metavar="SECONDS",
        help="how long creating a pulled stream waits for the camera's first frame before it "
        "fails with 422 'Could not connect to source url' (default %(default)s)")
    group.add_argument(
        "--max-streams-per-key", type=positive_int, default=64, metavar="N",
        help="most active streams one API key may hold; one more is a 429 (default "
        "%(default)s)")
    group.add_argument(
        "--cors-origin", action="append", default=[], metavar="ORIGIN",
        help="let web pages from ORIGIN (scheme://host[:port], or * for any) call the API "
        "and publish over WHIP: answers CORS preflights and exposes Location (repeatable; "
        "default: none, no CORS)")
    group.add_argument(
        "--max-pulls", type=non_negative_int, default=16, metavar="N",
        help="most cameras pulled at once over all keys; one more is a 429, 0 refuses pull "
        "sources (default %(default)s)")


def limit_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``ServerSettings`` fields the options above set."""
    return {
        "forward_media_urls": args.forward_media_urls,
        "allow_private_sources": args.allow_private_sources,
        "pull_connect_timeout_seconds": args.pull_connect_timeout,
        "max_streams_per_key": args.max_streams_per_key,
        "max_pulls": args.max_pulls,
        "cors_origins": args.cors_origin,
    }


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, not {text}")
    return value

