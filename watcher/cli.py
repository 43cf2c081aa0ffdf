"""The ``watcher`` command line: one entry point, one subcommand per job."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Sequence

from watcher import __version__
from watcher.backtest.command import add_parser as add_backtest_parser
from watcher.errors import WatcherError
from watcher.logs import configure_logging, register_secret

API_KEYS_ENV = "WATCHER_API_KEYS"
UPSTREAM_KEY_ENV = "WATCHER_UPSTREAM_API_KEY"
CONFIG_ENV = "WATCHER_CONFIG"
DEFAULT_CONFIG = "watcher.yaml"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    configure_logging(args.log_level, args.log_format)
    return int(args.handler(args) or 0)


LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR"]
DESCRIPTION = ("Keep live video streams published to an Overshoot-compatible API, ask "
               "vision-language models scheduled questions about them, and deliver the "
               "alerts their answers raise. One subcommand per job; `watcher COMMAND -h` "
               "tells more.")


def _env_choice(name: str, choices: list[str]) -> str:
    """The environment's value for an option if it is a valid one, else the default."""
    value = os.environ.get(name, "").upper()
    if value and value not in choices:
        print(f"watcher: ignoring {name}={value!r} (expected one of {', '.join(choices)})",
              file=sys.stderr)
    return value if value in choices else "INFO"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="watcher", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"watcher {__version__}")
    parser.add_argument("--log-level", default=_env_choice("WATCHER_LOG_LEVEL", LOG_LEVELS),
                        choices=LOG_LEVELS, type=str.upper,
                        help="least severe messages logged (default %(default)s; also "
                        "$WATCHER_LOG_LEVEL)")
    parser.add_argument("--log-format", default=os.environ.get("WATCHER_LOG_FORMAT", "text"),
                        choices=["text", "json"], type=str.lower,
                        help="text for people, json for log pipelines: one object per line "
                        "(default %(default)s; also $WATCHER_LOG_FORMAT)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_serve(sub)
    _add_check(sub)
    _add_run(sub)
    _add_models(sub)
    _add_test_rule(sub)
    _add_test_action(sub)
    _add_alerts(sub)
    _add_silence(sub)
    _add_status(sub)
    _add_db(sub)
    add_backtest_parser(sub, _add_config_option)
    return parser


def _add_config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", metavar="FILE",
                   default=os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG,
                   help=f"config file (default ${CONFIG_ENV}, else ./{DEFAULT_CONFIG})")


def _add_check(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check", help="validate a config file",
        description="Validate a config file: YAML syntax, ${VAR} substitution, every option, "
        "references between sections, and the models rules ask (against the embedded "
        "server's models, or the API's GET /models when it answers; local/vision only "
        "for schemas it can measure). Prints every problem as file:line: field: message "
        "and exits 2 if there is any.")
    _add_config_option(p)
    p.set_defaults(handler=_run_check)


def _run_check(args: argparse.Namespace) -> int:
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


def _load(path: str):  # type: ignore[no-untyped-def]
    """The config at ``path``, or None after printing its problems."""
    from watcher.config import load_config
    from watcher.errors import ConfigError
    from watcher.logs import redact

    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(redact(problem), file=sys.stderr)
        return None


def _add_run(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run", help="run the daemon: keep every configured stream published and leased",
        description="Run until SIGINT or SIGTERM: start the embedded server when "
        "overshoot.base_url is `embedded`, keep each configured stream created, published "
        "and leased, and delete the streams it created on the way out.")
    _add_config_option(p)
    p.add_argument("--watch", action="store_true",
                   help="reload when the config file or an included rule pack changes "
                   "(SIGHUP always reloads)")
    p.set_defaults(handler=_run_daemon)


def _run_daemon(args: argparse.Namespace) -> int:
    import asyncio
    import signal

    from watcher.memory import cap_malloc_arenas

    cap_malloc_arenas()  # before the daemon's threads exist (see watcher.memory)
    from watcher.daemon import Daemon

    config = _load(args.config)
    if config is None:
        return 2
    daemon = Daemon(config, args.config)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, daemon.request_stop)
        loop.add_signal_handler(signal.SIGHUP,
                                lambda: loop.create_task(daemon.reload()))
        await daemon.run(watch=args.watch)

    try:
        asyncio.run(main())
    except WatcherError as exc:
        print(f"watcher run: {exc}", file=sys.stderr)
        return 1
    return 0


def _add_models(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the models of the configured API",
                       description="List the models the configured API serves, with status.")
    _add_config_option(p)
    p.add_argument("--json", action="store_true", help="print the JSON list; each model "
                   "also has \"default\": true for overshoot.model, false otherwise")
    p.set_defaults(handler=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    import asyncio

    from watcher.daemon.api import api_client
    from watcher.errors import OvershootError

    config = _load(args.config)
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


def _add_test_rule(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "test-rule", help="evaluate one rule once against its live stream(s)",
        description="Start the rule's stream(s), wait for them to go live, ask the rule's "
        "question once and print the request, the answer and the condition's result. "
        "Nothing is recorded and no action runs.")
    _add_config_option(p)
    p.add_argument("rule", help="the rule's name")
    p.set_defaults(handler=_run_test_rule)


def _run_test_rule(args: argparse.Namespace) -> int:
    import asyncio

    from watcher.tools import test_rule

    config = _load(args.config)
    if config is None:
        return 2
    return asyncio.run(test_rule(config, args.rule))


def _add_test_action(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "test-action", help="send a sample alert through one action now",
        description="Send a sample alert event (with a generated snapshot) through the named "
        "action right away, without the outbox, and print whether it was delivered. Exits 0 "
        "if it was, 1 if the delivery failed, 2 if the config or the name is wrong.")
    _add_config_option(p)
    p.add_argument("action", help="the action's name (a key of `actions:`)")
    p.add_argument("--resolved", action="store_true",
                   help="send a resolved event instead of a firing one")
    p.set_defaults(handler=_run_test_action)


def _run_test_action(args: argparse.Namespace) -> int:
    import asyncio

    from watcher.actions.testing import send_test_alert

    config = _load(args.config)
    if config is None:
        return 2
    return asyncio.run(send_test_alert(config, args.action, resolved=args.resolved))


def _add_alerts(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("alerts", help="list alert events from the state file",
                       description="List alert events (newest first) from state.path, each "
                       "with its delivery status per action.")
    _add_config_option(p)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--limit", type=_positive_int, default=50, metavar="N",
                   help="how many events, newest first (default %(default)s)")
    p.add_argument("--rule", help="only this rule's events")
    p.add_argument("--dead", action="store_true",
                   help="only events with a dead-lettered delivery")
    p.add_argument("--feedback", action="store_true",
                   help="export the real / false-alarm marks as ground-truth labels, one "
                   "JSON object per line (with --json)")
    p.set_defaults(handler=_run_alerts)


def _run_alerts(args: argparse.Namespace) -> int:
    import asyncio

    from watcher.tools import list_alerts

    config = _load(args.config)
    if config is None:
        return 2
    if args.feedback:
        from watcher.console.commands import export_feedback

        if not args.json:
            print("watcher alerts: --feedback exports JSON lines: add --json", file=sys.stderr)
            return 2
        try:
            return asyncio.run(export_feedback(config))
        except WatcherError as exc:
            print(f"watcher alerts: {exc}", file=sys.stderr)
            return 1
    try:
        return asyncio.run(list_alerts(config, limit=args.limit, rule=args.rule,
                                       as_json=args.json, dead=args.dead))
    except WatcherError as exc:
        print(f"watcher alerts: {exc}", file=sys.stderr)
        return 1


def _add_db(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "db", help="the state database's schema: upgrade, status",
        description="Manage the schema of the state database (state.path or state.url). "
        "`watcher run` upgrades it by itself at start, under a lock; `watcher db upgrade` "
        "does it ahead of time (before a rolling restart of several instances).")
    actions = p.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    upgrade = actions.add_parser("upgrade", help="migrate the schema to this version's",
                                 description="Migrate the state database's schema to the "
                                 "newest revision this watcher knows, in one transaction, "
                                 "under a lock (safe while other instances start).")
    _add_config_option(upgrade)
    upgrade.set_defaults(handler=_run_db)
    status = actions.add_parser("status", help="show the schema revision",
                                description="Print the schema revision; exit 1 if the "
                                "database needs `watcher db upgrade`.")
    _add_config_option(status)
    status.set_defaults(handler=_run_db)


def _run_db(args: argparse.Namespace) -> int:
    import asyncio

    from watcher.store import admin

    config = _load(args.config)
    if config is None:
        return 2
    run = admin.upgrade if args.db_command == "upgrade" else admin.status
    try:
        return asyncio.run(run(config.state))
    except WatcherError as exc:
        print(f"watcher db {args.db_command}: {exc}", file=sys.stderr)
        return 1


def _add_silence(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "silence", help="add, list or expire silences",
        description="Silences keep matching alerts from notifying (their events are still "
        "recorded, marked silenced). They live in state.path; a running daemon picks up "
        "changes within a few seconds.")
    ops = p.add_subparsers(dest="silence_command", metavar="add|list|expire", required=True)
    add = ops.add_parser("add", help="add a silence and print its id")
    _add_config_option(add)
    add.add_argument("--rule", help="match this rule")
    add.add_argument("--stream", help="match this stream")
    add.add_argument("--label", action="append", default=[], metavar="K=V",
                     help="match this label (repeat for several)")
    add.add_argument("--severity", choices=["info", "warning", "critical"],
                     help="match this severity")
    add.add_argument("--for", dest="duration", required=True, metavar="DURATION",
                     help="how long it lasts: 30m, 2h, 1d")
    add.add_argument("--comment", default="", help="why")
    add.add_argument("--by", help="who (default: the user name)")
    add.set_defaults(handler=_run_silence_add)
    show = ops.add_parser("list", help="list silences, newest first")
    _add_config_option(show)
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_run_silence_list)
    end = ops.add_parser("expire", help="end a silence now")
    _add_config_option(end)
    end.add_argument("id", help="the silence's id")
    end.set_defaults(handler=_run_silence_expire)


def _run_silence_add(args: argparse.Namespace) -> int:
    import asyncio

    from watcher.console.commands import silence_add
    from watcher.duration import parse_duration

    try:
        seconds = parse_duration(args.duration)
    except (ValueError, TypeError) as exc:
        print(f"watcher silence add: --for {args.duration!r}: {exc}", file=sys.stderr)
        return 2
    config = _load(args.config)
    if config is None:
        return 2
    return asyncio.run(silence_add(config, rule=args.rule, stream=args.stream,
                                   labels=args.label, severity=args.severity,
                                   duration_s=seconds, comment=args.comment,
                                   created_by=args.by))


def _run_silence_list(args: argparse.Namespace) -> int:
    import asyncio

    from watcher.console.commands import silence_list

    config = _load(args.config)
    if config is None:
        return 2
    return asyncio.run(silence_list(config, as_json=args.json))


def _run_silence_expire(args: argparse.Namespace) -> int:
    import asyncio

    from watcher.console.commands import silence_expire

    config = _load(args.config)
    if config is None:
        return 2
    return asyncio.run(silence_expire(config, args.id))


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number (1 or more)")
    return value


def _add_status(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "status", help="show a running daemon's streams, rules and recent alerts",
        description="Read /status from a running `watcher run` (it needs status.enabled: "
        "true) and print its streams, rules, actions and recent alerts. The address is the "
        "config's status.host and status.port, or --url; the config's status.token (or "
        "$WATCHER_STATUS_TOKEN) is sent as a bearer token.")
    _add_config_option(p)
    p.add_argument("--url", metavar="URL", help="the status listener, e.g. "
                   "http://127.0.0.1:9464 (default: from the config)")
    p.add_argument("--json", action="store_true", help="print the raw /status JSON")
    p.set_defaults(handler=_run_status)


def _run_status(args: argparse.Namespace) -> int:
    from watcher.observe.report import print_status

    token = os.environ.get("WATCHER_STATUS_TOKEN") or None
    if args.url is not None:
        return print_status(args.url, as_json=args.json, token=token)
    config = _load(args.config)
    if config is None:
        return 2
    hint = None if config.status.enabled else f"{args.config} has status.enabled: false"
    if token is None and config.status.token is not None:
        token = config.status.token.get_secret_value()
    return print_status(config.status.url, as_json=args.json, hint=hint, token=token)


def _add_serve(sub: argparse._SubParsersAction) -> None:
    from watcher.server.cliopts import add_limit_options

    p = sub.add_parser(
        "serve", help="run the embedded Overshoot-compatible server",
        description="Serve the Overshoot API under /v1beta: leased streams fed over WHIP, "
        "ovs:// frame references, and model backends (local/frames, local/vision, and any "
        "OpenAI-compatible server given with --upstream-url).")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument("--port", type=int, default=8420, help="port to listen on (default %(default)s)")
    p.add_argument("--api-key", action="append", default=[], metavar="KEY",
                   help=f"accepted API key (repeatable; also ${API_KEYS_ENV}, comma-separated); "
                   "with none, one is generated and printed once")
    p.add_argument("--ttl-seconds", type=int, default=45, metavar="SECONDS",
                   help="stream lease length a keepalive renews to (default %(default)s; "
                   "300 for clients that keep alive every two minutes)")
    p.add_argument("--retention-seconds", type=int, default=600, metavar="SECONDS",
                   help="how long frames are retained (default %(default)s)")
    p.add_argument("--tombstone-seconds", type=int, default=300, metavar="SECONDS",
                   help="how long ended streams stay readable (default %(default)s)")
    p.add_argument("--max-mb-per-stream", type=float, default=40, metavar="MB",
                   help="memory cap of one stream's retained frames (default %(default)s)")
    p.add_argument("--max-stored-fps", type=float, default=5, metavar="FPS",
                   help="most frames per second stored per stream, whatever the publisher "
                   "sends (0: every frame; default %(default)s)")
    p.add_argument("--public-url", metavar="URL", help="base URL publishers use to reach "
                   "this server (default: the URL each request came in on)")
    p.add_argument("--no-vision", action="store_true",
                   help="do not serve local/vision (default: served)")
    p.add_argument("--upstream-url", metavar="URL",
                   help="an OpenAI-compatible server (vLLM, Ollama, llama.cpp, LM Studio, "
                   "OpenAI) to answer with, e.g. http://127.0.0.1:11434/v1 (default: none)")
    p.add_argument("--upstream-model", action="append", default=[], metavar="NAME[=UPSTREAM]",
                   help="list NAME and send it upstream as UPSTREAM (repeatable; default: "
                   "none)")
    p.add_argument("--upstream-api-key", metavar="KEY",
                   help=f"key for the upstream server (also ${UPSTREAM_KEY_ENV}; default: none)")
    p.add_argument("--upstream-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="deadline of one upstream request (default %(default)s)")
    add_limit_options(p)
    p.set_defaults(handler=_run_serve)


def _listen(host: str, port: int) -> socket.socket | None:
    """A socket listening on host:port, or None after one line on stderr saying why not."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        print(f"watcher serve: cannot listen on {host}:{port}: {why}", file=sys.stderr)
        return None


def _run_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from watcher.errors import ConfigError
    from watcher.server.app import create_app
    from watcher.server.cliopts import limit_settings
    from watcher.server.settings import ServerSettings
    from watcher.server.streams import generate_api_key

    listener = _listen(args.host, args.port)  # before anything is printed
    if listener is None:
        return 1
    keys = list(args.api_key) + [
        k.strip() for k in os.environ.get(API_KEYS_ENV, "").split(",") if k.strip()]
    if not keys:
        generated = generate_api_key()
        keys = [generated]
        print(f"No API key given; generated one for this run:\n  {generated}", flush=True)
    for key in keys:
        register_secret(key)
    try:
        settings = ServerSettings(
            api_keys=keys,
            ttl_seconds=args.ttl_seconds,
            retention_seconds=args.retention_seconds,
            tombstone_seconds=args.tombstone_seconds,
            max_mb_per_stream=args.max_mb_per_stream,
            max_stored_fps=args.max_stored_fps,
            public_url=args.public_url,
            enable_vision=not args.no_vision,
            upstreams=_upstreams(args),
            **limit_settings(args),
        )
    except (ValueError, ConfigError) as exc:
        listener.close()
        print(f"watcher serve: {exc}", file=sys.stderr)
        return 2
    print(f"Serving the Overshoot API at http://{args.host}:{args.port}/v1beta", flush=True)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_config=None,
                                           access_log=False))
    try:
        server.run(sockets=[listener])
    finally:
        listener.close()
    return 0


def _upstreams(args: argparse.Namespace) -> list[dict]:
    if not args.upstream_url:
        if args.upstream_model:
            raise ValueError("--upstream-model needs --upstream-url")
        return []
    if not args.upstream_model:
        raise ValueError("--upstream-url needs at least one --upstream-model NAME[=UPSTREAM]")
    key = args.upstream_api_key or os.environ.get(UPSTREAM_KEY_ENV)
    register_secret(key)
    models = {}
    for spec in args.upstream_model:
        name, _, upstream_name = spec.partition("=")
        models[name.strip()] = (upstream_name or name).strip()
    return [{"base_url": args.upstream_url, "api_key": key, "models": models,
             "timeout_seconds": args.upstream_timeout}]
