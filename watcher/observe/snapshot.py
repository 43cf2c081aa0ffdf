"""The ``/status`` document: the daemon's streams, rules, actions and recent alerts as JSON.

::

    {"version": "0.1.0", "python": "3.11.9", "started_at": "...Z", "uptime_s": 12.5,
     "ready": true,                     # every stream ready and the state store too
     "store": {"ready": true, "reason": null, "errors_total": 0},
     "streams": [{StreamHealth fields..., "live": true, "ready": true, "not_ready_reason": null}],
     "rules":   [{"name", "streams", "schedule", "state", "episode", "next_run_at",
                  "stats": {RuleStats counts}, "ticks": {"missed", "overruns", "errors"}}],
     "actions": [{"name", ACTION_FIELDS of watcher.observe.source...}],
     "alerts":  [{AlertEventRecord fields but the snapshot..., "status", "created_at",
                  "has_snapshot"}],
     "cluster": {"instance_id", "heartbeat_s", "lease_s",        (cluster mode only)
                 "members": [{"instance_id", "heartbeat_age_s", "live", "status_url", ...}],
                 "groups": [{"group", "streams", "owner", "epoch", "expires_in_s", "mine"}],
                 "owned": {group: epoch}, "store_error", "stats": {...}}}

Times are Unix milliseconds (``*_ms``) with ISO 8601 UTC twins (``*_at``).
"""

from __future__ import annotations

import logging
import platform
from dataclasses import asdict, fields
from datetime import UTC, datetime
from typing import Any

from watcher import __version__
from watcher.engine.store import AlertEventRecord
from watcher.errors import WatcherError
from watcher.observe.source import EventSource, Runner, StatusSource

log = logging.getLogger(__name__)

RECENT_ALERTS = 20


def iso_ms(ms: int | None) -> str | None:
    """Unix milliseconds as ISO 8601 UTC (``2024-05-01T12:00:00.000Z``)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


async def status_document(source: StatusSource, *, alerts: int = RECENT_ALERTS,
                          ) -> dict[str, Any]:
    await source.refresh()
    streams = stream_documents(source)
    store_reason = source.store_health.reason if source.store_health is not None else None
    doc: dict[str, Any] = {
        "version": __version__,
        "python": platform.python_version(),
        "started_at": iso_ms(source.started_ms),
        "uptime_s": round(source.uptime_s, 3),
        "ready": all(stream["ready"] for stream in streams) and store_reason is None,
        "store": {"ready": store_reason is None, "reason": store_reason,
                  "errors_total": getattr(source.store_health, "errors_total", 0)},
        "streams": streams,
        "rules": [rule_document(source, name, runner)
                  for name, runner in source.runners().items()],
        "actions": [{"name": name, **counts} for name, counts in source.action_stats().items()],
        "budgets": source.budgets(),
    }
    cluster = source.cluster_snapshot()
    if cluster is not None:
        doc["cluster"] = cluster
    doc["alerts"], error = await recent_alerts(source.store, alerts)
    if error is not None:
        doc["alerts_error"] = error
    return doc


def stream_documents(source: StatusSource) -> list[dict[str, Any]]:
    docs = []
    for health in source.healths():
        readiness = source.readiness(health)
        docs.append({**health.as_dict(), "live": health.live, "ready": readiness.ready,
                     "not_ready_reason": readiness.reason,
                     "last_frame_at": iso_ms(health.last_frame_at_ms)})
    return docs


def rule_document(source: StatusSource, name: str, runner: Runner) -> dict[str, Any]:
    stats = {f.name: getattr(runner.stats, f.name) for f in fields(runner.stats)
             if f.name != "latencies_s"}
    ticks = source.ticks().get(name)
    state = runner.state
    next_run = source.next_run_ms(name)
    return {
        "name": name,
        "streams": list(runner.stream_names),
        "schedule": getattr(runner.rule, "trigger", None),
        "state": str(state.status),
        "episode": state.episode,
        "updated_at": iso_ms(state.updated_ms),
        "next_run_ms": next_run,
        "next_run_at": iso_ms(next_run),
        "stats": stats,
        "ticks": ({"missed": ticks.missed, "overruns": ticks.overruns, "errors": ticks.errors}
                  if ticks is not None else None),
    }


async def recent_alerts(store: EventSource | None, limit: int,
                        ) -> tuple[list[dict[str, Any]], str | None]:
    """The newest ``limit`` events without their snapshots, and why not if the store failed."""
    if store is None:
        return [], None
    try:
        events = await store.events(limit, snapshots=False)
    except WatcherError as exc:
        log.warning("status: cannot read recent alerts: %s", exc)
        return [], str(exc)
    return [alert_document(event) for event in events], None


def alert_document(event: AlertEventRecord) -> dict[str, Any]:
    doc = asdict(event)
    doc.pop("snapshot", None)
    doc["kind"] = str(event.kind)
    doc["status"] = event.status
    doc["created_at"] = iso_ms(event.created_ms)
    doc["has_snapshot"] = event.snapshot_type is not None
    return doc
