"""Publisher CPU per 640x480 stream over WHIP, by frame rate and codec.

The publisher (``WhipPublisher`` + ``FrameTrack``) runs in THIS process; the
embedded server runs in a SEPARATE process (``bench/_server.py``: uvicorn
on 127.0.0.1, default settings). By default the track reads a ``LatestFrame``
that a background thread fills with pre-rendered ``SyntheticScene`` frames
at the frame rate (as a camera capture thread would), so scene rendering is
not counted; the ``scene`` source renders on the fly instead. What is counted:
BGR -> VideoFrame, -> YUV420, VP8/H264 encode, RTP packetizing, SRTP, the
event loop and RTCP. This process's CPU time minus an idle baseline, as % of
one core.

    .venv/bin/python bench/publish_cpu.py [--seconds 20] [--json]
    .venv/bin/python bench/publish_cpu.py --cases 5:VP8:prerendered,5:H264:prerendered
    .venv/bin/python bench/publish_cpu.py --smoke   # one 5 fps VP8 case, 2 s
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import _common
import _media
import _verdict

from watcher.media.whip import WhipPublisher

GOAL_PERCENT_AT_5FPS = 5.0
DEFAULT_CASES = ("2:VP8:prerendered,5:VP8:prerendered,15:VP8:prerendered,"
                 "5:VP8:scene,5:H264:prerendered")


@dataclass(frozen=True)
class Case:
    fps: float
    codec: str
    source: _media.SourceKind

    @classmethod
    def parse(cls, text: str) -> Case:
        given = text.split(":")
        fps, codec, source = [*given, *("5", "VP8", "prerendered")[len(given):]][:3]
        if source not in ("prerendered", "scene"):
            raise ValueError(f"unknown source {source!r}: prerendered or scene")
        return cls(float(fps), f"video/{codec.upper()}", source)  # type: ignore[arg-type]

    @property
    def label(self) -> str:
        return f"{self.fps:g} fps {self.codec.removeprefix('video/')} {self.source}"


async def _status(client: Any, stream_id: str) -> dict[str, Any]:
    return (await client.get(f"/streams/{stream_id}")).raise_for_status().json()


async def measure(client: Any, server_pid: int, case: Case, args: argparse.Namespace,
                  idle_percent: float) -> dict[str, Any]:
    created = (await client.post("/streams")).raise_for_status().json()
    stream_id = created["id"]
    track, feeder = _media.make_track(case.source, case.fps, args.spec)
    publisher = WhipPublisher(created["publish"]["url"], created["publish"]["token"], track,
                              codec=case.codec, timeout=30)
    try:
        await publisher.start()
        await publisher.wait_connected()
        deadline = time.monotonic() + 30
        while (await _status(client, stream_id))["last_frame_index"] is None:
            if time.monotonic() > deadline:
                raise TimeoutError("the server stored no frame within 30 s")
            await asyncio.sleep(0.1)
        await asyncio.sleep(args.settle)
        sent0, status0, skipped0 = await _media.sender_stats(publisher), \
            await _status(client, stream_id), track.ticks_skipped
        window = await _common.measure_cpu(args.seconds, pids=[server_pid])
        sent1, status1, skipped1 = await _media.sender_stats(publisher), \
            await _status(client, stream_id), track.ticks_skipped
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(publisher.stop(), 10)
        if feeder is not None:
            feeder.stop()
        with contextlib.suppress(Exception):
            await client.delete(f"/streams/{stream_id}")
    frames = sent1["frames_sent"] - sent0["frames_sent"]
    net = window.percent() - idle_percent
    return {
        "case": case.label,
        "fps": case.fps,
        "codec": case.codec,
        "source": case.source,
        "encoder": sent1["encoder"],
        "seconds": window.wall,
        "process_cpu_percent": window.percent(),
        "idle_percent": idle_percent,
        "net_cpu_percent": net,
        "cpu_ms_per_frame": 10 * net * window.wall / max(1, frames),
        "frames_sent_per_s": frames / window.wall,
        "frames_stored_per_s": (status1["last_frame_index"] - status0["last_frame_index"])
        / window.wall,
        "ticks_skipped": skipped1 - skipped0,
        "sent_kbps": 8 * (sent1["bytes_sent"] - sent0["bytes_sent"]) / window.wall / 1000,
        "target_bitrate": sent1["target_bitrate"],
        "server_process_cpu_percent": window.others_percent(server_pid),
        "machine_busy_cores": window.machine_busy_cores,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    machine = _common.machine_info()  # load average before we add to it
    _common.quiet_logs()
    results = []
    async with _common.child("_server.py", "--max-seconds", "900", name="server") as server:
        ready = await server.message(timeout=60, want=lambda m: m.get("event") == "ready")
        async with httpx.AsyncClient(base_url=ready["base_url"], timeout=30, headers={
                "authorization": f"Bearer {_common.API_KEY}"}) as client:
            await asyncio.sleep(1.0)
            idle = await _common.measure_cpu(args.idle_seconds)
            for case in args.cases:
                results.append(await measure(client, server.pid, case, args, idle.percent()))
    return {"benchmark": "publish_cpu", "machine": machine, "spec": args.spec,
            "goal_percent_at_5fps": GOAL_PERCENT_AT_5FPS, "results": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", default=DEFAULT_CASES,
                        help="comma-separated FPS:CODEC:SOURCE (SOURCE: prerendered or "
                        "scene; default %(default)s)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per case")
    parser.add_argument("--settle", type=float, default=3.0,
                        help="seconds between the first stored frame and measuring")
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--spec", default=_media.DEFAULT_SPEC)
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    _verdict.add_smoke(parser)
    args = _verdict.apply_smoke(parser.parse_args(), cases="5:VP8:prerendered", seconds=2.0,
                                settle=0.5, idle_seconds=1.0)
    args.cases = [Case.parse(c.strip()) for c in args.cases.split(",") if c.strip()]
    report = asyncio.run(run(args))
    if args.json:
        _common.emit_json(report)
        return 0
    print(f"Machine: {_common.describe_machine(report['machine'])}")
    rows = report["results"]
    _common.print_table(
        f"Publisher CPU per 640x480 stream over WHIP ({args.seconds:g} s per case; "
        f"% of one core; goal at 5 fps VP8: <= {GOAL_PERCENT_AT_5FPS:g}%)",
        ["case", "process CPU", "idle", "net", "CPU ms/frame", "sent fps", "stored fps",
         "kbit/s sent", "target bitrate", "server proc", "machine busy"],
        [[r["case"], f"{r['process_cpu_percent']:.1f}%", f"{r['idle_percent']:.1f}%",
          f"{r['net_cpu_percent']:.1f}%", f"{r['cpu_ms_per_frame']:.1f}",
          f"{r['frames_sent_per_s']:.2f}", f"{r['frames_stored_per_s']:.2f}",
          f"{r['sent_kbps']:.0f}",
          f"{r['target_bitrate'] / 1000:.0f} kbit/s" if r["target_bitrate"] else "?",
          f"{r['server_process_cpu_percent']:.1f}%",
          f"{r['machine_busy_cores']:.2f} cores"] for r in rows])
    check = _verdict.Verdict("publish_cpu")
    check.require_work(len(rows), "cases")
    for r in rows:
        check.require(r["frames_sent_per_s"] >= 0.5 * r["fps"],
                      f"{r['case']}: {r['frames_sent_per_s']:.2f} fps sent of {r['fps']:g}")
        check.require(r["frames_stored_per_s"] > 0, f"{r['case']}: the server stored no frame")
    goal = [r for r in rows if r["fps"] == 5 and r["codec"] == "video/VP8"
            and r["source"] == "prerendered"]
    if not goal:
        return check.finish(None, "no 5 fps VP8 prerendered case, so no goal to judge")
    net = goal[0]["net_cpu_percent"]
    return check.finish(net <= GOAL_PERCENT_AT_5FPS,
                        f"5 fps VP8 publish = {net:.1f}% of one core")


if __name__ == "__main__":
    _verdict.run_main(main)
