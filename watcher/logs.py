"""Logging setup, with every known secret redacted from every line.

Code that learns a secret (an API key, a webhook secret, a password, a Slack
URL) calls :func:`register_secret`; the formatters then replace it wherever it
appears in a formatted record, including tracebacks.

Two formats (``watcher --log-format``, or ``$WATCHER_LOG_FORMAT``):

* ``text`` (default), for people: ``2024-05-01 12:00:00,123 INFO    watcher.daemon: ...``
* ``json``, for log pipelines: one object per line with ``timestamp`` (ISO 8601,
  UTC), ``level``, ``logger``, ``message``, ``exception`` and ``stack`` when
  present, and every ``extra={...}`` field of the call. Secrets are redacted
  from every string in it (keys too) before it is serialized, and once more
  from the serialized line.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

REDACTED = "***"
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Never let ``value`` reach a log line (values shorter than 6 characters are ignored)."""
    if value and len(value) >= 6:
        _secrets.add(value)


def redact(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_data(value: Any) -> Any:
    """JSON-ready ``value`` with every secret redacted from every string in it, keys included.

    Mappings become dicts, other collections lists, non-finite floats and
    objects JSON cannot hold their (redacted) ``str``.
    """
    if isinstance(value, str):
        return redact(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, Mapping):
        return {redact(str(key)): redact_data(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_data(item) for item in value]
    return redact(str(value))


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
"""Attributes every LogRecord has: anything else on a record came from ``extra``."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line; secrets redacted in every field."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exception"] = record.exc_text
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in _RECORD_ATTRS and key not in doc and not key.startswith("_"):
                doc[key] = value
        return redact(json.dumps(redact_data(doc), ensure_ascii=False))


def make_formatter(fmt: str = "text") -> logging.Formatter:
    """The redacting formatter of a :data:`LOG_FORMATS` name."""
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return RedactingFormatter(TEXT_FORMAT)
    raise ValueError(f"unknown log format {fmt!r} (use one of {', '.join(LOG_FORMATS)})")


def configure_logging(level: str = "INFO", fmt: str = "text",
                      stream: TextIO | None = None) -> None:
    """Send every log record to ``stream`` (default: stderr) in ``fmt`` (text or json)."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aioice", "aiortc", "httpx", "httpcore", "uvicorn.access", "uvicorn.error",
                  "apscheduler.executors",  # logs every job run at INFO
                  "alembic"):  # the store logs one line per schema upgrade instead
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
