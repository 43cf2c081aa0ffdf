"""What every config section shares: the ``Section`` base, validation-context keys,
and finding secrets in URLs.

Kept apart from :mod:`watcher.config` so that section models living elsewhere
(rules, actions, status) can derive from :class:`Section` while
:mod:`watcher.config` imports them: no import cycle.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote

from pydantic import BaseModel, ConfigDict

BASE_DIR = "base_dir"
"""Validation-context key: the directory relative file sources resolve against."""
DEFER_CHECKS = "defer_checks"
"""Validation-context key: leave :meth:`WatcherConfig.check_references` to the caller."""

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_SECRET_PARAM = re.compile(r"(?i).*(token|key|secret|pass|pwd|auth|sig|credential).*")
_MASK = "***"


class Section(BaseModel):
    """Base of every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid")


def redact_source(source: str) -> str:
    """``source`` with any URL password, lone user token or secret-looking query value masked."""
    if _SCHEME.match(source) is None:
        return source
    head, sep, rest = source.partition("://")
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{_MASK}@{hostport}" if colon else f"{_MASK}@{hostport}"
    tail = _redact_query(tail)
    return f"{head}{sep}{netloc}{slash}{tail}"


def source_secrets(source: str) -> list[str]:
    """The secrets in a source URL (password, lone user token, secret query values)."""
    if _SCHEME.match(source) is None:
        return []
    rest = source.partition("://")[2]
    netloc, _, tail = rest.partition("/")
    userinfo, at, _ = netloc.rpartition("@")
    found = []
    if at:
        user, colon, password = userinfo.partition(":")
        found.append(password if colon else user)
    query = tail.partition("?")[2].partition("#")[0]
    found += [value for key, value in parse_qsl(query) if _SECRET_PARAM.fullmatch(key)]
    found += [unquote(secret) for secret in found]
    return list(dict.fromkeys(secret for secret in found if secret))


def _redact_query(tail: str) -> str:
    path, question, rest = tail.partition("?")
    if not question:
        return tail
    query, hash_, fragment = rest.partition("#")
    pairs = []
    for pair in query.split("&"):
        key, equals, value = pair.partition("=")
        pairs.append(f"{key}={_MASK}" if equals and value and _SECRET_PARAM.fullmatch(key)
                     else pair)
    return f"{path}?{'&'.join(pairs)}{hash_}{fragment}"
