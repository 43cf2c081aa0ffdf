"""Shared helpers of the benchmark scripts (not a benchmark itself).

Machine description, result tables/JSON, CPU and memory probes, an in-process
uvicorn server on a free 127.0.0.1 port, and subprocess handling that always
cleans up after itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import resource
import socket
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
for _path in (REPO_ROOT, REPO_ROOT / "tests"):  # run from anywhere; share tests/support
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

API_KEY = "ovs_bench_key"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- machine -------------------------------------------------------------------------------------
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on, including how busy the machine already was."""
    versions = {}
    for name in ("aiortc", "av", "opencv-python-headless", "numpy", "uvicorn", "httpx"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return {
        "cpu_model": cpu_model(),
        "platform_processor": platform.processor(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "loadavg_at_start": os.getloadavg()[0],
        "versions": versions,
    }


def describe_machine(info: dict[str, Any]) -> str:
    return (f"{info['cpu_model']} ({info['cores']} cores; platform.processor()="
            f"{info['platform_processor']!r}), Python {info['python']}, "
            f"load average at start {info['loadavg_at_start']:.2f}")


# -- probes --------------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    """Peak resident set size of this process (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def current_rss_mb() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def process_cpu_seconds(pid: int) -> float:
    """user + system CPU time of another process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def machine_cpu_seconds() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return (total - idle) / _CLK_TCK, total / _CLK_TCK


@dataclass
class CpuWindow:
    """CPU seconds this process (and optionally others) used over a wall-clock window."""

    wall: float = 0.0
    cpu: float = 0.0
    others: dict[int, float] | None = None
    machine_busy_cores: float = 0.0

    def percent(self) -> float:
        return 100.0 * self.cpu / self.wall if self.wall else 0.0

    def others_percent(self, pid: int) -> float:
        return 100.0 * (self.others or {}).get(pid, 0.0) / self.wall if self.wall else 0.0


async def measure_cpu(seconds: float, *, pids: Sequence[int] = ()) -> CpuWindow:
    """Sleep ``seconds`` on the event loop and report the CPU used meanwhile."""
    busy0, total0 = machine_cpu_seconds()
    others0 = {pid: process_cpu_seconds(pid) for pid in pids}
    c0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(seconds)
    c1, t1 = time.process_time(), time.monotonic()
    others = {pid: process_cpu_seconds(pid) - others0[pid] for pid in pids}
    busy1, total1 = machine_cpu_seconds()
    cores = (os.cpu_count() or 1) * (busy1 - busy0) / max(1e-9, total1 - total0)
    return CpuWindow(t1 - t0, c1 - c0, others, cores)


# -- statistics and output -------------------------------------------------------------------------
def percentiles(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)
    if not ordered:
        return {}

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]

    return {"n": len(ordered), "mean": statistics.fmean(ordered), "p50": pick(0.50),
            "p95": pick(0.95), "p99": pick(0.99), "max": ordered[-1]}


def print_table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h)
              for i, h in enumerate(headers)]
    print(f"\n{title}")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def emit_json(result: dict[str, Any]) -> None:
    print(json.dumps(result, indent=2, sort_keys=True, default=str))


# -- servers -------------------------------------------------------------------------------------
@dataclass
class LocalServer:
    app: Any
    base_url: str
    """``http://127.0.0.1:PORT/v1beta``"""


@contextlib.asynccontextmanager
async def serve(settings: Any | None = None) -> AsyncIterator[LocalServer]:
    """The real app (``local/frames`` backend only) under uvicorn in this process."""
    import uvicorn

    from watcher.server.app import API_PREFIX, create_app
    from watcher.server.backends.frames import FramesModel
    from watcher.server.settings import ServerSettings

    settings = settings or ServerSettings(api_keys=[API_KEY])
    app = create_app(settings, backends=[FramesModel()])
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on",
                                           access_log=False))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn stopped while starting")
            if time.monotonic() > deadline:
                raise TimeoutError("uvicorn did not start within 15 s")
            await asyncio.sleep(0.02)
        yield LocalServer(app, f"http://127.0.0.1:{port}{API_PREFIX}")
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, 15)
        except (TimeoutError, asyncio.CancelledError):
            task.cancel()
        sock.close()


# -- subprocesses --------------------------------------------------------------------------------
class Child:
    """A helper subprocess speaking JSON lines on stdout; stdin EOF asks it to stop."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def message(self, timeout: float, want: Callable[[dict[str, Any]], bool] | None = None,
                      ) -> dict[str, Any]:
        """The next JSON line (matching ``want``); raises if the child exits or times out."""
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    code = await self.proc.wait()
                    raise RuntimeError(f"{self.name} exited with code {code}")
                text = line.decode(errors="replace").strip()
                if not text.startswith("{"):
                    continue
                message = json.loads(text)
                if "error" in message:
                    raise RuntimeError(f"{self.name}: {message['error']}")
                if want is None or want(message):
                    return message

    async def finish(self, timeout: float = 20.0) -> None:
        """Ask the child to stop (close stdin), then terminate, then kill."""
        if self.proc.returncode is not None:
            return
        if self.proc.stdin is not None:
            with contextlib.suppress(Exception):
                self.proc.stdin.close()
        for action, wait in ((None, timeout), (self.proc.terminate, 5.0),
                             (self.proc.kill, 5.0)):
            if action is not None:
                with contextlib.suppress(ProcessLookupError):
                    action()
            try:
                await asyncio.wait_for(self.proc.wait(), wait)
                return
            except TimeoutError:
                continue


@contextlib.asynccontextmanager
async def child(script: str, *args: str, name: str | None = None) -> AsyncIterator[Child]:
    """Run ``bench/<script>`` with this interpreter; always cleaned up on exit."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(BENCH_DIR / script), *args,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=None,
        cwd=str(REPO_ROOT))
    handle = Child(proc, name or script)
    try:
        yield handle
    finally:
        await handle.finish()


async def stdin_closed() -> None:
    """In a child: return once the parent closes our stdin (or dies)."""
    import threading

    loop = asyncio.get_running_loop()
    closed = asyncio.Event()

    def read() -> None:  # a daemon thread, so it never holds up the interpreter's exit
        with contextlib.suppress(Exception):
            sys.stdin.buffer.read()
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(closed.set)

    threading.Thread(target=read, name="stdin-watch", daemon=True).start()
    await closed.wait()


def send(message: dict[str, Any]) -> None:
    """In a child: one JSON line to the parent."""
    sys.stdout.write(json.dumps(message, default=str) + "\n")
    sys.stdout.flush()


def quiet_logs() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(name)s %(levelname)s %(message)s")
    for name in ("aioice", "aiortc", "httpx", "uvicorn"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.asynccontextmanager
async def watcher_serve(wanted: bool, retention_s: int, upstream_url: str,
                        models: dict[str, str], log: Path,
                        ) -> AsyncIterator[tuple[int, str] | None]:
    """``watcher serve`` in a process of its own (key ``API_KEY``, output to ``log``),
    answering ``models`` (listed name: upstream name) from ``upstream_url``; yields its
    pid and API URL, or None when not ``wanted``."""
    from support.receivers import free_port
    from support.rundaemon import running_watcher

    if not wanted:
        yield None
        return
    port = free_port()
    args = ["serve", "--port", str(port), "--api-key", API_KEY, "--retention-seconds",
            str(retention_s), "--max-streams-per-key", "1000", "--upstream-url", upstream_url]
    for name, upstream in models.items():
        args += ["--upstream-model", f"{name}={upstream}"]
    base = f"http://127.0.0.1:{port}/v1beta"
    async with running_watcher(args, f"{base}/models", log,
                               env={"MALLOC_ARENA_MAX": "2"}) as proc:
        yield proc.pid, base
