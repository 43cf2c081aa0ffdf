"""Message templates: sandboxed Jinja2, and the context every template sees.

Templates come from the config file, values from the model's answers, so
both are kept on a short leash: :class:`ImmutableSandboxedEnvironment` (no
``__class__``/``__globals__`` walks, no calls to mutating methods, ranges and
repetitions bounded) with :class:`StrictUndefined` (a misspelled name is an
error, not an empty string). :func:`compile_template` runs at config load, so a
syntax error fails ``watcher check`` with the option's file:line; an error
while rendering becomes a permanent :class:`DeliveryError` naming the action,
never a crash of the delivery loop. Escaping is per flavor: ``text`` none,
``html`` autoescaped, ``slack`` ``&<>`` escaped in ``{{ ... }}`` output only
(so a model's answer cannot ``<!channel>``, while literal template text can).

The context of one event (:func:`event_context`)::

    rule, stream, status (firing|resolved), kind (firing|resolved|repeat),
    severity, labels, answer (dict), description (answer["description"] or None),
    created_at, started_at, resolved_at (ISO 8601 UTC or None), time (readable UTC),
    episode, event_id, event_key, urls, stream_ids, stream_time_ms, model, usage,
    prompt, action, has_snapshot, persisted, event_url

``persisted`` is False for an event delivered best effort while the state store
was unavailable (it has no ``event_id`` yet; it is recorded once the store is back).

``event_url`` is the event's page in the console when ``status.public_url`` is
set (recorded with the event as ``extra["console_url"]``), else None.

``started_at`` is the start of the episode when the engine recorded it
(``extra["started_ms"]``), else the event's time for a ``firing`` event and
None otherwise; ``resolved_at`` is the event's time for a ``resolved`` event.

A rate-limit summary (:func:`summary_context`) has ``status`` ``summary``,
``count``, ``events`` (a list of event contexts), ``rules``, ``streams``,
``rule``/``stream`` (when all events share one, else None), ``severity`` (the
highest), ``first_at``, ``last_at``, ``time`` and ``action``.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from watcher.actions.base import DeliveryError
from watcher.engine.store import AlertEventRecord

Flavor = Literal["text", "html", "slack"]

DEFAULT_TITLE = "[{{ severity|upper }}] {{ rule }} on {{ stream }}: {{ status }}"
"""Subject lines, webhook ``title``, Alertmanager ``summary``."""

SUMMARY_TITLE = ("[{{ severity|upper }}] {{ count }} alert events{% if rule %} of {{ rule }}"
                 "{% endif %} held back by the rate limit")
"""The title of rate-limit summaries (custom ``title`` templates are for single events)."""

DEFAULT_BODY = """\
{% if status == 'summary' %}
{{ count }} alert events held back by the rate limit:
{% for e in events %}
- [{{ e.severity|upper }}] {{ e.rule }} on {{ e.stream }}: {{ e.status }} at {{ e.time }}
{% endfor %}
{% else %}
{{ rule }} is {{ status }} on {{ stream }}{% if description %}: {{ description }}{% endif %}

{% if status == 'resolved' %}
Resolved at {{ time }}.
{% else %}
Firing since {{ started_at or created_at }}.
{% endif %}
{% for key, value in answer.items() if key != 'description' %}
{{ key }}: {{ value|plain }}
{% endfor %}
{% if event_url %}
Evidence: {{ event_url }}
{% endif %}
{% if not persisted %}
(Not recorded yet: the alert state store is unavailable.)
{% endif %}
{% endif %}
"""
"""Plain text bodies (email text part, Slack text, webhook ``text``)."""

DEFAULT_HTML = """\
<!doctype html>
<html><body style="font-family: sans-serif">
{% if status == 'summary' %}
<h2>{{ count }} alert events held back by the rate limit</h2>
<ul>{% for e in events %}
<li>[{{ e.severity|upper }}] <b>{{ e.rule }}</b> on {{ e.stream }}: {{ e.status }} at {{ e.time }}\
</li>{% endfor %}
</ul>
{% else %}
<h2>{{ title }}</h2>
{% if description %}<p>{{ description }}</p>{% endif %}
<table cellpadding="4">
<tr><th align="left">Stream</th><td>{{ stream }}</td></tr>
<tr><th align="left">Status</th><td>{{ status }}</td></tr>
<tr><th align="left">Severity</th><td>{{ severity }}</td></tr>
<tr><th align="left">Time</th><td>{{ time }}</td></tr>
{% for key, value in answer.items() if key != 'description' %}
<tr><th align="left">{{ key }}</th><td>{{ value|plain }}</td></tr>
{% endfor %}
</table>
{% if snapshot_cid %}<p><img src="cid:{{ snapshot_cid }}" alt="snapshot" \
style="max-width: 100%"></p>{% endif %}
{% if event_url %}<p><a href="{{ event_url }}">See the evidence in watcher</a></p>{% endif %}
<p style="color: #888; font-size: small">event {{ event_id or event_key }}\
{% if model %} &middot; model {{ model }}{% endif %}</p>
{% endif %}
</body></html>
"""
"""The HTML part of emails (autoescaped)."""

MAX_OUTPUT = 100_000
"""Longest string or list a template may build by ``*`` (characters or items)."""
MAX_POWER = 1_000
_SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}


class _Sandbox(ImmutableSandboxedEnvironment):
    """The immutable sandbox, also bounding ``'x' * 10**9`` and ``9 ** 9 ** 9``."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator_: str, left: Any, right: Any) -> Any:
        if operator_ == "**":
            if isinstance(right, int | float) and abs(right) > MAX_POWER:
                raise SecurityError("exponent too large")
            return operator.pow(left, right)
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, str | list | tuple) and isinstance(times, int) \
                    and len(seq) * times > MAX_OUTPUT:
                raise SecurityError("repeated sequence too long")
        return operator.mul(left, right)


def _slack_escape(value: Any) -> Any:
    """Slack's three control characters, escaped in what ``{{ ... }}`` prints."""
    if value is None or isinstance(value, bool | int | float):
        return value
    return str(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def plain(value: Any) -> Any:
    """An answer value as people write it: yes/no, not True/False; a dash for nothing."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(str(plain(v)) for v in value) or "-"
    return value


def _env(**kwargs: Any) -> _Sandbox:
    env = _Sandbox(undefined=StrictUndefined, trim_blocks=True, keep_trailing_newline=False,
                   **kwargs)
    env.filters["plain"] = plain
    return env


_ENVS: dict[str, _Sandbox] = {
    "text": _env(autoescape=False),
    "html": _env(autoescape=True),
    "slack": _env(autoescape=False, finalize=_slack_escape),
}


def compile_template(text: str, flavor: Flavor = "text") -> Template:
    """``text`` compiled; a ``ValueError`` naming the template line if it is not valid."""
    try:
        return _ENVS[flavor].from_string(text)
    except TemplateSyntaxError as exc:
        raise ValueError(f"template syntax error on line {exc.lineno} of the template: "
                         f"{exc.message}") from None


def check_template(text: str | None) -> str | None:
    """Pydantic validator body for a template option: compile it (any flavor) or fail."""
    if text is not None:
        compile_template(text)
    return text


def render(template: Template, context: Mapping[str, Any], *, action: str, what: str) -> str:
    """``template`` rendered; any failure is a permanent :class:`DeliveryError`.

    ``action`` and ``what`` (``title``, ``body``...) name the template in the
    message. Retrying cannot fix a template, hence permanent.
    """
    try:
        return template.render(context)
    except SecurityError as exc:
        reason = f"unsafe operation ({exc})"
    except TemplateError as exc:
        reason = exc.message or type(exc).__name__
    except Exception as exc:  # a template can raise anything (1/0, int('x'))
        reason = f"{type(exc).__name__}: {exc}"
    raise DeliveryError(f"action {action!r}: cannot render its {what} template: {reason}"[:400],
                        permanent=True)


def iso(ms: int | None) -> str | None:
    """Milliseconds since the epoch as ISO 8601 UTC (``2024-05-01T12:00:00.000Z``)."""
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")


def readable_time(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def answer_fields(answer: Any) -> dict[str, Any]:
    """The answer as a dict: itself, ``{}`` if none, ``{"value": x}`` if not an object."""
    if answer is None:
        return {}
    return dict(answer) if isinstance(answer, Mapping) else {"value": answer}


def started_ms(event: AlertEventRecord) -> int | None:
    started = event.extra.get("started_ms") if isinstance(event.extra, Mapping) else None
    if isinstance(started, int) and not isinstance(started, bool):
        return started
    return event.created_ms if str(event.kind) == "firing" else None


def event_context(event: AlertEventRecord, action_name: str) -> dict[str, Any]:
    """The documented template context of one event (see the module docstring)."""
    answer = answer_fields(event.answer)
    description = answer.get("description")
    extra = event.extra if isinstance(event.extra, Mapping) else {}
    return {
        "rule": event.rule,
        "stream": event.stream_key,
        "status": event.status,
        "kind": str(event.kind),
        "severity": event.severity or "warning",
        "labels": dict(event.labels),
        "answer": answer,
        "description": None if description in (None, "") else str(description),
        "created_at": iso(event.created_ms),
        "started_at": iso(started_ms(event)),
        "resolved_at": iso(event.created_ms) if event.status == "resolved" else None,
        "time": readable_time(event.created_ms),
        "episode": event.episode,
        "event_id": event.id,
        "event_key": event.event_key,
        "urls": list(event.urls),
        "stream_ids": list(event.stream_ids),
        "stream_time_ms": event.stream_time_ms,
        "model": event.model,
        "usage": dict(event.usage) if event.usage else None,
        "prompt": extra.get("prompt"),
        "action": action_name,
        "has_snapshot": event.snapshot is not None,
        "persisted": event.id is not None,
        "event_url": event_url(event),
    }


def event_url(event: AlertEventRecord) -> str | None:
    """The event's console page, when the daemon has a ``status.public_url``."""
    extra = event.extra if isinstance(event.extra, Mapping) else {}
    base = extra.get("console_url")
    if not isinstance(base, str) or not base or event.id is None:
        return None
    return f"{base.rstrip('/')}/events/{event.id}"


def highest_severity(severities: Iterable[str]) -> str:
    return max(severities, key=lambda s: _SEVERITY_RANK.get(s, 1), default="warning")


def summary_context(events: Sequence[AlertEventRecord], action_name: str) -> dict[str, Any]:
    """The template context of a rate-limit summary standing for ``events``."""
    contexts = [event_context(e, action_name) for e in events]
    rules = list(dict.fromkeys(c["rule"] for c in contexts))
    streams = list(dict.fromkeys(c["stream"] for c in contexts))
    times = [e.created_ms for e in events]
    return {
        "status": "summary",
        "count": len(contexts),
        "events": contexts,
        "rules": rules,
        "streams": streams,
        "rule": rules[0] if len(rules) == 1 else None,
        "stream": streams[0] if len(streams) == 1 else None,
        "severity": highest_severity(c["severity"] for c in contexts),
        "first_at": iso(min(times)) if times else None,
        "last_at": iso(max(times)) if times else None,
        "time": readable_time(max(times)) if times else None,
        "action": action_name,
    }
