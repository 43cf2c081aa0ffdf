"""Keep a long-running daemon's heap from ratcheting up.

``watcher run`` holds minutes of JPEG frames per stream, freed and refilled
continuously, while aiortc, PyAV and the store's thread pools allocate from
many threads. glibc gives each thread arena its own heap, and the sawtooth
leaves hundreds of MB free but not returned inside them (measured: 3 cameras
at 5 fps, about 120 MB less RSS with ``MALLOC_ARENA_MAX=2``). So the daemon caps
the arenas at start, before its threads exist, unless ``MALLOC_ARENA_MAX`` is
already set (the user's choice wins). Elsewhere than glibc nothing happens.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

DAEMON_ARENAS = 2
_M_ARENA_MAX = -8
"""glibc's ``mallopt`` parameter for the arena cap (``<malloc.h>``)."""


def cap_malloc_arenas(arenas: int = DAEMON_ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas``; True if it was done.

    Not done when ``MALLOC_ARENA_MAX`` is set, off Linux, or without glibc.
    """
    if os.environ.get("MALLOC_ARENA_MAX") or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        done = bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False
    if done:
        log.debug("malloc arenas capped at %d", arenas)
    return done
