"""``watcher status``: read a running daemon's ``/status`` and print it as tables.

The document is the one :mod:`watcher.observe.snapshot` builds; this module
only fetches and prints it (``--json`` prints it as received).
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import httpx
from rich.console import Console
from rich.table import Table
from rich.text import Text

from watcher.cluster.observe import groups_table, members_table
from watcher.duration import format_duration
from watcher.errors import WatcherError
from watcher.logs import redact

TIMEOUT_S = 5.0
DISABLED_HINT = "is `watcher run` running with status.enabled: true?"


class StatusUnavailable(WatcherError):
    """The daemon's status could not be read."""


def status_url(url: str) -> str:
    """The ``/status`` URL of a listener given by its base URL (or by ``/status`` itself)."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    return url if url.endswith("/status") else f"{url}/status"


def fetch_status(url: str, *, timeout: float = TIMEOUT_S, token: str | None = None,
                 ) -> dict[str, Any]:
    """GET the daemon's ``/status`` document; :class:`StatusUnavailable` says why not.

    ``token`` (``status.token``) is sent as ``Authorization: Bearer``."""
    target = status_url(url)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        response = httpx.get(target, timeout=timeout, headers=headers)
    except (httpx.ConnectError, httpx.ConnectTimeout):
        raise StatusUnavailable(f"nothing answers at {target}: {DISABLED_HINT}") from None
    except httpx.HTTPError as exc:
        raise StatusUnavailable(f"no answer from {target} "
                                f"({type(exc).__name__}: {exc})") from None
    except ValueError as exc:  # httpx.InvalidURL and friends
        raise StatusUnavailable(f"bad status URL {url!r}: {exc}") from None
    if response.status_code == 401:
        raise StatusUnavailable(f"{target} needs the status.token of the daemon's config"
                                + ("; this one was refused" if token else ""))
    if response.status_code != 200:
        raise StatusUnavailable(f"{target} answered HTTP {response.status_code}: is it a "
                                "watcher status listener?")
    try:
        doc = response.json()
    except ValueError:
        doc = None
    if not isinstance(doc, dict) or "streams" not in doc:
        raise StatusUnavailable(f"{target} did not answer with a watcher status document")
    return doc


def print_status(url: str, *, as_json: bool = False, hint: str | None = None,
                 out: TextIO | None = None, err: TextIO | None = None,
                 token: str | None = None) -> int:
    """The ``watcher status`` command: 0 when printed, 1 when the daemon cannot be read."""
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        doc = fetch_status(url, token=token)
    except StatusUnavailable as exc:
        print(redact(f"watcher status: {exc}" + (f" ({hint})" if hint else "")), file=err)
        return 1
    if as_json:
        print(json.dumps(doc, indent=2, ensure_ascii=False), file=out)
        return 0
    console = Console(file=out, width=None if out.isatty() else 160, highlight=False)
    render(doc, console)
    return 0


def render(doc: dict[str, Any], console: Console) -> None:
    console.print(_headline(doc))
    if doc.get("cluster"):
        console.print(members_table(doc["cluster"]))
        console.print(groups_table(doc["cluster"]))
    console.print(streams_table(doc.get("streams") or []))
    console.print(rules_table(doc.get("rules") or []))
    if doc.get("actions"):
        console.print(actions_table(doc["actions"]))
    if doc.get("budgets"):
        console.print(budgets_table(doc["budgets"]))
    console.print(alerts_table(doc.get("alerts") or []))
    if doc.get("alerts_error"):
        console.print(Text(f"recent alerts unavailable: {doc['alerts_error']}", style="red"))


def _headline(doc: dict[str, Any]) -> Text:
    text = Text(f"watcher {doc.get('version', '?')}, up "
                f"{_span(doc.get('uptime_s'))}, ")
    if doc.get("ready"):
        text.append("ready", style="green")
    else:
        waiting = [s.get("name", "?") for s in doc.get("streams") or [] if not s.get("ready")]
        text.append(f"not ready ({', '.join(waiting)})", style="yellow")
    return text


def streams_table(streams: list[dict[str, Any]]) -> Table:
    table = Table(title="Streams", title_justify="left")
    for column in ("Stream", "State", "Stream ID", "Path", "FPS", "Frames", "Lease left"):
        table.add_column(column, no_wrap=True)
    table.add_column("Reconnects", no_wrap=True, justify="right")
    table.add_column("Last error", overflow="fold")
    for s in streams:
        state = Text(str(s.get("state", "?")), style="green" if s.get("ready") else "yellow")
        if not s.get("ready") and s.get("not_ready_reason") and s.get("live"):
            state.append(f" ({s['not_ready_reason']})")
        reconnects = f"{s.get('publisher_reconnects', 0)} pub, {s.get('source_reconnects', 0)} src"
        table.add_row(s.get("name", "?"), state, (s.get("stream_id") or "-")[:8],
                      s.get("publish_path") or "-", f"{s.get('publish_fps', 0):g}",
                      str(s.get("frames_sent", 0)),
                      _span(s.get("lease_remaining_s")), reconnects, s.get("last_error") or "")
    return table


def rules_table(rules: list[dict[str, Any]]) -> Table:
    table = Table(title="Rules", title_justify="left")
    table.add_column("Rule", no_wrap=True)
    table.add_column("State", no_wrap=True)
    for column in ("Evals", "Skipped", "Invalid", "Errors", "Tokens"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("Next run", no_wrap=True)
    for r in rules:
        stats = r.get("stats") or {}
        state = str(r.get("state", "?"))
        style = {"firing": "red", "pending": "yellow"}.get(state, "")
        skipped = sum(stats.get(k, 0) for k in ("skipped_not_ready", "skipped_unchanged",
                                                "skipped_budget"))
        errors = stats.get("model_errors", 0) + stats.get("condition_errors", 0)
        tokens = stats.get("prompt_tokens", 0) + stats.get("completion_tokens", 0)
        table.add_row(r.get("name", "?"), Text(state, style=style),
                      str(stats.get("evaluations", 0)), str(skipped),
                      str(stats.get("invalid_answers", 0)), str(errors), str(tokens),
                      _in(r.get("next_run_at")))
    return table


def budgets_table(budgets: list[dict[str, Any]]) -> Table:
    """Spend against each budget: ``spent/limit`` per cap (``spent`` alone when uncapped)."""
    table = Table(title="Budgets (UTC hour and day)", title_justify="left")
    table.add_column("Budget", no_wrap=True)
    columns = [(unit, period) for period in ("hour", "day") for unit in ("calls", "tokens")]
    for unit, period in columns:
        table.add_column(f"{unit.capitalize()}/{period}", justify="right", no_wrap=True)
    table.add_column("State", no_wrap=True)
    for b in budgets:
        cells = []
        for unit, period in columns:
            spent, limit = b.get(f"{unit}_this_{period}", 0), b.get(f"{unit}_per_{period}")
            cells.append(f"{spent}/{limit}" if limit is not None else str(spent))
        state = (Text(f"spent, resumes {_in(b.get('resumes_at'))}", style="red")
                 if b.get("exhausted") else Text("ok", style="green"))
        table.add_row(f"{b.get('scope', '?')} {b.get('name', '?')}", *cells, state)
    return table


def actions_table(actions: list[dict[str, Any]]) -> Table:
    table = Table(title="Actions", title_justify="left")
    table.add_column("Action", no_wrap=True)
    columns = {"sent": "Sent", "failed": "Failed", "retries": "Retries",
               "pending": "Pending", "dead_letters": "Dead", "summarized": "Summarized"}
    keys = tuple(columns)
    for title in columns.values():
        table.add_column(title, justify="right", no_wrap=True)
    for a in actions:
        table.add_row(a.get("name", "?"), *(str(a[key]) if key in a else "-" for key in keys))
    return table


def alerts_table(alerts: list[dict[str, Any]]) -> Table:
    table = Table(title="Recent alerts", title_justify="left")
    for column in ("Time", "Rule", "Streams", "Kind", "Severity", "Episode", "Notified"):
        table.add_column(column, no_wrap=True)
    for a in alerts:
        kind = str(a.get("kind", "?"))
        table.add_row(_time(a.get("created_at")), a.get("rule", "?"), a.get("stream_key", ""),
                      Text(kind, style="green" if kind == "resolved" else "red"),
                      a.get("severity") or "", str(a.get("episode", "")),
                      "yes" if a.get("notify") else "no")
    return table


def _span(seconds: Any) -> str:
    if not isinstance(seconds, int | float):
        return "-"
    return format_duration(max(0, round(seconds)))


def _in(iso: Any) -> str:
    """A coming time as ``in 12s`` (or the time itself when it is a day or more away)."""
    when = _parse(iso)
    if when is None:
        return "-"
    seconds = (when - datetime.now(UTC)).total_seconds()
    return f"in {_span(seconds)}" if seconds < 86_400 else _time(iso)


def _parse(iso: Any) -> datetime | None:
    if not isinstance(iso, str):
        return None
    try:
        return datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return None


def _time(iso: Any) -> str:
    """An ISO 8601 time as ``2024-05-01 12:00:00Z`` (UTC)."""
    when = _parse(iso)
    if when is None:
        return iso if isinstance(iso, str) else "-"
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
