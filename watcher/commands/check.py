"""``watcher check``: validate a config file, and the models its rules ask."""

from __future__ import annotations

import argparse
import os
import sys

from watcher.commands.common import CONFIG_ENV, add_config_option


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check", help="validate a config file",
        description="Validate a config file: YAML syntax, ${VAR} substitution, every option, "
        "references between sections, and the models rules ask (against the embedded "
        "server's models, or the API's GET /models when it answers; local/vision only "
        "for schemas it can measure). Prints every problem as file:line: field: message "
        "and exits 2 if there is any.")
    add_config_option(p)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from watcher.config import load_config
    from watcher.duration import format_duration
    from watcher.engine.modelcheck import fetch_served_models
    from watcher.errors import ConfigError, OvershootError
    from watcher.logs import redact

    note = ""
    try:
        config = load_config(args.config)
        if not config.overshoot.is_embedded and config.rules:
            key = config.overshoot.api_key
            try:
                served = asyncio.run(fetch_served_models(
                    config.overshoot.base_url, key.get_secret_value() if key else None))
            except OvershootError as exc:
                note = f" (model names not checked: {redact(str(exc))})"
            else:
                config = load_config(args.config, served_models=served)
    except ConfigError as exc:
        for problem in exc.problems:
            print(redact(problem), file=sys.stderr)
        if not os.path.exists(args.config):
            print(f"(give the config file with -c FILE or ${CONFIG_ENV})", file=sys.stderr)
        else:
            count = len(exc.problems)
            print(f"{args.config}: {count} problem{'' if count == 1 else 's'}", file=sys.stderr)
        return 2
    print(f"{args.config}: OK ({config.summary()}){note}")
    state = config.state
    print(redact(f"state store {state.shown}: evidence budget {state.evidence_budget_mb:g} MB "
                 f"(oldest dropped first), events kept {format_duration(state.keep_events_for)};"
                 f" while unavailable, {state.max_pending_steps} steps wait in memory and "
                 f"notifications go out best effort after "
                 f"{format_duration(state.max_pending_age)}"))
    return 0
