"""Run schemathesis (its CLI, as CI would) against a running server; parse what it found."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
SUPPORT = Path(__file__).parent
SEED = 20261204


@dataclass(frozen=True, slots=True)
class Run:
    returncode: int
    output: str
    cases: int
    seconds: float

    def explain(self) -> str:
        return f"schemathesis exited {self.returncode} after {self.seconds:.1f} s:\n{self.output}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def run_schemathesis(schema_url: str, config: Path, *args: str,
                           max_examples: int = 25, timeout: float = 300) -> Run:
    """``schemathesis run SCHEMA --checks all --seed SEED`` with ``config``; never raises."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(SUPPORT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep), "NO_COLOR": "1"}
    command = [SCHEMATHESIS, "--config-file", str(config), "run", schema_url,
               "--checks", "all", "--seed", str(SEED), "--max-examples", str(max_examples),
               "--workers", "1", "--generation-database", "none", "--no-color", *args]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="schemathesis-") as workdir:  # reports land here
        proc = await asyncio.create_subprocess_exec(
            *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            env=env, cwd=workdir)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            proc.kill()
            out, _ = await proc.communicate()
    output = out.decode(errors="replace")
    found = re.search(r"(\d+) generated", output)
    return Run(proc.returncode if proc.returncode is not None else -1, output,
               int(found.group(1)) if found else 0, time.monotonic() - started)
