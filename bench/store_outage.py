"""Alerts across state-store outages: events expected, delivered, duplicated.

The real parts of a daemon (keeper publishing over WebRTC to the embedded server, rule
engine asking a scripted model every 300 ms, the SQLite store behind its health
monitor and the step writer, the outbox, the status listener; ``tests/support/status``)
run three outages, each on a fresh state file:

* ``lock``: another process holds ``BEGIN EXCLUSIVE`` on the file for ``--lock`` s; one
  alert episode (firing, then resolved) happens entirely inside it (defaults: 60 s
  before best effort, so the alert waits and is delivered once after the lock);
* ``long``: the store is locked for ``--long`` s while episodes keep coming, longer
  than the queue (``max_pending_age`` ``--long-age`` s, ``max_pending_steps`` 3): each
  notification goes out best effort, marked not persisted;
* ``full``: the state file lives on a small tmpfs filled to the last byte for
  ``--full`` s (needs root to mount; skipped otherwise) with episodes inside.

Per outage: notifications expected (one per firing), delivered (distinct idempotency
keys the action received), duplicated (keys received more than once), delivered
best effort (not persisted), and recorded in the store once it was back. Also the
seconds /readyz took to turn unready, and the log lines about the store.

    .venv/bin/python bench/store_outage.py --lock 18 --long 60 --full 30
    .venv/bin/python bench/store_outage.py --smoke
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import _verdict
import httpx
from _common import describe_machine, machine_info, print_table, quiet_logs
from support.status import Running, running_daemon
from support.storefaults import ExclusiveLock, fill, small_tmpfs

from watcher.engine.state import Status


class Scene:
    def __init__(self) -> None:
        self.on = False

    def reply(self, request: object) -> str:
        return json.dumps({"answer": self.on})


class StoreLines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(0.05)
    raise TimeoutError(f"{what} within {timeout:g} s")


async def ready_code(d: Running) -> int:
    async with httpx.AsyncClient(timeout=10) as http:
        return (await http.get(d.url + "/readyz")).status_code


async def episode(d: Running, scene: Scene) -> None:
    scene.on = True
    await wait(lambda: d.runner.state.status == Status.FIRING, 20, "firing")
    scene.on = False
    await wait(lambda: d.runner.state.status == Status.RESOLVED, 20, "resolved")


async def settled(d: Running) -> bool:
    if not d.health.available or d.writer.pending:
        return False
    counts = await d.store.delivery_counts()
    return all(set(c) <= {"sent", "dead", "summarized"} for c in counts.values())


async def outage(name: str, tmp: Path, seconds: float, episodes: int, fault: Any,
                 state_path: Path | None = None, **daemon: Any) -> dict[str, Any]:
    scene = Scene()
    lines = StoreLines()
    logging.getLogger("watcher.engine.storehealth").addHandler(lines)
    try:
        async with running_daemon(tmp, reply=scene.reply, state_path=state_path,
                                  **daemon) as d:
            await d.keeper.wait_live(30)
            await wait(lambda: d.runner.stats.evaluations >= 2, 20, "evaluations")
            started = time.monotonic()
            unready_s = None
            async with fault(state_path or tmp / "state.sqlite3", seconds):
                async def watch_ready() -> None:
                    nonlocal unready_s
                    while unready_s is None:
                        if await ready_code(d) == 503:
                            unready_s = time.monotonic() - started
                        await asyncio.sleep(0.1)
                watcher = asyncio.create_task(watch_ready())
                for _ in range(episodes):
                    await episode(d, scene)
                remaining = seconds - (time.monotonic() - started)
                if remaining > 0:
                    await asyncio.sleep(remaining)  # the outage lasts what was asked
                watcher.cancel()
            outage_s = time.monotonic() - started
            await wait(lambda: settled(d), 90, "store back and outbox drained")
            back_s = time.monotonic() - started - outage_s
            firing = [e for e in await d.store.events(limit=1000) if e.kind == "firing"]
            keys = d.action.keys
            return {
                "outage": name, "seconds": round(outage_s, 1), "expected": episodes,
                "delivered": len(set(keys)), "duplicated": len(keys) - len(set(keys)),
                "best_effort": sum(1 for e in d.action.events if e.id is None),
                "recorded": len(firing),
                "keys_match": set(keys) == {f"{e.event_key}:ops" for e in firing},
                "unready_after_s": None if unready_s is None else round(unready_s, 2),
                "settled_after_s": round(back_s, 1),
                "unavailable_lines": sum(m.startswith("state store unavailable")
                                         for m in lines.lines),
                "back_lines": sum(m.startswith("state store back") for m in lines.lines),
            }
    finally:
        logging.getLogger("watcher.engine.storehealth").removeHandler(lines)


@contextlib.asynccontextmanager
async def locked(path: Path, seconds: float):
    async with ExclusiveLock(path):
        yield


@contextlib.asynccontextmanager
async def full_disk(path: Path, seconds: float):
    filler = fill(path.parent)
    try:
        yield
    finally:
        filler.unlink()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    skipped = []
    with tempfile.TemporaryDirectory(prefix="watcher-store-outage-") as root:
        base = Path(root)
        for name, seconds, episodes, extra in (
                ("lock", args.lock, 1, {}),
                ("long", args.long, args.long_episodes,
                 {"max_pending_age": args.long_age, "max_pending_steps": 3})):
            tmp = base / name
            tmp.mkdir()
            rows.append(await outage(name, tmp, seconds, episodes, locked, **extra))
        if args.full > 0:
            tmp = base / "full"
            tmp.mkdir()
            try:
                with small_tmpfs(tmp / "fs", "2m") as fs:
                    rows.append(await outage("full", tmp, args.full, args.full_episodes,
                                             full_disk, state_path=fs / "state.sqlite3",
                                             max_pending_age=args.long_age))
            except BaseException as exc:  # pytest's skip outside pytest: not root
                if type(exc).__name__ != "Skipped":
                    raise
                skipped.append(f"full: {exc}")
    return {"outages": rows, "skipped": skipped, "machine": machine_info()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lock", type=float, default=18.0, help="lock held, s")
    parser.add_argument("--long", type=float, default=60.0, help="long outage, s")
    parser.add_argument("--long-age", type=float, default=10.0,
                        help="max_pending_age in the long and full outages, s")
    parser.add_argument("--long-episodes", type=int, default=8)
    parser.add_argument("--full", type=float, default=30.0, help="disk full, s (0: skip)")
    parser.add_argument("--full-episodes", type=int, default=4)
    parser.add_argument("--json", action="store_true")
    _verdict.add_smoke(parser)
    # The lock outlasts a readiness probe (every 5 s) plus SQLite's 5 s busy wait.
    args = _verdict.apply_smoke(parser.parse_args(), lock=12.0, long=10.0, long_age=1.0,
                                long_episodes=2, full=3.0, full_episodes=1)
    quiet_logs()
    logging.getLogger("watcher.engine.storehealth").setLevel(logging.INFO)
    result = asyncio.run(run(args))
    rows = result["outages"]
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(describe_machine(result["machine"]))
        print_table("State store outages (one alert = one firing notification to one action)",
                    ["outage", "s", "expected", "delivered", "duplicated", "best effort",
                     "recorded", "unready after s", "settled s after", "log lines"],
                    [(r["outage"], r["seconds"], r["expected"], r["delivered"],
                      r["duplicated"], r["best_effort"], r["recorded"], r["unready_after_s"],
                      r["settled_after_s"], f"{r['unavailable_lines']} + {r['back_lines']}")
                     for r in rows])
        for why in result["skipped"]:
            print("skipped:", why)
    check = _verdict.Verdict("store_outage")
    check.require_work(len(rows), "outages run")
    for r in rows:
        check.require_work(r["expected"], f"{r['outage']}: episodes")
        check.require(r["unready_after_s"] is not None, f"{r['outage']}: /readyz stayed ready")
    expected = sum(r["expected"] for r in rows)
    delivered = sum(r["delivered"] for r in rows)
    duplicated = sum(r["duplicated"] for r in rows)
    met = all(r["delivered"] == r["expected"] == r["recorded"] and r["duplicated"] == 0
              and r["keys_match"] and r["unavailable_lines"] == 1 and r["back_lines"] == 1
              for r in rows)
    return check.finish(met, f"{delivered}/{expected} notifications delivered, {duplicated} "
                             f"duplicated, {sum(r['recorded'] for r in rows)} recorded once "
                             f"the store was back, over {len(rows)} outage(s)")


if __name__ == "__main__":
    _verdict.run_main(main)
