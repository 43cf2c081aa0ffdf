"""The status listener on a real loopback port, fed by a real keeper, engine and outbox;
and ``watcher status`` reading it."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.logstate import kept_logging
from support.poll import eventually
from support.status import RULE, Running, running_daemon

from watcher.cli import main
from watcher.config import parse_config
from watcher.errors import ConfigError
from watcher.keeper.spec import KeeperTimings
from watcher.observe.config import DEFAULT_PORT, StatusConfig
from watcher.observe.server import StatusError, serve_status, status_listener
from watcher.observe.source import StatusSource

SLOW_RECOVERY = KeeperTimings(check_interval=0.1, first_frame_timeout=10, stale_after=1.0,
                              recreate_backoff=(1.0, 1.0), publisher_backoff=(0.05, 0.5))


@pytest.fixture
def keep_logging() -> Iterator[None]:
    """``main()`` and ``configure_logging`` reconfigure logging; put it back afterwards."""
    with kept_logging():
        yield


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def alerted(d: Running) -> bool:
    """The rule ran a few times, fired, and the outbox delivered the alert."""
    return (d.runner.stats.evaluations >= 3 and d.outbox.stats["ops"].sent >= 1
            and d.runner.state.status == "firing")


async def test_healthz_status_and_the_status_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], keep_logging: None) -> None:
    async with running_daemon(tmp_path) as d:
        await d.keeper.wait_live(15)
        await eventually(lambda: alerted(d), timeout=15)

        health = await d.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"

        status = (await d.get("/status")).json()
        assert status["version"] and status["uptime_s"] > 0 and status["ready"] is True
        [stream] = status["streams"]
        assert stream["name"] == "cam" and stream["state"] == "live" and stream["ready"]
        assert stream["stream_id"] == d.keeper.stream_id and stream["frames_sent"] > 0
        assert stream["lease_remaining_s"] > 0
        [rule] = status["rules"]
        assert rule["name"] == RULE["name"] and rule["state"] == "firing"
        assert rule["streams"] == ["cam"] and rule["schedule"] == "every 300ms"
        assert rule["stats"]["evaluations"] >= 3 and "latencies_s" not in rule["stats"]
        assert rule["next_run_at"] is not None and rule["ticks"]["errors"] == 0
        [action] = status["actions"]
        assert action["name"] == "ops" and action["sent"] >= 1
        assert action["pending"] == 0 and action["dead_letters"] == 0
        [alert] = status["alerts"]
        assert (alert["rule"], alert["kind"], alert["status"]) == (RULE["name"], "firing",
                                                                   "firing")
        assert "snapshot" not in alert and alert["has_snapshot"] is True

        code = await asyncio.to_thread(main, ["status", "--url", d.url])
        out = capsys.readouterr().out
        assert code == 0, out
        for text in ("Streams", "Rules", "Actions", "Recent alerts", "cam", "live",
                     d.keeper.stream_id[:8], RULE["name"], "firing", "ops", "warning", "ready"):
            assert text in out, (text, out)

        code = await asyncio.to_thread(main, ["status", "--url", d.url + "/status", "--json"])
        doc = json.loads(capsys.readouterr().out)
        assert code == 0 and doc["streams"][0]["name"] == "cam"
        assert doc["rules"][0]["stats"]["evaluations"] >= 3


async def test_readyz_follows_the_lease(tmp_path: Path) -> None:
    async with running_daemon(tmp_path, timings=SLOW_RECOVERY) as d:
        first = await d.keeper.wait_live(15)

        async def readyz(code: int) -> dict | None:
            response = await d.get("/readyz")
            return response.json() if response.status_code == code else None

        ready = await eventually(lambda: readyz(200), timeout=10)
        assert ready == {"status": "ready", "streams": {"cam": True},
                         "store": {"ready": True}, "not_ready": []}

        d.harness.server.registry.reap(first)  # the lease is gone behind the keeper's back
        lost = await eventually(lambda: readyz(503), timeout=10, interval=0.02)
        assert lost["status"] == "not ready" and lost["streams"] == {"cam": False}
        [why] = lost["not_ready"]
        assert why["stream"] == "cam"
        assert why["reason"].startswith(("state ", "the stream ended", "publisher closed"))

        await eventually(lambda: readyz(200), timeout=15)
        assert d.keeper.stream_id not in (None, first)
        assert d.keeper.health().streams_created == 2


async def test_the_status_command_says_when_nothing_listens(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], keep_logging: None) -> None:
    port = free_port()
    assert main(["status", "--url", f"http://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err
    assert f"nothing answers at http://127.0.0.1:{port}/status" in err
    assert "is `watcher run` running with status.enabled: true?" in err

    config = tmp_path / "watcher.yaml"
    config.write_text(f"status:\n  port: {port}\n  enabled: false\n")
    assert main(["status", "-c", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"127.0.0.1:{port}" in err and "has status.enabled: false" in err


async def test_the_status_command_rejects_other_servers(
        capsys: pytest.CaptureFixture[str], keep_logging: None) -> None:
    source = StatusSource(keepers={})
    async with serve_status(source, port=0) as endpoint:
        code = await asyncio.to_thread(main, ["status", "--url", endpoint.url + "/nope"])
    assert code == 1
    assert "answered HTTP 404" in capsys.readouterr().err


async def test_listener_off_by_default_and_a_busy_port_is_a_clear_error(
        caplog: pytest.LogCaptureFixture) -> None:
    source = StatusSource(keepers={})
    caplog.set_level(logging.INFO, logger="watcher.observe.server")
    async with status_listener(StatusConfig(), source) as endpoint:
        assert endpoint is None
    assert "set `status: {enabled: true}`" in caplog.text

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = StatusConfig(enabled=True, port=port)
        with pytest.raises(StatusError, match=f"cannot listen on 127.0.0.1:{port}.*status.port"):
            async with status_listener(config, source):
                pass

    async with status_listener(StatusConfig(enabled=True, port=0), source) as endpoint:
        assert endpoint is not None and endpoint.port > 0
        assert f"status listening at {endpoint.url}" in caplog.text


def test_status_config() -> None:
    default = StatusConfig()
    assert (default.enabled, default.host, default.port, default.max_frame_age) == (
        False, "127.0.0.1", DEFAULT_PORT, None)
    assert default.url == f"http://127.0.0.1:{DEFAULT_PORT}"
    for name, info in StatusConfig.model_fields.items():
        assert info.description, name

    config = parse_config("status: {enabled: true, host: 0.0.0.0, port: 9500, "
                          "max_frame_age: 1m}\n")
    assert config.status.url == "http://127.0.0.1:9500" and config.status.max_frame_age == 60
    assert config.summary() == "0 streams, embedded server, status at http://127.0.0.1:9500"
    assert parse_config("status: {enabled: true, host: '::', token: a-long-token}\n"
                        ).status.url == f"http://[::1]:{DEFAULT_PORT}"
    open_host = parse_config("status: {enabled: true, host: '::'}\n").status
    assert open_host.bind_host == "127.0.0.1" and open_host.url.startswith("http://127.0.0.1:")
    assert parse_config("status: {host: '::1'}\n").status.bind_host == "::1"
    assert parse_config("streams: []\n").summary() == "0 streams, embedded server"

    with pytest.raises(ConfigError) as caught:
        parse_config("status:\n  enabeld: true\n  port: 70000\n", name="w.yaml")
    problems = "\n".join(caught.value.problems)
    assert "w.yaml:2" in problems and "enabled" in problems
    assert "w.yaml:3" in problems and "65535" in problems
