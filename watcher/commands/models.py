"""``watcher models``: the models the configured API serves."""

from __future__ import annotations

import argparse
import json
import sys

from watcher.commands.common import add_config_option, load_or_report


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the models of the configured API",
                       description="List the models the configured API serves, with status.")
    add_config_option(p)
    p.add_argument("--json", action="store_true", help="print the JSON list; each model "
                   "also has \"default\": true for overshoot.model, false otherwise")
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    import asyncio

    from watcher.daemon.api import api_client
    from watcher.errors import OvershootError

    config = load_or_report(args.config)
    if config is None:
        return 2

    async def fetch():  # type: ignore[no-untyped-def]
        async with api_client(config) as (client, _http):
            return await client.list_models()

    try:
        models = asyncio.run(fetch())
    except OvershootError as exc:
        print(f"watcher models: {exc}", file=sys.stderr)
        return 1
    default = config.overshoot.model
    if args.json:
        listed = models.model_dump(mode="json")
        for entry in listed.get("data", []):
            entry["default"] = entry.get("id") == default
        print(json.dumps(listed, indent=2))
        return 0
    for model in models.data:
        mark = " (default)" if model.id == default else ""
        print(f"{model.id:<40} {model.status:<12} {model.owned_by or ''}{mark}")
    return 0
