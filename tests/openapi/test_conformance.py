"""The OpenAPI documents tell the truth: schemathesis (``--checks all``, a fixed seed) against

* a running ``watcher serve`` (its ``/openapi.json``), and
* the status listener of a running ``watcher run`` daemon (its ``/openapi.json``),

fails on any finding. ``embedded.toml`` and ``status.toml`` beside this file turn off, one by
one and with the reason, the checks that cannot apply. The last test shows the step can
fail: a status code the document does not list, answered on purpose, is a finding.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import uvicorn
from support.conformance import free_port, run_schemathesis
from support.poll import eventually
from support.rundaemon import running_watcher, tail

from watcher.server.app import create_app
from watcher.server.settings import ServerSettings

HERE = Path(__file__).parent
KEY = "ovs-conformance-key"
STATUS_TOKEN = "status-conformance-token"

EMBEDDED_EXCLUDED = {
    # DELETE ends a stream, and the Overshoot API keeps an ended stream readable (`state:
    # ended`, `end_reason: deleted`) for the tombstone window: a 200 after DELETE is the
    # documented behaviour, not a resource that failed to go away.
    "use_after_free",
}

STATUS_EXCLUDED = {
    # POST /api/silences rightly refuses, with a 400 that says why, a silence whose matchers
    # match every alert (`name=""`) or whose `ends_at` is already past: JSON Schema cannot
    # say either, so a schema-valid body may be refused. (A per-operation switch in
    # status.toml is overridden by `--checks all`.) Every other check applies.
    "positive_data_acceptance",
}


def excluded(checks: set[str]) -> list[str]:
    return ["--exclude-checks", ",".join(sorted(checks))] if checks else []


async def test_embedded_server_conforms_to_its_document(tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with running_watcher(["serve", "--port", str(port), "--api-key", KEY],
                               f"{base}/v1beta/models", tmp_path / "serve.log"):
        run = await run_schemathesis(f"{base}/openapi.json", HERE / "embedded.toml",
                                     "--header", f"Authorization: Bearer {KEY}",
                                     *excluded(EMBEDDED_EXCLUDED))
    print(f"embedded server: {run.cases} cases in {run.seconds:.1f} s")
    assert run.returncode == 0, run.explain()
    assert run.cases > 100, run.explain()  # it really generated and sent requests
    assert KEY not in tail(tmp_path / "serve.log", chars=10**7)


async def test_status_listener_conforms_to_its_document(tmp_path: Path) -> None:
    await status_listener_conforms(tmp_path, token=None)


async def test_status_listener_with_a_token_conforms_to_its_document(tmp_path: Path) -> None:
    """With ``status.token``: every route but /healthz documents and enforces the token
    (schemathesis' ``ignored_auth`` check sends requests without it)."""
    await status_listener_conforms(tmp_path, token=STATUS_TOKEN)


async def status_listener_conforms(tmp_path: Path, *, token: str | None) -> None:
    port = free_port()
    config = tmp_path / "watcher.yaml"
    config.write_text(
        "streams:\n"
        "  - name: front\n"
        "    source: testsrc:size=160x120\n"
        "    fps: 5\n"
        "    width: 160\n"
        "    height: 120\n"
        "status:\n"
        "  enabled: true\n"
        f"  port: {port}\n"
        + (f"  token: {token}\n" if token else "")
        + f"state:\n  path: {tmp_path / 'state.sqlite3'}\n")
    base = f"http://127.0.0.1:{port}"
    auth = ["--header", f"Authorization: Bearer {token}"] if token else []
    async with running_watcher(["run", "-c", str(config)], f"{base}/healthz",
                               tmp_path / "run.log"):
        async with httpx.AsyncClient(headers=dict([auth[1].split(": ")]) if token else {},
                                     ) as client:
            document = (await client.get(f"{base}/openapi.json")).json()
        run = await run_schemathesis(f"{base}/openapi.json", HERE / "status.toml", *auth,
                                     *excluded(STATUS_EXCLUDED))
    print(f"status listener{' with a token' if token else ''}: {run.cases} cases in "
          f"{run.seconds:.1f} s")
    assert run.returncode == 0, run.explain()
    assert run.cases > 100, run.explain()  # the console's /api/ routes are in it
    assert any(path.startswith("/api/") for path in document["paths"])
    if token:
        assert token not in tail(tmp_path / "run.log", chars=10**7)


@contextlib.asynccontextmanager
async def in_process_server() -> AsyncIterator[tuple[str, object]]:
    """The embedded server's app under uvicorn on a free port; yields (base URL, server)."""
    app = create_app(ServerSettings(api_keys=[KEY]))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        await eventually(lambda: server.started or task.done(), 30)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", app.state.server
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 20)
        sock.close()


async def test_an_undocumented_status_code_fails_the_step() -> None:
    only_list = ("--include-name", "GET /v1beta/streams",
                 "--phases", "coverage",  # deterministic, and enough: every request gets 418
                 "--header", f"Authorization: Bearer {KEY}", *excluded(EMBEDDED_EXCLUDED))
    async with in_process_server() as (base, server):
        clean = await run_schemathesis(f"{base}/openapi.json", HERE / "embedded.toml",
                                       *only_list, max_examples=5)
        assert clean.returncode == 0, clean.explain()
        # The same route now answers a status its document does not list.
        server.faults.add(r"^/v1beta/streams$", method="GET", status=418,  # type: ignore[attr-defined]
                          times=None)
        broken = await run_schemathesis(f"{base}/openapi.json", HERE / "embedded.toml",
                                        *only_list, max_examples=5)
    assert broken.returncode != 0, broken.explain()
    assert "Undocumented status code" in broken.output, broken.explain()
    assert "Received: 418" in broken.output, broken.explain()
