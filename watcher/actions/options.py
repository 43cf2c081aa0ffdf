"""What every action's options share: resolved notices, rate limit, retry horizon.

:class:`ActionOptionsBase` is the base of each type's options model
(``WebhookOptions``, ``SlackOptions``, ``EmailOptions``); the outbox reads
``send_resolved``, ``rate_limit`` and ``max_age`` from any of them. An
unknown key is reported at its own line with a "did you mean" drawn from the
options of the action's own type (the generic message would suggest the
options of whichever type comes first in the union).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from watcher.configbase import BASE_DIR, Section
from watcher.configerrors import did_you_mean
from watcher.duration import Duration, parse_duration
from watcher.logs import register_secret

_RATE = re.compile(r"\s*([0-9]+)\s*(?:/|per)\s*(\S+)\s*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
PLAIN_HEADERS = frozenset({"content-type", "accept", "user-agent", "content-language"})
"""Header names whose values are not secret (every other header value is)."""


def _rate_shorthand(value: object) -> object:
    """``"10/1m"`` or ``"10 per 1m"`` is ``{count: 10, per: 1m}``."""
    if isinstance(value, str):
        match = _RATE.fullmatch(value)
        if match is None:
            raise ValueError("give {count: 10, per: 1m}, or 10/1m")
        return {"count": int(match.group(1)), "per": parse_duration(match.group(2))}
    return value


class RateLimit(Section):
    """At most ``count`` messages per ``per``; the outbox sends one summary for the rest."""

    count: int = Field(ge=1, description="How many messages may go out per `per`.")
    per: Duration = Field(gt=0, description="The length of the window (1m, 1h).")


class ActionOptionsBase(Section):
    """Options every action type has."""

    send_resolved: bool = Field(
        True, description="Also notify when an alert resolves (false: firing and repeat "
        "notifications only).")
    rate_limit: Annotated[RateLimit | None, BeforeValidator(_rate_shorthand)] = Field(
        None, description="At most {count, per} messages (or `10/1m`); events beyond it are "
        "sent as one summary when the window allows. Default: no limit.")
    max_age: Duration = Field(
        86_400.0, gt=0, description="Keep retrying a failed delivery for this long after its "
        "event, then dead-letter it (default 24h).")

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        names = [info.alias or name for name, info in cls.model_fields.items()]
        known = set(names) | set(cls.model_fields)
        errors: list[InitErrorDetails] = [
            {"type": PydanticCustomError("unknown_key", "unknown key{hint}",
                                         {"hint": did_you_mean(str(key), names)}),
             "loc": (key,), "input": key}
            for key in data if key not in known]
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return data

    def secrets(self) -> list[str]:
        """Every secret value of these options (for the log redactor)."""
        return []

    def register_secrets(self) -> None:
        """Keep :meth:`secrets` out of every log line."""
        for secret in self.secrets():
            register_secret(secret)


def existing_file(value: str | None, info: ValidationInfo) -> str | None:
    """A file option's value as a path relative to the config file; it must exist."""
    if value is None:
        return None
    context = info.context if isinstance(info.context, Mapping) else {}
    base = Path(context.get(BASE_DIR) or Path.cwd())
    path = os.path.normpath(base / Path(value).expanduser())
    if not os.path.isfile(path):
        raise ValueError(f"file not found: {path}")
    return path


def secret_value(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


def check_headers(headers: dict[str, SecretStr]) -> dict[str, SecretStr]:
    """Header names must be HTTP tokens; values must not break the header block."""
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise ValueError(f"{name!r} is not a valid HTTP header name")
        if any(c in value.get_secret_value() for c in "\r\n\x00"):
            raise ValueError(f"the value of header {name!r} contains a line break")
    return headers


def header_secrets(headers: dict[str, SecretStr]) -> list[str]:
    return [value.get_secret_value() for name, value in headers.items()
            if name.lower() not in PLAIN_HEADERS]
