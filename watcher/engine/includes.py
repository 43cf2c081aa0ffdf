"""Where rules come from: the main file, or a rule pack brought in by an ``include:`` entry.

An entry may bind the pack's rules to streams and actions and prefix their
names (see :mod:`watcher.engine.rules` for the YAML).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import BeforeValidator, Field, ValidationInfo, field_validator

from watcher.configbase import Section
from watcher.engine.rulechecks import stream_or_streams, text
from watcher.yamlfile import Loc

IN_PACK = "in_pack"
"""Validation-context key: the rules being validated come from a rule pack."""

_PREFIX = re.compile(r"[a-z0-9][a-z0-9_-]{0,40}")


@dataclass(frozen=True, slots=True)
class RuleOrigin:
    """Where a rule was written: set by :func:`watcher.config.parse_config`."""

    file: str
    """The file as messages name it (the main config, or a pack)."""
    line: int
    """The line of the rule's list item."""
    loc: Loc
    """The rule's location in that file, e.g. ``("rules", 2)``."""
    include: int | None = None
    """Index of the ``include:`` entry that brought it in (None: the main file)."""
    bound: frozenset[str] = frozenset()
    """Keys the include entry set for it (``stream``, ``streams``, ``actions``)."""

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"


def _include_entry(value: object) -> object:
    """A plain string entry is ``{path: ...}``."""
    return {"path": value} if isinstance(value, str) else value


class IncludeConfig(Section):
    """One ``include:`` entry: a rule pack (file or glob), optionally bound to streams."""

    path: str = Field(description="A rule pack file, or a glob of them (rules/*.yaml), "
                      "relative to the config file's directory.")
    stream: str | None = Field(None, min_length=1, description="Ask every rule of the pack "
                               "about this stream (replaces the rules' own stream/streams).")
    streams: list[str] | None = Field(
        None, min_length=1, description="Ask every rule of the pack about these streams "
        "together (a cross-camera question); instead of `stream`.")
    actions: list[str] | None = Field(
        None, description="Notify these actions from every rule of the pack (replaces the "
        "rules' own actions).")
    name_prefix: str = Field("", description="Put before every rule name of the pack, to "
                             "include one pack twice (garage-).")

    @field_validator("path")
    @classmethod
    def _path_not_blank(cls, value: str) -> str:
        return text(value, "give a file or a glob such as rules/*.yaml")

    @field_validator("streams")
    @classmethod
    def _one_way_to_name_streams(cls, value: list[str] | None, info: ValidationInfo,
                                 ) -> list[str] | None:
        return stream_or_streams(value, info)

    @field_validator("name_prefix")
    @classmethod
    def _prefix_is_slug(cls, value: str) -> str:
        if value and not _PREFIX.fullmatch(value):
            raise ValueError("must be lowercase letters, digits, '-' and '_' (e.g. garage-)")
        return value

    def bindings(self) -> dict[str, object]:
        """The rule keys this entry sets on every rule of its pack."""
        out: dict[str, object] = {}
        if self.stream is not None:
            out["stream"] = self.stream
        if self.streams is not None:
            out["streams"] = list(self.streams)
        if self.actions is not None:
            out["actions"] = list(self.actions)
        return out

    def bind(self, rule: object) -> object:
        """A pack rule's raw mapping with this entry's bindings and prefix applied."""
        if not isinstance(rule, dict):
            return rule
        rule = dict(rule)
        bindings = self.bindings()
        if "stream" in bindings or "streams" in bindings:
            rule.pop("stream", None)
            rule.pop("streams", None)
        rule.update(bindings)
        if self.name_prefix and isinstance(rule.get("name"), str):
            rule["name"] = self.name_prefix + rule["name"]
        return rule


IncludeEntry = Annotated[IncludeConfig, BeforeValidator(_include_entry)]
