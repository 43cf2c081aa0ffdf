"""Reading a config file: YAML with ``${VAR}`` substitution, validation, rule packs and
the checks across sections, every problem reported as ``file:line: field: message``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import ValidationError

from watcher.config.files import read_text
from watcher.config.packs import PackLoader
from watcher.config.root import WatcherConfig
from watcher.configbase import BASE_DIR, DEFER_CHECKS
from watcher.configerrors import validation_messages
from watcher.engine.includes import RuleOrigin
from watcher.engine.modelcheck import ServedModels, model_problems
from watcher.errors import ConfigError
from watcher.yamlfile import read_yaml


def load_config(
    path: str | os.PathLike[str],
    *,
    environ: Mapping[str, str] | None = None,
    model: type[WatcherConfig] = WatcherConfig,
    served_models: ServedModels | None = None,
) -> WatcherConfig:
    """Read, substitute, validate and cross-check the config file at ``path``.

    Raises :class:`~watcher.errors.ConfigError` (and nothing else) whose
    every message starts with ``path:line:``. ``environ`` defaults to
    ``os.environ``; ``model`` lets tests and tools validate with a subclass;
    ``served_models`` (a remote API's model ids, and how to name that API)
    checks the rules' model names against them (see :mod:`watcher.engine.modelcheck`).
    """
    name = os.fspath(path)
    text = read_text(Path(name), name)
    base_dir = Path(os.path.abspath(name)).parent
    return parse_config(text, name=name, base_dir=base_dir, environ=environ, model=model,
                        served_models=served_models)


def parse_config(
    text: str,
    *,
    name: str = "<config>",
    base_dir: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    model: type[WatcherConfig] = WatcherConfig,
    served_models: ServedModels | None = None,
) -> WatcherConfig:
    """:func:`load_config` for text already read; ``name`` is what messages call it.

    Rule packs named by ``include:`` are read relative to ``base_dir`` (default:
    the working directory).
    """
    environ = os.environ if environ is None else environ
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    doc = read_yaml(text, name, environ)
    context = {BASE_DIR: base, DEFER_CHECKS: True}
    try:
        config = model.model_validate(doc.data, context=context)
    except ValidationError as exc:
        raise ConfigError(validation_messages(exc, doc, model)) from None
    for index, rule in enumerate(config.rules):
        rule.set_origin(RuleOrigin(name, doc.line_of(("rules", index)), ("rules", index)))
    loader = PackLoader(config, doc, base, environ, context)
    for index, entry in enumerate(config.include):
        loader.include(index, entry)
    for loc, message in config.check_references():
        loader.report(loc, message)
    if not loader.found:  # model checks only make sense on an otherwise sound config
        available, source = served_models or (None, "the embedded server")
        for loc, message in model_problems(config, available, source=source):
            loader.report(loc, message)
    if loader.found:
        raise ConfigError(loader.messages())
    config.register_secrets()
    return config
