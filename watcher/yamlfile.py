"""Read a YAML config into plain data, remembering the line of everything in it.

:func:`read_yaml` composes the node tree (``yaml.SafeLoader`` rules, minus
timestamps: a date in a config is just text) and walks it into dicts, lists
and scalars, recording in :attr:`YamlDocument.lines` the line of every mapping
key and sequence item under its location (``("streams", 1, "fps")``), so that
any error found later can be reported as ``file:line``.

While walking it also:

* substitutes ``${VAR}``, ``${VAR:-default}`` (default when unset or empty)
  and ``${VAR-default}`` (default when unset) in string values, never in keys;
  ``$${`` is a literal ``${``. A value that contained a reference stays a
  string (``"10"``); numeric and boolean options convert it.
* rejects duplicate keys, non-scalar keys, unknown tags, recursive aliases and
  documents nested or expanded beyond sane limits;
* honours merge keys (``<<: *defaults``).

Problems that make the file unreadable (a syntax error, an empty file)
raise :class:`~watcher.errors.ConfigError` at once. Problems that do not stop
the walk (a missing variable, a duplicate key, a bad tag) are collected in
:attr:`YamlDocument.problems`, and the locations whose values they spoiled in
:attr:`YamlDocument.broken`, so that validation can still report everything
else in the same run. Every message reads ``file:line: path: message``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import yaml

from watcher.errors import ConfigError

Loc = tuple[str | int, ...]
"""A location in the document: mapping keys and sequence indexes from the top."""

MAX_DEPTH = 64
MAX_NODES = 200_000

_STR = "tag:yaml.org,2002:str"
_MAP = "tag:yaml.org,2002:map"
_SEQ = "tag:yaml.org,2002:seq"
_MERGE = "tag:yaml.org,2002:merge"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REF = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_REF_BODY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)(.*))?", re.DOTALL)


class _Loader(yaml.SafeLoader):
    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }


@dataclass
class YamlDocument:
    """The plain data of a YAML file and the line (1-based) of each location in it."""

    name: str
    data: object
    lines: dict[Loc, int] = field(default_factory=dict)
    problems: list[tuple[int, str]] = field(default_factory=list)
    """``(line, message)`` of every problem found while reading."""
    broken: set[Loc] = field(default_factory=set)
    """Locations whose values a problem spoiled; further errors there are noise."""

    def is_broken(self, loc: Loc) -> bool:
        return any(loc[: len(bad)] == bad for bad in self.broken)

    def line_of(self, loc: Loc) -> int:
        """The line of ``loc``, or of its nearest ancestor that the file spells out."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return 1

    def message(self, loc: Loc, text: str) -> str:
        """``file:line: path: text`` for a finding at ``loc``."""
        return located(self.name, self.line_of(loc), loc, text)


def located(name: str, line: int | None, loc: Loc, text: str) -> str:
    where = f"{name}:{line}" if line is not None else name
    path = format_loc(loc)
    return f"{where}: {path}: {text}" if path else f"{where}: {text}"


def format_loc(loc: Loc) -> str:
    """``("streams", 1, "fps")`` -> ``streams[1].fps``; odd keys are quoted."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def read_yaml(text: str, name: str, environ: Mapping[str, str]) -> YamlDocument:
    """Parse ``text`` (the contents of the file called ``name``) into a mapping with lines."""
    try:
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        raise ConfigError(_syntax_error(name, exc)) from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise ConfigError(
            f"{name}:{line}: unacceptable character #x{exc.character:04x}: {exc.reason}"
        ) from None
    except yaml.YAMLError as exc:  # pragma: no cover - every YAMLError above is one of the two
        raise ConfigError(f"{name}: YAML error: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{name}: nested too deeply to read") from None
    if root is None or (isinstance(root, yaml.ScalarNode) and root.tag.endswith(":null")):
        raise ConfigError(
            f"{name}: the file is empty; it should be a mapping of sections "
            "such as `overshoot:` and `streams:`")
    if not isinstance(root, yaml.MappingNode):
        what = "a list" if isinstance(root, yaml.SequenceNode) else "a single value"
        raise ConfigError(
            f"{name}:{root.start_mark.line + 1}: the top level should be a mapping of sections "
            f"such as `overshoot:` and `streams:`, not {what}")
    walker = _Walker(loader, name, environ)
    walker.lines[()] = root.start_mark.line + 1
    data = walker.value(root, ())
    return YamlDocument(name, data, walker.lines, walker.problems, walker.broken)


def substitute(text: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """``text`` with every ``${...}`` reference replaced, and the problems found."""
    problems: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        body = match.group(1)
        if body is None:
            problems.append("unclosed '${' (write $${ for a literal ${)")
            return match.group(0)
        ref = _REF_BODY.fullmatch(body)
        if ref is None:
            problems.append(
                f"bad variable reference {_clip('${' + body + '}')}: "
                "use ${NAME}, ${NAME:-default} or $${ for a literal ${")
            return match.group(0)
        var, operator, default = ref.groups()
        if default is not None and "${" in default:
            problems.append(f"nested references in the default of ${{{var}}} are not supported")
            return match.group(0)
        value = environ.get(var)
        if operator == ":-" and not value:
            return default
        if operator == "-" and value is None:
            return default
        if value is None:
            problems.append(
                f"environment variable {var} is not set "
                f"(set it, or write ${{{var}:-default}} to give a default)")
            return ""
        return value

    return _REF.sub(replace, text), problems


class _Walker:
    """Turns composed nodes into plain data, recording lines and collecting problems."""

    def __init__(self, loader: _Loader, name: str, environ: Mapping[str, str]) -> None:
        self.loader = loader
        self.name = name
        self.environ = environ
        self.lines: dict[Loc, int] = {}
        self.problems: list[tuple[int, str]] = []
        self.broken: set[Loc] = set()
        self._visits = 0
        self._open: set[int] = set()

    def value(self, node: yaml.Node, loc: Loc) -> object:
        self._visits += 1
        if self._visits > MAX_NODES:
            raise ConfigError(self._at(node, loc, "too many values (aliases expand too far)"))
        if len(loc) > MAX_DEPTH or id(node) in self._open:
            what = "an alias refers to itself" if id(node) in self._open else "nested too deeply"
            raise ConfigError(self._at(node, loc, what))
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, loc)
        if isinstance(node, yaml.SequenceNode):
            return self._sequence(node, loc)
        return self._scalar(node, loc)

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, object]:
        if node.tag != _MAP:
            self._problem(node, loc, f"unsupported tag {_clip(node.tag)}")
            return {}
        self._open.add(id(node))
        try:
            result: dict[str, object] = {}
            merges = [value for key, value in node.value if key.tag == _MERGE]
            for source in reversed(merges):  # earlier merge sources win over later ones
                self._merge(source, loc, result)
            first_line: dict[str, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == _MERGE:
                    continue
                key = self._key(key_node, loc)
                if key is None:
                    continue
                line = key_node.start_mark.line + 1
                if key in first_line:
                    self.problems.append((line, located(
                        self.name, line, (*loc, key),
                        f"duplicate key (first given on line {first_line[key]})")))
                    continue
                first_line[key] = line
                self.lines[(*loc, key)] = line
                result[key] = self.value(value_node, (*loc, key))
            return result
        finally:
            self._open.discard(id(node))

    def _merge(self, source: yaml.Node, loc: Loc, into: dict[str, object]) -> None:
        sources = source.value if isinstance(source, yaml.SequenceNode) else [source]
        for item in reversed(sources):
            if not isinstance(item, yaml.MappingNode):
                self._problem(item, loc, "`<<` merges a mapping or a list of them")
                continue
            merged = self.value(item, loc)
            if isinstance(merged, dict):
                into.update(merged)

    def _key(self, node: yaml.Node, loc: Loc) -> str | None:
        if isinstance(node, yaml.ScalarNode):
            return node.value
        self._problem(node, loc, "a key must be a name, not a list or mapping")
        return None

    def _sequence(self, node: yaml.SequenceNode, loc: Loc) -> list[object]:
        if node.tag != _SEQ:
            self._problem(node, loc, f"unsupported tag {_clip(node.tag)}")
            return []
        self._open.add(id(node))
        try:
            items = []
            for index, item in enumerate(node.value):
                self.lines[(*loc, index)] = item.start_mark.line + 1
                items.append(self.value(item, (*loc, index)))
            return items
        finally:
            self._open.discard(id(node))

    def _scalar(self, node: yaml.Node, loc: Loc) -> object:
        if node.tag == _STR and "$" in node.value:
            text, problems = substitute(node.value, self.environ)
            for problem in problems:
                self._problem(node, loc, problem)
            return text
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self._problem(node, loc, f"cannot read this value: {getattr(exc, 'problem', exc)}")
        except Exception:  # a tag's constructor failing on its text (!!int x, !!bool y)
            tag = node.tag.replace("tag:yaml.org,2002:", "!!")
            self._problem(node, loc, f"cannot read this value as {_clip(tag)}")
        return None

    def _problem(self, node: yaml.Node, loc: Loc, text: str) -> None:
        self.problems.append((node.start_mark.line + 1, self._at(node, loc, text)))
        self.broken.add(loc)

    def _at(self, node: yaml.Node, loc: Loc, text: str) -> str:
        return located(self.name, node.start_mark.line + 1, loc, text)


_UNCLOSED = {
    "while parsing a flow mapping": "a flow mapping ({...})",
    "while parsing a flow sequence": "a flow sequence ([...])",
    "while scanning a quoted scalar": "a quoted string",
}
"""Constructs whose error is found far from its cause: where they were opened."""


def _syntax_error(name: str, exc: yaml.MarkedYAMLError) -> str:
    """``file:line: YAML syntax error: ...`` at the line a reader should look at.

    For a flow mapping, flow sequence or quoted string left open, that is the
    line it was opened on (the parser only notices later, often at the end
    of the file); otherwise the line of the problem.
    """
    mark = exc.problem_mark or exc.context_mark
    problem = exc.problem or "invalid YAML"
    opened = exc.context_mark
    unclosed = _UNCLOSED.get(exc.context or "")
    if unclosed is not None and opened is not None and mark is not None:
        found = (f"{problem} on line {mark.line + 1}" if mark.line != opened.line
                 else problem)
        return (f"{name}:{opened.line + 1}: YAML syntax error: {unclosed} opened on this "
                f"line is not closed ({found})")
    where = f"{name}:{mark.line + 1}" if mark is not None else name
    text = f"{where}: YAML syntax error: {problem}"
    if exc.context:
        context_line = (
            f" on line {opened.line + 1}"
            if opened is not None and opened is not mark else "")
        text += f" ({exc.context}{context_line})"
    return text


def _clip(text: str, limit: int = 60) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
