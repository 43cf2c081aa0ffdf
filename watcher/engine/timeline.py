"""The console's query over alert events: filters, newest first, keyset pages.

Runs on the alert store's worker thread (see :meth:`AlertStore.timeline`).
Pages are keyset-paginated by ``(created_ms, id)``, so page N costs the same
as page 1 however many events the store holds; every filter is on an
indexed column or a primary-key lookup.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

STATUSES = ("firing", "resolved")
FEEDBACK_FILTERS = ("real", "false_alarm", "none", "any")
MAX_LIMIT = 500


@dataclass(frozen=True, slots=True)
class TimelineQuery:
    rule: str | None = None
    stream: str | None = None
    severity: str | None = None
    status: str | None = None
    """``firing`` (firing and repeat events) or ``resolved``."""
    since_ms: int | None = None
    until_ms: int | None = None
    silenced: bool | None = None
    feedback: str | None = None
    """``real``, ``false_alarm``, ``none`` (not marked) or ``any`` (marked)."""
    before: tuple[int, int] | None = None
    """``(created_ms, id)`` of the last event of the previous page."""
    limit: int = 50

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        if self.feedback is not None and self.feedback not in FEEDBACK_FILTERS:
            raise ValueError(f"feedback must be one of {', '.join(FEEDBACK_FILTERS)}")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1-{MAX_LIMIT}")


def timeline_rows(db: sqlite3.Connection, columns: str, q: TimelineQuery) -> list[tuple]:
    where: list[str] = []
    params: list[Any] = []
    for column, op, value in (("rule", "=", q.rule), ("severity", "=", q.severity),
                              ("status", "=", q.status), ("created_ms", ">=", q.since_ms),
                              ("created_ms", "<", q.until_ms)):
        if value is not None:
            where.append(f"{column} {op} ?")
            params.append(value)
    if q.stream is not None:  # a stream's events include its cross-camera rules' events
        where.append("(stream_key = ? OR '+' || stream_key || '+' LIKE ? ESCAPE '\\')")
        params += [q.stream, f"%+{_like(q.stream)}+%"]
    if q.silenced is not None:
        where.append("silenced_by IS NOT NULL" if q.silenced else "silenced_by IS NULL")
    if q.feedback in ("real", "false_alarm"):
        where.append("id IN (SELECT event_id FROM feedback WHERE label = ?)")
        params.append(q.feedback)
    elif q.feedback == "none":
        where.append("NOT EXISTS (SELECT 1 FROM feedback f WHERE f.event_id = alert_events.id)")
    elif q.feedback == "any":
        where.append("EXISTS (SELECT 1 FROM feedback f WHERE f.event_id = alert_events.id)")
    if q.before is not None:
        where.append("(created_ms < ? OR (created_ms = ? AND id < ?))")
        params += [q.before[0], q.before[0], q.before[1]]
    sql = f"SELECT {columns} FROM alert_events"
    if where:
        sql += " WHERE " + " AND ".join(where)
    sql += " ORDER BY created_ms DESC, id DESC LIMIT ?"
    return db.execute(sql, (*params, q.limit)).fetchall()


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def episode_times(db: sqlite3.Connection, keys: list[tuple[str, str, int]],
                  ) -> dict[tuple[str, str, int], tuple[int | None, int | None]]:
    """When each (rule, stream_key, episode) fired and resolved (None: not yet).

    One indexed lookup per key: SQLite scans for a row-value ``IN (VALUES ...)``."""
    out: dict[tuple[str, str, int], tuple[int | None, int | None]] = {}
    for key in keys:
        times = dict(db.execute(
            "SELECT kind, MIN(created_ms) FROM alert_events WHERE rule = ? AND stream_key = ?"
            " AND episode = ? AND kind IN ('firing', 'resolved') GROUP BY kind", key))
        out[key] = (times.get("firing"), times.get("resolved"))
    return out
