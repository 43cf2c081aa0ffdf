"""Rule packs (``include:``): reading the files an entry names, and merging their rules.

Each pack is validated on its own as a :class:`~watcher.engine.rules.RulePack`
(errors name the pack's file:line); its rules join ``rules``, each remembering
where it was written (:class:`~watcher.engine.rules.RuleOrigin`), so that a
problem found later across sections is reported in the right file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from glob import glob
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from watcher.config.files import RELATIVE_HINT, read_text, show_path
from watcher.configerrors import validation_messages
from watcher.engine.includes import IN_PACK, IncludeConfig, RuleOrigin
from watcher.engine.rules import RulePack
from watcher.errors import ConfigError
from watcher.yamlfile import Loc, YamlDocument, read_yaml

if TYPE_CHECKING:
    from watcher.config.root import WatcherConfig

MAX_PACK_FILES = 500
_GLOB_CHARS = re.compile(r"[*?\[]")
_PACK_SUFFIXES = (".yaml", ".yml")
_MAIN_FILE_WORDS = "a mapping of sections such as `overshoot:` and `streams:`"
_PACK_WORDS = "a rule pack: a mapping with a `rules:` list"


def included_files(config: WatcherConfig, config_path: Path) -> list[Path]:
    """The files the ``include:`` entries of ``config`` name right now (globs expanded).

    For noticing change on disk: a new file that a glob starts to match counts too.
    """
    base = config_path.parent
    files: list[Path] = []
    for entry in config.include:
        expanded = os.path.expanduser(entry.path)
        full = Path(os.path.normpath(base / expanded))
        files += _glob_packs(full, config_path) if _GLOB_CHARS.search(expanded) else [full]
    return files


def _glob_packs(pattern: Path, main: Path) -> list[Path]:
    """Rule pack files matching ``pattern``, sorted, never the main config file itself."""
    main_file = os.path.normpath(main)
    try:
        return sorted(
            Path(match) for match in glob(str(pattern), recursive=True)
            if match.endswith(_PACK_SUFFIXES) and os.path.isfile(match)
            and os.path.normpath(match) != main_file)
    except (OSError, ValueError):
        return []


class PackLoader:
    """Reads the rule packs of one config, merging their rules and keeping every problem
    with the file (by order of first mention) and line it belongs to."""

    def __init__(self, config: WatcherConfig, doc: YamlDocument, base: Path,
                 environ: Mapping[str, str], context: dict[str, object]) -> None:
        self.config = config
        self.main = doc
        self.base = base
        self.environ = environ
        self.context = {**context, IN_PACK: True}
        self.docs: dict[str, YamlDocument | None] = {doc.name: doc}
        self.found: list[tuple[int, int, str]] = [(0, line, text) for line, text in doc.problems]

    def include(self, index: int, entry: IncludeConfig) -> None:
        loc: Loc = ("include", index, "path")
        try:
            files = self._files(entry.path)
        except ValueError as exc:
            self._add(self.main, loc, str(exc))
            return
        for path, shown in files:
            self._pack(index, entry, path, shown)

    def report(self, loc: Loc, message: str) -> None:
        """A :meth:`WatcherConfig.check_references` problem, placed in its rule's file."""
        rules = self.config.rules
        index = loc[1] if len(loc) >= 2 and loc[0] == "rules" else None
        origin = rules[index].origin if isinstance(index, int) and index < len(rules) else None
        if origin is not None:
            rest = loc[2:]
            if origin.include is not None and rest and rest[0] in origin.bound:
                self._add(self.main, ("include", origin.include, *rest), message)
                return
            doc = self.docs.get(origin.file)
            if doc is not None:
                self._add(doc, (*origin.loc, *rest), message)
                return
        self._add(self.main, loc, message)

    def messages(self) -> list[str]:
        ordered = [text for _, _, text in sorted(self.found, key=lambda item: item[:2])]
        return list(dict.fromkeys(ordered))

    # --- internals ---

    def _files(self, pattern: str) -> list[tuple[Path, str]]:
        expanded = os.path.expanduser(pattern)
        full = Path(os.path.normpath(self.base / expanded))
        hint = "" if os.path.isabs(expanded) else RELATIVE_HINT
        if _GLOB_CHARS.search(expanded):
            matches = _glob_packs(full, self.base / Path(self.main.name).name)
            if not matches:
                raise ValueError(f"matches no .yaml or .yml file: {show_path(full)}{hint}")
            if len(matches) > MAX_PACK_FILES:
                raise ValueError(f"matches {len(matches)} files (at most {MAX_PACK_FILES})")
        else:
            try:
                is_dir, exists = full.is_dir(), full.exists()
            except (OSError, ValueError):
                raise ValueError(f"cannot use {show_path(full)} as a file path") from None
            if not exists:
                raise ValueError(f"file not found: {show_path(full)}{hint}")
            if is_dir:
                raise ValueError(f"{show_path(full)} is a directory: name a file, or a glob "
                                 "such as rules/*.yaml")
            matches = [full]
        return [(path, self._shown(path, expanded)) for path in matches]

    def _shown(self, path: Path, pattern: str) -> str:
        """How messages name a pack: as the user would reach it from where they ran us."""
        if os.path.isabs(pattern):
            return str(path)
        relative = os.path.relpath(path, self.base)
        return os.path.normpath(os.path.join(os.path.dirname(self.main.name), relative))

    def _pack(self, index: int, entry: IncludeConfig, path: Path, shown: str) -> None:
        if shown not in self.docs:
            self.docs[shown] = self._read(path, shown)
        doc = self.docs[shown]
        if doc is None:  # unreadable: reported when first read
            return
        data = doc.data
        if isinstance(data, dict) and isinstance(data.get("rules"), list):
            data = {**data, "rules": [entry.bind(rule) for rule in data["rules"]]}
        try:
            pack = RulePack.model_validate(data, context=self.context)
        except ValidationError as exc:
            order = self._order(shown)
            self.found += [(order, _line(text, shown), text)
                           for text in validation_messages(exc, doc, RulePack)]
            return
        bound = frozenset(entry.bindings())
        for number, rule in enumerate(pack.rules):
            loc = ("rules", number)
            rule.set_origin(RuleOrigin(shown, doc.line_of(loc), loc, index, bound))
            self.config.rules.append(rule)

    def _read(self, path: Path, shown: str) -> YamlDocument | None:
        order = len(self.docs)
        try:
            doc = read_yaml(read_text(path, shown), shown, self.environ)
        except ConfigError as exc:
            self.found += [(order, _line(text, shown), text.replace(_MAIN_FILE_WORDS, _PACK_WORDS))
                           for text in exc.problems]
            return None
        self.found += [(order, line, text) for line, text in doc.problems]
        return doc

    def _add(self, doc: YamlDocument, loc: Loc, message: str) -> None:
        self.found.append((self._order(doc.name), doc.line_of(loc), doc.message(loc, message)))

    def _order(self, name: str) -> int:
        return list(self.docs).index(name) if name in self.docs else len(self.docs)


def _line(message: str, name: str) -> int:
    """The line a ``name:line: ...`` message is at (0 if it names none)."""
    rest = message[len(name) + 1:] if message.startswith(name + ":") else ""
    digits = rest.split(":", 1)[0]
    return int(digits) if digits.isdigit() else 0
