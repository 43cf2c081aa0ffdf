"""A rule's ``when:``: a small, safe expression over the fields of the answer.

::

    when: person_present and people >= 2
    when: activity in ["running", "fighting"] and confidence > 0.7
    when: len(vehicles) > 3 or "truck" in vehicles
    when: note is not None and "fire" in lower(note)

It is parsed once (:class:`Condition`), checked against the schema's fields,
and evaluated with simpleeval on each answer; Python's ``eval`` is never used.

**Allowed**: field names; literals (strings, numbers, ``true``/``false``/``null``
as well as ``True``/``False``/``None``, lists, tuples and sets of them);
comparisons ``== != < <= > >=`` (chained too), ``in``/``not in``, ``is``/``is not``;
``and``/``or``/``not``; arithmetic ``+ - * / // %``; indexing and slicing
(``boxes[0]``, ``box["x"]``, ``tags[:3]``); conditional expressions
(``a if cond else b``); and the helpers in :data:`HELPERS`: ``len``, ``any``,
``all``, ``min``, ``max``, ``sum``, ``abs``, ``lower``, ``upper``.

**Not allowed**: attribute access (``x.y``), other calls, ``**``, bit
operators, comprehensions, lambdas, f-strings, assignment.

**Evaluation** gives the truthiness of the result. Every field of the schema
is a name; a field the answer lacks (an optional one, or a model that left it
out) is ``None``. Anything that goes wrong while evaluating (``None > 2``,
``boxes[5]`` past the end, ``min([])``) raises :class:`ConditionError`, which
the engine counts as a failed evaluation; nothing else escapes.

**When ``when:`` is absent** the rule needs a default: the schema's only
boolean field, when it has exactly one (see :func:`default_condition`).
"""

from __future__ import annotations

import ast
import difflib
import re
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from simpleeval import DEFAULT_OPERATORS, EvalWithCompoundTypes

__all__ = ["HELPERS", "MAX_LENGTH", "Condition", "ConditionError", "default_condition"]

MAX_LENGTH = 1000
"""Longest condition accepted, in characters."""
MAX_DEPTH = 60
"""Deepest nesting of the parsed expression."""


def _lower(text: str) -> str:
    return text.lower()


def _upper(text: str) -> str:
    return text.upper()


HELPERS: dict[str, Callable[..., Any]] = {
    "len": len, "any": any, "all": all, "min": min, "max": max, "sum": sum, "abs": abs,
    "lower": _lower, "upper": _upper,
}
"""The functions a condition may call, by name."""
_ARITY: dict[str, tuple[int, int]] = {
    "len": (1, 1), "any": (1, 1), "all": (1, 1), "sum": (1, 1), "abs": (1, 1),
    "lower": (1, 1), "upper": (1, 1), "min": (1, 50), "max": (1, 50),
}
CONSTANTS: dict[str, object] = {"true": True, "false": False, "null": None}
"""Lowercase spellings of the literals (as YAML and JSON write them)."""

_OPERATORS: dict[type, Callable[..., Any]] = {
    kind: DEFAULT_OPERATORS[kind] for kind in (
        ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.USub, ast.UAdd,
        ast.Not, ast.Eq, ast.NotEq, ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.In, ast.NotIn,
        ast.Is, ast.IsNot)
}
_ALLOWED: tuple[type, ...] = (
    ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.BinOp, ast.Compare,
    ast.IfExp, ast.Call, ast.Name, ast.Load, ast.Constant, ast.Subscript, ast.Slice,
    ast.List, ast.Tuple, ast.Set, *_OPERATORS,
)
_FORBIDDEN_HINTS: dict[type, str] = {
    ast.Attribute: "attribute access (x.y) is not allowed; index instead: x[\"y\"]",
    ast.Pow: "** is not allowed",
    ast.ListComp: "comprehensions are not allowed (use any(), all(), len() on a field)",
    ast.GeneratorExp: "comprehensions are not allowed (use any(), all(), len() on a field)",
    ast.SetComp: "comprehensions are not allowed",
    ast.DictComp: "comprehensions are not allowed",
    ast.Lambda: "lambdas are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.NamedExpr: "assignment (:=) is not allowed",
    ast.Dict: "dict literals are not allowed",
    ast.Starred: "* unpacking is not allowed",
    ast.Await: "await is not allowed",
    ast.BitAnd: "& is not allowed (use `and`)",
    ast.BitOr: "| is not allowed (use `or`)",
    ast.BitXor: "^ is not allowed",
    ast.Invert: "~ is not allowed (use `not`)",
    ast.LShift: "<< is not allowed",
    ast.RShift: ">> is not allowed",
}
_SINGLE_EQUALS = re.compile(r"(?<![=!<>])=(?!=)")


class ConditionError(ValueError):
    """A condition that does not compile, or an answer it cannot be evaluated on."""


class Condition:
    """A compiled ``when:`` expression.

    ``fields`` maps the schema's fields to their JSON types
    (:func:`watcher.engine.schema.schema_fields`); every name the expression
    uses must be one of them. ``fields=None`` accepts any name (a missing
    one is ``None`` when evaluated). Raises :class:`ConditionError`.
    """

    def __init__(self, expr: str, fields: Mapping[str, str] | None = None) -> None:
        if not isinstance(expr, str):
            raise ConditionError("should be an expression in a string, e.g. people > 0")
        self.expr = expr
        self.fields: dict[str, str] | None = None if fields is None else dict(fields)
        self._tree = _parse(expr)
        self._names = _check(self._tree, self.fields)
        if self.fields is not None:
            _check_comparisons(self._tree, self.fields)

    def __repr__(self) -> str:
        return f"Condition({self.expr!r})"

    def names(self) -> frozenset[str]:
        """The answer fields the expression reads."""
        return self._names

    def evaluate(self, answer: Mapping[str, Any]) -> bool:
        """Whether ``answer`` matches; :class:`ConditionError` if it cannot be evaluated."""
        names: dict[str, Any] = dict(CONSTANTS)
        wanted = self._names if self.fields is None else self.fields
        for name in wanted:
            names[name] = answer.get(name) if isinstance(answer, Mapping) else None
        evaluator = EvalWithCompoundTypes(operators=_OPERATORS, functions={}, names=names)
        evaluator.functions = dict(HELPERS)  # without the list/dict/set/tuple it adds
        try:
            return bool(evaluator.eval(self.expr, previously_parsed=self._tree.body))
        except Exception as exc:  # anything at all: a condition must never crash the engine
            raise ConditionError(f"cannot evaluate {_clip(self.expr)}: {_reason(exc)}") from None


def default_condition(fields: Mapping[str, str]) -> str | None:
    """The condition a rule without ``when:`` uses: its schema's only boolean field."""
    booleans = [name for name, kind in fields.items() if kind == "boolean"]
    return booleans[0] if len(booleans) == 1 else None


# --- compiling -----------------------------------------------------------------------------

def _parse(expr: str) -> ast.Expression:
    if len(expr) > MAX_LENGTH:
        raise ConditionError(f"is too long ({len(expr)} characters, at most {MAX_LENGTH})")
    if "\x00" in expr:
        raise ConditionError("contains a NUL character")
    text = expr.replace("\r", " ").replace("\n", " ").replace("\t", " ")
    indent = len(text) - len(text.lstrip())
    text = text.strip()
    if not text:
        raise ConditionError("is empty: give an expression such as person_present, "
                             "or leave `when` out")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # SyntaxWarnings about odd literals
            tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ConditionError(_syntax_message(text, exc, indent)) from None
    except (ValueError, MemoryError, RecursionError):
        raise ConditionError("cannot be parsed (too long or nested too deeply)") from None
    if isinstance(tree.body, ast.Tuple):
        raise ConditionError("is one expression, not several separated by commas "
                             "(combine them with `and` / `or`)")
    return tree


def _syntax_message(text: str, exc: SyntaxError, indent: int) -> str:
    column = exc.offset or 0
    where = (f"at column {column + indent}" if 0 < column <= len(text)
             else "at the end")
    message = (exc.msg or "invalid syntax").split(" (detected at")[0]
    hint = ""
    if "&&" in text or "||" in text:
        hint = " (write `and` / `or` instead of && / ||)"
    elif re.search(r"!(?!=)", text):
        hint = " (write `not` instead of !)"
    elif _SINGLE_EQUALS.search(text) and "==" not in message:
        hint = " (compare with ==)"
    detail = "" if message == "invalid syntax" else f": {message}"
    return f"invalid syntax {where}{detail}{hint}"


def _check(tree: ast.Expression, fields: Mapping[str, str] | None) -> frozenset[str]:
    """Reject anything outside the allowed subset; return the field names used."""
    used: set[str] = set()
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    callees: set[int] = set()
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ConditionError(f"is nested too deeply (more than {MAX_DEPTH} levels)")
        if not isinstance(node, _ALLOWED):
            raise ConditionError(_forbidden(node))
        if isinstance(node, ast.Call):
            _check_call(node)
            callees.add(id(node.func))
        elif isinstance(node, ast.Constant):
            _check_constant(node)
        elif isinstance(node, ast.Name) and id(node) not in callees:
            _check_name(node.id, fields)
            if node.id not in CONSTANTS or (fields is not None and node.id in fields):
                used.add(node.id)
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))
    return frozenset(used)


def _check_call(node: ast.Call) -> None:
    if not isinstance(node.func, ast.Name):
        raise ConditionError("only the helper functions can be called: "
                             + ", ".join(HELPERS))
    name = node.func.id
    if name not in HELPERS:
        raise ConditionError(f"unknown function {name!r}" + _suggest(name, list(HELPERS)))
    if node.keywords:
        raise ConditionError(f"{name}() takes no keyword arguments")
    low, high = _ARITY[name]
    if not low <= len(node.args) <= high:
        count = "1 argument" if high == 1 else f"{low} to {high} arguments"
        raise ConditionError(f"{name}() takes {count}, not {len(node.args)}")


def _check_constant(node: ast.Constant) -> None:
    value = node.value
    if value is not None and not isinstance(value, str | int | float | bool):
        raise ConditionError(f"{type(value).__name__} literals are not allowed")
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**18:
        raise ConditionError("a number in the expression is too large")


def _check_name(name: str, fields: Mapping[str, str] | None) -> None:
    if fields is None or name in fields or name in CONSTANTS:
        return
    if name in HELPERS:
        raise ConditionError(f"{name!r} is a function: call it, as in {name}(...)")
    raise ConditionError(f"unknown name {name!r}" + _suggest(name, list(fields), fields=True))


def _suggest(name: str, choices: list[str], *, fields: bool = False) -> str:
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]}?)"
    if fields:
        return (f" (the answer's fields are: {', '.join(choices)})" if choices
                else " (the schema has no fields)")
    return f" (expected one of: {', '.join(choices)})"


def _forbidden(node: ast.AST) -> str:
    for kind, hint in _FORBIDDEN_HINTS.items():
        if isinstance(node, kind):
            return hint
    return f"{type(node).__name__} is not allowed in a condition"


# --- types of comparisons ----------------------------------------------------------------

_KINDS = {"integer": "number", "number": "number", "boolean": "boolean", "string": "string",
          "array": "array", "object": "object"}
_ORDERING = (ast.Lt, ast.LtE, ast.Gt, ast.GtE)
_SYMBOLS = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==",
            ast.NotEq: "!=", ast.In: "in", ast.NotIn: "not in"}
_ARTICLE = {"number": "a number", "boolean": "a boolean", "string": "a string",
            "array": "a list", "object": "an object"}


def _kind(node: ast.AST, fields: Mapping[str, str]) -> str | None:
    """The JSON kind an operand surely has (number, string, ...), or None if unknown."""
    if isinstance(node, ast.Name):
        if node.id in fields:
            return _KINDS.get(fields[node.id])
        value = CONSTANTS.get(node.id)
        return "boolean" if isinstance(value, bool) else None
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool):
            return "boolean"
        if isinstance(value, int | float):
            return "number"
        return "string" if isinstance(value, str) else None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        return "number" if _kind(node.operand, fields) == "number" else None
    if isinstance(node, ast.List | ast.Tuple):
        return "array"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        return {"len": "number", "lower": "string", "upper": "string"}.get(node.func.id)
    return None


def _check_comparisons(tree: ast.Expression, fields: Mapping[str, str]) -> None:
    """Reject comparisons whose sides can never be compared as meant (``motion > "x"``).

    Only operands whose type is certain (a schema field, a literal, len(), lower())
    are checked; numbers and booleans compare with each other as in Python.
    """
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        left = node.left
        for op, right in zip(node.ops, node.comparators, strict=True):
            _check_pair(left, op, right, fields)
            left = right


def _check_pair(left: ast.AST, op: ast.cmpop, right: ast.AST,
                fields: Mapping[str, str]) -> None:
    a, b = _kind(left, fields), _kind(right, fields)
    shown = f"`{ast.unparse(left)} {_SYMBOLS.get(type(op), '?')} {ast.unparse(right)}`"
    numeric = {"number", "boolean"}
    if isinstance(op, _ORDERING):
        if a is None or b is None or a == b or {a, b} <= numeric:
            return
        raise ConditionError(f"{shown} orders {_ARTICLE[a]} against {_ARTICLE[b]}: it fails "
                             "on every answer" + _hint(left, right, a, b))
    elif isinstance(op, ast.Eq | ast.NotEq):
        if a is None or b is None or a == b or {a, b} <= numeric:
            return
        outcome = "never true" if isinstance(op, ast.Eq) else "always true"
        raise ConditionError(f"{shown} compares {_ARTICLE[a]} with {_ARTICLE[b]}: it is "
                             f"{outcome}" + _hint(left, right, a, b))
    elif isinstance(op, ast.In | ast.NotIn):
        if b in ("number", "boolean"):
            raise ConditionError(f"{shown}: `in` needs a list or a string on its right, not "
                                 f"{_ARTICLE[b]}")
        if b == "string" and a is not None and a != "string":
            raise ConditionError(f"{shown}: only a string can be found in a string, not "
                                 f"{_ARTICLE[a]}")


def _hint(left: ast.AST, right: ast.AST, a: str, b: str) -> str:
    if "array" in (a, b) and "number" in (a, b):
        listed = left if a == "array" else right
        return f" (count the items with len({ast.unparse(listed)}))"
    if "string" in (a, b) and "number" in (a, b):
        return " (compare with a number, without quotes)" if b == "string" else ""
    return ""


# --- evaluating ----------------------------------------------------------------------------

def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"no key {_clip(repr(exc.args[0]) if exc.args else '?', 40)}"
    text = str(exc) or type(exc).__name__
    return _clip(text, 160)


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
