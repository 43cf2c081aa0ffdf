"""Time from a rule firing to Home Assistant's binary_sensor turning on, over MQTT.

A real daemon in this process (embedded server, a synthetic camera, one rule
asked every 300 ms of a scripted model) publishes to a real broker with
Home Assistant discovery on. The scene is switched to "alarm" N times; each
time, a subscriber notes when the alert's state topic says ``ON`` and
compares it with the firing time the attributes carry (``changed_ms``: the
event's time, set when the engine recorded the transition).

    .venv/bin/python bench/mqtt_latency.py --firings 30
    .venv/bin/python bench/mqtt_latency.py --smoke       # 3 firings

The broker: WATCHER_TEST_MQTT (host:port), default 127.0.0.1:1883.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import _common
import _verdict
from support.mqtt import shared_broker, subscribed
from support.site import running_site

from watcher.engine.state import Status

GOAL_P95_MS = 100.0


async def measure(firings: int) -> dict[str, object]:
    broker = shared_broker()
    latencies: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        async with running_site(Path(tmp), broker) as site, \
                subscribed(broker, f"{site.root}/#") as sub:
            state = f"{site.root}/{site.rule}/door/state"
            attributes = f"{site.root}/{site.rule}/door/attributes"
            await sub.wait_for(lambda: (m := sub.last(state)) and m.text == "OFF")
            for _ in range(firings):
                site.scene.alarm = True
                await sub.wait_for(lambda: (m := sub.last(state)) and m.text == "ON")
                on_at_ms = time.time() * 1000
                await sub.wait_for(lambda: json.loads(sub.last(attributes).payload).get(
                    "status") == "firing")
                fired_ms = json.loads(sub.last(attributes).payload)["changed_ms"]
                latencies.append(on_at_ms - fired_ms)
                site.scene.alarm = False
                await sub.wait_for(lambda: (m := sub.last(state)) and m.text == "OFF")
                assert site.runner.state.status is not Status.FIRING
            evaluations = site.runner.stats.evaluations
    return {"firings": len(latencies), "evaluations": evaluations,
            "latency_ms": _common.percentiles(latencies) if latencies else {}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--firings", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    _verdict.add_smoke(parser)
    args = _verdict.apply_smoke(parser.parse_args(), firings=3)
    _common.quiet_logs()
    result = asyncio.run(measure(args.firings))
    verdict = _verdict.Verdict("mqtt_latency")
    verdict.require(result["firings"] == args.firings,
                    f"{result['firings']} of {args.firings} firings seen")
    verdict.require_work(int(result["evaluations"]), "evaluations")
    latency = result["latency_ms"]
    if args.json:
        _common.emit_json(result)
    else:
        _common.print_table("rule firing -> MQTT state ON (ms)", ["firings", "p50", "p95", "max"],
                            [[result["firings"], latency.get("p50"), latency.get("p95"),
                              latency.get("max")]])
    p95 = float(latency.get("p95", float("inf")))
    return verdict.finish(p95 <= GOAL_P95_MS,
                          f"firing -> MQTT state p50 {latency.get('p50', 0):.1f} ms, "
                          f"p95 {p95:.1f} ms (goal <= {GOAL_P95_MS:.0f} ms) over "
                          f"{result['firings']} firings")


if __name__ == "__main__":
    _verdict.run_main(main)
