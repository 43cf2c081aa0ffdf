"""``watcher silence add|list|expire`` and ``watcher alerts --feedback``, on the state file.

They write and read ``state.path`` directly, as ``watcher alerts`` does; a
running daemon re-reads silences every few seconds
(:data:`~watcher.engine.silences.REFRESH_S`), so a silence added here takes
effect without a restart.

Feedback export: one JSON object per line, a ground-truth label per marked
event, in the labels format that backtests read::

    {"stream": "lobby", "start": 12.0, "end": 20.0, "label": "event",
     "rule": "lobby-motion", "note": "...", "start_at": "2026-...Z",
     "end_at": "2026-...Z", "stream_id": "6318abe7-...", "event_id": 7, "by": "ana"}

``label`` is ``event`` (marked real) or ``false_alarm``. ``start``/``end`` are
seconds on the stream's own clock (the API's ``stream_time_ms``: seconds since
the stream's first frame, the clock of ``ovs://...?timestamp_ms``; null when the
event has none); ``start_at``/``end_at`` are the same instants in UTC, which
stay true when a stream is re-created and its clock restarts (``stream_id``
says which stream it was). The interval runs from the start of the first
matching answer's window to the time the alert resolved (the event's own
time while it has not).
"""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from watcher.clock import SystemClock
from watcher.config import WatcherConfig
from watcher.console.api import new_silence_id, silence_document
from watcher.engine.rules import MEMORY
from watcher.engine.silences import Silence, SilenceError, matchers_from_options, validate
from watcher.engine.store import AlertEventRecord, AlertStore, StoreError
from watcher.observe.snapshot import iso_ms
from watcher.store.reviews import Feedback

FEEDBACK_LABEL = {"real": "event", "false_alarm": "false_alarm"}


async def silence_add(config: WatcherConfig, *, rule: str | None, stream: str | None,
                      labels: list[str], severity: str | None, duration_s: float,
                      comment: str, created_by: str | None = None,
                      out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    now = SystemClock().now_ms()
    who = created_by or _user()
    try:
        matchers = matchers_from_options(rule=rule, stream=stream, severity=severity,
                                         labels=labels)
        silence = Silence(new_silence_id(), matchers, now, now + round(duration_s * 1000), who,
                          comment, now)
        validate(silence.matchers, silence.starts_ms, silence.ends_ms, comment, who)
    except SilenceError as exc:
        print(f"watcher silence add: {exc}", file=err)
        return 2
    async with AlertStore(config.state.path) as store:
        await store.add_silence(silence)
    print(silence.id, file=out)
    return 0


async def silence_list(config: WatcherConfig, *, as_json: bool,
                       out: TextIO | None = None) -> int:
    out = out or sys.stdout
    now = SystemClock().now_ms()
    store = _reader(config, "watcher silence list")
    if store is None:
        print("[]" if as_json else "no silences", file=out)
        return 0
    try:
        docs = [silence_document(s, now) for s in await store.silences()]
    except StoreError as exc:
        print(f"watcher silence list: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    if as_json:
        print(json.dumps(docs, indent=2, ensure_ascii=False), file=out)
        return 0
    if not docs:
        print("no silences", file=out)
        return 0
    print(f"{'id':<12}  {'state':<8} {'ends (UTC)':<20} {'by':<12} matchers / comment", file=out)
    for d in docs:
        ends = (d["ends_at"] or "")[:19].replace("T", " ")
        print(f"{d['id']:<12}  {d['state']:<8} {ends:<20} {d['created_by'][:12]:<12} "
              f"{d['matchers_text']}{'  # ' + d['comment'] if d['comment'] else ''}", file=out)
    return 0


async def silence_expire(config: WatcherConfig, silence_id: str, *,
                         out: TextIO | None = None, err: TextIO | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    async with AlertStore(config.state.path) as store:
        done = await store.expire_silence(silence_id, SystemClock().now_ms())
    if not done:
        print(f"watcher silence expire: no active silence {silence_id!r}", file=err)
        return 1
    print(f"silence {silence_id} expired", file=out)
    return 0


async def export_feedback(config: WatcherConfig, *, out: TextIO | None = None) -> int:
    """Every feedback mark as one JSON line (see the module docstring)."""
    out = out or sys.stdout
    store = _reader(config, "watcher alerts")
    if store is None:
        return 0
    try:
        marks = await store.feedback()
        events = await store.events_by_ids(list(marks))
        times = await store.episode_times({(e.rule, e.stream_key, e.episode) for e in events})
    except StoreError as exc:
        print(f"watcher alerts: {exc}", file=sys.stderr)
        return 1
    finally:
        await store.close()
    for event in events:
        assert event.id is not None
        resolved = times.get((event.rule, event.stream_key, event.episode), (None, None))[1]
        print(json.dumps(feedback_label(event, marks[event.id], resolved), ensure_ascii=False),
              file=out)
    return 0


def _reader(config: WatcherConfig, command: str) -> AlertStore | None:
    """The state file opened read-only, or None (said on stderr) when there is none yet."""
    path = config.state.path
    if path == MEMORY or not Path(path).is_file():
        why = ("state.path is :memory:, kept only while `watcher run` runs" if path == MEMORY
               else f"{path} does not exist yet (`watcher run` creates it)")
        print(f"{command}: no alert state: {why}", file=sys.stderr)
        return None
    try:
        return AlertStore(path, read_only=True)
    except StoreError as exc:
        print(f"{command}: {exc}", file=sys.stderr)
        return None


def feedback_label(event: AlertEventRecord, mark: Feedback, resolved_ms: int | None,
                   ) -> dict[str, Any]:
    extra = event.extra or {}
    first = int(extra.get("first_match_ms") or event.created_ms)
    start_ms = min(first, event.created_ms) - int(extra.get("window_ms") or 0)
    end_ms = resolved_ms if resolved_ms is not None and resolved_ms >= event.created_ms else (
        event.created_ms)
    stream_time = event.stream_time_ms

    def on_stream_clock(ms: int) -> float | None:
        if stream_time is None:
            return None
        return round(max(0, stream_time - (event.created_ms - ms)) / 1000, 3)

    streams = list(extra.get("streams") or event.stream_key.split("+"))
    return {"stream": streams[0] if len(streams) == 1 else event.stream_key,
            "start": on_stream_clock(start_ms), "end": on_stream_clock(end_ms),
            "label": FEEDBACK_LABEL[mark.label], "rule": event.rule, "note": mark.note,
            "start_at": iso_ms(start_ms), "end_at": iso_ms(end_ms),
            "stream_id": event.stream_ids[0] if event.stream_ids else None,
            "event_id": event.id, "by": mark.created_by}


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "cli"
