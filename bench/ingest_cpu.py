"""Server-side CPU per ingested stream: SRTP decrypt + VP8 decode + BGR + JPEG, over real WHIP.

The embedded server (uvicorn on 127.0.0.1, ``local/frames`` backend only)
runs in THIS process; ``bench/_publisher.py`` publishes N synthetic 640x480
streams (``SyntheticScene`` with a person every 20 s, rendered on the fly) in
a SEPARATE process. This process's CPU time (all threads: event loop,
aiortc's decoder threads, the ingest's JPEG worker threads) is measured over
the window and an idle baseline (server up, nothing published) subtracted.

WebRTC media flows over the machine's non-loopback interface (aioice never
offers 127.0.0.1 as a candidate); only HTTP signalling uses 127.0.0.1.

    .venv/bin/python bench/ingest_cpu.py [--streams 1,3] [--seconds 30] [--json]
    .venv/bin/python bench/ingest_cpu.py --smoke     # 1 stream, 2 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from typing import Any

import _common
import _verdict

DEFAULT_SPEC = "testsrc:events=person,period=20,duration=6,size=640x480"


async def _read_ticks(child: _common.Child, latest: dict[str, Any]) -> None:
    while True:
        message = await child.message(timeout=3600)
        if message.get("event") == "tick":
            latest["tick"] = message


def _sessions(ingest: Any, stream_ids: list[str]) -> list[dict[str, Any]]:
    out = []
    for stream_id in stream_ids:
        stats = ingest.session_stats(stream_id)
        out.append(stats.as_dict() if stats is not None else {})
    return out


async def measure(server: _common.LocalServer, client: Any, count: int, args: argparse.Namespace,
                  idle_percent: float) -> dict[str, Any]:
    ingest = server.app.state.server.ingest
    created = [(await client.post("/streams")).raise_for_status().json() for _ in range(count)]
    stream_ids = [c["id"] for c in created]
    targets = json.dumps([c["publish"] for c in created])
    latest: dict[str, Any] = {}
    try:
        async with _common.child("_publisher.py", "--targets", targets, "--fps", str(args.fps),
                                 "--spec", args.spec, "--source", "scene",
                                 "--max-seconds", str(args.seconds + 120),
                                 name="publisher") as publisher:
            await publisher.message(timeout=60, want=lambda m: m.get("event") == "connected")
            reader = asyncio.create_task(_read_ticks(publisher, latest))
            try:
                deadline = time.monotonic() + 30
                while not all(s.get("frames_stored") for s in _sessions(ingest, stream_ids)):
                    if time.monotonic() > deadline:
                        raise TimeoutError("no frames stored within 30 s of connecting")
                    await asyncio.sleep(0.1)
                await asyncio.sleep(args.settle)  # JPEG quality and VP8 bitrate settle
                before, tick0 = _sessions(ingest, stream_ids), latest.get("tick")
                window = await _common.measure_cpu(args.seconds, pids=[publisher.pid])
                after, tick1 = _sessions(ingest, stream_ids), latest.get("tick")
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                    await reader
    finally:
        for stream_id in stream_ids:
            with contextlib.suppress(Exception):
                await client.delete(f"/streams/{stream_id}")

    stored = sum(a["frames_stored"] - b["frames_stored"] for a, b in zip(after, before,
                                                                         strict=True))
    received = sum(a["frames_received"] - b["frames_received"] for a, b in zip(after, before,
                                                                               strict=True))
    dropped = sum(a["frames_dropped"] - b["frames_dropped"] for a, b in zip(after, before,
                                                                            strict=True))
    jpeg_bytes = sum(a["bytes_stored"] - b["bytes_stored"] for a, b in zip(after, before,
                                                                           strict=True))
    sent_bytes = sent_seconds = 0.0
    targets_bps: list[Any] = []
    if tick0 and tick1 and tick1["t"] > tick0["t"]:
        sent_seconds = tick1["t"] - tick0["t"]
        sent_bytes = sum(p1["bytes_sent"] - p0["bytes_sent"] for p0, p1 in
                         zip(tick0["publishers"], tick1["publishers"], strict=True))
        targets_bps = [p["target_bitrate"] for p in tick1["publishers"]]
    net = window.percent() - idle_percent
    return {
        "streams": count,
        "seconds": window.wall,
        "server_cpu_percent": window.percent(),
        "idle_percent": idle_percent,
        "net_cpu_percent": net,
        "per_stream_cpu_percent": net / count,
        "cpu_ms_per_frame": 1000 * (window.cpu - idle_percent / 100 * window.wall)
        / max(1, stored),
        "publisher_process_cpu_percent": window.others_percent(publisher.pid),
        "machine_busy_cores": window.machine_busy_cores,
        "frames_received_per_s_per_stream": received / window.wall / count,
        "frames_stored_per_s_per_stream": stored / window.wall / count,
        "frames_dropped": dropped,
        "jpeg_mean_bytes": jpeg_bytes / max(1, stored),
        "jpeg_quality": [a.get("jpeg_quality") for a in after],
        "received_kbps_per_stream": 8 * sent_bytes / max(1e-9, sent_seconds) / 1000 / count
        if sent_seconds else None,
        "vp8_target_bitrate": targets_bps,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    machine = _common.machine_info()  # load average before we add to it
    _common.quiet_logs()
    results = []
    async with _common.serve() as server, httpx.AsyncClient(
            base_url=server.base_url, timeout=30,
            headers={"authorization": f"Bearer {_common.API_KEY}"}) as client:
        await asyncio.sleep(1.0)
        idle = await _common.measure_cpu(args.idle_seconds)
        for count in args.streams:
            results.append(await measure(server, client, count, args, idle.percent()))
    return {"benchmark": "ingest_cpu", "machine": machine, "fps": args.fps,
            "spec": args.spec, "idle_seconds": args.idle_seconds, "results": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="1,3",
                        help="comma-separated stream counts, one run each (default %(default)s)")
    parser.add_argument("--fps", type=float, default=5.0)
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per run")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds between the first stored frame and measuring")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--spec", default=DEFAULT_SPEC)
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    _verdict.add_smoke(parser)
    args = _verdict.apply_smoke(parser.parse_args(), streams="1", seconds=2.0, settle=0.5,
                                idle_seconds=1.0)
    args.streams = [int(s) for s in args.streams.split(",") if s.strip()]
    report = asyncio.run(run(args))
    if args.json:
        _common.emit_json(report)
        return verdict(report, quiet=True)
    print(f"Machine: {_common.describe_machine(report['machine'])}")
    rows = report["results"]
    _common.print_table(
        f"Ingest CPU, server process, 640x480 @ {args.fps:g} fps VP8 over WHIP "
        f"({args.seconds:g} s per run; % of one core)",
        ["streams", "server CPU", "idle", "net", "per stream", "CPU ms/frame",
         "stored fps/stream", "dropped", "JPEG q", "mean JPEG", "kbit/s/stream",
         "publisher proc", "machine busy"],
        [[r["streams"], f"{r['server_cpu_percent']:.1f}%", f"{r['idle_percent']:.1f}%",
          f"{r['net_cpu_percent']:.1f}%", f"{r['per_stream_cpu_percent']:.1f}%",
          f"{r['cpu_ms_per_frame']:.1f}", f"{r['frames_stored_per_s_per_stream']:.2f}",
          r["frames_dropped"], ",".join(str(q) for q in r["jpeg_quality"]),
          f"{r['jpeg_mean_bytes'] / 1000:.1f} KB",
          f"{r['received_kbps_per_stream']:.0f}" if r["received_kbps_per_stream"] else "?",
          f"{r['publisher_process_cpu_percent']:.1f}%",
          f"{r['machine_busy_cores']:.2f} cores"] for r in rows])
    bitrates = sorted({b for r in rows for b in r["vp8_target_bitrate"] if b})
    print(f"\nVP8 target bitrate at the end (after REMB): {bitrates} bit/s")
    return verdict(report)


def verdict(report: dict[str, Any], quiet: bool = False) -> int:
    """No goal: figures only, valid when every stream stored frames near its frame rate."""
    check = _verdict.Verdict("ingest_cpu")
    rows = report["results"]
    check.require_work(len(rows), "runs")
    for r in rows:
        check.require(r["frames_stored_per_s_per_stream"] >= 0.5 * report["fps"],
                      f"{r['streams']} stream(s) stored "
                      f"{r['frames_stored_per_s_per_stream']:.2f} fps of {report['fps']:g}")
    summary = ", ".join(f"{r['streams']} stream(s): {r['per_stream_cpu_percent']:.1f}% of one "
                        "core per stream" for r in rows)
    if quiet:
        return _verdict.FAILED_EXIT if check.failed else 0
    return check.finish(None, summary)


if __name__ == "__main__":
    _verdict.run_main(main)
