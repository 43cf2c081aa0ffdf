"""How every benchmark ends: ``--smoke``, one verdict line and an honest exit code.

A benchmark's verdict says "met" only when the work it measures was really done. It
lists the checks it needs (no errors, non-zero evaluations and model calls, the
expected number of events) as :meth:`Verdict.require`; any failed check, or an
exception anywhere, prints ``FAILED: ...`` and exits 1. A goal that was measured but
not reached prints ``Goal MISSED`` and exits 0: the run worked, the number is the news.

``--smoke`` asks for a run of a few seconds at tiny sizes through the same code; CI
runs every ``bench/*.py`` that way (``.ci/bench-smoke``).
"""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Callable
from typing import Any

FAILED_EXIT = 1


def add_smoke(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--smoke", action="store_true",
                        help="a few seconds at tiny sizes through the same code (run in CI)")


def apply_smoke(args: argparse.Namespace, **overrides: Any) -> argparse.Namespace:
    """With ``--smoke``, replace the named options by their small smoke values."""
    if getattr(args, "smoke", False):
        for name, value in overrides.items():
            if not hasattr(args, name):
                raise AttributeError(f"--smoke sets an unknown option {name!r}")
            setattr(args, name, value)
    return args


class Verdict:
    """The checks a run must pass before its goal may be called met."""

    def __init__(self, benchmark: str) -> None:
        self.benchmark = benchmark
        self.problems: list[str] = []

    def require(self, ok: bool, problem: str) -> bool:
        """Record ``problem`` unless ``ok``; returns ``ok``."""
        if not ok:
            self.problems.append(problem)
        return ok

    def require_no_errors(self, count: int, what: str = "errors") -> bool:
        return self.require(count == 0, f"{count} {what}")

    def require_work(self, count: int, what: str) -> bool:
        return self.require(count > 0, f"no {what}")

    @property
    def failed(self) -> bool:
        return bool(self.problems)

    def finish(self, goal_met: bool | None, summary: str) -> int:
        """Print the verdict line; return the process exit code.

        ``goal_met`` None: the benchmark states no goal, only figures.
        """
        if self.problems:
            print(f"\nFAILED ({self.benchmark}): " + "; ".join(self.problems)
                  + (f". Measured: {summary}" if summary else ""))
            return FAILED_EXIT
        if goal_met is None:
            print(f"\nDone (no goal stated): {summary}")
        else:
            print(f"\nGoal {'met' if goal_met else 'MISSED'}: {summary}")
        return 0


def run_main(main: Callable[[], int | None]) -> None:
    """Run a benchmark's ``main``; any exception prints FAILED and exits non-zero."""
    try:
        code = main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except SystemExit as stop:
        if stop.code in (None, 0):
            raise
        print(f"\nFAILED: {stop.code}", flush=True)
        raise SystemExit(FAILED_EXIT) from None
    except BaseException as exc:  # any crash is a failed run
        traceback.print_exc()
        print(f"\nFAILED: {type(exc).__name__}: {exc}", flush=True)
        raise SystemExit(FAILED_EXIT) from None
    raise SystemExit(code or 0)
