"""Checks of the models rules ask: is the name served, and can that model answer the schema?

Run by :func:`watcher.config.parse_config` (so by ``watcher check`` and every
load of a config file, not for models built in code) against the names an
embedded server will serve, and by ``watcher check`` against a remote API's
``GET /models`` when it answers.

``local/vision`` measures motion, people, faces and brightness; it cannot
answer a free yes/no question (the default ``{answer: boolean}`` schema), and
it cannot measure motion on the newest frame alone (a rule without
``window``). Such a rule would fail on every ask, so it fails here instead.
"""

from __future__ import annotations

import asyncio
import difflib
from collections.abc import Collection, Iterator
from typing import TYPE_CHECKING

from watcher.server.backends.visionanswer import schema_problem

if TYPE_CHECKING:
    from watcher.config.overshoot import EmbeddedServerConfig
    from watcher.config.root import WatcherConfig
    from watcher.engine.rules import ConfirmConfig, RuleConfig
    from watcher.yamlfile import Loc

    Problem = tuple[Loc, str]

ServedModels = tuple[Collection[str], str]
"""Model ids an API serves, and how messages name that API (``GET https://.../models``)."""

LOCAL_FRAMES = "local/frames"
LOCAL_VISION = "local/vision"


def embedded_model_names(embedded: EmbeddedServerConfig) -> list[str]:
    """The model ids an embedded server with these options serves."""
    names = [LOCAL_FRAMES]
    if embedded.enable_vision:
        names.append(LOCAL_VISION)
    for upstream in embedded.upstreams:
        names.extend(upstream.models)
    return names


def model_problems(config: WatcherConfig, available: Collection[str] | None = None,
                   *, source: str = "the embedded server") -> list[Problem]:
    """Unknown model names and schemas the named model cannot answer.

    ``available`` is the set of served model ids (None: the embedded
    server's, when ``base_url`` is embedded; otherwise names are not checked);
    ``source`` is how messages name where that list came from.
    """
    if available is None and config.overshoot.is_embedded:
        available = embedded_model_names(config.overshoot.embedded)
    problems: list[Problem] = []
    default = config.overshoot.model
    uses_default = any(rule.model is None for rule in config.rules)
    if available is not None and uses_default:
        problems += _unknown(("overshoot", "model"), default, available, source)
    for index, rule in enumerate(config.rules):
        loc: Loc = ("rules", index)
        if available is not None:
            for field, name in _named_models(rule):
                problems += _unknown((*loc, *field), name, available, source)
        problems += _vision_problems(loc, rule, rule.model or default,
                                     default_used=rule.model is None)
        if rule.confirm is not None:
            confirm_model = rule.confirm.model or rule.model or default
            problems += _vision_problems((*loc, "confirm"), rule.confirm, confirm_model,
                                         default_used=rule.confirm.model is None
                                         and rule.model is None)
    return problems


def _named_models(rule: RuleConfig) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if rule.model is not None:
        yield ("model",), rule.model
    for position, name in enumerate(rule.fallback_models):
        yield ("fallback_models", position), name
    if rule.confirm is not None and rule.confirm.model is not None:
        yield ("confirm", "model"), rule.confirm.model


def _unknown(loc: Loc, name: str, available: Collection[str], source: str) -> list[Problem]:
    if name in available:
        return []
    close = difflib.get_close_matches(name, list(available), n=1, cutoff=0.6)
    hint = (f" (did you mean {close[0]}?)" if close
            else f" (it serves: {', '.join(sorted(available)) or 'none'})")
    return [(loc, f"unknown model {name!r}: {source} does not serve it{hint}")]


def _vision_problems(loc: Loc, question: RuleConfig | ConfirmConfig, model: str, *,
                     default_used: bool) -> list[Problem]:
    if model != LOCAL_VISION:
        return []
    why = schema_problem(question.schema, window=question.window is not None)
    if why is None:
        return []
    which = ("local/vision (the default model, overshoot.model)" if default_used
             else "local/vision")
    hint = ("give a schema of what it measures, e.g. {motion_detected: boolean} with "
            "window: 5s, or {people: integer}; or ask a vision-language model (model:)")
    return [((*loc, "schema"), f"{which} cannot answer this schema: {why}; {hint}")]


MODELS_TIMEOUT_S = 5.0
"""How long ``watcher check`` waits for a remote API's model list."""


async def fetch_served_models(base_url: str, api_key: str | None,
                              timeout_s: float = MODELS_TIMEOUT_S) -> ServedModels:
    """The model ids ``GET {base_url}/models`` lists: one try, no retries.

    Raises :class:`~watcher.errors.OvershootError` when the API cannot be read.
    """
    import httpx

    from watcher.errors import OvershootError
    from watcher.overshoot.client import OvershootClient, Policies, RetryPolicy

    once = RetryPolicy(attempts=1, timeout=timeout_s)
    try:
        async with asyncio.timeout(timeout_s), httpx.AsyncClient(timeout=timeout_s) as http:
            client = OvershootClient(base_url, api_key, http=http,
                                     policies=Policies(read=once))
            listed = await client.list_models()
    except TimeoutError:  # a name lookup hanging, say: the whole call is bounded
        raise OvershootError(f"GET /models: no answer within {timeout_s:g} s") from None
    return [m.id for m in listed.data], f"{base_url}/models"
