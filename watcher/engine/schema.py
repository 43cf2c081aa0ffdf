"""A rule's answer schema: shorthand or JSON Schema in, strict JSON Schema out.

A rule's ``schema:`` is either

* **shorthand**, a mapping of ``field: type``::

      schema:
        people: integer
        person_present: boolean
        activity: walking|running|none     # an enum of words (or a YAML list of them)
        labels: string[]                   # also list[string]; any type can be an array
        note?: string                      # optional (or `note: string?`)
        count: {type: integer, minimum: 0} # a JSON Schema for one field

  Types: ``boolean`` (``bool``), ``integer`` (``int``), ``number``
  (``float``), ``string`` (``str``), ``T[]`` / ``list[T]`` arrays, ``a|b|c``
  enums of strings. Field names are identifiers (so conditions can name them).
  In a flow mapping (``{...}``) YAML needs the ``?`` quoted:
  ``{people: integer, "note?": string}``;

* or a **JSON Schema** of an object: a mapping with ``type: object`` and
  ``properties``. It is checked against the Draft 2020-12 meta-schema.

:func:`expand_schema` turns either into the schema sent as ``response_format``
for *strict* structured outputs (OpenAI's rules, which the Overshoot API
follows): every object has ``additionalProperties: false`` and lists *every*
property in ``required``. An **optional field** is therefore represented as a
required field that may be ``null``: its ``type`` becomes ``[T, "null"]`` (an
enum also gains ``null``; a schema without ``type`` becomes
``anyOf: [schema, {type: null}]``). The model answers ``null`` when it has
nothing to say, and a condition sees ``None``. In a full JSON Schema, the
properties missing from an object's ``required`` are made optional the same
way, at every level. The shorthand above expands to::

    {"type": "object",
     "properties": {"people": {"type": "integer"}, ...,
                    "note": {"type": ["string", "null"]}, ...},
     "required": ["people", "person_present", "activity", "labels", "note", "count"],
     "additionalProperties": false}

:func:`schema_fields` lists the top-level fields and their JSON types, for
checking conditions against the schema.
"""

from __future__ import annotations

import json
import keyword
import re
from collections.abc import Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError as JsonSchemaError

from watcher.configerrors import did_you_mean

__all__ = ["DEFAULT_SCHEMA", "TYPES", "SchemaError", "expand_schema", "schema_fields"]

TYPES: dict[str, str] = {
    "boolean": "boolean", "bool": "boolean",
    "integer": "integer", "int": "integer",
    "number": "number", "float": "number",
    "string": "string", "str": "string",
}
"""Shorthand type names and the JSON type each stands for."""

DEFAULT_SCHEMA: dict[str, str] = {"answer": "boolean"}
"""The shorthand a rule without ``schema:`` asks for: a yes/no answer."""

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_LIST = re.compile(r"(?:list|array)\[(.*)\]", re.DOTALL)
_MAX_SPEC = 2000
_COMBINERS = ("anyOf", "oneOf", "allOf")
_TOP_HINT = " (a JSON Schema needs `type: object` at its top)"
_SCHEMA_KEYS = frozenset({"type", "enum", "const", *_COMBINERS, "$ref"})


class SchemaError(ValueError):
    """A ``schema:`` that is neither valid shorthand nor a usable JSON Schema."""


def expand_schema(value: object) -> dict[str, Any]:
    """The strict JSON Schema (a new dict) for a rule's ``schema`` value."""
    if not isinstance(value, Mapping) or not value:
        raise SchemaError("should be a mapping of `field: type` lines (people: integer), "
                          "or a JSON Schema with type: object")
    if value.get("type") == "object":
        return _strict_schema(value)
    return _expand_shorthand(value)


def schema_fields(schema: Mapping[str, Any]) -> dict[str, str]:
    """``{field: JSON type}`` of an expanded schema's top-level properties.

    The type is ``boolean``, ``integer``, ``number``, ``string``, ``array`` or
    ``object`` (``null`` left out of optional fields), or ``any`` when the
    schema allows several.
    """
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return {}
    return {name: _json_type(prop) for name, prop in properties.items()}


# --- shorthand -----------------------------------------------------------------------------

def _expand_shorthand(value: Mapping[Any, Any]) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    optional: set[str] = set()
    for raw_key, spec in value.items():
        key = str(raw_key).strip()
        name = key.removesuffix("?").strip()
        _check_field_name(name, value)
        if name in properties:
            raise SchemaError(f"field {name!r} is given twice")
        if key.endswith("?"):
            optional.add(name)
        if isinstance(spec, str) and spec.strip().endswith("?"):
            optional.add(name)
            spec = spec.strip()[:-1]
        properties[name] = _field_schema(name, spec)
    required = [name for name in properties if name not in optional]
    return _finish({"type": "object", "properties": properties, "required": required})


def _check_field_name(name: str, shorthand: Mapping[Any, Any]) -> None:
    if not _IDENT.fullmatch(name) or keyword.iskeyword(name):
        hint = ""
        if "properties" in shorthand or "$schema" in shorthand:
            hint = _TOP_HINT
        raise SchemaError(f"field name {name!r} should be an identifier (letters, digits and "
                          f"'_', not a Python keyword) so that `when:` can name it{hint}")


def _field_schema(name: str, spec: object) -> dict[str, Any]:
    if isinstance(spec, Mapping):
        if not _SCHEMA_KEYS.intersection(spec):
            hint = _TOP_HINT if name == "properties" else ""
            raise SchemaError(f"field {name!r}: a JSON Schema for one field needs a type, "
                              f"e.g. {{type: integer, minimum: 0}}{hint}")
        return json_copy(spec, name)
    if isinstance(spec, list):
        return _enum(name, spec)
    if not isinstance(spec, str) or not spec.strip():
        hint = _TOP_HINT if name == "properties" else ""
        raise SchemaError(f"field {name!r}: give a type: boolean, integer, number, string, "
                          f"string[] or an enum like a|b|c{hint}")
    if len(spec) > _MAX_SPEC:
        raise SchemaError(f"field {name!r}: type is too long")
    return _type(name, spec.strip())


def _type(name: str, spec: str) -> dict[str, Any]:
    if spec.endswith("[]"):
        return {"type": "array", "items": _type(name, spec[:-2].strip())}
    match = _LIST.fullmatch(spec)
    if match:
        return {"type": "array", "items": _type(name, match.group(1).strip())}
    if "|" in spec:
        words = [word.strip() for word in spec.split("|")]
        if all(word.lower() in TYPES or word == "null" for word in words):
            raise SchemaError(
                f"field {name!r}: {spec!r} reads as a union of types, which shorthand does "
                "not have (an enum is words: a|b|c; mark an optional field with ?)")
        return _enum(name, words)
    base = TYPES.get(spec.lower())
    if base is None:
        raise SchemaError(f"field {name!r}: unknown type {_clip(spec)}"
                          + did_you_mean(spec, [*dict.fromkeys(TYPES.values())]))
    return {"type": base}


def _enum(name: str, values: list[Any]) -> dict[str, Any]:
    words = [str(value).strip() if isinstance(value, str | int | float) and
             not isinstance(value, bool) else None for value in values]
    if not words or any(not word for word in words):
        raise SchemaError(f"field {name!r}: an enum is non-empty words, like walking|running|none")
    if len(set(words)) != len(words):
        raise SchemaError(f"field {name!r}: the enum repeats a value")
    return {"type": "string", "enum": words}


# --- JSON Schema ---------------------------------------------------------------------------

def _strict_schema(value: Mapping[str, Any]) -> dict[str, Any]:
    schema = json_copy(value, None)
    properties = schema.get("properties")
    if not isinstance(properties, dict) or not properties:
        raise SchemaError("a JSON Schema here describes an object with `properties` "
                          "(the fields of the answer)")
    return _finish(schema)


def _finish(schema: dict[str, Any]) -> dict[str, Any]:
    _check_meta(schema)
    _strict(schema, "")
    _check_meta(schema)
    return schema


def _check_meta(schema: dict[str, Any]) -> None:
    try:
        Draft202012Validator.check_schema(schema)
    except JsonSchemaError as exc:
        where = "/".join(str(part) for part in exc.path)
        raise SchemaError(f"not a valid JSON Schema"
                          f"{f' at {where}' if where else ''}: {_clip(exc.message, 160)}"
                          ) from None
    except RecursionError:
        raise SchemaError("nested too deeply") from None


def _strict(node: object, where: str) -> None:
    """Make every object in ``node`` strict, in place (see the module docstring)."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            _strict(item, f"{where}[{index}]")
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "object" or "properties" in node:
        _strict_object(node, where)
    for key in ("items", "not", "if", "then", "else", "contains"):
        if key in node:
            _strict(node[key], f"{where}.{key}" if where else key)
    for key in (*_COMBINERS, "prefixItems"):
        if isinstance(node.get(key), list):
            _strict(node[key], f"{where}.{key}" if where else key)
    for key in ("$defs", "definitions"):
        if isinstance(node.get(key), dict):
            for name, sub in node[key].items():
                _strict(sub, f"{key}.{name}")


def _strict_object(node: dict[str, Any], where: str) -> None:
    here = f"{where}: " if where else ""
    properties = node.get("properties")
    if not isinstance(properties, dict) or not properties:
        raise SchemaError(f"{here}an object needs `properties`: strict structured outputs "
                          "have no free-form objects")
    if node.get("additionalProperties", False) is not False:
        raise SchemaError(f"{here}additionalProperties must be false (or left out) for "
                          "strict structured outputs")
    node["additionalProperties"] = False
    required = node.get("required", [])
    unknown = [name for name in required if name not in properties]
    if unknown:
        raise SchemaError(f"{here}required names {unknown[0]!r}, which is not a property")
    for name, prop in properties.items():
        _strict(prop, f"{where}.{name}" if where else name)
        if name not in required:
            properties[name] = _nullable(prop)
    node["required"] = list(properties)


def _nullable(prop: Any) -> Any:
    """``prop`` that also accepts ``null`` (how strict schemas say "optional")."""
    if not isinstance(prop, dict):
        return prop
    kind = prop.get("type")
    if "const" in prop or not isinstance(kind, str | list):
        if _accepts_null(prop):
            return prop
        return {"anyOf": [prop, {"type": "null"}]}
    prop = dict(prop)
    if isinstance(kind, str) and kind != "null":
        prop["type"] = [kind, "null"]
    elif isinstance(kind, list) and "null" not in kind:
        prop["type"] = [*kind, "null"]
    if isinstance(prop.get("enum"), list) and None not in prop["enum"]:
        prop["enum"] = [*prop["enum"], None]
    return prop


def _accepts_null(prop: dict[str, Any]) -> bool:
    members = prop.get("anyOf")
    return isinstance(members, list) and {"type": "null"} in members


def _json_type(prop: object) -> str:
    if not isinstance(prop, Mapping):
        return "any"
    kind = prop.get("type")
    if isinstance(kind, str):
        return kind
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        return kinds[0] if len(kinds) == 1 and isinstance(kinds[0], str) else "any"
    for combiner in _COMBINERS:
        members = prop.get(combiner)
        if isinstance(members, list):
            kinds = {_json_type(m) for m in members if m != {"type": "null"}}
            return kinds.pop() if len(kinds) == 1 else "any"
    values = prop.get("enum")
    if isinstance(values, list):
        kinds = {_value_type(v) for v in values if v is not None}
        return kinds.pop() if len(kinds) == 1 else "any"
    if "const" in prop:
        return _value_type(prop["const"])
    return "any"


def _value_type(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object" if isinstance(value, dict) else "any"


# --- helpers -------------------------------------------------------------------------------

def json_copy(value: object, field: str | None) -> dict[str, Any]:
    """A deep copy of ``value`` that is plain JSON (or a SchemaError saying where it is not)."""
    where = f"field {field!r}: " if field else ""
    try:
        text = json.dumps(value, allow_nan=False)
        copied = json.loads(text)
    except (TypeError, ValueError, RecursionError):
        raise SchemaError(f"{where}not plain JSON (only mappings, lists, strings, numbers, "
                          "booleans and null)") from None
    if not isinstance(copied, dict):
        raise SchemaError(f"{where}should be a mapping")
    return copied


def _clip(text: str, limit: int = 60) -> str:
    text = repr(text)
    return text if len(text) <= limit else text[: limit - 3] + "..."
