"""Turn validation findings into ``file:line: path: message`` lines.

Two kinds of findings reach a user: pydantic's errors (their ``loc`` tuples
follow the YAML structure) and the ``(loc, message)`` problems of a config's
post-validation checks (:data:`Problem`, e.g. an unknown stream name). Both are
mapped to the line of the nearest location the file spells out. Messages never
quote input values, so a secret cannot leak through them.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from watcher.yamlfile import Loc, YamlDocument

Problem = tuple[Loc, str]
"""A finding of a post-validation check: where it is, and what is wrong."""


def validation_messages(
    exc: ValidationError, doc: YamlDocument, model: type[BaseModel],
) -> list[str]:
    """One ``file:line: path: message`` per pydantic error, with the document's own
    problems, in file order. Errors inside values a document problem spoiled are left out.
    """
    found: list[tuple[int, str]] = list(doc.problems)
    for error in exc.errors(include_url=False, include_input=True):
        loc = display_loc(error["loc"], doc.data, model)
        if not doc.is_broken(loc):
            found.append((doc.line_of(loc), doc.message(loc, _describe(error, loc, model))))
    return _in_file_order(found)


def problem_messages(problems: Iterable[Problem], doc: YamlDocument) -> list[str]:
    """One ``file:line: path: message`` per post-validation problem, with the
    document's own problems, in file order."""
    found = [(doc.line_of(loc), doc.message(loc, text)) for loc, text in problems]
    return _in_file_order([*doc.problems, *found])


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """`` (did you mean X?)``, or `` (expected one of: ...)``, or nothing."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]}?)"
    return f" (expected one of: {', '.join(choices)})" if choices else ""


def display_loc(loc: Sequence[str | int], data: object, model: type[BaseModel]) -> Loc:
    """``loc`` without pydantic's internal steps (union members, validator names).

    A step is kept when the data has it or the model declares it (a missing
    field); anything else is pydantic bookkeeping and is dropped.
    """
    out: list[str | int] = []
    node: object = data
    tp: object = model
    for part in loc:
        child = _child_type(tp, part)
        present = _has(node, part)
        if present or child is not None:
            out.append(part)
            node = node[part] if present else None  # type: ignore[index]
            tp = child
    return tuple(out)


def model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``loc``, if one does."""
    tp: object = model
    for part in loc:
        tp = _child_type(tp, part)
    tp = _unwrap(tp)
    return tp if isinstance(tp, type) and issubclass(tp, BaseModel) else None


def _describe(error: Mapping[str, Any], loc: Loc, model: type[BaseModel]) -> str:
    kind, message, given = error["type"], error["msg"], error.get("input")
    if kind == "extra_forbidden":
        owner = model_at(model, loc[:-1])
        fields = ([info.alias or name for name, info in owner.model_fields.items()]
                  if owner is not None else [])
        what = "unknown section" if len(loc) == 1 else "unknown key"
        return what + did_you_mean(str(loc[-1]), fields)
    if kind == "missing":
        return "required, but not given"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        if given is None:
            return "is empty: give it keys (`name: value` lines below it) or remove it"
        return "should be a mapping of `key: value` lines"
    if kind == "list_type":
        if given is None:
            return "is empty: give it items (`- ...` lines below it) or remove it"
        return "should be a list of `- ...` items"
    return message.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def _has(node: object, part: str | int) -> bool:
    if isinstance(node, dict):
        return part in node
    if isinstance(node, list):
        return isinstance(part, int) and not isinstance(part, bool) and 0 <= part < len(node)
    return False


def _child_type(tp: object, part: str | int) -> object:
    tp = _unwrap(tp)
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        info = tp.model_fields.get(part) if isinstance(part, str) else None
        return info.annotation if info is not None else None
    origin, args = get_origin(tp), get_args(tp)
    if origin in (list, tuple, set, frozenset, Sequence) and isinstance(part, int) and args:
        return args[0]
    if origin in (dict, Mapping) and isinstance(part, str) and len(args) == 2:
        return args[1]
    return None


def _unwrap(tp: object) -> object:
    """``Annotated[X, ...]`` -> ``X``; ``X | None`` -> ``X`` (the model among a union)."""
    for _ in range(10):
        origin = get_origin(tp)
        if origin is Annotated:
            tp = get_args(tp)[0]
        elif origin in (Union, types.UnionType):
            members = [arg for arg in get_args(tp) if arg is not type(None)]
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            if models:
                tp = models[0]
            elif len(members) == 1:
                tp = members[0]
            else:
                return tp
        else:
            return tp
    return tp


def _in_file_order(found: Iterable[tuple[int, str]]) -> list[str]:
    ordered = [text for _, text in sorted(found, key=lambda item: item[0])]
    return list(dict.fromkeys(ordered))
