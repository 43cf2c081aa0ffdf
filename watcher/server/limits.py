"""Caps that keep one caller (or many) from exhausting the server: 429 with what to do.

* ``max_streams_per_key``: active streams one API key may hold.
* ``max_pulls``: cameras the server pulls at once, over every key (each costs a
  decoder thread and a network connection).
"""

from __future__ import annotations

from watcher.server.problems import StreamProblem

RETRY_AFTER = {"retry-after": "1"}


def check_stream_limit(active: int, limit: int) -> None:
    """429 when a key that holds ``active`` streams may not create another."""
    if active >= limit:
        raise StreamProblem(
            429, f"this API key already holds {active} active streams, the most this server "
            f"allows (max_streams_per_key {limit}); delete one or let its lease run out",
            headers=RETRY_AFTER)


def check_pull_limit(active: int, limit: int) -> None:
    """429 when the server, pulling ``active`` cameras, may not pull another."""
    if limit == 0:
        raise StreamProblem(
            429, "this server does not pull cameras (max_pulls 0); publish over WHIP instead",
            headers=RETRY_AFTER)
    if active >= limit:
        raise StreamProblem(
            429, f"this server already pulls {active} cameras, the most it allows "
            f"(max_pulls {limit}); retry later or publish over WHIP instead",
            headers=RETRY_AFTER)
