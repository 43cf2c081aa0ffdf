"""The cluster in /status, /readyz, /metrics and `watcher status`, on a real listener."""

from __future__ import annotations

import io

import httpx
from rich.console import Console

from watcher.clock import ManualClock
from watcher.cluster.coordinator import Coordinator
from watcher.cluster.groups import CameraGroup
from watcher.cluster.leases import MemoryClusterStore
from watcher.observe.report import render
from watcher.observe.server import serve_status
from watcher.observe.source import StatusSource


async def _noop(*args: object) -> None:
    return None


async def test_status_metrics_and_readyz_show_members_owners_and_epochs() -> None:
    clock = ManualClock()
    store = MemoryClusterStore()
    groups = [CameraGroup("dock+yard", ("dock", "yard")), CameraGroup("lobby", ("lobby",))]
    nodes = [Coordinator(store, instance_id=name, heartbeat_s=2, lease_s=10, groups=groups,
                         on_gain=_noop, on_lose=_noop, clock=clock,
                         monotonic=lambda: clock.now_ms() / 1000,
                         info={"status_url": f"http://{name}:9464"})
             for name in ("node-a", "node-b")]
    for _ in range(3):
        for node in nodes:
            await node.step()
        clock.advance(1)
    me = nodes[0]
    source = StatusSource(keepers={}, cluster=me, clock=clock)
    async with serve_status(source, port=0) as endpoint, httpx.AsyncClient(
            base_url=endpoint.url) as http:
        status = (await http.get("/status")).json()
        metrics = (await http.get("/metrics")).text
        ready = await http.get("/readyz")
    cluster = status["cluster"]
    assert cluster["instance_id"] == "node-a"
    assert [(m["instance_id"], m["live"], m["status_url"]) for m in cluster["members"]] == [
        ("node-a", True, "http://node-a:9464"), ("node-b", True, "http://node-b:9464")]
    owners = {g["group"]: (g["owner"], g["epoch"]) for g in cluster["groups"]}
    assert set(owners) == {"dock+yard", "lobby"}
    assert {o for o, _ in owners.values()} == {"node-a", "node-b"}
    assert cluster["owned"] == {g: e for g, (o, e) in owners.items() if o == "node-a"}
    assert 'watcher_cluster_members 2.0' in metrics
    assert 'watcher_cluster_member_heartbeat_age_seconds{instance="node-b"}' in metrics
    for group, (owner, epoch) in owners.items():
        assert f'watcher_cluster_group_epoch{{group="{group}",owner="{owner}"}} {epoch}' in (
            metrics.replace(".0\n", "\n"))
    assert "watcher_cluster_owned_groups 1.0" in metrics
    assert ready.status_code == 200
    assert ready.json()["cluster"] == {"instance_id": "node-a", "owned": cluster["owned"]}
    out = io.StringIO()
    render(status, Console(file=out, width=160))
    text = out.getvalue()
    assert "Cluster (this instance: node-a" in text and "Camera groups" in text
    assert "dock+yard" in text and "http://node-b:9464" in text
