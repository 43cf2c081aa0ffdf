"""The cluster in ``/metrics`` and ``watcher status``, read from :meth:`Coordinator.snapshot`.

Metrics (only in cluster mode):

``watcher_cluster_members`` (live instances as this one sees them),
``watcher_cluster_member_heartbeat_age_seconds{instance}``,
``watcher_cluster_group_epoch{group,owner}`` (the lease's epoch; owner ``""`` once released),
``watcher_cluster_owned_groups`` (groups this instance runs),
``watcher_cluster_rounds_total``, ``watcher_cluster_round_errors_total`` (rounds that could
not reach the store), ``watcher_cluster_groups_acquired_total``,
``watcher_cluster_groups_released_total`` (handed over or shut down) and
``watcher_cluster_groups_lost_total`` (dropped: stale epoch or lease run out).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from rich.table import Table
from rich.text import Text

_COUNTERS = (
    ("watcher_cluster_rounds", "Coordinator rounds (heartbeat, renewals, balancing).",
     "rounds"),
    ("watcher_cluster_round_errors", "Rounds that could not reach the cluster store.",
     "round_errors"),
    ("watcher_cluster_groups_acquired", "Camera group leases this instance acquired.",
     "acquired"),
    ("watcher_cluster_groups_released", "Camera groups this instance stopped and released "
     "(handed over, or shut down).", "released"),
    ("watcher_cluster_groups_lost", "Camera groups this instance dropped without releasing "
     "them (another instance took them over, or the lease ran out).", "lost"),
)


class ClusterView(Protocol):
    """What the status listener reads (a :class:`~watcher.cluster.coordinator.Coordinator`)."""

    def snapshot(self) -> dict[str, Any]: ...


def metric_families(snapshot: dict[str, Any]) -> Iterator[Metric]:
    members = snapshot.get("members") or []
    live = GaugeMetricFamily("watcher_cluster_members", "Live instances in the cluster, as "
                             "this instance last saw them.")
    live.add_metric([], sum(1 for m in members if m.get("live")))
    age = GaugeMetricFamily("watcher_cluster_member_heartbeat_age_seconds", "Time since each "
                            "instance's last heartbeat.", labels=["instance"])
    for m in members:
        age.add_metric([str(m["instance_id"])], max(0.0, float(m["heartbeat_age_s"])))
    epoch = GaugeMetricFamily("watcher_cluster_group_epoch", "Fencing epoch of each camera "
                              "group's lease, by owner.", labels=["group", "owner"])
    for g in snapshot.get("groups") or []:
        if g.get("epoch") is not None:
            epoch.add_metric([g["group"], g.get("owner") or ""], g["epoch"])
    owned = GaugeMetricFamily("watcher_cluster_owned_groups", "Camera groups this instance "
                              "runs (publishes and asks about).")
    owned.add_metric([], len(snapshot.get("owned") or {}))
    yield from (live, age, epoch, owned)
    stats = snapshot.get("stats") or {}
    for name, help_text, key in _COUNTERS:
        family = CounterMetricFamily(name, help_text)
        family.add_metric([], stats.get(key, 0))
        yield family


def members_table(cluster: dict[str, Any]) -> Table:
    me = cluster.get("instance_id")
    table = Table(title=f"Cluster (this instance: {me}; heartbeat {cluster.get('heartbeat_s')}"
                  f" s, lease {cluster.get('lease_s')} s)", title_justify="left")
    for column in ("Instance", "Heartbeat age", "Live", "Groups", "Cameras", "Status URL"):
        table.add_column(column, no_wrap=True)
    groups = cluster.get("groups") or []
    for m in cluster.get("members") or []:
        owned = [g for g in groups if g.get("owner") == m["instance_id"]]
        table.add_row(m["instance_id"], f"{m.get('heartbeat_age_s', 0):.1f} s",
                      Text("yes", style="green") if m.get("live") else Text("no", style="red"),
                      str(len(owned)), str(sum(len(g.get("streams") or []) for g in owned)),
                      str(m.get("status_url") or "-"))
    return table


def groups_table(cluster: dict[str, Any]) -> Table:
    table = Table(title="Camera groups", title_justify="left")
    for column in ("Group", "Owner", "Epoch", "Lease left"):
        table.add_column(column, no_wrap=True)
    for g in cluster.get("groups") or []:
        left = g.get("expires_in_s")
        owner = Text(g.get("owner") or "-", style="bold" if g.get("mine") else "")
        table.add_row(g["group"], owner, str(g.get("epoch") if g.get("epoch") is not None
                                              else "-"),
                      f"{left:.1f} s" if isinstance(left, int | float) else "-")
    return table
