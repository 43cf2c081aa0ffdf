"""How fast /readyz notices the API server going away, and how fast it is ready again.

A real daemon (`Daemon.run`: keeper publishing one synthetic 160x120 stream over WebRTC,
store, status listener) talks to an embedded API server run apart from it on a fixed
port. Each run: wait until /readyz is 200, stop the API server, poll /readyz every 50 ms
until it answers 503, keep the server down for ``--down`` seconds, start it again on
the same port, and poll until /readyz is 200 (the keeper has made a new stream on the
new server and a frame arrived).

    .venv/bin/python bench/api_recovery.py --runs 3 --down 12
    .venv/bin/python bench/api_recovery.py --smoke

Goal met when every run turned unready within ``--max-unready`` seconds of the stop (a
few frame intervals) and ready again after the return; FAILED (exit 1) when a run did
not recover or errored.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import _verdict
from _common import describe_machine, machine_info, print_table, quiet_logs
from support.apiserver import daemon_on_api

POLL_S = 0.05


async def until(d: Any, code: int, timeout: float) -> float:
    """Seconds until /readyz answers ``code``."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            got, _ = await d.readyz()
        except Exception:  # the status listener itself never stops; keep polling
            got = -1
        if got == code:
            return time.monotonic() - start
        await asyncio.sleep(POLL_S)
    raise TimeoutError(f"/readyz did not answer {code} within {timeout:g} s")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory(prefix="watcher-api-recovery-") as tmp:
        async with daemon_on_api(Path(tmp), fps=args.fps) as d:
            await until(d, 200, 60)
            for n in range(1, args.runs + 1):
                await asyncio.sleep(args.settle)  # ready and steady
                await until(d, 200, 60)
                created = d.daemon.keepers["cam"].health().streams_created
                t_stop = time.monotonic()
                await d.api.stop()
                stopped_s = time.monotonic() - t_stop
                unready_s = await until(d, 503, 30) + stopped_s
                await asyncio.sleep(max(0.0, args.down - (time.monotonic() - t_stop)))
                await d.api.start()
                ready_s = await until(d, 200, 120)
                rows.append({"run": n, "server_stop_s": round(stopped_s, 3),
                             "unready_after_stop_s": round(unready_s, 3),
                             "down_s": round(time.monotonic() - t_stop - ready_s, 2),
                             "ready_after_return_s": round(ready_s, 3),
                             "new_streams": d.daemon.keepers["cam"].health().streams_created
                             - created})
    return {"runs": rows, "fps": args.fps, "frame_interval_s": 1 / args.fps,
            "machine": machine_info()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--down", type=float, default=12.0, help="seconds the server is down")
    parser.add_argument("--settle", type=float, default=3.0, help="ready this long first")
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--max-unready", type=float, default=1.0,
                        help="goal: unready within this many seconds of the stop")
    parser.add_argument("--json", action="store_true")
    _verdict.add_smoke(parser)
    args = _verdict.apply_smoke(parser.parse_args(), runs=1, down=2.0, settle=0.5)
    quiet_logs()
    logging.getLogger("watcher").setLevel(logging.ERROR)
    result = asyncio.run(run(args))
    rows = result["runs"]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(describe_machine(result["machine"]))
        print_table(f"API server stopped for {args.down:g} s, one stream at {args.fps:g} fps "
                    f"(frame interval {1000 / args.fps:.0f} ms)",
                    ["run", "server stop took s", "unready after stop s", "down s",
                     "ready after return s", "new streams"],
                    [(r["run"], r["server_stop_s"], r["unready_after_stop_s"], r["down_s"],
                      r["ready_after_return_s"], r["new_streams"]) for r in rows])
    check = _verdict.Verdict("api_recovery")
    check.require(len(rows) == args.runs, f"{len(rows)} of {args.runs} runs done")
    check.require(all(r["new_streams"] >= 1 for r in rows), "a run made no new stream")
    if check.failed:
        return check.finish(None, "")
    unready = statistics.median(r["unready_after_stop_s"] for r in rows)
    ready = [r["ready_after_return_s"] for r in rows]
    return check.finish(
        all(r["unready_after_stop_s"] <= args.max_unready for r in rows),
        f"unready {unready:.2f} s (median) after the stop (goal <= {args.max_unready:g} s, "
        f"{args.max_unready * args.fps:g} frame intervals); ready again "
        f"{statistics.median(ready):.2f} s (median, max {max(ready):.2f} s) after it returned")


if __name__ == "__main__":
    _verdict.run_main(main)
