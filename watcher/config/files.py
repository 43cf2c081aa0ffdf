"""The files a config names: reading them, and naming them in messages."""

from __future__ import annotations

from pathlib import Path

from watcher.errors import ConfigError

RELATIVE_HINT = " (relative paths are resolved against the config file's directory)"


def read_text(path: Path, name: str) -> str:
    """The text of the file at ``path`` (called ``name`` in messages), or a ConfigError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{name}: no such file") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"{name}: cannot read: {reason}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{name}:{line}: not UTF-8 text") from None


def show_path(path: Path) -> str:
    """``path`` as a message shows it: quoted when unprintable, cut when very long."""
    text = str(path)
    if text.isprintable() and len(text) <= 200:
        return text
    text = repr(text)
    return text if len(text) <= 200 else text[:197] + "..."
