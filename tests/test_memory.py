"""The daemon caps glibc's malloc arenas unless the user chose a value."""

from __future__ import annotations

import ctypes.util
import subprocess
import sys

import pytest

from watcher.server.frames import TRIM_AFTER, FrameStore

PROBE = """
import os, sys
from watcher.memory import cap_malloc_arenas
print(cap_malloc_arenas())
"""


def run_probe(env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                          env=env, check=True, timeout=60)
    return done.stdout.strip()


@pytest.mark.skipif(not sys.platform.startswith("linux") or ctypes.util.find_library("c")
                    is None, reason="glibc only")
def test_arenas_are_capped_unless_malloc_arena_max_is_set() -> None:
    import os

    base = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    assert run_probe(base) == "True"
    assert run_probe({**base, "MALLOC_ARENA_MAX": "4"}) == "False"


def test_evicted_frames_are_released_soon() -> None:
    """At most TRIM_AFTER evicted frames stay referenced (their bytes outside max_bytes)."""
    store = FrameStore(retention_ms=1000, max_bytes=10**9)
    for i in range(5000):
        store.append(b"\xff" * 100, i * 10)  # 100 fps: 100 frames retained
        assert len(store._frames) - len(store) < TRIM_AFTER
    assert len(store) == 101 and store.first is not None
    assert store.by_index(store.first.index) is store.first
