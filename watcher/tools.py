"""Operator tools: ``watcher test-rule`` and ``watcher alerts``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from watcher.actions.templates import iso
from watcher.config import WatcherConfig
from watcher.daemon.api import api_client
from watcher.engine.ask import build_request
from watcher.engine.runner import RuleRunner
from watcher.keeper.keeper import StreamKeeper
from watcher.store import AlertEventRecord, AlertStore, DeliveryRecord, DeliveryStatus
from watcher.store.database import MEMORY

LIVE_TIMEOUT_S = 60.0
ANSWERED = ("answered", "unchanged")
"""Outcomes of a rule that was evaluated; any other (a model error, an answer that does
not fit the schema, a condition that cannot be evaluated) makes test-rule exit 1."""


async def test_rule(config: WatcherConfig, rule_name: str, out: TextIO | None = None) -> int:
    """Evaluate one rule once against its live stream(s); print request, answer, verdict.

    It asks once the streams are live (their first frame reached the API) and
    the rule's window (or its confirm block's, if longer) has filled since.
    Returns 0 when the rule was evaluated, 1 when it could not be (the model
    failed, the answer was invalid, ...), 2 for an unknown rule.
    """
    out = out or sys.stdout
    rule = next((r for r in config.rules if r.name == rule_name), None)
    if rule is None:
        known = ", ".join(r.name for r in config.rules) or "none"
        print(f"no rule named {rule_name!r} (rules: {known})", file=sys.stderr)
        return 2
    async with contextlib.AsyncExitStack() as stack:
        client, http = await stack.enter_async_context(api_client(config))
        keepers: dict[str, StreamKeeper] = {}
        for name in rule.stream_names:
            keeper = StreamKeeper(config.stream(name), client, http=http)
            keepers[name] = keeper
            stack.push_async_callback(keeper.stop)
            keeper.start()
        started = time.monotonic()
        for keeper in keepers.values():
            print(f"waiting for stream {keeper.name} to go live...", file=sys.stderr)
            remaining = LIVE_TIMEOUT_S - (time.monotonic() - started)
            try:
                await keeper.wait_live(max(1.0, remaining))
            except TimeoutError:
                print(f"stream {keeper.name} is not live after {LIVE_TIMEOUT_S:.0f} s "
                      f"({keeper.state}: {keeper.last_error or 'no error'})", file=sys.stderr)
                return 1
        fill_s = max(rule.window or 0.0, (rule.confirm.window or 0.0) if rule.confirm else 0.0)
        if fill_s:
            # The first frame has arrived; the window is full one window later.
            print(f"waiting {fill_s:g} s for the {fill_s:g} s window to fill...",
                  file=sys.stderr)
            await asyncio.sleep(fill_s)
        runner = RuleRunner(rule, default_model=config.overshoot.model, client=client,
                            streams=keepers, store=None, clock=keeper.clock)
        ids = [keepers[n].stream_id or "" for n in rule.stream_names]
        request = build_request(runner.primary.question, ids, rule.stream_names,
                                runner.primary.question.model)
        print("request:", file=out)
        print(json.dumps(request.model_dump(exclude_none=True), indent=2), file=out)
        result = await runner.evaluate(record=False)
        print(f"\noutcome: {result.outcome}" + (f" ({result.detail})" if result.detail else "")
              + f"  trigger: {result.trigger}", file=out)
        if result.answer is not None:
            print(f"model: {result.answer.model}  tokens: {result.answer.prompt_tokens}+"
                  f"{result.answer.completion_tokens}  latency: "
                  f"{result.answer.latency_s * 1000:.0f} ms", file=out)
            print(f"answer: {result.answer.raw}", file=out)
        print(f"when: {runner.primary.condition.expr}  ->  {result.matched}", file=out)
        if result.confirm is not None:
            print(f"confirm answer: {result.confirm.raw}  ->  {result.confirmed}", file=out)
        if result.outcome not in ANSWERED:
            print(f"watcher test-rule: the rule could not be evaluated ({result.outcome})",
                  file=sys.stderr)
            return 1
        return 0


async def list_alerts(config: WatcherConfig, *, limit: int, rule: str | None, as_json: bool,
                      dead: bool = False, out: TextIO | None = None,
                      now_ms: int | None = None) -> int:
    """Print events newest first, each with its delivery status per action.

    ``dead``: only events with a dead-lettered delivery.
    """
    out = out or sys.stdout
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    state = config.state
    path = state.path if state.url is None else None
    if path is not None and (path == MEMORY or not Path(path).is_file()):  # noqa: ASYNC240
        why = ("state.path is :memory:, kept only while `watcher run` runs" if path == MEMORY
               else f"{path} does not exist yet (`watcher run` creates it)")
        print(f"no alert state: {why}", file=sys.stderr)
        if as_json:
            print("[]", file=out)
        return 0
    store = AlertStore(state.location, read_only=True)
    try:
        events = await store.events(limit=limit, rule=rule, snapshots=False, dead_only=dead)
        deliveries = await store.deliveries_for_events(e.id for e in events if e.id is not None)
    finally:
        await store.close()
    if as_json:
        print(json.dumps([event_json(e, deliveries.get(e.id or 0, []), now) for e in events],
                         indent=2), file=out)
        return 0
    if not events:
        print("no dead letters" if dead else "no alert events", file=out)
        return 0
    print(f"{'id':>5}  {'time (UTC)':<19}  {'rule':<24} {'stream':<16} {'status':<9} "
          f"{'severity':<8} answer", file=out)
    for e in events:
        notified = "" if e.notify else " (suppressed)"
        print(f"{e.id:>5}  {_time(e.created_ms):<19}  {e.rule:<24} {e.stream_key:<16} "
              f"{e.status + notified:<9} {e.severity or '-':<8} {_short(e.answer)}", file=out)
        for d in deliveries.get(e.id or 0, []):
            print(f"{'':>7}-> {d.action}: {delivery_text(d, now)}", file=out)
    return 0


def event_json(event: AlertEventRecord, deliveries: list[DeliveryRecord] | None = None,
               now_ms: int | None = None) -> dict[str, Any]:
    return {
        "id": event.id, "event_key": event.event_key, "rule": event.rule,
        "stream": event.stream_key, "status": event.status, "kind": str(event.kind),
        "episode": event.episode, "notify": event.notify, "severity": event.severity,
        "labels": event.labels, "answer": event.answer, "urls": event.urls,
        "stream_ids": event.stream_ids, "stream_time_ms": event.stream_time_ms,
        "model": event.model, "usage": event.usage, "created_at": iso(event.created_ms),
        "created_ms": event.created_ms,
        "deliveries": [delivery_json(d, now_ms) for d in deliveries or []],
    }


def delivery_json(d: DeliveryRecord, now_ms: int | None = None) -> dict[str, Any]:
    return {
        "action": d.action, "status": str(d.status), "attempts": d.attempts,
        "idempotency_key": d.idempotency_key,
        "next_attempt_ms": d.next_attempt_ms if d.status is DeliveryStatus.PENDING else None,
        "sent_ms": d.sent_ms, "updated_ms": d.updated_ms, "last_error": d.last_error,
        "summary_id": d.summary_id,
        "text": delivery_text(d, now_ms) if now_ms is not None else str(d.status),
    }


def delivery_text(d: DeliveryRecord, now_ms: int) -> str:
    """``sent``, ``dead (550 ...)``, ``pending (attempt 3, next in 40s)``, ..."""
    if d.status is DeliveryStatus.DEAD:
        return f"dead ({_one_line(d.last_error or 'no error recorded')})"
    if d.status is DeliveryStatus.SUMMARIZED:
        return f"summarized ({d.summary_id})"
    if d.status is DeliveryStatus.PENDING:
        if d.attempts == 0:
            return "pending"
        wait = max(0, round((d.next_attempt_ms - now_ms) / 1000))
        error = f": {_one_line(d.last_error)}" if d.last_error else ""
        return f"pending (attempt {d.attempts + 1}, next in {wait}s){error}"
    if d.status is DeliveryStatus.DELIVERING:
        return f"delivering (attempt {d.attempts})"
    return str(d.status)


def _time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")



def _one_line(text: str, limit: int = 120) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _short(answer: Any, limit: int = 60) -> str:
    text = json.dumps(answer, separators=(",", ":")) if answer is not None else "-"
    return text if len(text) <= limit else text[: limit - 1] + "…"
