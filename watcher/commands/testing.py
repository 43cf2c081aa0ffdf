"""``watcher test-rule`` and ``watcher test-action``: try one rule, or one action, now."""

from __future__ import annotations

import argparse

from watcher.commands.common import add_config_option, load_or_report


def add_parsers(sub: argparse._SubParsersAction) -> None:
    """Add ``test-rule`` and then ``test-action``."""
    p = sub.add_parser(
        "test-rule", help="evaluate one rule once against its live stream(s)",
        description="Start the rule's stream(s), wait for them to go live, ask the rule's "
        "question once and print the request, the answer and the condition's result. "
        "Nothing is recorded and no action runs.")
    add_config_option(p)
    p.add_argument("rule", help="the rule's name")
    p.set_defaults(handler=_run_test_rule)

    p = sub.add_parser(
        "test-action", help="send a sample alert through one action now",
        description="Send a sample alert event (with a generated snapshot) through the named "
        "action right away, without the outbox, and print whether it was delivered. Exits 0 "
        "if it was, 1 if the delivery failed, 2 if the config or the name is wrong.")
    add_config_option(p)
    p.add_argument("action", help="the action's name (a key of `actions:`)")
    p.add_argument("--resolved", action="store_true",
                   help="send a resolved event instead of a firing one")
    p.set_defaults(handler=_run_test_action)


def _run_test_rule(args: argparse.Namespace) -> int:
    import asyncio

    from watcher.tools import test_rule

    config = load_or_report(args.config)
    if config is None:
        return 2
    return asyncio.run(test_rule(config, args.rule))


def _run_test_action(args: argparse.Namespace) -> int:
    import asyncio

    from watcher.actions.testing import send_test_alert

    config = load_or_report(args.config)
    if config is None:
        return 2
    return asyncio.run(send_test_alert(config, args.action, resolved=args.resolved))
