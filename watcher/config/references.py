"""Building the problems of the checks across items and sections: names given twice,
and names that refer to no item.

Each returns :data:`~watcher.configerrors.Problem` pairs ``(loc, message)``
for :meth:`WatcherConfig.check_references <watcher.config.root.WatcherConfig.check_references>`
(and for sections that extend it), which :func:`watcher.config.load_config`
reports at the line of each ``loc``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from watcher.configerrors import Problem, did_you_mean
from watcher.engine.budget import BudgetConfig
from watcher.engine.rules import RuleConfig
from watcher.yamlfile import Loc, format_loc


def duplicate_names(items: Iterable[Any], loc: Loc, what: str, attr: str = "name") -> list[Problem]:
    """A problem at ``(*loc, i, attr)`` for every item whose name an earlier item took."""
    first: dict[str, int] = {}
    problems: list[Problem] = []
    for index, item in enumerate(items):
        name = getattr(item, attr)
        if name in first:
            other = format_loc((*loc, first[name]))
            problems.append(((*loc, index, attr), f"duplicate {what} name {name!r} (also {other})"))
        else:
            first[name] = index
    return problems


def reference_problems(loc: Loc, name: str, known: Iterable[str], what: str = "stream",
                       ) -> list[Problem]:
    """``[]`` if ``name`` is among ``known``, else one "unknown stream 'x'" problem at ``loc``."""
    known = list(known)
    if name in known:
        return []
    return [(loc, f"unknown {what} {name!r}" + did_you_mean(name, known))]


def notify_problems(loc: Loc, budget: BudgetConfig, known_actions: list[str],
                     ) -> list[Problem]:
    """Unknown actions in a budget's ``notify``."""
    return [problem for index, name in enumerate(budget.notify)
            for problem in reference_problems((*loc, "notify", index), name, known_actions,
                                              "action")]


def binding_problems(loc: Loc, stream: str | None, streams: list[str] | None,
                      actions: list[str] | None, known_streams: list[str],
                      known_actions: list[str]) -> list[Problem]:
    """Unknown streams and actions named at ``loc`` (a rule, or an include entry)."""
    problems: list[Problem] = []
    if stream is not None:
        problems += reference_problems((*loc, "stream"), stream, known_streams)
    for index, name in enumerate(streams or []):
        problems += reference_problems((*loc, "streams", index), name, known_streams)
    for index, name in enumerate(actions or []):
        if not known_actions:
            problems.append(((*loc, "actions", index), f"unknown action {name!r} (no actions "
                             "are configured: define them under `actions:`)"))
        else:
            problems += reference_problems((*loc, "actions", index), name, known_actions,
                                           "action")
    return problems


def duplicate_rules(rules: list[RuleConfig]) -> list[Problem]:
    """Rule names given twice, wherever written: the message names the other place."""
    first: dict[str, int] = {}
    problems: list[Problem] = []
    for index, rule in enumerate(rules):
        if rule.name not in first:
            first[rule.name] = index
            continue
        other = rules[first[rule.name]]
        where = (other.origin.where if other.origin is not None
                 else format_loc(("rules", first[rule.name])))
        problems.append((("rules", index, "name"),
                         f"duplicate rule name {rule.name!r} (also {where})"))
    return problems
